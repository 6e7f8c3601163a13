"""RLW, random loss weighting (Lin, Ye, Xu, Shi, Zhang, TMLR 2022, §3, Eq. 3).

At every step the weights are drawn afresh,

    λ = softmax(λ̃),   λ̃ ~ N(0, I)   (their default; ``distribution="uniform"``: λ̃ ~ U(0, 1)^T),

and the network is trained on ∇ Σ_i λ_i L_i. The paper's weights sum to 1 (``total: 1``); with
``total: T`` they sum to T like the other balancers here (with Adam the overall scale matters
little). Step t's draw comes from a generator seeded with (``seed``, t): the same on every process
and after a resume.
"""

from __future__ import annotations

import numpy as np
import torch

from gradnorm.balancers.base import Balancer, sum_scale
from gradnorm.checks import as_float


class RLW(Balancer):
    """Random weights, softmax of a standard normal draw, new at every step.

    Args:
        num_tasks: T.
        distribution: ``"normal"`` (the paper's default) or ``"uniform"``.
        total: Σ_i λ_i (paper: 1).
        seed: seeds the draws (with the step number).
    """

    name, label, color, log_prefix, needs = "rlw", "RLW", "#1B1B7A", None, "last_shared"

    def __init__(self, num_tasks: int, distribution: str = "normal", total: float = 1.0, seed: int = 0):
        super().__init__(num_tasks)
        if distribution not in ("normal", "uniform"):
            raise ValueError(f"distribution must be 'normal' or 'uniform', got {distribution!r}")
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.distribution, self.seed = distribution, seed
        self.total = as_float(total, "total", minimum=0.0, strict=True)
        self.weight_scale = sum_scale(self.total, num_tasks)
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))
        self._cache: tuple[int, torch.Tensor] | None = None

    @property
    def weights(self):
        """This step's λ (the draw of step ``num_steps``)."""
        step = int(self.num_steps)
        if self._cache is None or self._cache[0] != step:
            self._cache = (step, rlw_weights(self.num_tasks, self.seed, step, self.distribution, self.total))
        return self._cache[1].clone()

    def step(self) -> None:
        self.num_steps += 1


def rlw_weights(num_tasks: int, seed: int, step: int, distribution: str = "normal", total: float = 1.0):
    """total · softmax(λ̃) for the draw λ̃ of step ``step``."""
    rng = np.random.default_rng([seed, step])
    logits = rng.standard_normal(num_tasks) if distribution == "normal" else rng.uniform(size=num_tasks)
    logits = logits - logits.max()
    weights = np.exp(logits) / np.exp(logits).sum()
    return torch.tensor(total * weights, dtype=torch.float32)
