"""MGDA, multiple-gradient descent (Sener & Koltun, NeurIPS 2018), with MGDA-UB.

The shared parameters follow the min-norm point of the convex hull of the tasks' gradients:

    α* = argmin_{α ∈ Δ} || Σ_i α_i g_i ||²,   Δ = {α ≥ 0, Σ_i α_i = 1},   d = Σ_i α*_i g_i,

which is zero at a Pareto-stationary point and otherwise a descent direction for every task
(their Eq. 3–4). For two tasks the minimiser is closed form (their Algorithm 1):

    α_1 = clip( (g_2 − g_1) · g_2 / ||g_1 − g_2||², 0, 1 ),   α_2 = 1 − α_1.

For more tasks the paper uses Frank-Wolfe (Algorithm 2); here the same problem is solved exactly
with an active-set solver (:mod:`gradnorm.balancers.simplex`), warm-started.

MGDA-UB (their §3.3) takes the gradients at the shared representation z instead of on the shared
parameters (``at="representation"``); it minimises an upper bound and needs one backward per head
instead of one per task through the trunk. ``normalization`` (their code's options; the paper's
experiments normalise, this default does not) rescales each g_i before α is computed:
``"none"``, ``"l2"`` (g_i/||g_i||), ``"loss"`` (g_i/L_i), ``"loss+"`` (g_i/(L_i ||g_i||)). The step
is always d = Σ_i α_i g_i on the unscaled gradients, as in their code; the heads get ∇ L_i.
"""

from __future__ import annotations

import numpy as np
import torch

from gradnorm.balancers.gradients import GradientBalancer
from gradnorm.balancers.simplex import solve_simplex_qp

NORMALIZATIONS = ("none", "l2", "loss", "loss+")


class MGDA(GradientBalancer):
    """The min-norm convex combination of the tasks' gradients.

    Args:
        num_tasks: T.
        at: ``"shared"`` (MGDA) or ``"representation"`` (MGDA-UB).
        normalization: ``"none"``, ``"l2"``, ``"loss"`` or ``"loss+"`` (see the module docstring).
        max_iter, tol: the solver's limits for T > 2.
    """

    name, label, color, log_prefix, needs = "mgda", "MGDA", "#17BECF", "mgda/", "shared"
    weight_scale = "sum=1"  # α on the simplex

    def __init__(self, num_tasks: int, at: str = "shared", normalization: str = "none",
                 max_iter: int = 200, tol: float = 1e-9):
        super().__init__(num_tasks, at=at)
        if normalization not in NORMALIZATIONS:
            raise ValueError(f"normalization must be one of {list(NORMALIZATIONS)}, got {normalization!r}")
        self.normalization, self.max_iter, self.tol = normalization, int(max_iter), float(tol)
        # The solver's warm start (the last α), kept in the state dict so that a resumed run continues exactly.
        self.register_buffer("solver_start", torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64))

    def coefficients(self, gram, losses):
        scale = normalization_scale(gram, losses, self.normalization)
        alpha = min_norm_weights(gram * np.outer(scale, scale), self.solver_start.cpu().numpy(),
                                 self.max_iter, self.tol)
        self.solver_start.copy_(torch.from_numpy(alpha))
        return alpha


def normalization_scale(gram: np.ndarray, losses, normalization: str) -> np.ndarray:
    """The factor s_i of ĝ_i = s_i g_i for each normalisation."""
    norms = np.sqrt(np.maximum(np.diag(gram), 0.0))
    losses = np.asarray(losses, dtype=np.float64)
    if normalization == "none":
        return np.ones_like(norms)
    if normalization == "l2":
        return 1.0 / np.maximum(norms, 1e-12)
    if normalization == "loss":
        return 1.0 / np.maximum(losses, 1e-12)
    return 1.0 / np.maximum(losses * norms, 1e-12)


def min_norm_weights(gram: np.ndarray, start=None, max_iter: int = 200, tol: float = 1e-9) -> np.ndarray:
    """argmin_{α ∈ Δ} αᵀ K α: closed form for two tasks, the simplex solver otherwise."""
    num_tasks = gram.shape[0]
    if num_tasks == 1:
        return np.ones(1)
    if num_tasks == 2:
        denominator = gram[0, 0] + gram[1, 1] - 2 * gram[0, 1]
        a = 0.5 if denominator <= 0 else float(np.clip((gram[1, 1] - gram[0, 1]) / denominator, 0.0, 1.0))
        return np.array([a, 1.0 - a])
    k = gram / max(float(np.abs(gram).max()), 1e-300)  # the minimiser does not depend on the scale
    return solve_simplex_qp(k, start=start, max_iter=max_iter, tol=tol)
