"""The toy's network (paper §4): a trunk of fully connected ReLU layers and one affine head per task."""

from __future__ import annotations

from collections.abc import Mapping

from torch import Tensor, nn

from gradnorm.models.base import MultiTaskModel


class MLP(MultiTaskModel):
    """``depth`` layers of ``width`` ReLU units shared by all tasks; the last of them is W.

    Args:
        in_features: input size (250 for the toy).
        heads: task name -> output size (100 per toy task).
        width, depth: the trunk (paper: 4 layers of 100).
    """

    def __init__(self, in_features: int, heads: Mapping[str, int], width: int = 100, depth: int = 4):
        super().__init__()
        for name, value in (("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"model.{name} must be a positive integer, got {value!r}")
        layers: list[nn.Module] = []
        size = in_features
        for _ in range(depth):
            layers += [nn.Linear(size, width), nn.ReLU()]
            size = width
        self.trunk = nn.Sequential(*layers)
        self.heads = nn.ModuleDict({name: nn.Linear(width, out) for name, out in heads.items()})

    def shared(self, x: Tensor) -> Tensor:
        return self.trunk(x)

    @property
    def last_shared_layer(self) -> nn.Module:
        return self.trunk[-2]
