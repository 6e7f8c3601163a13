"""MTAN on SegNet (gradnorm/models/mtan.py): its size, the suite's interface (W, features as views of z,
task-specific attention), one GradNorm step with exact per-task norms at W, inputs of any size."""

import warnings

import pytest
import torch

from gradnorm.balancers import GradNorm
from gradnorm.cli import compose
from gradnorm.data import NYUv2
from gradnorm.data.fake_nyuv2 import write_fake_nyuv2
from gradnorm.models import MTAN
from gradnorm.train import build

HEADS = {"seg": 13, "depth": 1, "normals": 3}
#: the parameters of the MTAN / Nash-MTL code's SegNetMtan (experiments/nyuv2/models.py) with these heads
PARAMETERS = 44_229_073

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = write_fake_nyuv2(tmp_path_factory.mktemp("nyuv2"), n_train=4, n_val=2, height=32, width=48)
    data = NYUv2(str(root), num_workers=0, image_normalization="none", depth_loss="l1")
    return data.tasks, next(data.train_batches(batch_size=2, seed=0))


def test_preset_builds_mtan_with_its_size_and_interface():
    torch.manual_seed(0)
    model = build(compose(["model=mtan"]).model, "model", in_channels=3, heads=HEADS)  # conf/model/mtan.yaml
    assert isinstance(model, MTAN) and model.num_parameters() == PARAMETERS
    W = model.last_shared_layer.weight
    assert model.last_shared_parameters() == [W] and W.shape == (64, 64, 3, 3)
    assert W is model.conv_block_dec[0][0].weight  # the shared decoder's last conv
    shared = {id(p) for p in model.shared_parameters()}
    assert all(id(p) in shared for p in model.attention.parameters())  # task-specific, yet not in heads
    assert not any(id(p) in shared for p in model.heads.parameters())
    assert sum(p.numel() for p in model.heads.parameters()) == 3 * (64 * 64 * 9 + 64) + 64 * 17 + 17


def test_features_are_views_of_z_and_attention_is_per_task(batch):
    tasks, (x, targets) = batch
    torch.manual_seed(0)
    model = MTAN(heads=HEADS)
    predictions, features = model(x)
    assert {k: tuple(v.shape) for k, v in predictions.items()} == {
        "seg": (2, 13, 32, 48), "depth": (2, 1, 32, 48), "normals": (2, 3, 32, 48)}
    z = model.shared(x)
    assert len(features) == 3 and all(torch.equal(f, z) and f._base is not None for f in features)
    depth_loss = tasks[1].loss(predictions["depth"], targets["depth"])
    depth_loss.backward()
    assert all(p.grad is None for p in model.attention["seg"].parameters())     # other tasks' attention
    assert all(p.grad is None for p in model.heads["normals"].parameters())
    assert model.attention["depth"].encoder[0][0].weight.grad.abs().sum() > 0
    assert model.encoder_block_att[0][0].weight.grad.abs().sum() > 0              # shared attention convs


def test_one_gradnorm_step_with_exact_per_task_norms(batch):
    tasks, (x, targets) = batch
    torch.manual_seed(0)
    model = MTAN(heads=HEADS)
    W = model.last_shared_layer.weight
    predictions, features = model(x)
    losses = torch.stack([t.loss(predictions[t.name], targets[t.name]) for t in tasks])
    expected = torch.stack([torch.autograd.grad(loss, W, retain_graph=True)[0].double().norm() for loss in losses])
    balancer = GradNorm(3, alpha=1.5)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the one-backward route through the views of z, no slower fallback
        info = balancer.backward(losses, model.last_shared_parameters(), features=features)
    got = torch.tensor([info[f"gradnorm/grad_norm_{i}"] for i in range(3)])
    assert torch.allclose(got.double(), expected, rtol=1e-5)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


def test_inputs_of_any_size_and_one_task():
    torch.manual_seed(0)
    model = MTAN(heads={"depth": 1})
    predictions, features = model(torch.rand(1, 3, 33, 47))  # not a multiple of 32
    assert tuple(predictions["depth"].shape) == (1, 1, 33, 47) and len(features) == 1


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="at least one task head"):
        MTAN(heads={})
    with pytest.raises(ValueError, match="model mtan: in_channels must be a positive integer, got 0"):
        MTAN(in_channels=0, heads=HEADS)
