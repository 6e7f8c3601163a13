"""Depth estimation (NYUv2; paper §5.1): squared loss (the paper) or L1, on the valid pixels only.

A target depth of 0 (or below) marks a pixel without ground truth. With ``metric_average="pixels"``
(default) metrics are pixel-level sums over the whole test set (summed over processes), with N the
number of valid pixels, d the target and d̂ the prediction (metres):

    rmse    = sqrt(Σ (d̂ − d)² / N)      (the paper's "RMS Err. (m)", Table 1)
    abs_err = Σ |d̂ − d| / N
    rel_err = Σ |d̂ − d| / d / N

With ``metric_average="batches"`` each metric is taken over the valid pixels of each test batch and
averaged over the batches, every batch counting once (the MTAN / CAGrad / Nash-MTL code's
``depth_error`` averaged over ``test_batch``); a batch without valid pixels is skipped.
"""

from __future__ import annotations

import torch
import torchmetrics
from torch import Tensor

from gradnorm.tasks import directions as dirs
from gradnorm.tasks.base import Task

LOSSES = ("l2", "l1")
#: how test metrics are averaged: over every valid test pixel, or per test batch then over batches
METRIC_AVERAGES = ("pixels", "batches")


def check_metric_average(value: str) -> str:
    if value not in METRIC_AVERAGES:
        raise ValueError(f"metric_average must be one of {', '.join(METRIC_AVERAGES)}; got {value!r}")
    return value


class Depth(Task):
    """Per-pixel depth regression; ``loss="l2"`` (the paper's squared loss) or ``"l1"`` (MTAN's).

    The loss is the mean over the valid pixels of the batch (0 when there are none).
    """

    out_channels = 1

    def __init__(self, name: str = "depth", loss: str = "l2", metric_average: str = "pixels"):
        super().__init__(name)
        if loss not in LOSSES:
            raise ValueError(f"depth loss must be one of {', '.join(LOSSES)}; got {loss!r}")
        self.loss_type = loss
        self.metric_average = check_metric_average(metric_average)

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        valid = target > 0
        diff = (pred.float() - target) * valid
        per_pixel = diff.square() if self.loss_type == "l2" else diff.abs()
        return per_pixel.sum() / valid.sum().clamp(min=1)

    def metrics(self) -> torchmetrics.MetricCollection:
        return torchmetrics.MetricCollection(
            {self.name: DepthMetrics(prefix=self.name, metric_average=self.metric_average)})

    def metric_directions(self) -> dict[str, bool]:
        return DepthMetrics.directions(self.name)


class DepthMetrics(torchmetrics.Metric):
    """RMSE, mean absolute and mean relative error over all valid test pixels, or per batch (see above)."""

    full_state_update = False

    def __init__(self, prefix: str = "depth", metric_average: str = "pixels"):
        super().__init__()
        self.prefix = prefix
        self.per_batch = check_metric_average(metric_average) == "batches"
        # per pixel: sums of squared, absolute and relative errors and the pixel count; per batch: sums
        # of the batches' RMSE, absolute and relative errors and the batch count
        for state in ("squared", "absolute", "relative", "count"):
            self.add_state(state, default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")

    directions = staticmethod(dirs.depth)  # metric name -> whether higher is better

    def update(self, pred: Tensor, target: Tensor) -> None:
        valid = target > 0
        error = (pred.float() - target)[valid].abs().double()
        relative = error / target[valid]
        if not self.per_batch:
            self.squared += error.square().sum()
            self.absolute += error.sum()
            self.relative += relative.sum()
            self.count += valid.sum()
        elif error.numel():
            self.squared += error.square().mean().sqrt()
            self.absolute += error.mean()
            self.relative += relative.mean()
            self.count += 1

    def compute(self) -> dict[str, Tensor]:
        rmse = self.squared / self.count if self.per_batch else (self.squared / self.count).sqrt()
        return {f"{self.prefix}/rmse": rmse,
                f"{self.prefix}/abs_err": self.absolute / self.count,
                f"{self.prefix}/rel_err": self.relative / self.count}
