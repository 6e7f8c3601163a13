"""Uncertainty weighting (Kendall, Gal and Cipolla, 2017), the paper's baseline (docs/paper.md, "The baseline").

Kendall et al. weight a regression loss by 1/(2σ_i²) and add log σ_i. With s_i = log σ_i² and the
objective scaled by 2 (so that the weights start at 1, like every other balancer here):

    L_unc = Σ_i exp(−s_i) · L_i + s_i,     weights w_i = exp(−s_i),   s_i(0) = 0.

The s_i are learned by their own optimiser (the paper: learning rate 0.025) on ∂L_unc/∂s_i =
1 − exp(−s_i) L_i, whose fixed point is w_i = 1/L_i. The network receives ∇ Σ_i w_i L_i, exactly
as with any balancer. Classification losses use the same form (Kendall's 1/σ² for softmax
likelihoods differs only by the constant factor absorbed here).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
from torch import Tensor, nn

from gradnorm.balancers.base import Balancer, run_backward
from gradnorm.balancers.scalar_optim import SavesOptimizer, ScalarOptimizer


class Uncertainty(SavesOptimizer, Balancer):
    """Homoscedastic-uncertainty task weights w_i = exp(−s_i), s_i learned with the network."""

    name = "uncertainty"
    label = "Uncertainty"
    color = "#E69F00"
    log_prefix = "uncertainty/"
    weight_scale = "unconstrained"

    def __init__(
        self,
        num_tasks: int,
        optimizer: Callable[[list[nn.Parameter]], torch.optim.Optimizer] = functools.partial(
            torch.optim.Adam, lr=0.025
        ),
    ):
        super().__init__(num_tasks)
        self.log_variances = nn.Parameter(torch.zeros(num_tasks))
        self.optimizer = optimizer([self.log_variances])
        self._stepper = ScalarOptimizer(self.optimizer, self.log_variances)
        self._pending: tuple[list[float], ...] | None = None  # this update's L_i, s_i and ∂L_unc/∂s_i, for step()

    @property
    def weights(self) -> Tensor:
        return torch.exp(-self.log_variances.detach())

    def backward(self, losses, shared_params=(), features=None, *, backward_fn=None):
        losses = self._check_losses(losses)
        w = self.weights.to(device=losses.device, dtype=losses.dtype)
        run_backward((w * losses).sum(), backward_fn)
        # ∂L_unc/∂s_i = 1 − w_i L_i, with L_i this update's loss (its micro-batches' summed), on the global
        # batch when data-parallel; on T host floats (one transfer) like GradNorm's update.
        num_tasks = self.num_tasks
        values = torch.cat([self._global_mean(losses.detach()), w, self.log_variances.detach().to(w)]).tolist()
        mean_losses, weights, log_variances = values[:num_tasks], values[num_tasks:2 * num_tasks], values[2 * num_tasks:]
        if self._pending is not None:  # a further micro-batch of the same update
            mean_losses = [a + b for a, b in zip(self._pending[0], mean_losses)]
        weighted = [weight * loss for weight, loss in zip(weights, mean_losses)]
        self._pending = (mean_losses, log_variances, [1.0 - x for x in weighted])
        return {"uncertainty/objective": sum(weighted) + sum(log_variances)}

    def step(self) -> None:
        if self._pending is None:
            return
        _, log_variances, grad = self._pending
        stepped = self._stepper.step(log_variances, grad)
        self._pending = None
        with torch.no_grad():
            self.log_variances.copy_(torch.tensor(stepped))

    def discard(self) -> None:
        self._pending = None
