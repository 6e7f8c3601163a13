"""CAGrad: the dual's minimiser against a brute-force grid, and the primal property it promises
(d within the ball ||d − g_0|| ≤ c||g_0|| maximises min_i g_i · d, checked against sampled d)."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from method_cases import linear_problem

from gradnorm.balancers import CAGrad
from gradnorm.balancers.cagrad import cagrad_coefficients, cagrad_objective, cagrad_weights


def simplex_grid(num_tasks: int, n: int):
    for point in itertools.product(range(n + 1), repeat=num_tasks - 1):
        if sum(point) <= n:
            yield np.array([*point, n - sum(point)]) / n


@pytest.mark.parametrize("num_tasks,seed", [(2, 0), (3, 1), (3, 2)])
def test_dual_minimiser_against_brute_force(num_tasks, seed):
    g = np.random.default_rng(seed).standard_normal((num_tasks, 5))
    g[1] = -g[0] + 0.5 * g[1]  # conflict
    gram = g @ g.T
    fun, _ = cagrad_objective(gram, 0.4)
    best = min(fun(w) for w in simplex_grid(num_tasks, 400 if num_tasks == 2 else 150))
    w = cagrad_weights(gram, 0.4)
    assert w.sum() == pytest.approx(1.0) and (w >= 0).all()
    assert fun(w) <= best + 1e-12
    assert fun(w) >= best - 1e-3 * abs(best)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_direction_maximises_the_worst_task_within_the_ball(seed):
    rng = np.random.default_rng(seed)
    g = rng.standard_normal((3, 4))
    g[2] = -0.8 * g[0] + 0.3 * g[2]
    c = 0.4
    gram = g @ g.T
    d = cagrad_coefficients(gram, cagrad_weights(gram, c), c, rescale=0) @ g
    g0 = g.mean(0)
    radius = c * np.linalg.norm(g0)
    assert np.linalg.norm(d - g0) == pytest.approx(radius, rel=1e-4)  # on the ball's boundary
    worst = (g @ d).min()
    directions = rng.standard_normal((200000, 4))
    samples = g0 + radius * directions / np.linalg.norm(directions, axis=1, keepdims=True)
    assert (samples @ g.T).min(axis=1).max() <= worst + 1e-6
    # and no nearby point of the ball's boundary does better either (local optimality)
    offsets = (d - g0)[None, :] + 1e-3 * radius * directions[:2000]
    nearby = g0 + radius * offsets / np.linalg.norm(offsets, axis=1, keepdims=True)
    assert (nearby @ g.T).min(axis=1).max() <= worst + 1e-9
    # while an arbitrary point (the average gradient's direction) is worse
    assert (g @ (g0 + radius * g0 / np.linalg.norm(g0))).min() < worst


def test_c_zero_is_the_average_gradient_and_rescale_divides():
    losses, theta, heads, g, _ = linear_problem([[1.0, 0.0], [-1.0, 2.0]], head_grads=[1.0, 1.0])
    CAGrad(2, c=0.0).backward(losses, [theta])
    assert theta.grad.tolist() == pytest.approx(g.mean(0).tolist())
    assert heads.grad.tolist() == [1.0, 1.0]
    gram = (g @ g.T).numpy()
    w = cagrad_weights(gram, 0.4)
    plain = cagrad_coefficients(gram, w, 0.4, rescale=0)
    assert cagrad_coefficients(gram, w, 0.4, rescale=1) == pytest.approx(plain / 1.16)
    assert cagrad_coefficients(gram, w, 0.4, rescale=2) == pytest.approx(plain / 1.4)


def test_bad_options():
    with pytest.raises(ValueError, match="c must be a number >= 0"):
        CAGrad(2, c=-1)
    with pytest.raises(ValueError, match="rescale must be 0, 1 or 2"):
        CAGrad(2, rescale=3)
