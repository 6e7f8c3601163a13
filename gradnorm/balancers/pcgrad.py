"""PCGrad, gradient surgery (Yu, Kumar, Gupta, Levine, Hausman, Finn, NeurIPS 2020, Algorithm 1).

For each task i, its gradient is projected, in a random order of the other tasks j, onto the normal
plane of every g_j it conflicts with:

    g_i^PC ← g_i;   for j ≠ i in random order:  if g_i^PC · g_j < 0:
        g_i^PC ← g_i^PC − (g_i^PC · g_j / ||g_j||²) g_j

and the update is the sum of the projected gradients, d = Σ_i g_i^PC. Every g_i^PC is a linear
combination of the g_j, so the projections run on coefficient vectors c_i (g_i^PC = Σ_j c_ij g_j)
with the Gram matrix K: g_i^PC · g_j = Σ_k c_ik K_kj, and d = Σ_j β_j g_j with β = Σ_i c_i.

For two conflicting tasks (g_1 · g_2 < 0) this is the closed form
d = g_1 + g_2 − (g_1·g_2/||g_2||²) g_2 − (g_1·g_2/||g_1||²) g_1; without conflict, d = g_1 + g_2.

The random order of each update comes from a generator seeded with (``seed``, update number), the same on
every process and after a resume. The projection is done on the shared parameters (``at="shared"``, as
in the paper's multi-task experiments, where the heads receive their own gradients).
"""

from __future__ import annotations

import numpy as np
import torch

from gradnorm.balancers.gradients import GradientBalancer


class PCGrad(GradientBalancer):
    """Project away conflicting components of the tasks' gradients, then sum them.

    Args:
        num_tasks: T.
        seed: seeds the random order of the projections (with the step number).
        at: ``"shared"`` (the paper) or ``"representation"``.
    """

    name, label, color, log_prefix, needs = "pcgrad", "PCGrad", "#BCBD22", "pcgrad/", "shared"

    def __init__(self, num_tasks: int, seed: int = 0, at: str = "shared"):
        super().__init__(num_tasks, at=at)
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.seed = seed
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    def coefficients(self, gram, losses):
        # one order per update: every micro-batch of an update projects in the same order
        return project_conflicts(gram, np.random.default_rng([self.seed, int(self.num_steps)]))

    def step(self) -> None:
        super().step()
        self.num_steps.add_(1)


def project_conflicts(gram: np.ndarray, rng: np.random.Generator | None = None) -> np.ndarray:
    """β with Σ_i g_i^PC = Σ_j β_j g_j (Algorithm 1 on the Gram matrix ``gram``)."""
    num_tasks = gram.shape[0]
    total = np.zeros(num_tasks)
    for i in range(num_tasks):
        c = np.zeros(num_tasks)
        c[i] = 1.0
        others = [j for j in range(num_tasks) if j != i]
        order = rng.permutation(others) if rng is not None else others
        for j in order:
            dot = c @ gram[:, j]
            if dot < 0 and gram[j, j] > 0:
                c[j] -= dot / gram[j, j]
        total += c
    return total
