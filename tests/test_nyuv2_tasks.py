"""NYUv2 losses and metrics on hand-made inputs with known answers (gradnorm/tasks/)."""

import math

import numpy as np
import pytest
import torch

from gradnorm.tasks import Depth, Normals, Segmentation, delta_m


def _compute(task, *batches):
    metrics = task.metrics()
    for pred, target in batches:
        metrics.update(pred, target)
    return {k: float(v) for k, v in metrics.compute().items()}


def _one_hot_logits(labels, num_classes):
    """B×C×H×W logits whose argmax is ``labels``."""
    return torch.nn.functional.one_hot(labels.clamp(min=0), num_classes).permute(0, 3, 1, 2).float() * 10


# -- segmentation -------------------------------------------------------------------------------
TARGET = torch.tensor([[[0, 0, 1], [1, 2, -1]]])  # 1×2×3, one ignored pixel
PRED = torch.tensor([[[0, 1, 1], [1, 0, 2]]])
# valid (true, pred): (0,0) (0,1) (1,1) (1,1) (2,0) -> confusion [[1,1,0],[0,2,0],[1,0,0]]
# IoU = (1/3, 2/3, 0), mIoU = 1/3, pixel accuracy 3/5


def test_segmentation_metrics_from_a_known_confusion_matrix():
    task = Segmentation(num_classes=3)
    got = _compute(task, (_one_hot_logits(PRED, 3), TARGET))
    assert got["seg/miou"] == pytest.approx(1 / 3)
    assert got["seg/pix_acc"] == pytest.approx(3 / 5)
    assert got["seg/err"] == pytest.approx(100 * 2 / 3)


def test_segmentation_metrics_accumulate_over_batches_and_skip_absent_classes():
    # Two batches give the confusion matrix of the whole set, not a mean of per-batch mIoUs;
    # class 3 (never true, never predicted) does not enter the mean.
    task = Segmentation(num_classes=4)
    first = (_one_hot_logits(PRED[:, :1], 4), TARGET[:, :1])
    second = (_one_hot_logits(PRED[:, 1:], 4), TARGET[:, 1:])
    got = _compute(task, first, second)
    assert got["seg/miou"] == pytest.approx(1 / 3)
    assert got["seg/pix_acc"] == pytest.approx(3 / 5)


def test_segmentation_perfect_prediction():
    target = torch.randint(0, 13, (2, 8, 8))
    target[0, 0, :4] = -1
    got = _compute(Segmentation(), (_one_hot_logits(target, 13), target))
    assert got["seg/miou"] == 1.0 and got["seg/pix_acc"] == 1.0 and got["seg/err"] == 0.0


def test_segmentation_loss_ignores_unlabelled_pixels():
    torch.manual_seed(0)
    logits = torch.randn(1, 3, 2, 3, requires_grad=True)
    loss = Segmentation(num_classes=3).loss(logits, TARGET)
    flat = logits.detach().permute(0, 2, 3, 1).reshape(-1, 3)
    valid = TARGET.flatten() >= 0
    expected = -torch.log_softmax(flat[valid], 1)[torch.arange(5), TARGET.flatten()[valid]].mean()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)
    loss.backward()
    assert torch.all(logits.grad[0, :, 1, 2] == 0)  # the ignored pixel gets no gradient


def test_segmentation_loss_is_zero_when_every_pixel_is_ignored():
    logits = torch.randn(1, 3, 2, 2, requires_grad=True)
    loss = Segmentation(num_classes=3).loss(logits, torch.full((1, 2, 2), -1))
    loss.backward()
    assert loss.item() == 0.0 and torch.all(logits.grad == 0)


def test_segmentation_rejects_labels_outside_the_classes():
    with pytest.raises(ValueError, match=r"\[0, 3\)"):
        _compute(Segmentation(num_classes=3), (torch.zeros(1, 3, 1, 1), torch.tensor([[[5]]])))


# -- depth ---------------------------------------------------------------------------------------
DEPTH_TARGET = torch.tensor([[[[2.0, 0.0], [1.0, 4.0]]]])  # 0 = no measurement
DEPTH_PRED = torch.tensor([[[[3.0, 5.0], [1.0, 2.0]]]])
# valid errors: +1, 0, -2


