"""Surface normals (NYUv2; paper §5.1): 1 − cosine similarity, on the valid pixels only.

Predictions and targets are unit-normalised along the channel axis before the cosine is taken, so
the loss and the metrics depend on directions only; a target of norm 0 marks a pixel without ground
truth. With c the cosine and θ the angle in degrees, over the N valid pixels of the test set:

    err          = Σ (1 − |c|) / N      (the paper's "Err. (1 − |cos|)", Table 1)
    mean_angle   = Σ θ / N
    median_angle = the median of θ, read from a histogram of θ with bins of ``median_bin_deg``
                   degrees, interpolated linearly inside the bin: within one bin of the middle
                   value (with millions of test pixels the two middle values share a bin)
    within_t     = #{θ < t} / N  for t = 11.25, 22.5, 30 (fractions in [0, 1]; exact counts)

Every state is a sum (counts, histogram), so the metrics are exact across processes.

With ``metric_average="batches"`` each metric is taken over the valid pixels of each test batch (the
median exactly, as numpy's) and averaged over the batches, every batch counting once (the MTAN /
CAGrad / Nash-MTL code's ``normal_error`` averaged over ``test_batch``); a batch without valid pixels
is skipped.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from gradnorm.tasks import directions as dirs
from gradnorm.tasks.base import Task
from gradnorm.tasks.depth import check_metric_average

THRESHOLDS = dirs.NORMAL_THRESHOLDS


def cosine_and_mask(pred: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Per-pixel cosine between unit-normalised ``pred`` and ``target`` (B×3×H×W), and the mask of
    pixels with a non-zero target."""
    valid = target.abs().sum(dim=1) > 0
    cosine = (F.normalize(pred.float(), dim=1) * F.normalize(target.float(), dim=1)).sum(dim=1)
    return cosine, valid


def angle_degrees(pred: Tensor, target: Tensor) -> Tensor:
    """Per-pixel angle between ``pred`` and ``target`` in degrees, as atan2(|a × b|, a · b): unlike
    arccos of the cosine, accurate in float32 near 0° and 180°."""
    a, b = F.normalize(pred.float(), dim=1), F.normalize(target.float(), dim=1)
    return torch.rad2deg(torch.atan2(torch.linalg.cross(a, b, dim=1).norm(dim=1), (a * b).sum(dim=1)))


class Normals(Task):
    """Per-pixel surface normal; the loss is the mean of 1 − cos over the valid pixels of the batch."""

    out_channels = 3

    def __init__(self, name: str = "normals", median_bin_deg: float = 0.01, metric_average: str = "pixels"):
        super().__init__(name)
        self.median_bin_deg = median_bin_deg
        self.metric_average = check_metric_average(metric_average)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        cosine, valid = cosine_and_mask(pred, target)
        return ((1.0 - cosine) * valid).sum() / valid.sum().clamp(min=1)

    def metrics(self) -> torchmetrics.MetricCollection:
        return torchmetrics.MetricCollection({self.name: NormalsMetrics(
            prefix=self.name, median_bin_deg=self.median_bin_deg, metric_average=self.metric_average)})

    def metric_directions(self) -> dict[str, bool]:
        return NormalsMetrics.directions(self.name)


class NormalsMetrics(torchmetrics.Metric):
    """1 − |cos|, mean and median angle, and the fractions of pixels within 11.25°, 22.5°, 30°."""

    full_state_update = False

    def __init__(self, prefix: str = "normals", median_bin_deg: float = 0.01, metric_average: str = "pixels"):
        super().__init__()
        if not median_bin_deg > 0:
            raise ValueError(f"median_bin_deg must be > 0, got {median_bin_deg!r}")
        self.prefix = prefix
        self.per_batch = check_metric_average(metric_average) == "batches"
        self.bin_deg = float(median_bin_deg)
        self.num_bins = math.ceil(180.0 / self.bin_deg)
        # per pixel: sums over pixels and pixel counts; per batch: sums of the batches' values (``median``)
        # and the batch count
        for state in ("abs_cos_err", "angle", "count", "median"):
            self.add_state(state, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        within = torch.zeros(len(THRESHOLDS), dtype=torch.float64 if self.per_batch else torch.long)
        self.add_state("within", default=within, dist_reduce_fx="sum")
        bins = 0 if self.per_batch else self.num_bins
        self.add_state("histogram", default=torch.zeros(bins, dtype=torch.long), dist_reduce_fx="sum")

    directions = staticmethod(dirs.normals)  # metric name -> whether higher is better

    def update(self, pred: Tensor, target: Tensor) -> None:
        cosine, valid = cosine_and_mask(pred, target)
        cosine = cosine[valid].double()
        angle = angle_degrees(pred, target)[valid].double()
        if self.per_batch:
            if angle.numel():
                self.abs_cos_err += (1.0 - cosine.abs()).mean()
                self.angle += angle.mean()
                self.median += torch.quantile(angle, 0.5)  # the middle value, or the mean of the two (numpy's)
                self.within += torch.stack([(angle < t).double().mean() for t in THRESHOLDS])
                self.count += 1
            return
        self.abs_cos_err += (1.0 - cosine.abs()).sum()
        self.angle += angle.sum()
        self.count += cosine.numel()
        self.within += torch.stack([(angle < t).sum() for t in THRESHOLDS])
        bins = (angle / self.bin_deg).long().clamp(max=self.num_bins - 1)
        self.histogram += torch.bincount(bins, minlength=self.num_bins)

    def compute(self) -> dict[str, Tensor]:
        n = self.count
        out = {f"{self.prefix}/err": self.abs_cos_err / n,
               f"{self.prefix}/mean_angle": self.angle / n,
               f"{self.prefix}/median_angle": self.median / n if self.per_batch else self._median()}
        for t, k in zip(THRESHOLDS, self.within):
            out[f"{self.prefix}/within_{t:g}"] = k.double() / n
        return out

    def _median(self) -> Tensor:
        counts = self.histogram.double()
        total = counts.sum()
        if total == 0:
            return torch.tensor(float("nan"), dtype=torch.float64)
        cumulative = counts.cumsum(0)
        k = int(torch.searchsorted(cumulative, total / 2))
        before = cumulative[k] - counts[k]
        return (k + (total / 2 - before) / counts[k]) * self.bin_deg
