"""What the NYUv2 backbones share: heads at the input's resolution, conv-BN-ReLU blocks, heads.

A dense backbone's trunk ends in its last shared layer, a convolution followed by batch norm and
ReLU (W is that convolution's weight). Each task head is one convolution on the shared
representation z (all parameters are shared up to the final layer, paper §5); predictions coarser
than the input are upsampled bilinearly to the input's size, without parameters.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from gradnorm.models.base import MultiTaskModel


class DenseMultiTaskModel(MultiTaskModel):
    """A :class:`MultiTaskModel` whose predictions have the input's height and width."""

    def forward(self, x: Tensor) -> tuple[dict[str, Tensor], list[Tensor]]:
        predictions, features = super().forward(x)
        size = x.shape[-2:]
        return {
            name: p if p.shape[-2:] == size else F.interpolate(p, size=size, mode="bilinear", align_corners=False)
            for name, p in predictions.items()
        }, features


def conv_bn_relu(in_channels: int, out_channels: int, kernel_size: int = 3) -> nn.Sequential:
    """Convolution (no bias: the batch norm has one), batch norm, ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size, padding=kernel_size // 2, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


def task_heads(heads: Mapping[str, int], in_channels: int, kernel_size: int) -> nn.ModuleDict:
    """One convolution per task: ``in_channels`` -> the task's output channels."""
    if not heads:
        raise ValueError("the model needs at least one task head")
    return nn.ModuleDict({
        name: nn.Conv2d(in_channels, int(out), kernel_size, padding=kernel_size // 2) for name, out in heads.items()
    })


def check_input_channels(in_channels: int, pretrained: bool, model: str) -> None:
    if isinstance(in_channels, bool) or not isinstance(in_channels, int) or in_channels < 1:
        raise ValueError(f"model {model}: in_channels must be a positive integer, got {in_channels!r}")
    if pretrained and in_channels != 3:
        raise ValueError(f"model {model}: pretrained weights need 3 input channels, got {in_channels}")
