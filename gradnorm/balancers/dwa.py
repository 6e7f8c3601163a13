"""DWA, dynamic weight average (Liu, Johns, Davison, CVPR 2019, §3.3, Eq. 7).

Each task's weight follows the rate at which its loss went down over the last two periods:

    w_i(k) = T · exp(r_i(k−1) / τ) / Σ_j exp(r_j(k−1) / τ),   r_i(k−1) = L̄_i(k−1) / L̄_i(k−2),

with τ = 2 (the paper), L̄_i(k) the average training loss of task i over period k, and w_i = 1 in
the first two periods. The paper's period is an epoch; here it is ``window`` updates (the toy's
epoch is 2000/100 = 20 steps: conf/balancer/dwa.yaml). Under data parallelism the losses are the
global batch's (the mean over processes), so every process has the same weights.
"""

from __future__ import annotations

import math

import torch

from gradnorm.balancers.base import Balancer
from gradnorm.checks import as_float


class DWA(Balancer):
    """Weights from the ratio of the last two periods' average losses, softmax with temperature τ.

    Args:
        num_tasks: T.
        temperature: τ (paper: 2).
        window: steps per period (the paper: one epoch).
    """

    name, label, color, log_prefix, needs = "dwa", "DWA", "#8C564B", "dwa/", "last_shared"

    def __init__(self, num_tasks: int, temperature: float = 2.0, window: int = 20):
        super().__init__(num_tasks)
        self.temperature = as_float(temperature, "temperature", minimum=0.0, strict=True)
        if isinstance(window, bool) or not isinstance(window, int) or window < 1:
            raise ValueError(f"window must be a positive integer, got {window!r}")
        self.window = window
        self.register_buffer("loss_sums", torch.zeros(num_tasks, dtype=torch.float64))  # this period
        self.register_buffer("num_steps", torch.zeros((), dtype=torch.long))
        # L̄(k−2), L̄(k−1): NaN until two periods are complete
        self.register_buffer("period_means", torch.full((2, num_tasks), math.nan, dtype=torch.float64))
        self.register_buffer("task_weights", torch.ones(num_tasks))
        self._pending: torch.Tensor | None = None  # the losses of this update's micro-batches, summed

    @property
    def weights(self):
        return self.task_weights.clone()

    def backward(self, losses, shared_params=(), features=None, *, backward_fn=None):
        info = super().backward(losses, shared_params, features, backward_fn=backward_fn)  # ∇ Σ w_i L_i
        # this update's training loss (summed over its micro-batches), counted when the update ends
        mean = self._global_mean(losses.detach()).to(self.loss_sums)
        self._pending = mean if self._pending is None else self._pending + mean
        return info

    def step(self) -> None:
        if self._pending is None:
            return
        self.loss_sums += self._pending
        self._pending = None
        self.num_steps += 1
        if int(self.num_steps) % self.window == 0:
            means = self.loss_sums / self.window
            self.period_means.copy_(torch.stack([self.period_means[1], means]))
            self.loss_sums.zero_()
            self.task_weights.copy_(dwa_weights(self.period_means[0], self.period_means[1], self.temperature))

    def discard(self) -> None:
        self._pending = None


def dwa_weights(older: torch.Tensor, newer: torch.Tensor, temperature: float) -> torch.Tensor:
    """T · softmax((L̄(k−1)/L̄(k−2)) / τ); ones while L̄(k−2) is unknown (NaN)."""
    if torch.isnan(older).any():
        return torch.ones(older.numel())
    rates = newer / older
    return (older.numel() * torch.softmax(rates / temperature, dim=0)).float()
