"""An exact solver for small quadratic programs on the probability simplex Δ = {w ≥ 0, Σ_i w_i = 1}:

    min_{w ∈ Δ}  ½ wᵀ Q w + cᵀ w,      Q positive semi-definite, one variable per task.

MGDA's min-norm point is this problem with Q = K (the tasks' Gram matrix), c = 0; CAGrad's inner
problem is a sequence of them (:mod:`gradnorm.balancers.cagrad`). The references use Frank-Wolfe
(Sener & Koltun) or SciPy's SLSQP (CAGrad); this project has no SciPy dependency and solves the
problem exactly with a primal active-set method (Nocedal & Wright, Numerical Optimization,
Algorithm 16.3): on the current set F of free variables it solves the equality-constrained problem
through its KKT system, steps until a variable hits zero (which then joins the active set), and
frees the active variable with the most negative Lagrange multiplier until none is negative. A few
iterations from the previous step's solution (warm start) suffice. The toy's gradients are nearly
collinear, so Q is nearly singular: a ridge of 1e-12 · mean(diag Q) keeps the KKT systems solvable.
"""

from __future__ import annotations

import numpy as np

RIDGE = 1e-12


def solve_simplex_qp(q: np.ndarray, c: np.ndarray | None = None, start: np.ndarray | None = None,
                     max_iter: int = 200, tol: float = 1e-12) -> np.ndarray:
    """argmin_{w ∈ Δ} ½ wᵀ Q w + cᵀ w (exact up to rounding), from ``start`` if given."""
    n = q.shape[0]
    c = np.zeros(n) if c is None else np.asarray(c, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    q = q + RIDGE * max(float(np.trace(q)) / n, 1e-300) * np.eye(n)
    if start is None or not np.all(np.asarray(start) >= 0) or np.asarray(start).sum() <= 0:
        x = np.full(n, 1.0 / n)
    else:
        x = np.asarray(start, dtype=np.float64) / np.asarray(start).sum()
    active = x <= 0
    x[active] = 0.0
    scale = max(float(np.abs(q).max()), float(np.abs(c).max()), 1e-300)
    for _ in range(max_iter):
        free = np.flatnonzero(~active)
        grad = q @ x + c
        m = free.size
        kkt = np.zeros((m + 1, m + 1))
        kkt[:m, :m] = q[np.ix_(free, free)]
        kkt[:m, m] = kkt[m, :m] = 1.0
        rhs = np.concatenate([-grad[free], [0.0]])
        solution = np.linalg.lstsq(kkt, rhs, rcond=None)[0]
        p, mu = solution[:m], solution[m]
        if np.abs(p).max(initial=0.0) <= tol:
            multipliers = grad + mu  # λ_j for the active variables (x_j = 0)
            candidates = np.flatnonzero(active & (multipliers < -tol * scale))
            if candidates.size == 0:
                break
            active[candidates[np.argmin(multipliers[candidates])]] = False
            continue
        step, blocking = 1.0, None
        for k, i in enumerate(free):
            if p[k] < 0 and -x[i] / p[k] < step:
                step, blocking = -x[i] / p[k], i
        x[free] += step * p
        if blocking is not None:
            x[blocking] = 0.0
            active[blocking] = True
    x = np.maximum(x, 0.0)
    return x / x.sum()
