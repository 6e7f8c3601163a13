"""IMTL-G, impartial multi-task learning, gradient balance (Liu, Li, Kuang, Xue, Chen, Yang, Liao,
Zhang, ICLR 2021, §3.2).

IMTL-G finds the combination d = Σ_i α_i g_i, Σ_i α_i = 1, whose projections onto every task's
unit gradient u_i = g_i/||g_i|| are equal (d · u_1 = d · u_i for all i). With

    D = [g_1 − g_2, …, g_1 − g_T]ᵀ,   U = [u_1 − u_2, …, u_1 − u_T]ᵀ,

the closed form (their Eq. 9) is

    α_{2:T} = g_1 Uᵀ (D Uᵀ)⁻¹,   α_1 = 1 − Σ_{i≥2} α_i.

All of it is in the Gram matrix K: g_i · u_j = K_ij / ||g_j||, ||g_j|| = √K_jj. The paper computes
the gradients at the shared representation z (``at="representation"``, the default) and
backpropagates Σ_i α_i ∂L_i/∂z into the trunk; ``at="shared"`` uses the shared parameters. A
singular D Uᵀ (e.g. two identical gradients) is solved by least squares. The heads get their own
task's gradient, unscaled (IMTL-G alone, without IMTL-L's loss scaling).
"""

from __future__ import annotations

import numpy as np

from gradnorm.balancers.gradients import GradientBalancer


class IMTL(GradientBalancer):
    """IMTL-G: the combination with equal projections on every task's gradient direction.

    Args:
        num_tasks: T.
        at: ``"representation"`` (the paper) or ``"shared"``.
    """

    name, label, color, log_prefix, needs = "imtl", "IMTL-G", "#000000", "imtl/", "last_shared"
    weight_scale = "sum=1"  # Σ α_i = 1

    def __init__(self, num_tasks: int, at: str = "representation"):
        super().__init__(num_tasks, at=at)

    def coefficients(self, gram, losses):
        return imtl_g_weights(gram)


def imtl_g_weights(gram: np.ndarray) -> np.ndarray:
    """α of IMTL-G (module docstring) from the Gram matrix."""
    num_tasks = gram.shape[0]
    if num_tasks == 1:
        return np.ones(1)
    norms = np.sqrt(np.maximum(np.diag(gram), 1e-300))
    g_dot_u = gram / norms[None, :]  # (g_i · u_j)
    # D Uᵀ: rows i = 2..T (g_1 − g_i), columns j = 2..T (u_1 − u_j)
    du = (g_dot_u[0, 0] - g_dot_u[0, 1:])[None, :] - (g_dot_u[1:, 0:1] - g_dot_u[1:, 1:])
    g1u = g_dot_u[0, 0] - g_dot_u[0, 1:]
    # α_{2:T} (a row vector) = g_1 Uᵀ (D Uᵀ)⁻¹  ⇔  (D Uᵀ)ᵀ α_{2:T}ᵀ = (g_1 Uᵀ)ᵀ
    rest = np.linalg.lstsq(du.T, g1u, rcond=None)[0]
    return np.concatenate([[1.0 - rest.sum()], rest])
