"""GradNorm given only W, in networks that are not ``MultiTaskModel``s: the weights and the network's
gradients must equal those of an independent reference (one ``autograd.grad`` per task at W, then
Algorithm 1 by hand) over several steps, whether the tasks' split is found (one backward pass) or not
(the batched route, with a warning)."""

import copy
import functools
import warnings

import pytest
import torch
import torchvision
from torch import nn

from gradnorm.balancers import GradNorm
from gradnorm.balancers.task_split import Split, find_split

ALPHA, LR_W, STEPS = 1.5, 0.025, 3


def _reference(model, batches, loss_fn, get_w):
    """Algorithm 1 written out: n_i = ||∇_W L_i|| task by task, the w-update with torch's Adam."""
    model = copy.deepcopy(model)
    params = get_w(model)
    if isinstance(params, nn.Module):  # a layer: its weight (as MultiTaskModel's W); else all its parameters
        params = [params.weight] if next(params.children(), None) is None else list(params.parameters())
    num_tasks = len(loss_fn(model, batches[0]))
    w = nn.Parameter(torch.ones(num_tasks))
    opt_w = torch.optim.Adam([w], lr=LR_W)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    initial, weights, grads = None, [], []
    for batch in batches:
        losses = torch.stack(loss_fn(model, batch))
        norms = torch.stack([torch.cat([g.flatten() for g in torch.autograd.grad(
            loss, params, retain_graph=True, allow_unused=True, materialize_grads=True)]).norm() for loss in losses])
        opt.zero_grad()
        (w.detach() * losses).sum().backward()
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        opt.step()
        initial = losses.detach() if initial is None else initial
        ratios = losses.detach() / initial
        rates = ratios / ratios.mean()
        g = w.detach() * norms
        w.grad = torch.sign(g - g.mean() * rates**ALPHA) * norms
        opt_w.step()
        with torch.no_grad():
            w.clamp_(min=1e-6)
            w.mul_(num_tasks / w.sum())
        weights.append(w.detach().clone())
    return weights, grads


def _gradnorm(model, batches, loss_fn, get_w, wrap=None):
    model = copy.deepcopy(model)
    net = wrap(model) if wrap else model  # e.g. torch.compile; W is taken from the module itself
    num_tasks = len(loss_fn(model, batches[0]))
    balancer = GradNorm(num_tasks, alpha=ALPHA, optimizer=functools.partial(torch.optim.Adam, lr=LR_W))
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    weights, grads = [], []
    for batch in batches:
        losses = torch.stack(loss_fn(net, batch))
        opt.zero_grad()
        balancer.backward(losses, get_w(model))
        grads.append([p.grad.clone() for p in model.parameters() if p.grad is not None])
        opt.step()
        balancer.step()
        weights.append(balancer.weights)
    return weights, grads


