"""Squared-error regression, the toy's task (paper §4)."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from gradnorm.tasks.base import Task


class Regression(Task):
    """L_i = mean over the batch and the outputs of (f(x) − y)²."""

    def __init__(self, name: str, out_channels: int):
        super().__init__(name)
        self.out_channels = out_channels

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.mse_loss(pred, target)
