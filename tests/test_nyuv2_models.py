"""The NYUv2 backbones: one GradNorm training step each at a tiny resolution, exact per-task
gradient norms at W, parameter counts, and the pretrained-weights path (without a download)."""

import warnings

import pytest
import torch
import torchvision
from torchvision.models.vgg import cfgs, make_layers

from gradnorm.balancers import GradNorm
from gradnorm.cli import compose
from gradnorm.data import NYUv2
from gradnorm.data.fake_nyuv2 import write_fake_nyuv2
from gradnorm.models import FCN, SegNet, ThinResNet
from gradnorm.train import build

HEADS = {"seg": 13, "depth": 1, "normals": 3}
#: parameter counts with these heads (docs/nyuv2.md); the paper: SegNet ~29M, thin ResNet ~15M
PARAMETERS = {"segnet": 29_449_105, "resnet": 14_411_025, "fcn": 32_954_961}

pytestmark = pytest.mark.usefixtures("one_thread")



@pytest.fixture(scope="module")
def batch(tmp_path_factory):
    root = write_fake_nyuv2(tmp_path_factory.mktemp("nyuv2"), n_train=4, n_val=2, height=32, width=48)
    data = NYUv2(str(root), num_workers=0)
    return data.tasks, next(data.train_batches(batch_size=2, seed=0))


@pytest.mark.parametrize("name", ["segnet", "resnet", "fcn"])
def test_one_gradnorm_step_with_exact_per_task_norms(name, batch):
    tasks, (x, targets) = batch
    torch.manual_seed(0)
    model = build(compose([f"model={name}"]).model, "model", in_channels=3, heads=HEADS)  # conf/model/<name>.yaml
    assert model.num_parameters() == PARAMETERS[name]
    W = model.last_shared_layer.weight
    assert model.last_shared_parameters() == [W]

    predictions, features = model(x)
    assert {k: tuple(v.shape) for k, v in predictions.items()} == {
        "seg": (2, 13, 32, 48), "depth": (2, 1, 32, 48), "normals": (2, 3, 32, 48)}
    losses = torch.stack([t.loss(predictions[t.name], targets[t.name]) for t in tasks])
    # (in float64: torch's float32 .norm() of FCN's 9.4M-entry gradient is off by ~4e-4 on CPU)
    expected = torch.stack([torch.autograd.grad(loss, W, retain_graph=True)[0].double().norm() for loss in losses])

    balancer = GradNorm(3, alpha=1.5)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        info = balancer.backward(losses, model.last_shared_parameters(), features=features)
    assert not [w for w in caught if "fallback" in str(w.message).lower()]  # vmap has rules for W's layer
    got = torch.tensor([info[f"gradnorm/grad_norm_{i}"] for i in range(3)])  # w_i ‖∇_W L_i‖ with w = 1
    assert torch.allclose(got.double(), expected, rtol=1e-5)

    for n, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), n
    torch.optim.Adam(model.parameters(), lr=1e-3).step()
    balancer.step()
    assert not torch.equal(before["heads.depth.weight"], model.heads.depth.weight)
    assert balancer.weights.sum().item() == pytest.approx(3.0)


def test_segnet_in_channels_last(batch):
    tasks, (x, _) = batch
    # In float64: float32 kernels for the two layouts sum in different orders, and through
    # SegNet's 26 convolutions that differs by ~1e-4 on some machines; the layouts must agree.
    x = x.double()
    model = SegNet(heads=HEADS).double().to(memory_format=torch.channels_last)
    predictions, _ = model(x.contiguous(memory_format=torch.channels_last))
    reference = SegNet(heads=HEADS).double()
    reference.load_state_dict(model.state_dict())
    assert torch.allclose(predictions["seg"], reference(x)[0]["seg"], atol=1e-9)


def test_pretrained_weights_come_from_torchvision(monkeypatch):
    # get_state_dict is what downloads; serve known tensors instead.
    torch.manual_seed(0)
    vgg = {f"features.{k}": v for k, v in make_layers(cfgs["D"], batch_norm=True).state_dict().items()}
    resnet = torchvision.models.resnet50().state_dict()
    served = {"VGG16_BN": vgg, "ResNet50": resnet}

    def get_state_dict(self, *args, **kwargs):
        return served[type(self).__name__.removesuffix("_Weights")]

    monkeypatch.setattr(torchvision.models.WeightsEnum, "get_state_dict", get_state_dict)
    segnet = SegNet(heads=HEADS, pretrained=True)
    assert torch.equal(segnet.encoder[0][0].weight, vgg["features.0.weight"])
    assert torch.equal(segnet.encoder[4][7].running_mean, vgg["features.41.running_mean"])
    thin = ThinResNet(heads=HEADS, pretrained=True)
    assert torch.equal(thin.stem[0].weight, resnet["conv1.weight"])
    assert torch.equal(thin.layer3[5].conv3.weight, resnet["layer3.5.conv3.weight"])
    fcn = FCN(heads=HEADS, pretrained=True)
    assert torch.equal(fcn.encoder[7][2].conv3.weight, resnet["layer4.2.conv3.weight"])


def test_pretrained_needs_three_input_channels():
    with pytest.raises(ValueError, match="pretrained weights need 3 input channels, got 4"):
        SegNet(in_channels=4, heads=HEADS, pretrained=True)
