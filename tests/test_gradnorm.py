"""GradNorm must match Algorithm 1 (docs/paper.md §3) exactly: hand-worked steps and an independent
reference implementation (second-order autograd, the paper's formulation taken literally)."""

import functools
import math

import pytest
import torch
from torch import nn

from gradnorm.balancers import GradNorm
from gradnorm.models import MLP

SGD = functools.partial(torch.optim.SGD, lr=0.1)


def test_two_hand_worked_steps_with_sgd():
    # W = (1, 2); L1 = Σ W², ∇L1 = 2W; L2 = 3 Σ W, ∇L2 = (3, 3).
    W = torch.tensor([1.0, 2.0], requires_grad=True)
    balancer = GradNorm(2, alpha=1.0, optimizer=SGD)

    losses = torch.stack([(W**2).sum(), 3 * W.sum()])  # (5, 9): these become L_i(0)
    info = balancer.backward(losses, [W])
    # The network receives ∇(1·L1 + 1·L2) = (2+3, 4+3).
    assert W.grad.tolist() == [5.0, 7.0]
    n1, n2 = math.sqrt(20), math.sqrt(18)
    # r = (1, 1): target = Ḡ for both; G1 > Ḡ > G2, so ∂L_grad/∂w = (+n1, −n2).
    assert info["gradnorm/l_grad"] == pytest.approx(abs(n1 - n2), rel=1e-5)
    balancer.step()
    w = torch.tensor([1 - 0.1 * n1, 1 + 0.1 * n2])
    w = w * 2 / w.sum()
    assert torch.allclose(balancer.weights, w, atol=1e-6)
    assert balancer.weights.sum().item() == pytest.approx(2.0)

    # Step 1 at W = (0.5, 1): L = (1.25, 4.5); L̃ = (0.25, 0.5); r = (2/3, 4/3).
    W2 = torch.tensor([0.5, 1.0], requires_grad=True)
    losses = torch.stack([(W2**2).sum(), 3 * W2.sum()])
    balancer.backward(losses, [W2])
    assert torch.allclose(W2.grad, w[0] * 2 * W2.detach() + w[1] * 3, atol=1e-6)
    n1, n2 = math.sqrt(5), math.sqrt(18)
    G = torch.tensor([w[0] * n1, w[1] * n2])
    target = G.mean() * torch.tensor([2 / 3, 4 / 3])
    sign = torch.sign(G - target)
    assert sign.tolist() == [-1.0, 1.0]
    balancer.step()
    w2 = w - 0.1 * sign * torch.tensor([n1, n2])
    w2 = w2 * 2 / w2.sum()
    assert torch.allclose(balancer.weights, w2, atol=1e-6)


def test_initial_losses_are_those_of_the_first_call():
    W = torch.tensor([1.0, -1.0], requires_grad=True)
    balancer = GradNorm(2, alpha=0.5)
    for scale in (1.0, 0.5, 0.25):
        balancer.backward(torch.stack([scale * (W**2).sum(), 4 * (W**2).sum()]), [W])
        balancer.step()
    assert balancer.initial_losses.tolist() == [2.0, 8.0]


def test_alpha_zero_equalises_gradient_norms_towards_their_mean():
    # With α = 0 the target is Ḡ for every task: the weight of the task with the larger
    # gradient goes down, whatever the loss ratios.
    W = torch.tensor([1.0, 1.0], requires_grad=True)
    balancer = GradNorm(2, alpha=0.0, optimizer=SGD)
    balancer.backward(torch.stack([10 * W.sum(), W.sum()]), [W])
    balancer.step()
    assert balancer.weights[0] < 1 < balancer.weights[1]


def _reference_gradnorm(model, batches, alpha, lr, steps):
    """Algorithm 1 written literally: G_i by autograd with create_graph, L_grad.backward()."""
    weights = nn.Parameter(torch.ones(len(batches[0][1])))
    opt_w = torch.optim.Adam([weights], lr=lr)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    W = model.last_shared_parameters()
    initial, trace = None, []
    for step in range(steps):
        x, ys = batches[step]
        preds, _ = model(x)
        losses = torch.stack([((preds[k] - ys[k]) ** 2).mean() for k in ys])
        if initial is None:
            initial = losses.detach()
        G = []
        for i in range(len(losses)):
            g = torch.autograd.grad(weights[i] * losses[i], W, retain_graph=True, create_graph=True)
            G.append(torch.cat([t.flatten() for t in g]).norm())
        G = torch.stack(G)
        ratio = losses.detach() / initial
        r = ratio / ratio.mean()
        target = (G.mean() * r**alpha).detach()
        l_grad = (G - target).abs().sum()
        opt.zero_grad()
        opt_w.zero_grad()
        weights.grad = torch.autograd.grad(l_grad, weights, retain_graph=True)[0]
        (weights.detach() * losses).sum().backward()
        opt.step()
        opt_w.step()
        with torch.no_grad():
            weights.mul_(len(losses) / weights.sum())
        trace.append(weights.detach().clone())
    return torch.stack(trace)


