"""MGDA: the two-task closed form, T=3 against a brute-force grid over the simplex, the optional
normalisations, and MGDA-UB's gradients at the representation on a real MLP."""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pytest
import torch
from method_cases import linear_problem

from gradnorm.balancers import MGDA
from gradnorm.balancers.mgda import min_norm_weights
from gradnorm.models import MLP


def test_two_tasks_closed_form():
    # min_a ||a (1,0) + (1-a) (0,2)||² = a² + 4(1-a)²: a = 4/5, d = (0.8, 0.4).
    losses, theta, heads, _, _ = linear_problem([[1.0, 0.0], [0.0, 2.0]], head_grads=[1.0, -1.0])
    MGDA(2).backward(losses, [theta])
    assert theta.grad.tolist() == pytest.approx([0.8, 0.4], abs=1e-12)
    assert heads.grad.tolist() == [1.0, -1.0]


def test_two_tasks_one_inside_the_other_gives_the_shorter():
    # g2 = (1, 0), g1 = (3, 0): the min-norm point is g2 itself (α clipped to the simplex's edge).
    assert min_norm_weights(np.array([[9.0, 3.0], [3.0, 1.0]])).tolist() == [0.0, 1.0]


def brute_force_min_norm(gram, step=0.002):
    best, best_value = None, np.inf
    n = int(round(1 / step))
    for i, j in itertools.product(range(n + 1), repeat=2):
        if i + j <= n:
            a = np.array([i, j, n - i - j]) / n
            value = a @ gram @ a
            if value < best_value:
                best, best_value = a, value
    return best, best_value


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_three_tasks_against_brute_force(seed):
    g = np.random.default_rng(seed).standard_normal((3, 4))
    g[2] = -0.5 * g[0] + 0.2 * g[2]
    gram = g @ g.T
    alpha = min_norm_weights(gram)
    _, best_value = brute_force_min_norm(gram)
    assert alpha.sum() == pytest.approx(1.0) and (alpha >= 0).all()
    assert alpha @ gram @ alpha <= best_value + 1e-12
    assert alpha @ gram @ alpha >= best_value - 1e-2 * max(best_value, 1e-3)  # the grid is close


def test_optimality_conditions_for_ten_tasks():
    # KKT of min αᵀKα on the simplex: (Kα)_i = αᵀKα where α_i > 0, ≥ where α_i = 0.
    g = np.random.default_rng(4).standard_normal((10, 30))
    gram = g @ g.T
    alpha = min_norm_weights(gram)
    value, kalpha = alpha @ gram @ alpha, gram @ alpha
    assert np.all(kalpha >= value - 1e-7)
    assert np.allclose(kalpha[alpha > 1e-6], value, atol=1e-6)


def test_l2_normalisation_weights_unit_gradients_but_steps_on_the_raw_ones():
    # ĝ = (1,0), (0,1): α = (1/2, 1/2); d = α1 g1 + α2 g2 = (0.5, 1.0) on the raw gradients.
    losses, theta, _, _, _ = linear_problem([[1.0, 0.0], [0.0, 2.0]])
    MGDA(2, normalization="l2").backward(losses, [theta])
    assert theta.grad.tolist() == pytest.approx([0.5, 1.0])


def test_mgda_ub_uses_the_gradients_at_the_representation():
    torch.manual_seed(0)
    net = MLP(5, {"a": 2, "b": 3}, width=6, depth=2).double()
    x = torch.randn(7, 5, dtype=torch.float64)
    predictions, features = net(x)
    losses = torch.stack([(predictions["a"] ** 2).mean(), ((predictions["b"] - 1) ** 2).mean()])
    # Independently: z-gradients per task, the closed form α, then ∇_θ Σ α_i L_i on the trunk.
    z_grads = [torch.autograd.grad(losses[i], features[i], retain_graph=True)[0].flatten() for i in range(2)]
    k = torch.stack(z_grads) @ torch.stack(z_grads).T
    a = float(torch.clamp((k[1, 1] - k[0, 1]) / (k[0, 0] + k[1, 1] - 2 * k[0, 1]), 0, 1))
    trunk = net.shared_parameters()
    expected_trunk = torch.autograd.grad(a * losses[0] + (1 - a) * losses[1], trunk, retain_graph=True)
    expected_heads = torch.autograd.grad(losses.sum(), list(net.heads.parameters()), retain_graph=True)
    balancer = MGDA(2, at="representation")
    assert balancer.needs == "last_shared"
    balancer.backward(losses, net.last_shared_parameters(), features=features)
    for p, e in zip(trunk, expected_trunk):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)
    for p, e in zip(net.heads.parameters(), expected_heads):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)
    assert balancer.weights.tolist() == pytest.approx([a, 1 - a], abs=1e-6)


def test_bad_options():
    with pytest.raises(ValueError, match="normalization must be one of"):
        MGDA(2, normalization="max")
    with pytest.raises(ValueError, match="at must be 'shared' or 'representation'"):
        MGDA(2, at="heads")
    with pytest.raises(ValueError, match="needs the per-task features"):
        MGDA(2, at="representation").backward(torch.ones(2, requires_grad=True), [])


def test_a_graph_that_cannot_be_batched_falls_back_task_by_task_with_one_warning(monkeypatch):
    """The shared gradients.vjps route (as GradNorm's under torch.compile): a batched backward that
    fails gives way to one backward per task, the same direction, and one warning."""
    original = torch.autograd.grad

    def no_batching(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented for aten::mm.out\nmore")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_batching)
    balancer = MGDA(2)
    with pytest.warns(RuntimeWarning, match=r"MGDA: the backward pass cannot be batched .*aten::mm\.out\); one per"):
        losses, theta, heads, _, _ = linear_problem([[1.0, 0.0], [0.0, 2.0]], head_grads=[1.0, -1.0])
        balancer.backward(losses, [theta])
    assert theta.grad.tolist() == pytest.approx([0.8, 0.4], abs=1e-12) and heads.grad.tolist() == [1.0, -1.0]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no second warning: the balancer goes task by task from now on
        losses, theta, _, _, _ = linear_problem([[1.0, 0.0], [0.0, 2.0]])
        balancer.backward(losses, [theta])
    assert theta.grad.tolist() == pytest.approx([0.8, 0.4], abs=1e-12)
