"""MultiLeNet (gradnorm/models/multilenet.py): its layout and parameter count, W the suite's way, exact
per-task gradient norms at W in a GradNorm step, the channels-last layout, and bad values."""

import pytest
import torch
from torch import nn

from gradnorm.balancers import GradNorm
from gradnorm.cli import compose
from gradnorm.config import ConfigError
from gradnorm.models import MultiLeNet
from gradnorm.tasks import Classification, Regression
from gradnorm.train import build, check_model_fits

pytestmark = pytest.mark.usefixtures("one_thread")
HEADS = {"left": 10, "right": 10, "sum": 1}
TASKS = [Classification("left", 10), Classification("right", 10), Regression("sum", 1)]


def batch(n: int = 6):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 1, 28, 28, generator=g)
    left, right = torch.randint(10, (n,), generator=g), torch.randint(10, (n,), generator=g)
    return x, {"left": left, "right": right, "sum": (left + right).float().unsqueeze(1)}


def test_layout_parameters_and_w():
    model = build(compose(["model=multilenet"]).model, "model", in_channels=1, image_size=28, heads=HEADS)
    assert isinstance(model, MultiLeNet)
    convs = [m for m in model.trunk if isinstance(m, nn.Conv2d)]
    assert [(c.in_channels, c.out_channels, c.kernel_size) for c in convs] == [(1, 10, (5, 5)), (10, 20, (5, 5))]
    W = model.last_shared_layer.weight
    assert W.shape == (50, 320) and model.last_shared_parameters() == [W]
    # conv 1: 1·10·25 + 10; conv 2: 10·20·25 + 20; fc 320·50 + 50; heads fc 50·50 + 50, then 50·out + out
    shared = 260 + 5020 + 16050
    assert sum(p.numel() for p in model.shared_parameters()) == shared
    assert model.num_parameters() == shared + 2 * (2550 + 510) + (2550 + 51)
    assert not {id(p) for p in model.shared_parameters()} & {id(p) for p in model.heads.parameters()}

    x, _ = batch()
    predictions, features = model(x)
    assert {k: tuple(v.shape) for k, v in predictions.items()} == {"left": (6, 10), "right": (6, 10), "sum": (6, 1)}
    z = model.shared(x)
    assert len(features) == 3 and all(torch.equal(f, z) for f in features) and z.shape == (6, 50)
    assert (z >= 0).all()  # ReLU after W


def test_one_gradnorm_step_with_exact_per_task_norms_at_w():
    torch.manual_seed(0)
    model = MultiLeNet(heads=HEADS)
    x, targets = batch()
    predictions, features = model(x)
    losses = torch.stack([t.loss(predictions[t.name], targets[t.name]) for t in TASKS])
    W = model.last_shared_layer.weight
    expected = torch.stack([torch.autograd.grad(loss, W, retain_graph=True)[0].double().norm() for loss in losses])
    balancer = GradNorm(3, alpha=1.5)
    info = balancer.backward(losses, model.last_shared_parameters(), features=features)
    got = torch.tensor([info[f"gradnorm/grad_norm_{i}"] for i in range(3)])
    assert torch.allclose(got.double(), expected, rtol=1e-5)
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    balancer.step()
    assert balancer.weights.sum().item() == pytest.approx(3.0)


def test_channels_last_computes_the_same_function():
    torch.manual_seed(0)
    model = MultiLeNet(heads=HEADS)
    x, _ = batch()
    reference, _ = model(x)
    model = model.to(memory_format=torch.channels_last)
    got, _ = model(x.contiguous(memory_format=torch.channels_last))
    for name in HEADS:
        assert torch.allclose(got[name], reference[name], atol=1e-5)


def test_dropout_only_while_training():
    torch.manual_seed(0)
    model = MultiLeNet(heads={"left": 10}, dropout=0.5)
    x, _ = batch()
    model.eval()
    assert torch.equal(model(x)[0]["left"], model(x)[0]["left"])
    model.train()
    assert not torch.equal(model(x)[0]["left"], model(x)[0]["left"])


@pytest.mark.parametrize("kwargs, message", [
    ({"width": 0}, "model.width must be a positive integer, got 0"),
    ({"dropout": 1.0}, r"model.dropout must be a number in \[0, 1\), got 1.0"),
    ({"image_size": 12}, "model=multilenet needs images of at least 16×16 pixels, got 12"),
])
def test_bad_values_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        MultiLeNet(heads=HEADS, **kwargs)


def test_other_image_sizes_size_w():
    model = MultiLeNet(image_size=36, heads={"left": 10})  # 36 -> 32 -> 16 -> 12 -> 6
    assert model.last_shared_layer.weight.shape == (50, 20 * 6 * 6)
    assert model(torch.zeros(2, 1, 36, 36))[0]["left"].shape == (2, 10)


def test_it_does_not_fit_the_toy():
    cfg = compose(["model=multilenet"])  # the default data set is the toy: vectors of in_features
    with pytest.raises(ConfigError, match="model=multilenet does not fit dataset=toy .* models for dataset=toy: mlp"):
        check_model_fits(cfg, {"in_features": 250})
