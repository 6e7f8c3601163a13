"""Per-task gradients at W from per-task gradients at z (gradnorm.balancers.last_layer) must equal
what autograd gives task by task, for every layer and in-between operation it handles."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gradnorm.balancers import last_layer
from gradnorm.balancers.last_layer import find_last_layer

TASKS = 3


def _check(shared: nn.Module, weight: torch.Tensor, x: torch.Tensor, kind: str, relu_chain: bool, atol=1e-5):
    """Run ``shared`` on x, make T losses of z, and compare weight_grads with autograd per task."""
    torch.manual_seed(0)
    z = shared(x)
    features = [z.view_as(z) for _ in range(TASKS)]
    probes = [torch.randn_like(z) for _ in range(TASKS)]
    losses = [((f * p).sum() + (i + 1) * f.pow(2).mean()) for i, (f, p) in enumerate(zip(features, probes))]
    expected = torch.stack([torch.autograd.grad(loss, weight, retain_graph=True)[0] for loss in losses])
    grads_at_z = [torch.autograd.grad(loss, f, retain_graph=True)[0] for loss, f in zip(losses, features)]

    layer = find_last_layer(features[0].grad_fn.next_functions[0][0], [weight])
    assert layer is not None and (layer.kind, layer.relu_chain) == (kind, relu_chain)
    got = layer.weight_grads(features[0], grads_at_z)
    assert got.shape == (TASKS, *weight.shape)
    assert torch.allclose(got.float(), expected.float(), atol=atol, rtol=1e-4), (got - expected).abs().max()
    norms = layer.squared_norms(features[0], grads_at_z).sqrt()
    assert torch.allclose(norms, expected.float().flatten(1).norm(dim=1), rtol=1e-4, atol=atol)


def test_linear_then_relu():
    lin = nn.Linear(7, 5)
    _check(nn.Sequential(nn.Linear(4, 7), nn.ReLU(), lin, nn.ReLU()), lin.weight, torch.randn(9, 4), "linear", True)


def test_linear_without_bias_and_no_activation():
    lin = nn.Linear(6, 5, bias=False)
    _check(lin, lin.weight, torch.randn(8, 6), "linear", True)


def test_linear_on_a_sequence_then_dropout():
    # 3-D input: Linear flattens it (a view between the layer and z); dropout is not a ReLU.
    lin = nn.Linear(6, 5)
    torch.manual_seed(1)
    _check(nn.Sequential(lin, nn.Dropout(0.3), nn.ReLU()), lin.weight, torch.randn(4, 3, 6), "linear", False)


def test_conv_then_relu():
    conv = nn.Conv2d(3, 4, 3, padding=1)
    _check(nn.Sequential(conv, nn.ReLU(inplace=True)), conv.weight, torch.randn(2, 3, 6, 5), "conv", True)


def test_conv_batchnorm_relu_as_in_segnet():
    conv = nn.Conv2d(3, 4, 3, padding=1, bias=False)
    shared = nn.Sequential(nn.Conv2d(2, 3, 1), nn.ReLU(), conv, nn.BatchNorm2d(4), nn.ReLU(inplace=True))
    _check(shared, conv.weight, torch.randn(3, 2, 6, 5), "conv", False)


@pytest.mark.parametrize("conv", [
    nn.Conv2d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2),
    nn.ConvTranspose2d(4, 3, 4, stride=2, padding=1),
], ids=["strided-dilated-grouped", "transposed"])
def test_other_convolutions(conv):
    _check(nn.Sequential(conv, nn.ReLU()), conv.weight, torch.randn(2, 4, 7, 6), "conv", True)


def test_autocast_bf16_linear():
    lin = nn.Linear(16, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        _check(nn.Sequential(lin, nn.ReLU()), lin.weight, torch.randn(12, 16), "linear", True, atol=2e-2)


def test_anything_else_is_left_to_autograd():
    weight = nn.Parameter(torch.randn(5, 4))
    x = torch.randn(3, 4)
    z = torch.relu(F.linear(x, weight.exp()))  # W enters through another operation first
    assert find_last_layer(z.grad_fn, [weight]) is None
    lin = nn.Linear(4, 5)
    z = torch.relu(lin(x))
    assert find_last_layer(z.grad_fn, [lin.weight, lin.bias]) is None  # several parameters
    assert find_last_layer(z.grad_fn, [nn.Parameter(torch.randn(5, 4))]) is None  # not this layer's W


@pytest.mark.parametrize("case", ["conv", "dilated conv", "strided conv", "linear"])
def test_gram_route_gives_the_norms_where_it_is_cheaper(case):
    """Few positions against a large W (FCN's 3×3 conv at a small resolution): the norms come from
    Gram matrices, never forming ∇_W L_i, and equal the norms of the per-task gradients."""
    torch.manual_seed(0)
    if case == "linear":
        layer_module, x = nn.Linear(256, 64), torch.randn(4, 256)
        shared = nn.Sequential(layer_module, nn.ReLU())
    else:
        stride, dilation = (2, 1) if case == "strided conv" else (1, 2 if case == "dilated conv" else 1)
        layer_module = nn.Conv2d(64, 32, 3, padding=dilation, stride=stride, dilation=dilation, bias=False)
        shared = nn.Sequential(layer_module, nn.BatchNorm2d(32), nn.ReLU())
        x = torch.randn(2, 64, 4, 5)
    z = shared(x)
    features = [z.view_as(z) for _ in range(TASKS)]
    losses = [(10.0 ** i) * (f * torch.randn_like(f)).sum() for i, f in enumerate(features)]
    expected = torch.stack([torch.autograd.grad(loss, layer_module.weight, retain_graph=True)[0].norm()
                            for loss in losses])
    grads_at_z = [torch.autograd.grad(loss, f, retain_graph=True)[0] for loss, f in zip(losses, features)]
    layer = find_last_layer(features[0].grad_fn.next_functions[0][0], [layer_module.weight])
    rows = 4 if case == "linear" else 2 * z.shape[2] * z.shape[3]
    fan_in = layer_module.weight[0].numel()
    assert last_layer._gram_is_cheaper(rows, fan_in, layer_module.weight.shape[0], TASKS)
    calls = []
    original = last_layer._gram_squared_norms
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(last_layer, "_gram_squared_norms", lambda *a: calls.append(1) or original(*a))
        got = layer.squared_norms(features[0], grads_at_z).sqrt()
    assert calls, "the Gram route was not taken"
    assert torch.allclose(got, expected, rtol=1e-5), (got, expected)


def test_gram_route_is_left_for_many_positions():
    assert not last_layer._gram_is_cheaper(rows=8 * 36 * 48, fan_in=2048 * 9, out=512, num_tasks=3)  # FCN, 288×384
    assert last_layer._gram_is_cheaper(rows=2 * 8 * 12, fan_in=2048 * 9, out=512, num_tasks=3)  # FCN, 64×96
    assert not last_layer._gram_is_cheaper(rows=100, fan_in=100, out=100, num_tasks=10)  # the toy MLP
