"""Image classification (MultiMNIST's left and right digits): cross-entropy, accuracy.

With N test samples, y the label and ŷ = argmax of the logits:

    acc = #{ŷ = y} / N      (a fraction in [0, 1]; exact counts, summed over processes)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from gradnorm.tasks import directions as dirs
from gradnorm.tasks.base import Task


class Classification(Task):
    """One label per sample out of ``num_classes``; the loss is the mean cross-entropy of the batch."""

    def __init__(self, name: str, num_classes: int = 10):
        super().__init__(name)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.out_channels = self.num_classes = num_classes

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(pred.float(), target)

    def metrics(self) -> torchmetrics.MetricCollection:
        return torchmetrics.MetricCollection({self.name: AccuracyMetric(self.num_classes, prefix=self.name)})

    def metric_directions(self) -> dict[str, bool]:
        return AccuracyMetric.directions(self.name)


class AccuracyMetric(torchmetrics.Metric):
    """The fraction of test samples whose largest logit is the label's."""

    full_state_update = False

    def __init__(self, num_classes: int, prefix: str):
        super().__init__()
        self.num_classes, self.prefix = num_classes, prefix
        self.add_state("correct", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    directions = staticmethod(dirs.accuracy)  # metric name -> whether higher is better

    def update(self, logits: Tensor, target: Tensor) -> None:
        if ((target < 0) | (target >= self.num_classes)).any():
            raise ValueError(f"class labels must lie in [0, {self.num_classes})")
        self.correct += (logits.argmax(dim=1) == target).sum()
        self.count += target.numel()

    def compute(self) -> dict[str, Tensor]:
        return {f"{self.prefix}/acc": self.correct.double() / self.count}
