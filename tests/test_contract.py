"""The Balancer contract, for every method of the table (gradnorm/balancers/base.py):

* ``backward`` accumulates into ``.grad``: a regulariser's gradient, then two micro-batches, equals the
  sum of the parts, where a part is what one step on the whole batch gives for the methods whose
  accumulation is exact (docs/library.md, "Gradient accumulation") and each micro-batch's own
  contribution for FAMO and the methods at the representation;
* the weights read after ``backward`` are those it applied: the trunk's gradient is Σ_i w_i ∇L_i;
* ``discard`` leaves the state as it was; a loss scale in ``backward_fn`` changes nothing.
"""

from __future__ import annotations

import copy
import json
import warnings

import pytest
import torch

from gradnorm.balancers import METHODS

# torch and the library only (no suite modules): these tests also run against other torch releases.

#: the methods whose k micro-batches give exactly the update of one step on the k× bigger batch
ACCUMULATE_EXACTLY = {"equal", "fixed", "grid", "gradnorm_static", "uncertainty", "gradnorm", "dwa", "rlw",
                      "pcgrad", "mgda", "cagrad", "nash_mtl"}
#: per micro-batch: FAMO takes w from each micro-batch's losses; IMTL-G's β is taken at the representation
PER_MICRO_BATCH = {"famo", "imtl"}
METHOD_NAMES = sorted(name for name in METHODS if not name.startswith("test_"))


def test_every_method_is_classified():
    assert set(METHOD_NAMES) == ACCUMULATE_EXACTLY | PER_MICRO_BATCH


@pytest.fixture
def make_balancer(tmp_path):
    """A fresh balancer of a method, T=2, with the arguments it needs (GradNorm static reads a summary)."""
    source = tmp_path / "gradnorm_run"
    source.mkdir()
    (source / "summary.json").write_text(json.dumps(
        {"status": "completed", "task_names": ["a", "b"], "mean_weights": [1.4, 0.6]}))
    extra = {"fixed": {"weights": [1.0, 3.0]}, "gradnorm_static": {"from_run": str(source)},
             "dwa": {"window": 1}}

    def make(name):
        balancer = METHODS[name](num_tasks=2, **extra.get(name, {}))
        return balancer.double()

    return make


class Network(torch.nn.Module):
    """A two-layer ReLU trunk (W = its last Linear) and two heads, each reading its own view of z."""

    def __init__(self):
        super().__init__()
        self.trunk = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.ReLU(), torch.nn.Linear(5, 5), torch.nn.ReLU())
        self.heads = torch.nn.ModuleDict({"a": torch.nn.Linear(5, 2), "b": torch.nn.Linear(5, 2)})

    def forward(self, x):
        z = self.trunk(x)
        features = [z.view_as(z) for _ in self.heads]
        return {name: head(f) for (name, head), f in zip(self.heads.items(), features)}, features


def params_for(balancer, net):
    """What the balancer asks for (its ``needs``): W, or every trunk parameter."""
    return list(net.trunk.parameters()) if balancer.needs == "shared" else [net.trunk[2].weight]


def network():
    torch.manual_seed(0)
    return Network().double()


def batch(seed):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(8, 3, generator=generator, dtype=torch.float64), torch.randn(8, 4, generator=generator,
                                                                                    dtype=torch.float64)


def losses_of(net, x, y):
    predictions, features = net(x)
    losses = torch.stack([((predictions["a"] - y[:, :2]) ** 2).mean(), ((predictions["b"] - y[:, 2:]) ** 2).mean()])
    return losses, features


def grads(net):
    return {n: (p.grad.clone() if p.grad is not None else torch.zeros_like(p)) for n, p in net.named_parameters()}


def zero(net):
    for p in net.parameters():
        p.grad = None


def regulariser(net):
    return 0.1 * sum(p.pow(2).sum() for p in net.parameters())


