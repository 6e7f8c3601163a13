"""GradNorm's one-backward path on convolutional networks, its fallback, and the bookkeeping that
keeps it cheap (update on host floats, step counters mirrored from the buffers)."""

import functools
import math

import pytest
import torch
from torch import nn

import gradnorm.balancers.gradnorm as gradnorm_module
from gradnorm.balancers import GradNorm
from gradnorm.models import MultiTaskModel

ADAM = functools.partial(torch.optim.Adam, lr=0.025)


class TinyConvNet(MultiTaskModel):
    """conv-[BN]-ReLU trunk; the last shared layer is its last conv; a 1×1 conv head per task."""

    def __init__(self, heads: dict[str, int], batchnorm: bool):
        super().__init__()
        norm = nn.BatchNorm2d(6) if batchnorm else nn.Identity()
        self.trunk = nn.Sequential(nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 6, 3, padding=1), norm,
                                   nn.ReLU())
        self.heads = nn.ModuleDict({name: nn.Conv2d(6, out, 1) for name, out in heads.items()})

    def shared(self, x):
        return self.trunk(x)

    @property
    def last_shared_layer(self):
        return self.trunk[2]


def _batches(steps=4):
    gen = torch.Generator().manual_seed(0)
    return [(torch.randn(4, 3, 6, 6, generator=gen),
             {"a": torch.randn(4, 2, 6, 6, generator=gen), "b": 30 * torch.randn(4, 1, 6, 6, generator=gen),
              "c": 0.1 * torch.randn(4, 3, 6, 6, generator=gen)}) for _ in range(steps)]


def _train(batchnorm: bool, how: str, steps=4):
    """GradNorm on TinyConvNet; ``how``: features (one backward), autograd (no features), naive."""
    torch.manual_seed(3)
    model = TinyConvNet({"a": 2, "b": 1, "c": 3}, batchnorm)
    balancer = GradNorm(3, alpha=1.5, optimizer=ADAM)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    infos, grads = [], []
    for x, ys in _batches(steps):
        preds, features = model(x)
        losses = torch.stack([((preds[k] - y) ** 2).mean() for k, y in ys.items()])
        optimizer.zero_grad()
        if how == "naive":  # Algorithm 1's G_i taken literally, task by task
            W = model.last_shared_parameters()
            norms = [torch.autograd.grad(loss, W, retain_graph=True)[0].norm() for loss in losses]
            infos.append([(balancer.weights[i] * n).item() for i, n in enumerate(norms)])
            (balancer.weights * losses).sum().backward()
            grads.append([p.grad.clone() for p in model.parameters()])
            return infos, grads
        info = balancer.backward(losses, model.last_shared_parameters(),
                                 features=features if how == "features" else None)
        infos.append([info[f"gradnorm/grad_norm_{i}"] for i in range(3)])
        grads.append([p.grad.clone() for p in model.parameters()])
        optimizer.step()
        balancer.step()
    return infos, grads


@pytest.mark.parametrize("batchnorm", [False, True], ids=["conv-relu", "conv-bn-relu"])
def test_one_backward_matches_batched_autograd_and_the_literal_g_i(batchnorm):
    fast_info, fast_grads = _train(batchnorm, "features")
    slow_info, slow_grads = _train(batchnorm, "autograd")
    torch.testing.assert_close(torch.tensor(fast_info), torch.tensor(slow_info), rtol=1e-4, atol=0)
    for step_fast, step_slow in zip(fast_grads, slow_grads):
        for g_fast, g_slow in zip(step_fast, step_slow):
            assert torch.allclose(g_fast, g_slow, atol=1e-6)
    naive_info, naive_grads = _train(batchnorm, "naive")
    assert fast_info[0] == pytest.approx(naive_info[0], rel=1e-4)
    for g_fast, g_naive in zip(fast_grads[0], naive_grads[0]):
        assert torch.allclose(g_fast, g_naive, atol=1e-6)


def test_fallback_for_layers_without_a_formula_gives_the_same_result(monkeypatch):
    fast_info, _ = _train(True, "features")
    monkeypatch.setattr(gradnorm_module, "find_last_layer", lambda top, params: None)
    fallback_info, _ = _train(True, "features")
    torch.testing.assert_close(torch.tensor(fast_info), torch.tensor(fallback_info), rtol=1e-4, atol=0)


def test_norms_at_features_are_the_weighted_gradients_at_z():
    torch.manual_seed(0)
    model = TinyConvNet({"a": 2, "b": 1}, batchnorm=True)
    x = torch.randn(2, 3, 5, 5)
    balancer = GradNorm(2, norm_at="features", initial_losses=[1.0, 1.0])
    preds, features = model(x)
    losses = torch.stack([preds["a"].pow(2).mean(), 3 * preds["b"].abs().mean()])
    expected = [torch.autograd.grad(loss, f, retain_graph=True)[0].norm().item() for loss, f in zip(losses, features)]
    info = balancer.backward(losses, model.last_shared_parameters(), features=features)
    assert [info["gradnorm/grad_norm_0"], info["gradnorm/grad_norm_1"]] == pytest.approx(expected, rel=1e-5)
    with pytest.raises(ValueError, match="needs the per-task features"):
        balancer.backward(losses.detach().requires_grad_(), model.last_shared_parameters())


def test_resumed_state_continues_exactly_including_every_k():
    W = torch.tensor([1.0, 2.0], requires_grad=True)

    def step(balancer, scale):
        balancer.backward(torch.stack([scale * (W**2).sum(), 3 * W.sum()]), [W])
        balancer.step()

    straight = GradNorm(2, alpha=1.0, every=2)
    for scale in (1.0, 0.8, 0.6, 0.5, 0.4):
        step(straight, scale)

    first = GradNorm(2, alpha=1.0, every=2)
    for scale in (1.0, 0.8, 0.6):
        step(first, scale)
    resumed = GradNorm(2, alpha=1.0, every=2)
    resumed.load_state_dict(first.state_dict())
    for scale in (0.5, 0.4):
        step(resumed, scale)
    assert torch.equal(resumed.weights, straight.weights)
    assert resumed.initial_losses.tolist() == [5.0, 9.0] and int(resumed.num_updates) == 5


@pytest.mark.parametrize("losses, message", [
    ([0.0, 1.0], "positive finite initial losses"),
    ([1.0, math.nan], "positive finite initial losses"),
])
def test_unusable_initial_losses_are_named(losses, message):
    W = torch.ones(2, requires_grad=True)
    with pytest.raises(ValueError, match=message):
        GradNorm(2).backward(torch.tensor(losses) * W.sum(), [W])


def test_negative_losses_are_rejected_not_turned_into_nan_weights():
    W = torch.ones(2, requires_grad=True)
    balancer = GradNorm(2, initial_losses=[1.0, 1.0])
    with pytest.raises(ValueError, match="non-negative task losses"):
        balancer.backward(torch.stack([W.sum(), -W.sum()]), [W])