def _ours(model, batches, alpha, lr, steps, use_features):
    balancer = GradNorm(len(batches[0][1]), alpha=alpha, optimizer=functools.partial(torch.optim.Adam, lr=lr))
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    trace = []
    for step in range(steps):
        x, ys = batches[step]
        preds, features = model(x)
        losses = torch.stack([((preds[k] - ys[k]) ** 2).mean() for k in ys])
        opt.zero_grad()
        balancer.backward(losses, model.last_shared_parameters(), features=features if use_features else None)
        opt.step()
        balancer.step()
        trace.append(balancer.weights)
    return torch.stack(trace)


@pytest.mark.parametrize("use_features", [True, False], ids=["one-backward", "batched-autograd"])
@pytest.mark.parametrize("alpha", [0.12, 1.5])
def test_matches_reference_implementation_over_several_steps(use_features, alpha):
    torch.manual_seed(0)
    heads = {"a": 3, "b": 2, "c": 4}
    scales = {"a": 1.0, "b": 10.0, "c": 0.3}
    batches = [
        (x := torch.randn(16, 6), {k: scales[k] * torch.tanh(x[:, :n] * (i + 1)) for i, (k, n) in enumerate(heads.items())})
        for _ in range(8)
    ]
    torch.manual_seed(1)
    model_ref = MLP(6, heads, width=8, depth=3)
    model_ours = MLP(6, heads, width=8, depth=3)
    model_ours.load_state_dict(model_ref.state_dict())
    expected = _reference_gradnorm(model_ref, batches, alpha, lr=0.025, steps=8)
    got = _ours(model_ours, batches, alpha, lr=0.025, steps=8, use_features=use_features)
    assert torch.allclose(got, expected, atol=1e-5), (got, expected)
    for p_ref, p_ours in zip(model_ref.parameters(), model_ours.parameters()):
        assert torch.allclose(p_ref, p_ours, atol=1e-6)


def test_weights_sum_to_num_tasks_and_state_round_trips():
    torch.manual_seed(0)
    model = MLP(5, {"a": 2, "b": 2}, width=4, depth=2)
    balancer = GradNorm(2, alpha=1.5)
    x, y = torch.randn(8, 5), torch.randn(8, 2)
    for _ in range(3):
        preds, features = model(x)
        losses = torch.stack([((preds["a"] - y) ** 2).mean(), 50 * ((preds["b"] - y) ** 2).mean()])
        balancer.backward(losses, model.last_shared_parameters(), features=features)
        balancer.step()
    assert balancer.weights.sum().item() == pytest.approx(2.0, abs=1e-5)

    clone = GradNorm(2, alpha=1.5)
    clone.load_state_dict(balancer.state_dict())
    assert torch.equal(clone.weights, balancer.weights)
    assert torch.equal(clone.initial_losses, balancer.initial_losses)
    assert clone.optimizer.state_dict()["state"][0]["step"] == 3


def test_every_k_updates_only_on_multiples_of_k():
    W = torch.tensor([1.0, 2.0], requires_grad=True)
    balancer = GradNorm(2, alpha=1.0, every=2)
    seen = []
    for _ in range(4):
        balancer.backward(torch.stack([(W**2).sum(), 3 * W.sum()]), [W])
        balancer.step()
        seen.append(balancer.weights.clone())
    assert not torch.equal(seen[0], torch.ones(2))
    assert torch.equal(seen[0], seen[1]) and torch.equal(seen[2], seen[3])
    assert not torch.equal(seen[1], seen[2])


@pytest.mark.parametrize("bad", [-0.1, "abc", None, float("nan")])
def test_invalid_alpha_is_rejected_with_its_value(bad):
    with pytest.raises(ValueError, match="alpha must be a number >= 0"):
        GradNorm(2, alpha=bad)


def test_wrong_number_of_losses_is_rejected():
    W = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match="3 task losses"):
        GradNorm(3).backward(torch.stack([W.sum(), W.sum()]), [W])
