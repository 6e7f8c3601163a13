"""Nash-MTL: K α = 1/α in closed form for orthogonal gradients, against a brute-force minimisation of
½αᵀKα − Σ log α_i; the default solves the raw K's equation as the authors' code does (their solver
normalises K but puts the norm back into its constraint), ``normalize_gram`` the normalised K's; the
shared direction's clipping."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from method_cases import linear_problem

from gradnorm.balancers import NashMTL
from gradnorm.balancers.nash_mtl import nash_weights


def test_orthogonal_gradients_closed_form():
    # K = diag(1, 4): α_i² K_ii = 1 ⇒ α = (1, 1/2); every task's share g_i · d = 1/α_i.
    gram = np.diag([1.0, 4.0])
    assert nash_weights(gram).tolist() == pytest.approx([1.0, 0.5])


def test_two_tasks_against_brute_force():
    g = np.array([[1.0, 0.5, 0.0], [-0.3, 2.0, 1.0]])
    gram = g @ g.T
    alpha = nash_weights(gram)
    grid = np.linspace(0.01, 3, 600)
    f = min(0.5 * np.array([a, b]) @ gram @ np.array([a, b]) - np.log(a) - np.log(b)
            for a, b in itertools.product(grid, grid))
    f_alpha = 0.5 * alpha @ gram @ alpha - np.log(alpha).sum()
    assert f_alpha <= f + 1e-12 and f_alpha >= f - 1e-3
    np.testing.assert_allclose(gram @ alpha, 1 / alpha, rtol=1e-8)  # the bargaining condition


def test_ten_tasks_satisfy_the_bargaining_condition():
    g = np.random.default_rng(0).standard_normal((10, 40))
    gram = g @ g.T
    alpha = nash_weights(gram)
    assert (alpha > 0).all()
    np.testing.assert_allclose(gram @ alpha, 1 / alpha, rtol=1e-7)


def test_backward_solves_the_raw_gram_equation_by_default_and_clips():
    # K = diag(1, 4): α = (1, 1/2), d = α1 g1 + α2 g2 = (1, 1); the heads get ∇ Σ L_i.
    losses, theta, heads, _, _ = linear_problem([[1.0, 0.0], [0.0, 2.0]], head_grads=[1.0, 2.0])
    NashMTL(2, max_norm=0.0).backward(losses, [theta])
    assert theta.grad.tolist() == pytest.approx([1.0, 1.0])
    assert heads.grad.tolist() == [1.0, 2.0]
    # normalize_gram: the equation on K/||K||_F (||K||_F = √17): α = 17^{1/4} (1, 1/2), d = 17^{1/4} (1, 1)
    losses, theta, _, _, _ = linear_problem([[1.0, 0.0], [0.0, 2.0]])
    NashMTL(2, max_norm=0.0, normalize_gram=True).backward(losses, [theta])
    assert theta.grad.tolist() == pytest.approx([17**0.25, 17**0.25])
    losses, theta, _, _, _ = linear_problem([[1.0, 0.0], [0.0, 2.0]])
    info = NashMTL(2, max_norm=1.0).backward(losses, [theta])
    assert info["nash_mtl/grad_norm"] == pytest.approx(2**0.5)
    assert torch.linalg.norm(theta.grad).item() == pytest.approx(1.0, rel=1e-5)


def authors_constraint_residual(gram: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """The authors' solver (AvivNavon/nash-mtl, methods/weight_methods.py, NashMTL) normalises K by n =
    ||K||_F and constrains −log(α_i n) − log((K/n α)_i) ≤ 0, tight at the optimum: α_i (K α)_i = 1."""
    norm = np.linalg.norm(gram)
    return alpha * norm * ((gram / norm) @ alpha) - 1.0


def test_the_default_step_is_the_authors_on_small_conflicting_gradients():
    # Two conflicting gradients ×0.02: the authors' α is ~1/0.02 larger than on K/||K||, so the update
    # d = Σ α_i g_i has norm √(Σ α_i (Kα)_i) = √T before the clip: clipped to 1 (the issue: 0.27 vs 1.00).
    g = 0.02 * np.array([[1.0, 0.2], [-0.6, 1.0]])
    gram = g @ g.T
    balancer = NashMTL(2)
    alpha = balancer.coefficients(gram, [])
    np.testing.assert_allclose(authors_constraint_residual(gram, alpha), 0.0, atol=1e-7)
    losses, theta, _, _, _ = linear_problem(g.tolist())
    NashMTL(2).backward(losses, [theta])
    assert torch.linalg.norm(theta.grad).item() == pytest.approx(1.0, rel=1e-5)
    losses, theta, _, _, _ = linear_problem(g.tolist())
    NashMTL(2, normalize_gram=True).backward(losses, [theta])
    assert torch.linalg.norm(theta.grad).item() == pytest.approx((2 * np.linalg.norm(gram)) ** 0.5, rel=1e-4)


def test_update_every_keeps_alpha_between_updates():
    balancer = NashMTL(2, update_every=2, normalize_gram=False)
    first = balancer.coefficients(np.diag([1.0, 4.0]), [])
    balancer.step()
    second = balancer.coefficients(np.diag([4.0, 1.0]), [])  # not recomputed
    balancer.step()
    third = balancer.coefficients(np.diag([4.0, 1.0]), [])
    assert first.tolist() == second.tolist() == pytest.approx([1.0, 0.5])
    assert third.tolist() == pytest.approx([0.5, 1.0])
