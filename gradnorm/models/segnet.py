"""The paper's VGG SegNet (§5; Badrinarayanan et al. 2017): a VGG16 encoder and a mirrored decoder
that upsamples with the encoder's max-pooling indices.

Encoder: the 13 convolutions of VGG16 with batch norm (torchvision's layout), in five stages each
closed by a 2×2 max pooling that remembers where its maxima were. Decoder: per stage, unpooling to
those positions and as many 3×3 conv-BN-ReLU layers as the encoder stage had, with the channel
counts mirrored (512, 512, 256, 128, 64). SegNet's final classifier (a 3×3 convolution) becomes one
head per task; the decoder's last 64→64 convolution before it is the last shared layer (GradNorm's
W). About 29.4M parameters (docs/nyuv2.md).
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models import VGG16_BN_Weights
from torchvision.models.vgg import cfgs, make_layers

from gradnorm.models.dense import DenseMultiTaskModel, check_input_channels, conv_bn_relu, task_heads

#: output channels of the decoder's conv layers, stage by stage from the deepest
DECODER = ((512, 512, 512), (512, 512, 256), (256, 256, 128), (128, 64), (64,))


class SegNet(DenseMultiTaskModel):
    """VGG16-BN SegNet with one 3×3 convolution per task on the 64-channel full-resolution features.

    Args:
        in_channels: image channels (3).
        heads: task name -> output channels (seg 13, depth 1, normals 3).
        pretrained: initialise the encoder with torchvision's ImageNet VGG16-BN weights (downloads
            them once into the torch hub cache).
    """

    def __init__(self, in_channels: int = 3, heads: Mapping[str, int] = (), pretrained: bool = False):
        super().__init__()
        check_input_channels(in_channels, pretrained, "segnet")
        vgg = make_layers(cfgs["D"], batch_norm=True)  # VGG16-BN's feature extractor
        if pretrained:
            state = VGG16_BN_Weights.IMAGENET1K_V1.get_state_dict(progress=True)
            vgg.load_state_dict({k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")})
        if in_channels != 3:
            vgg[0] = nn.Conv2d(in_channels, 64, 3, padding=1)
        self.encoder = nn.ModuleList(_split_at_pools(vgg))

        stages, channels = [], 512
        for widths in DECODER:
            layers = []
            for width in widths:
                layers.append(conv_bn_relu(channels, width))
                channels = width
            stages.append(nn.Sequential(*layers))
        self.decoder = nn.ModuleList(stages)
        self.heads = task_heads(heads, 64, kernel_size=3)

    def shared(self, x: Tensor) -> Tensor:
        pooled = []
        for stage in self.encoder:
            x = stage(x)
            size = x.shape[-2:]
            x, indices = F.max_pool2d(x, kernel_size=2, stride=2, return_indices=True)
            pooled.append((indices, size))
        for stage, (indices, size) in zip(self.decoder, reversed(pooled)):
            x = F.max_unpool2d(x, indices, kernel_size=2, stride=2, output_size=size)
            x = stage(x)
        return x

    @property
    def last_shared_layer(self) -> nn.Module:
        return self.decoder[-1][-1][0]


def _split_at_pools(features: nn.Sequential) -> list[nn.Sequential]:
    """VGG's feature layers cut into the stages between its max poolings (the poolings dropped)."""
    stages, current = [], []
    for layer in features:
        if isinstance(layer, nn.MaxPool2d):
            stages.append(nn.Sequential(*current))
            current = []
        else:
            current.append(layer)
    return stages