def warm_up(balancer, net, steps=3):
    """A few updates, so that stateful methods (GradNorm's L_i(0), FAMO's ξ, DWA's periods) are under way."""
    for seed in range(steps):
        zero(net)
        losses, features = losses_of(net, *batch(100 + seed))
        balancer.backward(losses, params_for(balancer, net), features=features)
        balancer.step()
    zero(net)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_a_regulariser_then_two_micro_batches_is_the_sum_of_the_parts(name, make_balancer):
    net = network()
    balancer = make_balancer(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # routes GradNorm announces (all exact)
        warm_up(balancer, net)
        x, y = batch(0)
        halves = [(x[:4], y[:4]), (x[4:], y[4:])]

        regulariser(net).backward()
        expected = grads(net)
        if name in ACCUMULATE_EXACTLY:
            whole = copy.deepcopy(balancer)
            zero(net)
            losses, features = losses_of(net, x, y)
            whole.backward(losses, params_for(whole, net), features=features)
            parts = [grads(net)]
        else:
            each = copy.deepcopy(balancer)
            parts = []
            for hx, hy in halves:
                zero(net)
                losses, features = losses_of(net, hx, hy)
                each.backward(losses / 2, params_for(each, net), features=features)
                parts.append(grads(net))
        expected = {n: g + sum(part[n] for part in parts) for n, g in expected.items()}

        zero(net)
        regulariser(net).backward()
        for hx, hy in halves:
            losses, features = losses_of(net, hx, hy)
            balancer.backward(losses / 2, params_for(balancer, net), features=features)
    got = grads(net)
    for n in expected:
        torch.testing.assert_close(got[n], expected[n], rtol=1e-7, atol=1e-9, msg=f"{name}: {n}")  # solvers: tol 1e-9
    if name in ACCUMULATE_EXACTLY:  # the update itself is the whole batch's
        torch.testing.assert_close(balancer.weights, whole.weights, rtol=1e-9, atol=1e-12)
        balancer.step()
        whole.step()
        for key, value in whole.state_dict().items():
            if isinstance(value, torch.Tensor):
                torch.testing.assert_close(balancer.state_dict()[key], value, rtol=1e-9, atol=1e-12, msg=key)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_the_weights_read_after_backward_are_the_ones_applied(name, make_balancer):
    """The trunk's gradient is Σ_i w_i ∇_trunk L_i with w the balancer's ``weights`` after backward (the
    gradient-based methods' heads get their own unweighted gradient, so only the trunk is compared)."""
    net = network()
    balancer = make_balancer(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warm_up(balancer, net)
        losses, features = losses_of(net, *batch(7))
        trunk = [p for n, p in net.named_parameters() if n.startswith("trunk")]
        per_task = [torch.autograd.grad(losses[i], trunk, retain_graph=True) for i in range(2)]
        balancer.backward(losses, params_for(balancer, net), features=features)
    w = balancer.weights.double()
    for j, p in enumerate(trunk):
        torch.testing.assert_close(p.grad, w[0] * per_task[0][j] + w[1] * per_task[1][j], rtol=1e-6, atol=1e-9,
                                   msg=f"{name}: trunk parameter {j}")
    assert isinstance(balancer.weight_scale, str) and balancer.weight_scale


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_discard_leaves_the_state_as_it_was(name, make_balancer):
    net = network()
    balancer = make_balancer(name)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warm_up(balancer, net)
        reference = copy.deepcopy(balancer)
        losses, features = losses_of(net, *batch(3))
        balancer.backward(losses, params_for(balancer, net), features=features)
        balancer.discard()
        for b in (balancer, reference):  # the next update is the same with or without the discarded one
            zero(net)
            losses, features = losses_of(net, *batch(4))
            b.backward(losses, params_for(b, net), features=features)
            b.step()
    for key, value in reference.state_dict().items():
        if isinstance(value, torch.Tensor) and key != "coefficients_used":
            torch.testing.assert_close(balancer.state_dict()[key], value, rtol=1e-9, atol=1e-12, msg=key)
    torch.testing.assert_close(balancer.weights, reference.weights, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_a_loss_scale_in_backward_fn_changes_nothing(name, make_balancer):
    """A GradScaler-like ``backward_fn`` (the loss × 1024) leaves the weights and their update alone and
    puts 1024 × the unscaled gradient into ``.grad`` (what the scaler's unscale_ divides again)."""
    runs = []
    for scale in (None, 1024.0):
        net = network()
        balancer = make_balancer(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warm_up(balancer, net)
            losses, features = losses_of(net, *batch(5))
            backward_fn = None if scale is None else (lambda loss, s=scale, **kw: (loss * s).backward(**kw))
            info = balancer.backward(losses, params_for(balancer, net), features=features, backward_fn=backward_fn)
            got = {n: g / (scale or 1.0) for n, g in grads(net).items()}
            balancer.step()
        runs.append((got, balancer.weights, info))
    (plain, plain_weights, plain_info), (scaled, scaled_weights, scaled_info) = runs
    for n in plain:
        torch.testing.assert_close(scaled[n], plain[n], rtol=1e-9, atol=1e-12, msg=f"{name}: {n}")
    torch.testing.assert_close(scaled_weights, plain_weights, rtol=1e-9, atol=1e-12)
    assert scaled_info.keys() == plain_info.keys()
    for key, value in plain_info.items():
        assert scaled_info[key] == pytest.approx(value, rel=1e-9, abs=1e-12), key
