"""RLW: a fresh softmax-of-normal draw at every step, fixed by (seed, step), summing to ``total``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from gradnorm.balancers import RLW


def test_draws_are_softmax_of_a_seeded_normal_and_change_every_step():
    balancer = RLW(3, seed=4)
    draws = []
    for _ in range(400):
        draws.append(balancer.weights)
        balancer.step()
    draws = torch.stack(draws).double()
    rng = np.random.default_rng([4, 0])
    z = rng.standard_normal(3)
    assert draws[0].tolist() == pytest.approx((np.exp(z) / np.exp(z).sum()).tolist(), rel=1e-6)
    assert torch.allclose(draws.sum(1), torch.ones(400, dtype=torch.float64), atol=1e-6)
    assert len({tuple(d.tolist()) for d in draws}) == 400
    # E[softmax(z)_i] = 1/3 by symmetry; 400 draws: within ~4 standard errors
    assert draws.mean(0).tolist() == pytest.approx([1 / 3] * 3, abs=0.04)


def test_total_backward_and_resume():
    balancer = RLW(2, total=2.0, seed=1)
    balancer.step()
    w = balancer.weights
    assert w.sum().item() == pytest.approx(2.0)
    theta = torch.tensor([1.0, 2.0], requires_grad=True)
    balancer.backward(torch.stack([theta[0] * 5, theta[1] ** 2]))
    assert theta.grad.tolist() == pytest.approx([5 * w[0].item(), 4 * w[1].item()])
    copy = RLW(2, total=2.0, seed=1)
    copy.load_state_dict(balancer.state_dict())
    assert copy.weights.tolist() == w.tolist()
    assert RLW(2, total=2.0, seed=2).weights.tolist() != RLW(2, total=2.0, seed=1).weights.tolist()


def test_bad_options():
    with pytest.raises(ValueError, match="distribution must be"):
        RLW(2, distribution="bernoulli")
