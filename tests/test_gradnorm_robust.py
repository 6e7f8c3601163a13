"""GradNorm's fast routes never give a wrong number: a head with a skip from W's layer (the features
contract broken), autograd's saved tensors missing or not as expected (another torch version), and
an α so large that r_i^α overflows (one clear error naming it)."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from gradnorm.balancers import GradNorm, last_layer


class SkipNet(nn.Module):
    """A trunk whose last layer W feeds z = relu(W x); head 0 also reads W's pre-activation (a skip)."""

    def __init__(self, skip: bool = True):
        super().__init__()
        torch.manual_seed(0)
        self.trunk, self.skip = nn.Linear(4, 6), skip
        self.heads = nn.ModuleList([nn.Linear(6, 3), nn.Linear(6, 3)])
        self.side = nn.Linear(6, 3)

    def forward(self, x):
        pre = self.trunk(x)
        z = torch.relu(pre)
        features = [z.view_as(z) for _ in self.heads]
        outputs = [head(f) for head, f in zip(self.heads, features)]
        if self.skip:
            outputs[0] = outputs[0] + 4.0 * self.side(pre)
        return outputs, features


def losses_and_truth(net, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x, y = torch.randn(16, 4, generator=generator), torch.randn(16, 6, generator=generator)
    outputs, features = net(x)
    losses = torch.stack([((outputs[i] - y[:, 3 * i:3 * i + 3]) ** 2).mean() for i in range(2)])
    truth = [torch.autograd.grad(losses[i], net.trunk.weight, retain_graph=True)[0].norm().item() for i in range(2)]
    return losses, features, truth


def norms(info):
    return [info["gradnorm/grad_norm_0"], info["gradnorm/grad_norm_1"]]


def test_features_that_miss_a_skip_from_w_take_the_exact_route_with_one_warning():
    net = SkipNet()
    balancer = GradNorm(2)
    losses, features, truth = losses_and_truth(net)
    with pytest.warns(RuntimeWarning, match="the features do not carry every path from the losses to W"):
        info = balancer.backward(losses, [net.trunk.weight], features=features)
    assert norms(info) == pytest.approx(truth, rel=1e-5)
    balancer.step()
    losses, features, truth = losses_and_truth(net, seed=1)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = balancer.backward(losses, [net.trunk.weight], features=features)
    assert not [w for w in caught if "features do not carry" in str(w.message)]  # once per reason
    assert norms(info) == pytest.approx([t * w for t, w in zip(truth, balancer.weights.tolist())], rel=1e-5)


def test_features_that_carry_every_path_keep_the_one_backward_route():
    net = SkipNet(skip=False)
    losses, features, truth = losses_and_truth(net)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no slower route, no warning
        info = GradNorm(2).backward(losses, [net.trunk.weight], features=features)
    assert norms(info) == pytest.approx(truth, rel=1e-5)


@pytest.mark.parametrize("with_features", [True, False], ids=["features", "only-W"])
@pytest.mark.parametrize("missing", ["_saved_mat1", "_saved_result", "_saved_alpha"])
def test_saved_tensors_that_are_missing_give_the_exact_route_with_one_warning(monkeypatch, with_features, missing):
    """As if another torch version named a saved tensor differently: GradNorm warns once and is exact."""
    original = last_layer.saved

    def without(node, name, kind=None):
        if name == missing:
            raise last_layer.SavedTensorsUnavailable(f"{node.name()}.{name} is not available (AttributeError)")
        return original(node, name, kind)

    monkeypatch.setattr(last_layer, "saved", without)
    net = SkipNet(skip=False)
    balancer = GradNorm(2)
    for seed in range(2):
        losses, features, truth = losses_and_truth(net, seed)
        weights = balancer.weights.tolist()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            info = balancer.backward(losses, [net.trunk.weight], features=features if with_features else None)
        noted = [w for w in caught if "saved tensors are not as expected" in str(w.message)]
        assert len(noted) == (1 if seed == 0 else 0), [str(w.message) for w in caught]
        assert norms(info) == pytest.approx([t * w for t, w in zip(truth, weights)], rel=1e-5)
        balancer.step()


def test_saved_tensors_of_an_unexpected_shape_give_the_exact_route(monkeypatch):
    original = last_layer.saved

    def wrong_shape(node, name, kind=None):
        value = original(node, name, kind)
        return value[:1] if name == "_saved_mat1" else value  # one row where the batch has 16

    monkeypatch.setattr(last_layer, "saved", wrong_shape)
    net = SkipNet(skip=False)
    losses, features, truth = losses_and_truth(net)
    with pytest.warns(RuntimeWarning, match=r"_saved_mat1 has shape \(1, 4\)"):
        info = GradNorm(2).backward(losses, [net.trunk.weight], features=features)
    assert norms(info) == pytest.approx(truth, rel=1e-5)


def test_an_alpha_whose_target_overflows_is_one_clear_error():
    net = SkipNet(skip=False)
    balancer = GradNorm(2, alpha=1e9)
    losses, features, _ = losses_and_truth(net)
    balancer.backward(losses, [net.trunk.weight], features=features)  # r_i = 1 at the first update
    balancer.step()
    losses, features, _ = losses_and_truth(net, seed=3)
    with pytest.raises(ValueError, match=r"r_i\^α with α = 1e\+09 .* α is meaningful between 0 and a few"):
        balancer.backward(losses * torch.tensor([1.0, 2.0]), [net.trunk.weight], features=features)