def test_depth_metrics_on_valid_pixels():
    got = _compute(Depth(), (DEPTH_PRED, DEPTH_TARGET))
    assert got["depth/rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert got["depth/abs_err"] == pytest.approx(1.0)
    assert got["depth/rel_err"] == pytest.approx((1 / 2 + 0 + 2 / 4) / 3)


def test_depth_rmse_is_pixel_level_over_the_whole_set():
    # RMSE over all valid pixels of both batches, not the mean of per-batch RMSEs.
    second = (torch.tensor([[[[1.0]]]]), torch.tensor([[[[4.0]]]]))  # error 3
    got = _compute(Depth(), (DEPTH_PRED, DEPTH_TARGET), second)
    assert got["depth/rmse"] == pytest.approx(math.sqrt((1 + 0 + 4 + 9) / 4))


@pytest.mark.parametrize("kind, expected", [("l2", 5 / 3), ("l1", 1.0)])
def test_depth_loss_masks_missing_depth(kind, expected):
    pred = DEPTH_PRED.clone().requires_grad_()
    loss = Depth(loss=kind).loss(pred, DEPTH_TARGET)
    assert loss.item() == pytest.approx(expected)
    loss.backward()
    assert pred.grad[0, 0, 0, 1] == 0


def test_depth_rejects_unknown_loss():
    with pytest.raises(ValueError, match="l2, l1"):
        Depth(loss="huber")


# -- normals -------------------------------------------------------------------------------------
ANGLES = [0.0, 10.0, 20.0, 45.0, 90.0]


def _normals_case():
    """Target (1, 0, 0) everywhere; predictions at known angles with assorted lengths; one invalid pixel."""
    radians = torch.deg2rad(torch.tensor(ANGLES + [30.0]))
    lengths = torch.tensor([2.0, 0.5, 1.0, 3.0, 1.0, 1.0])
    pred = torch.stack([torch.cos(radians), torch.sin(radians), torch.zeros(6)]) * lengths
    target = torch.tensor([[1.0, 0.0, 0.0]] * 5 + [[0.0, 0.0, 0.0]]).T
    return pred.view(1, 3, 2, 3), target.reshape(1, 3, 2, 3)


def test_normals_metrics_on_known_angles():
    got = _compute(Normals(), _normals_case())
    cosines = [math.cos(math.radians(a)) for a in ANGLES]
    assert got["normals/err"] == pytest.approx(sum(1 - abs(c) for c in cosines) / 5, abs=1e-6)
    assert got["normals/mean_angle"] == pytest.approx(sum(ANGLES) / 5, abs=1e-3)
    assert abs(got["normals/median_angle"] - 20.0) <= 0.01
    assert got["normals/within_11.25"] == pytest.approx(2 / 5)
    assert got["normals/within_22.5"] == pytest.approx(3 / 5)
    assert got["normals/within_30"] == pytest.approx(3 / 5)


def test_normals_err_uses_absolute_cosine():
    # A flipped normal is 180° off but has 1 − |cos| = 0 (the paper's error measure).
    pred, target = -torch.ones(1, 3, 1, 1), torch.ones(1, 3, 1, 1)
    got = _compute(Normals(), (pred, target))
    assert got["normals/err"] == pytest.approx(0.0, abs=1e-6)
    assert got["normals/mean_angle"] == pytest.approx(180.0, abs=1e-3)


def test_normals_median_matches_numpy_within_one_bin():
    torch.manual_seed(0)
    pred, target = torch.randn(3, 3, 15, 15), torch.randn(3, 3, 15, 15)  # an odd number of pixels
    got = _compute(Normals(median_bin_deg=0.01), (pred[:2], target[:2]), (pred[2:], target[2:]))
    cos = torch.nn.functional.cosine_similarity(pred.double(), target.double(), dim=1)
    angles = np.degrees(np.arccos(cos.clamp(-1, 1).numpy().ravel()))
    assert abs(got["normals/median_angle"] - np.median(angles)) <= 0.01
    assert got["normals/mean_angle"] == pytest.approx(angles.mean(), abs=1e-3)


def test_normals_loss_is_one_minus_cosine_on_valid_pixels():
    pred, target = _normals_case()
    pred.requires_grad_()
    loss = Normals().loss(pred, target)
    expected = sum(1 - math.cos(math.radians(a)) for a in ANGLES) / 5
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    loss.backward()
    assert torch.all(pred.grad[0, :, 1, 2] == 0)  # the pixel without a target normal


# -- metrics averaged per test batch (dataset.metric_average=batches, the MTAN / Nash-MTL code) ----
def test_depth_metrics_per_batch_weigh_every_batch_once():
    # batch 1: errors +1, 0, -2 on depths 2, 1, 4; batch 2: one pixel, error 3 on depth 4; a batch
    # without any valid pixel is skipped.
    second = (torch.tensor([[[[1.0]]]]), torch.tensor([[[[4.0]]]]))
    empty = (torch.ones(1, 1, 1, 2), torch.zeros(1, 1, 1, 2))
    got = _compute(Depth(metric_average="batches"), (DEPTH_PRED, DEPTH_TARGET), second, empty)
    assert got["depth/abs_err"] == pytest.approx((1.0 + 3.0) / 2)            # pixels: (1 + 0 + 2 + 3) / 4
    assert got["depth/rel_err"] == pytest.approx(((1 / 2 + 0 + 2 / 4) / 3 + 3 / 4) / 2)
    assert got["depth/rmse"] == pytest.approx((math.sqrt(5 / 3) + 3.0) / 2)
    pixels = _compute(Depth(), (DEPTH_PRED, DEPTH_TARGET), second, empty)
    assert pixels["depth/abs_err"] == pytest.approx(6 / 4)


def test_normals_metrics_per_batch_take_each_batchs_exact_median():
    pred, target = _normals_case()  # valid angles 0, 10, 20, 45, 90
    second = (torch.tensor([[1.0, 1.0, 0.0], [0.0, 0.0, 0.0], [0.0, 0.0, 0.0]]).T.reshape(1, 3, 1, 3) +
              torch.tensor([0.0, 0.0, 1.0]).view(1, 3, 1, 1) * torch.tensor([0.0, 1.0, 1.0]).view(1, 1, 1, 3),
              torch.tensor([[1.0, 0.0, 0.0]] * 3).T.reshape(1, 3, 1, 3))  # angles 45, 90, 90
    got = _compute(Normals(metric_average="batches"), (pred, target), second)
    assert got["normals/mean_angle"] == pytest.approx((33.0 + 75.0) / 2, abs=1e-3)
    assert got["normals/median_angle"] == pytest.approx((20.0 + 90.0) / 2, abs=1e-3)
    assert got["normals/within_22.5"] == pytest.approx((3 / 5 + 0) / 2)
    even = (torch.randn(1, 3, 2, 2), torch.randn(1, 3, 2, 2))  # an even count: the mean of the two middle values
    angles = np.sort(np.degrees(np.arccos(torch.nn.functional.cosine_similarity(
        even[0].double(), even[1].double(), dim=1).clamp(-1, 1).numpy().ravel())))
    assert _compute(Normals(metric_average="batches"), even)["normals/median_angle"] == pytest.approx(
        np.median(angles), abs=1e-4)


def test_unknown_metric_average_is_refused():
    for task in (Depth, Normals):
        with pytest.raises(ValueError, match="metric_average must be one of pixels, batches; got 'batch'"):
            task(metric_average="batch")


def test_states_merge_like_a_single_pass():
    # torchmetrics syncs processes with each state's dist_reduce_fx; merge_state applies the same
    # reductions, so two "ranks" holding halves must give the single-pass result.
    torch.manual_seed(1)
    cases = {
        Segmentation(num_classes=4): (torch.randn(4, 4, 5, 5), torch.randint(-1, 4, (4, 5, 5))),
        Depth(): (torch.rand(4, 1, 5, 5), torch.rand(4, 1, 5, 5) * (torch.rand(4, 1, 5, 5) > 0.2)),
        Normals(): (torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)),
    }
    for task, (pred, target) in cases.items():
        whole = task.metrics()
        whole.update(pred, target)
        rank0, rank1 = task.metrics(), task.metrics()
        rank0.update(pred[:2], target[:2])
        rank1.update(pred[2:], target[2:])
        for name, metric in rank0.items():
            metric.merge_state(rank1[name])
        expected, got = whole.compute(), rank0.compute()
        assert expected.keys() == got.keys()
        for key in expected:
            assert float(got[key]) == pytest.approx(float(expected[key]), rel=1e-6), key


