"""DWA: ones for the first two periods, then T·softmax(r/τ) of the period-average loss ratios."""

from __future__ import annotations

import math

import pytest
import torch

from gradnorm.balancers import DWA


def feed(balancer, history):
    weights_used = []
    for losses in history:
        weights_used.append(balancer.weights.tolist())
        balancer.backward(torch.tensor(losses, requires_grad=True))
        balancer.step()
    return weights_used


def test_weights_from_a_given_loss_history():
    # window 2: periods (steps 0-1), (2-3), (4-5). L̄(0) = (2, 4), L̄(1) = (1, 4), L̄(2) = (0.5, 1).
    history = [[3.0, 4.0], [1.0, 4.0], [1.5, 5.0], [0.5, 3.0], [0.5, 1.5], [0.5, 0.5]]
    used = feed(DWA(2, temperature=2.0, window=2), history)
    assert used[:4] == [[1.0, 1.0]] * 4  # the first two periods (and until L̄(1) is known)
    # period 2 uses r = L̄(1)/L̄(0) = (0.5, 1): w = 2·softmax((0.25, 0.5))
    e1, e2 = math.exp(0.25), math.exp(0.5)
    assert used[4] == pytest.approx([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)], rel=1e-6)
    assert used[5] == used[4]


def test_next_period_and_temperature():
    history = [[2.0, 2.0], [1.0, 2.0], [1.0, 1.0]]
    balancer = DWA(2, temperature=0.5, window=1)
    feed(balancer, history)
    # r = L̄(2)/L̄(1) = (1, 0.5): w = 2·softmax((2, 1))
    e1, e2 = math.exp(2.0), math.exp(1.0)
    assert balancer.weights.tolist() == pytest.approx([2 * e1 / (e1 + e2), 2 * e2 / (e1 + e2)], rel=1e-6)


def test_gradient_is_the_weighted_sum_and_state_round_trips():
    balancer = DWA(2, window=1)
    feed(balancer, [[2.0, 1.0], [1.0, 1.0]])
    theta = torch.tensor([1.0, 1.0], requires_grad=True)
    w = balancer.weights
    balancer.backward(torch.stack([3 * theta[0], theta[1] ** 2]))
    assert theta.grad.tolist() == pytest.approx([3 * w[0].item(), 2 * w[1].item()])
    balancer.discard()  # that update is not taken: the state is as before it
    copy = DWA(2, window=1)
    copy.load_state_dict(balancer.state_dict())
    assert copy.weights.tolist() == balancer.weights.tolist()
    feed(copy, [[1.0, 3.0]])
    feed(balancer, [[1.0, 3.0]])
    assert copy.weights.tolist() == balancer.weights.tolist() != [1.0, 1.0]


def test_bad_options():
    with pytest.raises(ValueError, match="window must be a positive integer"):
        DWA(2, window=0)
    with pytest.raises(ValueError, match="temperature must be a number > 0"):
        DWA(2, temperature=0)
