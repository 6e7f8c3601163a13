"""Semantic segmentation (NYUv2, 13 classes; paper §5.1): pixel-wise cross-entropy, labels -1 ignored.

Metrics come from one confusion matrix C (rows: true class, columns: predicted class) accumulated
over the whole test set and summed over processes:

    IoU_c   = C_cc / (Σ_j C_cj + Σ_j C_jc − C_cc)       over the classes with a non-empty union
    miou    = mean_c IoU_c                               (a fraction in [0, 1])
    pix_acc = Σ_c C_cc / Σ C                             (a fraction in [0, 1])
    err     = 100 · (1 − miou)                           (the paper's "Err. (100 − IoU)", Table 1)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchmetrics
from torch import Tensor

from gradnorm.tasks import directions as dirs
from gradnorm.tasks.base import Task


class Segmentation(Task):
    """Pixel-wise classification into ``num_classes`` classes; target pixels equal to ``ignore_index``
    count neither in the loss nor in the metrics.

    The loss is the mean cross-entropy over the valid pixels of the batch (0 when there are none).
    """

    def __init__(self, name: str = "seg", num_classes: int = 13, ignore_index: int = -1):
        super().__init__(name)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")
        self.out_channels = self.num_classes = num_classes
        self.ignore_index = ignore_index

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        per_pixel = F.cross_entropy(pred.float(), target, ignore_index=self.ignore_index, reduction="none")
        valid = (target != self.ignore_index).sum()
        return per_pixel.sum() / valid.clamp(min=1)

    def metrics(self) -> torchmetrics.MetricCollection:
        return torchmetrics.MetricCollection(
            {self.name: SegmentationMetrics(self.num_classes, prefix=self.name, ignore_index=self.ignore_index)})

    def metric_directions(self) -> dict[str, bool]:
        return SegmentationMetrics.directions(self.name)


class SegmentationMetrics(torchmetrics.Metric):
    """mIoU, pixel accuracy and the paper's 100 − mIoU from a test-set confusion matrix."""

    full_state_update = False

    def __init__(self, num_classes: int, prefix: str = "seg", ignore_index: int = -1):
        super().__init__()
        self.num_classes, self.prefix, self.ignore_index = num_classes, prefix, ignore_index
        self.add_state("confusion", default=torch.zeros(num_classes, num_classes, dtype=torch.long),
                       dist_reduce_fx="sum")

    directions = staticmethod(dirs.segmentation)  # metric name -> whether higher is better

    def update(self, logits: Tensor, target: Tensor) -> None:
        pred = logits.argmax(dim=1)
        valid = target != self.ignore_index
        if ((target[valid] < 0) | (target[valid] >= self.num_classes)).any():
            raise ValueError(f"segmentation labels must lie in [0, {self.num_classes}) or equal "
                             f"{self.ignore_index} (ignored)")
        index = target[valid] * self.num_classes + pred[valid]
        counts = torch.bincount(index, minlength=self.num_classes**2)
        self.confusion += counts.view(self.num_classes, self.num_classes)

    def compute(self) -> dict[str, Tensor]:
        confusion = self.confusion.double()
        hits = confusion.diagonal()
        union = confusion.sum(0) + confusion.sum(1) - hits
        present = union > 0
        miou = (hits[present] / union[present]).mean() if present.any() else torch.tensor(float("nan"))
        pix_acc = hits.sum() / confusion.sum()
        return {f"{self.prefix}/miou": miou, f"{self.prefix}/pix_acc": pix_acc,
                f"{self.prefix}/err": 100.0 * (1.0 - miou)}