# -- Δm ------------------------------------------------------------------------------------------
def test_delta_m_signs_follow_metric_direction():
    directions = {**Depth().metric_directions(), **Segmentation().metric_directions()}
    metrics = {"depth/rmse": 0.9, "seg/miou": 0.33}
    baselines = {"depth/rmse": 1.0, "seg/miou": 0.30}
    # depth: lower is better, 10% lower -> +10; mIoU: 10% higher -> +10
    assert delta_m(metrics, baselines, directions) == pytest.approx(10.0)
    assert delta_m({"depth/rmse": 1.1, "seg/miou": 0.27}, baselines, directions) == pytest.approx(-10.0)


def test_delta_m_conventions_flat_nash_mtl_and_libmtl():
    from gradnorm.tasks import delta_m_all

    # seg: miou +10% (higher better) and pix_acc 0%; normals: three angles, mean_angle −30% (lower better: +30%)
    metrics = {"seg/miou": 0.44, "seg/pix_acc": 0.5, "normals/mean_angle": 14.0, "normals/median_angle": 10.0,
               "normals/within_30": 0.5}
    baselines = {"seg/miou": 0.4, "seg/pix_acc": 0.5, "normals/mean_angle": 20.0, "normals/median_angle": 10.0,
                 "normals/within_30": 0.5}
    directions = {"seg/miou": True, "seg/pix_acc": True, "normals/mean_angle": False,
                  "normals/median_angle": False, "normals/within_30": True}
    out = delta_m_all(metrics, baselines, directions)
    assert out["delta_m"] == pytest.approx((10 + 0 + 30 + 0 + 0) / 5)                  # flat over 5 metrics
    assert out["delta_m_nash_mtl"] == pytest.approx(-8.0)                              # lower is better
    assert out["delta_m_libmtl"] == pytest.approx(((10 + 0) / 2 + (30 + 0 + 0) / 3) / 2)  # per task, then tasks


def test_nash_mtl_base_values_are_selectable():
    from gradnorm.data.nyuv2 import NASH_MTL_BASELINES

    assert len(NASH_MTL_BASELINES) == 9 and NASH_MTL_BASELINES["seg/miou"] == 0.3830
    assert NASH_MTL_BASELINES["normals/median_angle"] == 19.21
