"""The paths that differ on a GPU (``pytest -m cuda``; skipped without CUDA; ``make gpu-check`` runs
them): the per-layer formulas and the one-backward GradNorm on CUDA, under bf16 autocast, with
channels-last tensors and cuDNN autotuning, and a checkpoint round trip of a CUDA run."""

import copy
import functools

import pytest
import torch
from torch import nn

from gradnorm.balancers import GradNorm
from gradnorm.balancers.last_layer import find_last_layer

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")]

ADAM = functools.partial(torch.optim.Adam, lr=0.025)


@pytest.fixture
def exact_cuda():
    """No TF32 (10-bit mantissa products): the formulas are compared with autograd at float32."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32, torch.backends.cudnn.benchmark = saved


class Net(nn.Module):
    """conv-BN-ReLU, W = a 3×3 conv followed by BatchNorm and ReLU, three dense 1×1 heads."""

    def __init__(self):
        super().__init__()
        self.trunk = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                   nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU())
        self.heads = nn.ModuleList(nn.Conv2d(16, c, 1) for c in (4, 1, 3))

    def forward(self, x):
        z = self.trunk(x)
        return [head(z) for head in self.heads]


def _losses(outs, scale=(1.0, 10.0, 0.1)):
    return torch.stack([s * o.float().pow(2).mean() for s, o in zip(scale, outs)])


def _reference_norms(model, x, dtype):
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        losses = _losses(model(x))
    W = model.trunk[3].weight
    return torch.stack([torch.autograd.grad(loss, W, retain_graph=True)[0].float().norm() for loss in losses])


@pytest.mark.parametrize("dtype", [None, torch.bfloat16], ids=["fp32", "bf16-autocast"])
@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels-last"])
@pytest.mark.parametrize("benchmark", [False, True], ids=["", "cudnn-benchmark"])
def test_gradnorm_given_only_w_on_cuda(exact_cuda, dtype, channels_last, benchmark):
    """G_i from the one backward pass equal task-by-task autograd; the network's gradient is that of
    Σ w_i L_i."""
    torch.backends.cudnn.benchmark = benchmark
    torch.manual_seed(0)
    model = Net().cuda()
    x = torch.randn(4, 3, 24, 32, device="cuda")
    if channels_last:
        model, x = model.to(memory_format=torch.channels_last), x.contiguous(memory_format=torch.channels_last)
    expected = _reference_norms(copy.deepcopy(model), x, dtype)
    balancer = GradNorm(3, optimizer=ADAM).cuda()
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        losses = _losses(model(x))
    info = balancer.backward(losses, model.trunk[3])
    got = torch.tensor([info[f"gradnorm/grad_norm_{i}"] for i in range(3)])
    rtol = 2e-2 if dtype is not None else 1e-4
    torch.testing.assert_close(got, expected.cpu(), rtol=rtol, atol=0)
    reference = copy.deepcopy(model)
    reference.zero_grad()
    with torch.autocast("cuda", dtype=dtype, enabled=dtype is not None):
        _losses(reference(x)).sum().backward()  # w = 1 at the first step
    for p, q in zip(model.parameters(), reference.parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=rtol, atol=1e-5)


@pytest.mark.parametrize("case", ["linear", "conv", "conv-gram"])
def test_per_layer_formulas_on_cuda(exact_cuda, case):
    torch.manual_seed(0)
    if case == "linear":
        layer, x = nn.Linear(32, 16), torch.randn(64, 32)
        shared = nn.Sequential(nn.Linear(32, 32), nn.ReLU(), layer, nn.ReLU())
    else:
        layer = nn.Conv2d(64 if case == "conv-gram" else 4, 32, 3, padding=1, bias=False)
        shared = nn.Sequential(layer, nn.BatchNorm2d(32), nn.ReLU())
        x = torch.randn(2, layer.in_channels, *((4, 5) if case == "conv-gram" else (12, 10)))
    shared, x = shared.cuda(), x.cuda()
    z = shared(x)
    features = [z.view_as(z) for _ in range(3)]
    losses = [(10.0 ** i) * (f * torch.randn_like(f)).sum() for i, f in enumerate(features)]
    expected = torch.stack([torch.autograd.grad(loss, layer.weight, retain_graph=True)[0] for loss in losses])
    grads_at_z = [torch.autograd.grad(loss, f, retain_graph=True)[0] for loss, f in zip(losses, features)]
    found = find_last_layer(features[0].grad_fn.next_functions[0][0], [layer.weight])
    assert found is not None
    torch.testing.assert_close(found.weight_grads(features[0], grads_at_z), expected, rtol=1e-4, atol=1e-5)
    norms = found.squared_norms(features[0], grads_at_z).sqrt()
    torch.testing.assert_close(norms, expected.flatten(1).norm(dim=1), rtol=1e-4, atol=0)


def test_checkpoint_round_trip_on_cuda(tmp_path, monkeypatch):
    """Save model, optimiser and GradNorm after two CUDA steps, load them (on the CPU first, as
    gradnorm.checkpoint does) into new objects on CUDA: the next steps equal those of the straight run."""
    monkeypatch.setattr(torch.backends.cudnn, "deterministic", True)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", False)
    torch.manual_seed(0)
    x = torch.randn(4, 3, 16, 16, device="cuda")

    def make():
        torch.manual_seed(1)
        model = Net().cuda()
        return model, torch.optim.Adam(model.parameters(), lr=1e-3), GradNorm(3, optimizer=ADAM).cuda()

    def steps(model, optimizer, balancer, n):
        for _ in range(n):
            losses = _losses(model(x))
            optimizer.zero_grad()
            balancer.backward(losses, model.trunk[3])
            optimizer.step()
            balancer.step()

    straight = make()
    steps(*straight, 4)
    first = make()
    steps(*first, 2)
    path = tmp_path / "last.pt"
    torch.save({name: obj.state_dict() for name, obj in zip(("model", "optimizer", "balancer"), first)}, path)
    state = torch.load(path, map_location="cpu", weights_only=True)
    resumed = make()
    for obj, name in zip(resumed, ("model", "optimizer", "balancer")):
        obj.load_state_dict(state[name])
    assert resumed[2].task_weights.is_cuda and resumed[1].state[resumed[0].trunk[0].weight]["exp_avg"].is_cuda
    steps(*resumed, 2)
    assert not torch.equal(resumed[2].weights, torch.ones(3))
    torch.testing.assert_close(resumed[2].weights, straight[2].weights)
    for p, q in zip(resumed[0].parameters(), straight[0].parameters()):
        torch.testing.assert_close(p, q)
