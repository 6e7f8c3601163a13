"""Nash-MTL, multi-task learning as a bargaining game (Navon, Shamsian, Achituve, Maron, Kawaguchi,
Chechik, Fetaya, ICML 2022).

The update d = Σ_i α_i g_i is the Nash bargaining solution of the tasks, characterised (their
Theorem 5.1, Eq. 5) by

    Gᵀ G α = 1/α   (element-wise),   α > 0,      i.e.   K α = 1/α  with K the Gram matrix,

so that every task's share of the update is g_i · d = 1/α_i. That α is the unique minimiser of the
strictly convex f(α) = ½ αᵀ K α − Σ_i log α_i (∇f = Kα − 1/α), which is found here exactly by
Newton's method with a backtracking line search that keeps α > 0, warm-started from the previous
step. (The authors' code approximates it with a sequence of convex problems in cvxpy, 20 steps.)

As in the authors' code (AvivNavon/nash-mtl, ``methods/weight_methods.py``, class ``NashMTL``, commit
cce1840): α solves the paper's equation on the raw K. Their solver works on K/‖K‖_F for conditioning but
puts the norm n = ‖K‖_F back into its constraint (α_i n · (K/n · α)_i ≥ 1, i.e. α_i (Kα)_i ≥ 1), so its α
is that of the raw K; here Newton runs on K/n too and the result is rescaled, α = α_n / √n (if
K α_n = n/α_n on the normalised problem, then K (α_n/√n) = √n/α_n). α is recomputed every ``update_every``
updates, and the shared parameters' direction is clipped to norm ``max_norm`` (1.0; 0 disables it).
``normalize_gram: true`` solves on K/‖K‖_F *without* the rescaling (α larger by √‖K‖_F, so the clipped
step is min(1, √(T‖K‖_F))-ish instead of 1): this suite's default until it was checked against their
code, kept for comparison. When K is singular the problem may have no solution; then the previous α is
kept. The heads get ∇ Σ_i L_i (the authors' code gives them ∇ Σ_i α_i L_i).
"""

from __future__ import annotations

import numpy as np
import torch

from gradnorm.balancers.gradients import GradientBalancer
from gradnorm.checks import as_float


class NashMTL(GradientBalancer):
    """The Nash bargaining combination of the tasks' gradients, K α = 1/α.

    Args:
        num_tasks: T.
        normalize_gram: false (the paper's equation on the raw K, as the authors' code solves it) or
            true (the equation on K/‖K‖_F: α does not depend on the gradients' scale).
        update_every: recompute α every this many steps (the authors' default: 1).
        max_norm: clip the shared gradient to this norm (0: no clipping).
        at: ``"shared"`` (the paper) or ``"representation"``.
        max_iter, tol: Newton's limits (stop when ||Kα − 1/α||_∞ ≤ tol).
    """

    name, label, color, log_prefix, needs = "nash_mtl", "Nash-MTL", "#E7298A", "nash_mtl/", "shared"

    def __init__(self, num_tasks: int, normalize_gram: bool = False, update_every: int = 1,
                 max_norm: float = 1.0, at: str = "shared", max_iter: int = 100, tol: float = 1e-9):
        super().__init__(num_tasks, at=at)
        if isinstance(update_every, bool) or not isinstance(update_every, int) or update_every < 1:
            raise ValueError(f"update_every must be a positive integer, got {update_every!r}")
        self.normalize_gram, self.update_every = bool(normalize_gram), update_every
        self.max_norm = as_float(max_norm, "max_norm", minimum=0.0)
        self.max_iter, self.tol = int(max_iter), float(tol)
        self.register_buffer("alpha", torch.ones(num_tasks, dtype=torch.float64))
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))

    def coefficients(self, gram, losses):
        if int(self.num_steps) % self.update_every == 0:
            norm = max(float(np.linalg.norm(gram)), 1e-300)
            # warm start on the normalised problem: the stored α is the raw one unless normalize_gram
            start = self.alpha.cpu().numpy() * (1.0 if self.normalize_gram else np.sqrt(norm))
            alpha = nash_weights(gram / norm, start, self.max_iter, self.tol)
            if alpha is not None:
                self.alpha.copy_(torch.from_numpy(alpha if self.normalize_gram else alpha / np.sqrt(norm)))
        return self.alpha.cpu().numpy().copy()  # a copy: the buffer changes at the next update

    def step(self) -> None:
        super().step()
        self.num_steps.add_(1)

    def adjust_direction(self, direction):
        """Clip the shared direction's norm to ``max_norm``, as ``torch.nn.utils.clip_grad_norm_`` would
        (the authors' code clips the shared parameters' gradient after its backward); the weights
        reported are then the clipped coefficients c·α, those the direction is made of."""
        if self.max_norm <= 0:
            return 1.0, {}
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(d.detach()) for d in direction]))
        coefficient = torch.clamp(self.max_norm / (norm + 1e-6), max=1.0)
        for d in direction:
            d.mul_(coefficient.to(d.dtype))
        return float(coefficient), {"nash_mtl/grad_norm": float(norm)}


def nash_weights(gram: np.ndarray, start=None, max_iter: int = 100, tol: float = 1e-9) -> np.ndarray | None:
    """The α > 0 with K α = 1/α (Newton on f(α) = ½αᵀKα − Σ log α_i); None if it does not converge."""
    num_tasks = gram.shape[0]
    alpha = np.ones(num_tasks) if start is None or not np.all(np.asarray(start) > 0) else np.array(start, float)

    def f(a):
        return 0.5 * a @ gram @ a - np.log(a).sum()

    for _ in range(max_iter):
        residual = gram @ alpha - 1.0 / alpha
        if np.abs(residual).max() <= tol * max(1.0, np.abs(1.0 / alpha).max()):
            return alpha
        hessian = gram + np.diag(1.0 / alpha**2)
        try:
            step = np.linalg.solve(hessian, -residual)
        except np.linalg.LinAlgError:
            return None
        t, f0, slope = 1.0, f(alpha), residual @ step
        while True:  # stay in α > 0 and decrease f (Armijo)
            candidate = alpha + t * step
            if np.all(candidate > 0) and f(candidate) <= f0 + 1e-4 * t * slope:
                break
            t *= 0.5
            if t < 1e-12:
                return None
        alpha = candidate
    residual = gram @ alpha - 1.0 / alpha
    return alpha if np.abs(residual).max() <= 1e-6 * max(1.0, np.abs(1.0 / alpha).max()) else None
