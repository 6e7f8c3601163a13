"""FAMO, fast adaptive multitask optimization (Liu, Liang, Liu, Stone, Liu, NeurIPS 2023, Algorithm 1).

FAMO decreases every task's log-loss at an equal rate with O(1) extra work per step. With task
logits ξ and z = softmax(ξ), the network follows

    d = Σ_i c · (z_i / L_i) ∇L_i,   c = (Σ_j z_j / L_j)⁻¹      (the gradient of Σ_i z_i log L_i, rescaled),

i.e. the loss weights w_i = c z_i / L_i, and after the step the logits take one step of their own
optimiser on the rate at which the log-losses actually fell,

    δ_i = log L_i(θ_t) − log L_i(θ_{t+1}),    ∇_ξ = J_z(ξ)ᵀ δ + γ ξ,   J_zᵀ δ = z ⊙ (δ − zᵀδ),

with β = 0.025 (Adam, like the authors' code) and the decay γ = 0.001 (a config value; the authors'
scripts set it per experiment). Their code evaluates L(θ_{t+1}) on the same batch with an extra
forward pass; here it is the next step's batch (the losses the loop computes anyway), so ξ is
updated at the start of each update (its first ``backward``) from the previous update's losses and
this one's. With k micro-batches per update, ξ moves once per update, from the mean of the previous
update's micro-batch losses and this update's first micro-batch, and each micro-batch takes w from its
own losses (the recorded weights are their mean). The
losses enter as L_i − m_i + ε with m_i = ``min_losses`` (0 here, as in their code) and ε = 1e-8.
Losses are the global batch's when data-parallel.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import nn

from gradnorm.balancers.base import Balancer, run_backward
from gradnorm.balancers.scalar_optim import SavesOptimizer, ScalarOptimizer
from gradnorm.checks import as_float

EPS = 1e-8


class FAMO(SavesOptimizer, Balancer):
    """Loss weights c z_i / L_i with z = softmax(ξ) learned to equalise the log-loss decrease rates.

    Args:
        num_tasks: T.
        optimizer: builds ξ's optimiser (the authors: Adam, learning rate 0.025).
        gamma: the decay γ of ξ.
        min_losses: m_i, a lower bound of each loss (default 0).
    """

    name, label, color, log_prefix, needs = "famo", "FAMO", "#D62728", "famo/", "last_shared"
    weight_scale = "sum=1"

    def __init__(
        self,
        num_tasks: int,
        optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] = functools.partial(
            torch.optim.Adam, lr=0.025
        ),
        gamma: float = 0.001,
        min_losses: Sequence[float] | None = None,
    ):
        super().__init__(num_tasks)
        self.gamma = as_float(gamma, "gamma", minimum=0.0)
        self.logits = nn.Parameter(torch.zeros(num_tasks))
        self.optimizer = optimizer([self.logits])
        self._stepper = ScalarOptimizer(self.optimizer, self.logits)
        mins = [0.0] * num_tasks if min_losses is None else [as_float(v, "min_losses") for v in min_losses]
        if len(mins) != num_tasks:
            raise ValueError(f"min_losses needs {num_tasks} values, got {len(mins)}")
        self.register_buffer("min_losses", torch.tensor(mins, dtype=torch.float64))
        self.register_buffer("previous_losses", torch.full((num_tasks,), math.nan, dtype=torch.float64))
        self.register_buffer("task_weights", torch.ones(num_tasks))  # the w_i of the last step
        self._update: list | None = None  # this update's Σ losses, Σ weights applied, micro-batches, ξ before it
        self._keys = [f"famo/z_{i}" for i in range(num_tasks)]

    @property
    def weights(self):
        return self.task_weights.clone()

    def backward(self, losses, shared_params=(), features=None, *, backward_fn=None):
        losses = self._check_losses(losses)
        # The T losses, m_i, the previous losses and ξ on the host in one transfer (one sync on a GPU).
        host = torch.cat([t.to(device=losses.device, dtype=torch.float64) for t in (
            self._global_mean(losses.detach()), self.min_losses, self.previous_losses, self.logits.detach())]).cpu()
        current, mins, previous, logits = host.split(self.num_tasks)
        shifted = current - mins + EPS
        if not bool((shifted > 0).all()):
            raise ValueError(f"FAMO needs losses above min_losses, got {current.tolist()}")
        update = self._update
        if update is None:  # the update's first micro-batch: ξ learns from the last update's decrease
            before = (self.logits.detach().clone(), self._stepper.snapshot())  # for discard()
            if not bool(torch.isnan(previous).any()):
                logits = self._update_logits(shifted, previous - mins + EPS, logits)
            update = self._update = [torch.zeros_like(current), torch.zeros_like(current), 0, before]
        z = torch.softmax(logits, dim=0)
        w = z / shifted
        w = w / w.sum()  # w_i = c z_i / L_i with c = 1 / Σ_j z_j / L_j
        update[0] += current
        update[1] += w
        update[2] += 1
        self.task_weights.copy_((update[1] / update[2]).float())  # the weights applied (their mean over micro-batches)
        run_backward((w.to(device=losses.device, dtype=losses.dtype) * losses).sum(), backward_fn)
        return dict(zip(self._keys, z.tolist()))

    def step(self) -> None:
        """The update's losses (the mean over its micro-batches) are the next update's L(θ_t)."""
        if self._update is not None:
            self.previous_losses.copy_(self._update[0] / self._update[2])
            self._update = None

    def discard(self) -> None:
        """Take back the update's step of ξ: the next update learns from the same decrease instead."""
        if self._update is not None:
            logits, optimizer_state = self._update[3]
            with torch.no_grad():
                self.logits.copy_(logits)
            self._stepper.restore(optimizer_state)
            self._update = None

    def _update_logits(self, shifted: torch.Tensor, previous_shifted: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        """One step of ξ's optimiser on J_zᵀ δ + γ ξ (host float64 tensors); returns the new ξ."""
        delta = previous_shifted.log() - shifted.log()
        z = torch.softmax(logits, dim=0)
        grad = z * (delta - (z * delta).sum()) + self.gamma * logits
        stepped = torch.tensor(self._stepper.step(logits.tolist(), grad.tolist()))  # float32, as ξ
        with torch.no_grad():
            self.logits.copy_(stepped)
        return stepped.double()
