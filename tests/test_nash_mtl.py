"""Nash-MTL: K α = 1/α in closed form for orthogonal gradients, against a brute-force minimisation of
½αᵀKα − Σ log α_i, with K normalised like the authors' code, and the shared gradient's clipping."""

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


def test_backward_normalises_the_gram_matrix_and_clips():
    # K = diag(1, 4), ||K||_F = √17: α = 17^{1/4} (1, 1/2); d = α1 g1 + α2 g2 = 17^{1/4} (1, 1).
    losses, theta, heads, _, _ = linear_problem([[1.0, 0.0], [0.0, 2.0]], head_grads=[1.0, 2.0])
    NashMTL(2, max_norm=0.0).backward(losses, [theta])
    assert theta.grad.tolist() == pytest.approx([17**0.25, 17**0.25])
    assert heads.grad.tolist() == [1.0, 2.0]
    losses, theta, _, _, _ = linear_problem([[1.0, 0.0], [0.0, 2.0]])
    info = NashMTL(2, max_norm=1.0).backward(losses, [theta])
    assert info["nash_mtl/grad_norm"] == pytest.approx(17**0.25 * 2**0.5)
    assert torch.linalg.norm(theta.grad).item() == pytest.approx(1.0, rel=1e-5)


def test_update_every_keeps_alpha_between_updates():
    balancer = NashMTL(2, update_every=2, normalize_gram=False)
    first = balancer.coefficients(np.diag([1.0, 4.0]), [])
    second = balancer.coefficients(np.diag([4.0, 1.0]), [])  # not recomputed
    third = balancer.coefficients(np.diag([4.0, 1.0]), [])
    assert first.tolist() == second.tolist() == pytest.approx([1.0, 0.5])
    assert third.tolist() == pytest.approx([0.5, 1.0])
