"""IMTL-G: two-task closed form, and for T tasks the defining property (equal projections of d on
every unit gradient, Σ α = 1), at the shared parameters and at the representation."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from method_cases import linear_problem

from gradnorm.balancers import IMTL
from gradnorm.balancers.imtl import imtl_g_weights
from gradnorm.models import MLP


def test_two_tasks_closed_form():
    # g1 = (1, 0), g2 = (0, 2): d = (a, 2(1 − a)); d·u1 = a = d·u2 = 2(1 − a) ⇒ a = 2/3, d = (2/3, 2/3).
    losses, theta, heads, _, _ = linear_problem([[1.0, 0.0], [0.0, 2.0]], head_grads=[1.0, 5.0])
    IMTL(2, at="shared").backward(losses, [theta])
    assert theta.grad.tolist() == pytest.approx([2 / 3, 2 / 3])
    assert heads.grad.tolist() == [1.0, 5.0]


@pytest.mark.parametrize("num_tasks", [3, 5])
def test_equal_projections_on_every_unit_gradient(num_tasks):
    g = np.random.default_rng(num_tasks).standard_normal((num_tasks, 8)) * np.arange(1, num_tasks + 1)[:, None]
    alpha = imtl_g_weights(g @ g.T)
    d = alpha @ g
    u = g / np.linalg.norm(g, axis=1, keepdims=True)
    assert alpha.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(u @ d, np.full(num_tasks, (u @ d)[0]), rtol=1e-9)


def test_at_the_representation_the_trunk_gets_sum_alpha_grad():
    torch.manual_seed(1)
    net = MLP(4, {"a": 2, "b": 2, "c": 1}, width=5, depth=2).double()
    predictions, features = net(torch.randn(6, 4, dtype=torch.float64))
    losses = torch.stack([(predictions[k] ** 2).mean() * s for k, s in zip("abc", (1.0, 3.0, 0.5))])
    z = torch.stack([torch.autograd.grad(losses[i], features[i], retain_graph=True)[0].flatten() for i in range(3)])
    alpha = imtl_g_weights((z @ z.T).numpy())
    expected = torch.autograd.grad((torch.tensor(alpha) * losses).sum(), net.shared_parameters(), retain_graph=True)
    IMTL(3).backward(losses, net.last_shared_parameters(), features=features)
    for p, e in zip(net.shared_parameters(), expected):
        torch.testing.assert_close(p.grad, e, rtol=1e-10, atol=1e-12)
