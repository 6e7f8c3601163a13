"""torchvision's FCN layout on a dilated ResNet-50 (Long et al. 2015; torchvision ``fcn_resnet50``).

Encoder: torchvision's ResNet-50 with its last two stages dilated instead of strided (output stride
8, 2048 channels). Top: the first part of torchvision's ``FCNHead``: 3×3 convolution 2048→512, BN,
ReLU, dropout 0.1. That 3×3 convolution is the last shared layer (GradNorm's W); its 9.4M weights
make W much larger than in the other backbones. Each task head is FCNHead's final 1×1 convolution,
upsampled bilinearly to the input's size. About 32.9M parameters (docs/nyuv2.md).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn
from torchvision.models import ResNet50_Weights, resnet50
from torchvision.models.segmentation.fcn import FCNHead

from gradnorm.models.dense import DenseMultiTaskModel, check_input_channels, task_heads


class FCN(DenseMultiTaskModel):
    """FCN-ResNet50 with one 1×1 convolution per task on the 512-channel stride-8 features.

    Args:
        in_channels: image channels (3).
        heads: task name -> output channels.
        pretrained: initialise the encoder with torchvision's ImageNet ResNet-50 weights.
    """

    def __init__(self, in_channels: int = 3, heads: Mapping[str, int] = (), pretrained: bool = False):
        super().__init__()
        check_input_channels(in_channels, pretrained, "fcn")
        backbone = resnet50(weights=ResNet50_Weights.IMAGENET1K_V1 if pretrained else None,
                            replace_stride_with_dilation=[False, True, True])
        if in_channels != 3:
            backbone.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.encoder = nn.Sequential(backbone.conv1, backbone.bn1, backbone.relu, backbone.maxpool,
                                     backbone.layer1, backbone.layer2, backbone.layer3, backbone.layer4)
        top = FCNHead(2048, 1)
        self.top = nn.Sequential(*list(top)[:4])  # conv 3×3, BN, ReLU, dropout; the 1×1 classifier -> heads
        self.heads = task_heads(heads, top[4].in_channels, kernel_size=1)

    def shared(self, x: Tensor) -> Tensor:
        return self.top(self.encoder(x))

    @property
    def last_shared_layer(self) -> nn.Module:
        return self.top[0]
