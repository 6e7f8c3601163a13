"""Equal, fixed and uncertainty weighting: exact values on tiny cases, and the shared contract."""

import functools
import math

import pytest
import torch

from gradnorm.balancers import Balancer, EqualWeights, FixedWeights, GradNorm, Uncertainty

SGD = functools.partial(torch.optim.SGD, lr=0.1)


def _losses(W):
    return torch.stack([(W**2).sum(), 3 * W.sum()])


@pytest.mark.parametrize("make", [
    lambda: EqualWeights(2),
    lambda: FixedWeights(2, weights=[0.5, 2.0]),
    lambda: Uncertainty(2),
    lambda: GradNorm(2, alpha=1.5),
], ids=["equal", "fixed", "uncertainty", "gradnorm"])
def test_backward_accumulates_the_weighted_gradient_like_loss_backward(make):
    balancer = make()
    assert isinstance(balancer, Balancer) and isinstance(balancer, torch.nn.Module)
    W = torch.tensor([1.0, 2.0], requires_grad=True)
    W.grad = torch.tensor([10.0, 10.0])  # accumulates, as loss.backward() does
    w = balancer.weights
    assert w.shape == (2,) and not w.requires_grad
    balancer.backward(_losses(W), [W])
    expected = torch.tensor([10.0, 10.0]) + w[0] * 2 * torch.tensor([1.0, 2.0]) + w[1] * 3
    assert torch.allclose(W.grad, expected)
    balancer.step()


def test_balancer_parameters_get_no_gradient_from_the_network_loss():
    W = torch.tensor([1.0, 2.0], requires_grad=True)
    for balancer in (Uncertainty(2), GradNorm(2)):
        balancer.backward(_losses(W), [W])
        assert all(p.grad is None for p in balancer.parameters())


def test_equal_weights_are_ones():
    assert EqualWeights(3).weights.tolist() == [1.0, 1.0, 1.0]


def test_fixed_weights_as_given_or_normalised():
    assert FixedWeights(2, weights=[1, 3]).weights.tolist() == [1.0, 3.0]
    assert FixedWeights(2, weights=[1, 3], normalize=True).weights.tolist() == [0.5, 1.5]
    state = FixedWeights(2, weights=[1, 3]).state_dict()
    clone = FixedWeights(2, weights=[1, 1])
    clone.load_state_dict(state)
    assert clone.weights.tolist() == [1.0, 3.0]


@pytest.mark.parametrize("weights, message", [
    ([1.0], "list of 2 positive numbers .one per task., got 1"),
    ([1.0, 0.0], "weights must be a number > 0, got 0.0"),
    ([1.0, -2.0], "weights must be a number > 0, got -2.0"),
    (["a", 1.0], "weights must be a number > 0, got 'a'"),
    (None, "list of 2 positive numbers, got none"),
    (3.0, "list of 2 positive numbers, got 3.0"),
])
def test_fixed_weights_reject_bad_values(weights, message):
    with pytest.raises(ValueError, match=message):
        FixedWeights(2, weights=weights)


def test_uncertainty_one_hand_worked_step():
    # L_unc = Σ exp(-s_i) L_i + s_i; ∂/∂s_i = 1 - exp(-s_i) L_i = (1 - 2, 1 - 0.5) at s = 0.
    balancer = Uncertainty(2, optimizer=SGD)
    W = torch.tensor([1.0, 1.0], requires_grad=True)
    losses = torch.stack([W.sum(), 0.25 * W.sum()])  # (2, 0.5)
    info = balancer.backward(losses, [W])
    assert info["uncertainty/objective"] == pytest.approx(2.5)
    assert W.grad.tolist() == [1.25, 1.25]
    balancer.step()
    s = torch.tensor([0.0 + 0.1 * 1.0, 0.0 - 0.1 * 0.5])
    assert torch.allclose(balancer.weights, torch.exp(-s))


def test_uncertainty_weights_converge_to_inverse_losses():
    balancer = Uncertainty(2)
    W = torch.tensor([1.0], requires_grad=True)
    for _ in range(1500):
        balancer.backward(torch.stack([4.0 * W.sum(), 0.5 * W.sum()]), [W])
        balancer.step()
    assert balancer.weights.tolist() == pytest.approx([0.25, 2.0], rel=1e-2)
    clone = Uncertainty(2)
    clone.load_state_dict(balancer.state_dict())
    assert torch.equal(clone.weights, balancer.weights)


@pytest.mark.parametrize("bad", [0, -1, 2.5, "2", True])
def test_num_tasks_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match="num_tasks must be a positive integer"):
        EqualWeights(bad)


def test_gradnorm_weights_stay_positive_under_large_steps():
    balancer = GradNorm(2, alpha=0.0, optimizer=functools.partial(torch.optim.SGD, lr=10.0))
    W = torch.tensor([1.0, 1.0], requires_grad=True)
    balancer.backward(torch.stack([100 * W.sum(), W.sum()]), [W])
    balancer.step()
    assert (balancer.weights > 0).all()
    assert math.isclose(balancer.weights.sum().item(), 2.0, rel_tol=1e-6)