def _check(model, batches, loss_fn, get_w, split: bool | None, rtol=1e-4, atol=1e-6, wrap=None):
    """GradNorm against the reference; ``split``: the one-backward route must be taken (no warning),
    or not (one warning); None: not checked."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        got_w, got_g = _gradnorm(model, batches, loss_fn, get_w, wrap)
    notes = [str(c.message) for c in caught if "GradNorm" in str(c.message)]
    if split is not None:
        assert (not notes) if split else len(notes) == 1, notes  # a fallback is named once
    want_w, want_g = _reference(model, batches, loss_fn, get_w)
    for step, (a, b) in enumerate(zip(got_w, want_w)):
        torch.testing.assert_close(a, b, rtol=rtol, atol=atol, msg=f"weights differ at step {step}")
    for a_step, b_step in zip(got_g, want_g):
        assert len(a_step) == len(b_step)
        for a, b in zip(a_step, b_step):
            torch.testing.assert_close(a, b, rtol=rtol, atol=atol)
    assert not torch.equal(got_w[-1], torch.ones_like(got_w[-1]))  # the weights did move
    return notes


# -- networks ------------------------------------------------------------------------------------
class PlainMLP(nn.Module):
    """A trunk of Linear-ReLU layers and a Linear head per task, returning a list of outputs."""

    def __init__(self, tasks, between=None, width=12):
        super().__init__()
        self.trunk = nn.Sequential(nn.Linear(9, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU())
        self.between = between or nn.Identity()  # what lies between W's layer and the split
        self.heads = nn.ModuleList(nn.Linear(width, 3 + i % 3) for i in range(tasks))

    def forward(self, x):
        z = self.between(self.trunk(x))
        return [head(z) for head in self.heads]


def _regression(model, batch):
    x, ys = batch
    return [(10.0 ** (i % 3 - 1)) * ((out - y) ** 2).mean() for i, (out, y) in enumerate(zip(model(x), ys))]


def _mlp_batches(model, steps=STEPS, n=16):
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        shapes = [o.shape for o in model(torch.zeros(n, 9))]
    return [(torch.randn(n, 9, generator=gen), [torch.randn(s, generator=gen) for s in shapes]) for _ in range(steps)]


@pytest.mark.parametrize("tasks", [2, 10])
@pytest.mark.parametrize("as_module", [False, True], ids=["weight", "module"])
def test_plain_mlp_given_only_the_last_trunk_linear(tasks, as_module):
    torch.manual_seed(0)
    model = PlainMLP(tasks)
    get_w = (lambda m: m.trunk[2]) if as_module else (lambda m: [m.trunk[2].weight])
    split = find_split(torch.stack(_regression(model, _mlp_batches(model, 1)[0])), [model.trunk[2].weight])
    assert isinstance(split, Split) and split.layer is not None and split.layer.relu_chain
    _check(model, _mlp_batches(model), _regression, get_w, split=True)


class Reshape(nn.Module):
    def forward(self, x):
        return x.view(x.shape[0], 3, -1).transpose(1, 2).reshape(x.shape[0], -1)


@pytest.mark.parametrize("between", [
    lambda: nn.Sequential(nn.BatchNorm1d(12), nn.GELU()),
    lambda: nn.Sequential(nn.LayerNorm(12), nn.Tanh(), Reshape()),
    lambda: nn.Sequential(nn.BatchNorm1d(12), nn.ReLU(), nn.Linear(12, 12), nn.LayerNorm(12), nn.SiLU()),
], ids=["batchnorm-gelu", "layernorm-tanh-reshape", "bn-relu-more-shared-layers"])
def test_layers_between_w_and_the_split(between):
    torch.manual_seed(0)
    model = PlainMLP(3, between())
    _check(model, _mlp_batches(model), _regression, lambda m: [m.trunk[2].weight], split=True)


class ReusingHeads(PlainMLP):
    """Each head uses z twice (a product with z's mean) and tasks use only their own path."""

    def forward(self, x):
        z = self.between(self.trunk(x))
        return [head(z) * z.mean(1, keepdim=True) + head(z.relu()) for head in self.heads]


def test_heads_that_use_the_representation_more_than_once():
    torch.manual_seed(0)
    model = ReusingHeads(3, nn.BatchNorm1d(12))
    _check(model, _mlp_batches(model), _regression, lambda m: [m.trunk[2].weight], split=True)


class SharedSubHead(PlainMLP):
    """Tasks 0 and 1 share one more layer that task 2 does not use: no single split."""

    def __init__(self):
        super().__init__(3)
        self.pair = nn.Linear(12, 12)

    def forward(self, x):
        z = self.trunk(x)
        pair = self.pair(z).relu()
        return [self.heads[0](pair), self.heads[1](pair), self.heads[2](z)]


class SkipFromHead(PlainMLP):
    """A head also reads W's layer output before the ReLU: the gradient bypasses z."""

    def __init__(self):
        super().__init__(2)

    def forward(self, x):
        y = self.trunk[:3](x)
        z = self.trunk[3](y)
        return [self.heads[0](z), self.heads[1](z) + y[:, :4].sum(1, keepdim=True)]


@pytest.mark.parametrize("network", [SharedSubHead, SkipFromHead])
def test_no_clean_split_falls_back_exactly_with_one_warning(network):
    torch.manual_seed(0)
    model = network()
    notes = _check(model, _mlp_batches(model), _regression, lambda m: [m.trunk[2].weight], split=False)
    assert "no single split" in notes[0]


def test_w_as_several_parameters_takes_the_batched_segment():
    torch.manual_seed(0)
    model = PlainMLP(3, nn.Sequential(nn.BatchNorm1d(12), nn.ReLU()))
    split = find_split(torch.stack(_regression(model, _mlp_batches(model, 1)[0])), list(model.trunk[2:].parameters()))
    assert isinstance(split, Split) and split.layer is None
    _check(model, _mlp_batches(model), _regression, lambda m: m.trunk[2:], split=True)


# -- convolutional networks ----------------------------------------------------------------------
class ConvEncoderDecoder(nn.Module):
    """conv-BN-ReLU encoder, a pooling bottleneck, a decoder whose last conv (W) is followed by BatchNorm
    and ReLU, and three dense heads (3×3 conv-ReLU then 1×1 conv)."""

    def __init__(self, outs=(4, 1, 3)):
        super().__init__()
        self.encoder = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(), nn.MaxPool2d(2))
        self.decoder = nn.Sequential(nn.Upsample(scale_factor=2), nn.Conv2d(6, 8, 3, padding=1, bias=False),
                                     nn.BatchNorm2d(8), nn.ReLU())
        self.heads = nn.ModuleList(nn.Sequential(nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, o, 1))
                                   for o in outs)

    def forward(self, x):
        z = self.decoder(self.encoder(x))
        return [head(z) for head in self.heads]


