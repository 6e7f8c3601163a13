"""The balancers' host-side Adam (gradnorm.balancers.scalar_optim) against torch.optim.Adam."""

import functools

import pytest
import torch

from gradnorm.balancers import GradNorm
from gradnorm.balancers.scalar_optim import ScalarOptimizer

GRADS = [[0.5, -2.0, 3.0], [1e-3, 4.0, -0.25], [-7.0, 0.0, 2.5], [0.3, 0.3, -0.3], [2.0, -1.0, 1e4]]


def _torch_trajectory(make_optimizer):
    param = torch.nn.Parameter(torch.tensor([1.0, 0.5, 1.5]))
    optimizer = make_optimizer([param])
    out = []
    for grad in GRADS:
        param.grad = torch.tensor(grad)
        optimizer.step()
        out.append(param.detach().clone())
    return torch.stack(out), optimizer


def _host_trajectory(make_optimizer):
    param = torch.nn.Parameter(torch.tensor([1.0, 0.5, 1.5]))
    stepper = ScalarOptimizer(make_optimizer([param]), param)
    out = []
    for grad in GRADS:
        values = stepper.step(param.tolist(), grad)
        with torch.no_grad():
            param.copy_(torch.tensor(values))
        out.append(param.detach().clone())
    return torch.stack(out), stepper


@pytest.mark.parametrize("make_optimizer", [
    functools.partial(torch.optim.Adam, lr=0.025),
    functools.partial(torch.optim.Adam, lr=0.1, betas=(0.5, 0.9), eps=1e-3),
], ids=["paper", "other-hyperparameters"])
def test_plain_adam_runs_on_the_host_and_matches_torch(make_optimizer):
    expected, reference = _torch_trajectory(make_optimizer)
    got, stepper = _host_trajectory(make_optimizer)
    assert stepper.on_host
    assert torch.allclose(got, expected, rtol=1e-6, atol=1e-7), (got, expected)
    ours, theirs = stepper.optimizer.state_dict()["state"][0], reference.state_dict()["state"][0]
    assert float(ours["step"]) == float(theirs["step"]) == len(GRADS)
    for key in ("exp_avg", "exp_avg_sq"):
        assert torch.allclose(ours[key], theirs[key], rtol=1e-6), key


@pytest.mark.parametrize("make_optimizer", [
    functools.partial(torch.optim.SGD, lr=0.1, momentum=0.9),
    functools.partial(torch.optim.Adam, lr=0.025, weight_decay=0.1),
    functools.partial(torch.optim.Adam, lr=0.025, amsgrad=True),
], ids=["sgd", "adam-weight-decay", "amsgrad"])
def test_other_optimisers_are_stepped_by_torch(make_optimizer):
    expected, _ = _torch_trajectory(make_optimizer)
    got, stepper = _host_trajectory(make_optimizer)
    assert not stepper.on_host
    assert torch.equal(got, expected)


def test_state_round_trip_continues_exactly():
    """Steps 1-2, save, load into a fresh optimiser, steps 3-5 == steps 1-5 uninterrupted."""
    make = functools.partial(torch.optim.Adam, lr=0.025)
    full, _ = _host_trajectory(make)
    param = torch.nn.Parameter(torch.tensor([1.0, 0.5, 1.5]))
    stepper = ScalarOptimizer(make([param]), param)
    for grad in GRADS[:2]:
        param.data.copy_(torch.tensor(stepper.step(param.tolist(), grad)))
    saved_param, saved_state = param.detach().clone(), stepper.optimizer.state_dict()
    fresh = torch.nn.Parameter(saved_param.clone())
    resumed = ScalarOptimizer(make([fresh]), fresh)
    resumed.optimizer.load_state_dict(saved_state)
    for grad in GRADS[2:]:
        fresh.data.copy_(torch.tensor(resumed.step(fresh.tolist(), grad)))
    assert torch.equal(fresh.detach(), full[-1])


def test_gradnorm_with_sgd_keeps_the_sgd_update():
    """GradNorm with a non-Adam optimiser: w ← w − lr·∂L_grad/∂w, then Σ w = T (by hand)."""
    W = torch.tensor([1.0, 2.0], requires_grad=True)
    balancer = GradNorm(2, alpha=0.0, optimizer=functools.partial(torch.optim.SGD, lr=0.1))
    balancer.backward(torch.stack([(W**2).sum(), 3 * W.sum()]), [W])
    balancer.step()
    # n_1 = ||2W|| = 2√5, n_2 = ||(3, 3)|| = 3√2; α = 0: target Ḡ; G_1 = n_1 > Ḡ > G_2 = n_2.
    n1, n2 = 2 * 5**0.5, 3 * 2**0.5
    stepped = torch.tensor([1 - 0.1 * n1, 1 + 0.1 * n2])
    assert torch.allclose(balancer.weights, stepped * 2 / stepped.sum(), atol=1e-6)
