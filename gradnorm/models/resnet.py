"""The paper's "thin" ResNet-50 FCN (§5): a ResNet-50 encoder whose 2048-filter stage is cut to
1024 filters and whose stride-2 layers come earlier, and a shallow ResNet decoder with learned
upsampling. Built from torchvision's ResNet blocks.

Encoder: torchvision's ResNet-50 stem and bottleneck stages (3, 4, 6, 3 blocks), the last stage
with 256-wide bottlenecks, i.e. 1024 output filters instead of 2048. In each downsampling block the
stride 2 sits in the first 1×1 convolution instead of the 3×3 one (the original ResNet placement;
our reading of "stride-2 layers moved earlier", switchable with ``stride_in_first_conv``).
Output stride 32.

Decoder: a 1×1 conv-BN-ReLU to 256 channels, then three stages of [4×4 transposed convolution with
stride 2 (learned ×2 upsampling), BN, ReLU, one torchvision BasicBlock] down to stride 4 (the
paper's output resolution: 80×80 for 320×320 inputs), then a 3×3 conv-BN-ReLU, the last shared
layer (GradNorm's W). Each head is a 1×1 convolution whose output is upsampled bilinearly to the
input's size. About 14.4M parameters (docs/nyuv2.md).
"""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn
from torchvision.models import ResNet50_Weights
from torchvision.models.resnet import BasicBlock, Bottleneck

from gradnorm.models.dense import DenseMultiTaskModel, check_input_channels, conv_bn_relu, task_heads

#: (bottleneck width, blocks, stride) per encoder stage; output channels are 4 × width
ENCODER = ((64, 3, 1), (128, 4, 2), (256, 6, 2), (256, 3, 2))
DECODER = (128, 64, 64)  # output channels of the three upsampling stages (stride 16, 8, 4)


class ThinResNet(DenseMultiTaskModel):
    """Thin ResNet-50 encoder + shallow ResNet decoder; heads at stride 4, upsampled to the input.

    Args:
        in_channels: image channels (3).
        heads: task name -> output channels.
        pretrained: initialise the stem and the first three stages with torchvision's ImageNet
            ResNet-50 weights (the thinned last stage has no pretrained counterpart).
        stride_in_first_conv: put each downsampling block's stride in its first 1×1 convolution
            (true) or in its 3×3 convolution (false: torchvision's ResNet v1.5).
    """

    def __init__(self, in_channels: int = 3, heads: Mapping[str, int] = (), pretrained: bool = False,
                 stride_in_first_conv: bool = True):
        super().__init__()
        check_input_channels(in_channels, pretrained, "resnet")
        self.stem = nn.Sequential(
            nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False),
            nn.BatchNorm2d(64),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(3, stride=2, padding=1),
        )
        stages, channels = [], 64
        for width, blocks, stride in ENCODER:
            stages.append(bottleneck_stage(channels, width, blocks, stride, stride_in_first_conv))
            channels = width * Bottleneck.expansion
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        if pretrained:
            self._load_imagenet_weights()

        up, channels = [conv_bn_relu(channels, 256, kernel_size=1)], 256
        for width in DECODER:
            up += [
                nn.ConvTranspose2d(channels, width, 4, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                BasicBlock(width, width),
            ]
            channels = width
        self.decoder = nn.Sequential(*up)
        self.last = conv_bn_relu(channels, 64)
        self.heads = task_heads(heads, 64, kernel_size=1)

    def shared(self, x: Tensor) -> Tensor:
        x = self.stem(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.last(self.decoder(x))

    @property
    def last_shared_layer(self) -> nn.Module:
        return self.last[0]

    def _load_imagenet_weights(self) -> None:
        state = ResNet50_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
        stem_names = {"conv1": "stem.0", "bn1": "stem.1"}
        own = {}
        for key, value in state.items():
            head, _, rest = key.partition(".")
            if head in stem_names:
                own[f"{stem_names[head]}.{rest}"] = value
            elif head in ("layer1", "layer2", "layer3"):
                own[key] = value
        missing = self.load_state_dict(own, strict=False).unexpected_keys
        if missing:  # pragma: no cover - torchvision's naming changed
            raise RuntimeError(f"unexpected keys in torchvision's ResNet-50 weights: {missing[:5]}")


def bottleneck_stage(in_channels: int, width: int, blocks: int, stride: int,
                     stride_in_first_conv: bool) -> nn.Sequential:
    """``blocks`` torchvision Bottlenecks of the given width; the first one may downsample."""
    out_channels = width * Bottleneck.expansion
    downsample = None
    if stride != 1 or in_channels != out_channels:
        downsample = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride=stride, bias=False),
                                   nn.BatchNorm2d(out_channels))
    first = Bottleneck(in_channels, width, stride=stride, downsample=downsample)
    if stride != 1 and stride_in_first_conv:
        first.conv1.stride, first.conv2.stride = (stride, stride), (1, 1)
    return nn.Sequential(first, *(Bottleneck(out_channels, width) for _ in range(blocks - 1)))
