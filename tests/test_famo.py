"""FAMO: one hand-worked pair of steps (weights c z_i / L_i, then Adam on J_zᵀ δ + γξ), its
behaviour (the task whose log-loss falls faster loses weight), and the state dict."""

from __future__ import annotations

import math

import pytest
import torch

from gradnorm.balancers import FAMO


def softmax(values):
    e = [math.exp(v) for v in values]
    return [x / sum(e) for x in e]


def test_two_hand_worked_steps():
    balancer = FAMO(2, gamma=0.001)
    theta = torch.tensor([1.0, 4.0], requires_grad=True)
    balancer.backward(theta * 1.0)  # L = (1, 4): z = (½, ½), w ∝ z/L = (½, ⅛) → (0.8, 0.2)
    assert theta.grad.tolist() == pytest.approx([0.8, 0.2])
    balancer.step()
    # L(θ_{t+1}) = (0.5, 3.5): δ = (log 2, log 4/3.5); ∇ξ = z ⊙ (δ − zᵀδ) + γ·0 = ±(δ_1 − δ_2)/4
    # Adam's first step moves each ξ_i by lr·sign(∇ξ_i): ξ = (−0.025, +0.025)
    theta = torch.tensor([0.5, 3.5], requires_grad=True)
    info = balancer.backward(theta * 1.0)
    z = softmax([-0.025, 0.025])
    assert [info["famo/z_0"], info["famo/z_1"]] == pytest.approx(z, rel=1e-5)
    w = [z[0] / 0.5, z[1] / 3.5]
    assert theta.grad.tolist() == pytest.approx([w[0] / sum(w), w[1] / sum(w)], rel=1e-5)


def test_the_task_whose_loss_falls_faster_loses_weight():
    balancer = FAMO(2, gamma=0.0)
    for t in range(50):  # task 0 halves every step, task 1 falls by 1%
        losses = torch.tensor([0.5**t, 0.99**t], dtype=torch.float64, requires_grad=True)
        info = balancer.backward(losses)
        balancer.step()
    assert info["famo/z_0"] < 0.3 < 0.7 < info["famo/z_1"]


def test_state_dict_round_trip_continues_exactly():
    a = FAMO(3)
    for losses in ([1.0, 2.0, 3.0], [0.9, 1.5, 2.9]):
        a.backward(torch.tensor(losses, requires_grad=True))
        a.step()
    b = FAMO(3)
    b.load_state_dict(a.state_dict())
    for balancer in (a, b):
        balancer.backward(torch.tensor([0.8, 1.4, 2.0], requires_grad=True))
        balancer.step()
        balancer.backward(torch.tensor([0.7, 1.3, 1.9], requires_grad=True))
    assert a.weights.tolist() == b.weights.tolist()
    assert a.logits.tolist() == b.logits.tolist() != [0.0, 0.0, 0.0]


def test_losses_below_the_bound_are_refused():
    with pytest.raises(ValueError, match="FAMO needs losses above min_losses"):
        FAMO(2, min_losses=[1.0, 0.0]).backward(torch.tensor([0.5, 1.0], requires_grad=True))
