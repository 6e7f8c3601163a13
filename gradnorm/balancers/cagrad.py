"""CAGrad, conflict-averse gradient descent (Liu, Liu, Jin, Stone, Liu, NeurIPS 2021).

With g_0 = (1/T) Σ_i g_i the average gradient, CAGrad looks, within a ball around g_0, for the
direction that most improves the worst task (their Eq. 2):

    max_d min_i g_i · d   s.t.  ||d − g_0|| ≤ c ||g_0||,

whose dual (their Eq. 3–4) is a problem over the simplex in the task weights w:

    w* = argmin_{w ∈ Δ}  g_wᵀ g_0 + √φ ||g_w||,   g_w = Σ_i w_i g_i,   φ = c² ||g_0||²,
    d  = g_0 + (√φ / ||g_w*||) g_w*.

Everything is in the Gram matrix K: g_wᵀ g_0 = wᵀ K 1/T, ||g_w||² = wᵀ K w, ||g_0||² = 1ᵀK1/T².
c = 0.4 is the paper's value for NYUv2. The authors' code divides d by (1 + c²) (``rescale=1``,
the default here; 0: no division; 2: divide by 1 + c) and adds 1e-8 under the square roots, as here.

The inner problem (their code: SciPy's SLSQP) is solved here through r√x = min_{s>0} (r/2)(x/s + s)
with r = c||g_0||: for fixed s, w(s) solves the quadratic program min_{w ∈ Δ} wᵀKb + (r/2s) wᵀKw
exactly (the active-set solver of :mod:`gradnorm.balancers.simplex`), and s is the fixed point
s = ||g_w(s)|| (with ε), found by the secant method until it holds to ``tol`` (relative),
warm-started from the previous step's w. The heads get ∇ Σ_i L_i.
"""

from __future__ import annotations

import numpy as np
import torch

from gradnorm.balancers.gradients import GradientBalancer
from gradnorm.balancers.simplex import solve_simplex_qp
from gradnorm.checks import as_float

EPS = 1e-8


class CAGrad(GradientBalancer):
    """The average gradient, corrected towards the worst-off task within a ball of radius c||g_0||.

    Args:
        num_tasks: T.
        c: the ball's relative radius (paper: 0.4; c = 0 is the average gradient).
        rescale: 0, 1 (divide d by 1 + c², the authors' default) or 2 (by 1 + c).
        at: ``"shared"`` (the paper) or ``"representation"``.
        max_iter, tol: the inner solver's limits.
    """

    name, label, color, log_prefix, needs = "cagrad", "CAGrad", "#7B3294", "cagrad/", "shared"

    def __init__(self, num_tasks: int, c: float = 0.4, rescale: int = 1, at: str = "shared",
                 max_iter: int = 100, tol: float = 1e-10):
        super().__init__(num_tasks, at=at)
        self.c = as_float(c, "c", minimum=0.0)
        if rescale not in (0, 1, 2):
            raise ValueError(f"rescale must be 0, 1 or 2, got {rescale!r}")
        self.rescale, self.max_iter, self.tol = rescale, int(max_iter), float(tol)
        self.register_buffer("solver_start", torch.full((num_tasks,), 1.0 / num_tasks, dtype=torch.float64))

    def coefficients(self, gram, losses):
        w = cagrad_weights(gram, self.c, self.solver_start.cpu().numpy(), self.max_iter, self.tol)
        self.solver_start.copy_(torch.from_numpy(w))
        return cagrad_coefficients(gram, w, self.c, self.rescale)


def cagrad_objective(gram: np.ndarray, c: float):
    """F(w) = wᵀ K b + c ||g_0|| sqrt(wᵀ K w + ε), b = 1/T, and its gradient."""
    num_tasks = gram.shape[0]
    kb = gram @ np.full(num_tasks, 1.0 / num_tasks)
    radius = c * np.sqrt(kb.mean() + EPS)  # ||g_0||² = bᵀ K b = mean(K b)

    def fun(w):
        return float(w @ kb + radius * np.sqrt(w @ gram @ w + EPS))

    def grad(w):
        kw = gram @ w
        return kb + radius * kw / np.sqrt(w @ kw + EPS)

    return fun, grad


def cagrad_weights(gram, c, start=None, max_iter=100, tol=1e-10) -> np.ndarray:
    """w* of the dual problem (module docstring)."""
    num_tasks = gram.shape[0]
    gram = gram / max(float(np.abs(gram).max()), 1e-300)  # w* does not depend on the scale (but for ε)
    w = np.full(num_tasks, 1.0 / num_tasks) if start is None else np.asarray(start, dtype=np.float64)
    kb = gram @ np.full(num_tasks, 1.0 / num_tasks)
    radius = c * np.sqrt(kb.mean() + EPS)
    if radius == 0:  # c = 0: d = g_0 whatever w is
        return w
    state = {"w": w}

    def psi(s):  # ||g_w|| (with ε) of the QP's solution for this s
        state["w"] = solve_simplex_qp((radius / s) * gram, kb, state["w"])
        return float(np.sqrt(state["w"] @ gram @ state["w"] + EPS))

    # The fixed point s = ψ(s) by the secant method on ψ(s) − s (plain iteration as the fallback).
    s0 = float(np.sqrt(w @ gram @ w + EPS))
    s1 = psi(s0)
    f0 = s1 - s0
    for _ in range(max_iter):
        f1 = psi(s1) - s1
        if abs(f1) <= tol * s1:
            break
        s2 = s1 - f1 * (s1 - s0) / (f1 - f0) if f1 != f0 else s1 + f1
        if not (np.isfinite(s2) and s2 > 0):
            s2 = s1 + f1
        s0, f0, s1 = s1, f1, s2
    return state["w"]


def cagrad_coefficients(gram, w, c, rescale=1) -> np.ndarray:
    """β of d = Σ_i β_i g_i = g_0 + (c ||g_0|| / ||g_w||) g_w, rescaled."""
    num_tasks = gram.shape[0]
    b = np.full(num_tasks, 1.0 / num_tasks)
    g0_norm = np.sqrt(b @ gram @ b + EPS)
    gw_norm = np.sqrt(max(w @ gram @ w, 0.0))
    beta = b + (c * g0_norm / (gw_norm + EPS)) * w
    return beta / {0: 1.0, 1: 1 + c**2, 2: 1 + c}[rescale]