def _dense(model, batch):
    x, (labels, depth, normals) = batch
    seg, dep, nor = model(x)
    return [nn.functional.cross_entropy(seg, labels), (dep - depth).abs().mean(),
            1 - nn.functional.cosine_similarity(nor, normals, dim=1).mean()]


def _image_batches(size=(8, 10), n=2, steps=STEPS):
    gen = torch.Generator().manual_seed(2)
    return [(torch.randn(n, 3, *size, generator=gen),
             (torch.randint(4, (n, *size), generator=gen), torch.randn(n, 1, *size, generator=gen),
              nn.functional.normalize(torch.randn(n, 3, *size, generator=gen), dim=1))) for _ in range(steps)]


def test_conv_encoder_decoder_with_batchnorm_after_w():
    torch.manual_seed(0)
    model = ConvEncoderDecoder()
    _check(model, _image_batches(), _dense, lambda m: m.decoder[1], split=True)


class ResNetTrunk(nn.Module):
    """torchvision's ResNet-18 up to layer4 as the trunk, a dense 1×1 conv head per task."""

    def __init__(self, outs=(4, 1, 3)):
        super().__init__()
        net = torchvision.models.resnet18(weights=None)
        self.trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2, net.layer3,
                                   net.layer4)
        self.heads = nn.ModuleList(nn.Conv2d(512, o, 1) for o in outs)

    def forward(self, x):
        z = self.trunk(x)
        outs = [head(z) for head in self.heads]
        return [nn.functional.interpolate(o, size=x.shape[2:], mode="nearest") for o in outs]


@pytest.mark.parametrize("which", ["layer4[-1].conv2", "layer4"])
def test_torchvision_resnet18_trunk(which):
    torch.manual_seed(0)
    model = ResNetTrunk()
    get_w = (lambda m: [m.trunk[7][-1].conv2.weight]) if which != "layer4" else (lambda m: m.trunk[7])
    _check(model, _image_batches(size=(32, 32), steps=2), _dense, get_w, split=True, rtol=2e-4, atol=2e-5)


# -- torch.compile -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def compiler():
    """Skip where torch.compile cannot build a kernel (no C++ compiler, unsupported platform)."""
    try:
        torch.compile(lambda t: (t * 2).relu())(torch.randn(3, requires_grad=True)).sum().backward()
    except Exception as err:  # noqa: BLE001 - any failure means: no compiler here
        pytest.skip(f"torch.compile does not work here: {type(err).__name__}: {str(err).splitlines()[0][:200]}")


@pytest.mark.slow
def test_torch_compiled_two_head_mlp_gets_exact_weights(compiler):
    """The compiled graph is one node: the split is hidden in it and its backward cannot be batched
    (``vmap``); GradNorm says so once and takes one backward pass per task, exactly."""
    torch.manual_seed(0)
    model = PlainMLP(2)
    torch._dynamo.reset()
    notes = _check(model, _mlp_batches(model), _regression, lambda m: [m.trunk[2].weight], split=None,
                   wrap=torch.compile)
    assert len(notes) == 1 and "cannot be batched" in notes[0], notes


def test_the_remembered_split_is_analysed_anew_when_the_graph_changes():
    from gradnorm.balancers.task_split import SplitFinder

    torch.manual_seed(0)
    model = SkipFromHead()
    batch = _mlp_batches(model, 1)[0]
    plain = super(SkipFromHead, model).forward  # the same network without the skip from a head
    finder, W = SplitFinder(), [model.trunk[2].weight]

    def losses(forward):
        return torch.stack([((out - y) ** 2).mean() for out, y in zip(forward(batch[0]), batch[1])])

    first = finder(losses(plain), W)
    assert isinstance(first, Split)
    again = finder(losses(plain), W)  # the same graph: the remembered analysis, on this graph's nodes
    assert isinstance(again, Split) and again.node is not first.node and again.layer.node is not first.layer.node
    assert isinstance(finder(losses(model), W), str)  # a skip from a head: no split
    assert isinstance(finder(losses(plain), W), Split)
    other = PlainMLP(2)
    assert isinstance(finder(losses(other), [other.trunk[2].weight]), Split)  # another W: analysed anew


def test_a_w_outside_the_losses_graph_is_named_in_one_error():
    trunk, heads, other = nn.Linear(5, 8), nn.ModuleList([nn.Linear(8, 1), nn.Linear(8, 1)]), nn.Linear(3, 3)
    z = trunk(torch.randn(4, 5))
    losses = torch.stack([h(z).pow(2).mean() for h in heads])
    with pytest.raises(ValueError, match="no task loss depends on the shared_params given"):
        GradNorm(2).backward(losses, [other.weight])
