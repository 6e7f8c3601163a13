"""Random fixed weights for the grid search (paper §5.3, Figure 4).

The paper trains networks whose task weights are drawn from a uniform distribution and
renormalised to sum to T; the range is not stated. Here grid point ``index`` draws

    u_i ~ U(low, high) (i = 1..T),   w_i = T · u_i / Σ_j u_j,

from a generator seeded with (``seed``, ``index``) only, so a grid point has the same weights in
every run, whatever the training seed. Only the ratio high/low matters after renormalisation;
the default U(0, 1) reaches every direction of the positive orthant (docs/experiments.md).
"""

from __future__ import annotations

import torch

from gradnorm.balancers.fixed import FixedWeights
from gradnorm.checks import as_float


class GridWeights(FixedWeights):
    """Fixed weights of grid point ``index``: uniform draws renormalised to sum to T.

    Args:
        num_tasks: T.
        index: the grid point, 0..N−1 (a multirun over ``balancer.index``).
        low, high: the uniform range, 0 ≤ low < high.
        seed: the grid's seed; with ``index`` it fixes the draw.
    """

    name = "grid"
    label = "Grid #{index}"
    color = "#CC79A7"

    def __init__(self, num_tasks: int, index: int = 0, low: float = 0.0, high: float = 1.0, seed: int = 0):
        super().__init__(num_tasks, grid_weights(num_tasks, index, low, high, seed))
        self.index = index

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, index={self.index}, weights={self.fixed_weights.tolist()}"


def grid_weights(num_tasks: int, index: int, low: float = 0.0, high: float = 1.0, seed: int = 0) -> list[float]:
    """The weights of grid point ``index`` (see the module docstring)."""
    for name, value in (("balancer.index", index), ("balancer.seed", seed)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    low = as_float(low, "balancer.low", minimum=0.0)
    high = as_float(high, "balancer.high", minimum=low, strict=True)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + index)
    while True:  # U(0, high) can in principle give all zeros: draw again
        draws = low + (high - low) * torch.rand(num_tasks, generator=generator, dtype=torch.float64)
        if bool((draws > 0).all()):
            return (draws * (num_tasks / draws.sum())).tolist()
