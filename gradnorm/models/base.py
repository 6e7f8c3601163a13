"""Every backbone: a shared trunk up to the last shared layer, then one head per task (paper §3).

``forward(x)`` returns ``(predictions, features)``: ``predictions`` maps task name -> head output
and ``features`` holds the per-task views of the shared representation z that the heads consumed
(one view each, so a balancer can catch each task's gradient at z in a single backward pass).
``last_shared_parameters()`` is GradNorm's W: the weights of the last shared layer;
``shared_parameters()`` is every parameter outside the heads (what PCGrad, MGDA, ... combine on).
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

MODELS: dict[str, type[MultiTaskModel]] = {}


def register_model(name: str):
    """Class decorator: make a backbone available to :func:`create_model` by name."""

    def wrap(cls):
        MODELS[name] = cls
        return cls

    return wrap


def create_model(name: str, **kwargs) -> MultiTaskModel:
    """Build a registered backbone by name, e.g. ``create_model("mlp", in_features=250, heads={...})``."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; available: {sorted(MODELS)}")
    return MODELS[name](**kwargs)


class MultiTaskModel(nn.Module, ABC):
    """Shared trunk + task heads. Subclasses build ``self.heads`` and implement :meth:`shared`."""

    heads: nn.ModuleDict

    @abstractmethod
    def shared(self, x: Tensor) -> Tensor:
        """The shared representation z (output of the last shared layer)."""

    @property
    @abstractmethod
    def last_shared_layer(self) -> nn.Module:
        """The module whose weights are GradNorm's W."""

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """W: the weights (not the biases) of the last shared layer (paper §3)."""
        return [self.last_shared_layer.weight]

    def shared_parameters(self) -> list[nn.Parameter]:
        """Every parameter not in ``heads``: the trunk that all tasks share."""
        in_heads = {id(p) for p in self.heads.parameters()}
        return [p for p in self.parameters() if id(p) not in in_heads]

    def forward(self, x: Tensor) -> tuple[dict[str, Tensor], list[Tensor]]:
        z = self.shared(x)
        features = [z.view_as(z) for _ in self.heads]
        predictions = {name: head(f) for (name, head), f in zip(self.heads.items(), features)}
        return predictions, features

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
