"""Fixed task weights: the building block of grid search and of GradNorm static (paper §5.2, §5.3)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from gradnorm.balancers.base import Balancer, sum_scale
from gradnorm.checks import as_float


class FixedWeights(Balancer):
    """Constant weights w_i given by the user.

    Args:
        num_tasks: T.
        weights: T positive numbers.
        normalize: rescale them so that Σ_i w_i = T (as GradNorm's weights are).
    """

    name = "fixed"
    label = "Fixed {weights}"
    color = "#56B4E9"

    def __init__(self, num_tasks: int, weights: Sequence[float] | None = None, normalize: bool = False):
        super().__init__(num_tasks)
        self.register_buffer("fixed_weights", check_weights(weights, num_tasks, normalize))
        self.weight_scale = sum_scale(float(self.fixed_weights.sum()), num_tasks)

    @property
    def weights(self) -> Tensor:
        return self.fixed_weights.clone()


def check_weights(weights, num_tasks: int, normalize: bool = False, name: str = "weights") -> Tensor:
    """Validate a list of T positive task weights; one error message naming what is wrong."""
    if weights is None:
        raise ValueError(f"{name} must be a list of {num_tasks} positive numbers, got none")
    try:
        if isinstance(weights, str | bytes | int | float):
            raise TypeError
        weights = list(weights)
    except TypeError:
        raise ValueError(f"{name} must be a list of {num_tasks} positive numbers, got {weights!r}") from None
    values = [as_float(v, name, minimum=0.0, strict=True) for v in weights]
    if len(values) != num_tasks:
        raise ValueError(f"{name} must be a list of {num_tasks} positive numbers (one per task), got {len(values)}: {values}")
    out = torch.tensor(values, dtype=torch.float32)
    if normalize:
        out = out * (num_tasks / out.sum())
    return out
