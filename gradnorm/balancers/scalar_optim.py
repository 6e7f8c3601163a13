"""One optimiser step on a balancer's handful of scalars (the T task weights, or log-variances).

A balancer's own parameter has T entries, a few to a few dozen. ``torch.optim.Adam`` spends most of
its time on Python bookkeeping and a dozen tensor operations (on a GPU, a dozen kernel launches)
for them: on the toy MLP that was a quarter of GradNorm's extra cost per step. When the configured
optimiser is a plain ``torch.optim.Adam`` (one group, one parameter; no weight decay, AMSGrad,
maximize, capturable, differentiable or fused variant), :class:`ScalarOptimizer` applies Adam's
update rule to Python floats instead, each result rounded to the parameter's float32, with the
moments kept where ``torch.optim.Adam`` keeps them (``optimizer.state``, synced before its
``state_dict()`` and after its ``load_state_dict()``), so checkpoints are the same as before and a
resumed run continues exactly. Any other optimiser is stepped as usual.
"""

from __future__ import annotations

import copy
import math
from array import array
from collections.abc import Sequence

import torch
from torch import nn


class ScalarOptimizer:
    """Steps ``optimizer`` over ``param`` (1-D, float32) given the gradient as Python floats."""

    def __init__(self, optimizer: torch.optim.Optimizer, param: nn.Parameter):
        self.optimizer, self.param = optimizer, param
        self.on_host = _is_plain_adam(optimizer, param)
        self._reset()
        if self.on_host:
            optimizer.register_state_dict_pre_hook(lambda _: self._to_optimizer_state())
            optimizer.register_load_state_dict_post_hook(lambda _: self._from_optimizer_state())

    def step(self, values: Sequence[float], grad: Sequence[float]) -> list[float]:
        """One step from ``values`` (the parameter's entries) with gradient ``grad``; returns the
        new entries. The parameter itself is left to the caller (who may still project them)."""
        if not self.on_host:
            param = self.param
            param.grad = torch.tensor(grad, dtype=param.dtype, device=param.device)
            self.optimizer.step()
            param.grad = None
            return param.detach().tolist()
        group = self.optimizer.param_groups[0]
        lr, (beta1, beta2), eps = float(group["lr"]), group["betas"], group["eps"]
        self._steps += 1
        # torch.optim.Adam (single-tensor form): m ← m + (1−β1)(g − m); v ← β2 v + (1−β2) g²;
        # θ ← θ − lr/(1−β1^t) · m / (√v / √(1−β2^t) + ε)
        exp_avg = _float32([m + (1 - beta1) * (g - m) for m, g in zip(self._exp_avg, grad)])
        exp_avg_sq = _float32([beta2 * v + (1 - beta2) * g * g for v, g in zip(self._exp_avg_sq, grad)])
        step_size = lr / (1 - beta1**self._steps)
        root_correction = math.sqrt(1 - beta2**self._steps)
        self._exp_avg, self._exp_avg_sq = exp_avg, exp_avg_sq
        return [x - step_size * m / (math.sqrt(v) / root_correction + eps)
                for x, m, v in zip(values, exp_avg, exp_avg_sq)]

    def reset(self) -> None:
        """Forget the optimiser's state (Adam's moments and step count), as a freshly created optimiser
        would start: the next :meth:`step` is a first step."""
        self.optimizer.state.clear()
        self._reset()

    def snapshot(self):
        """The optimiser's state now, for :meth:`restore` (a step to be taken back, e.g. a discarded update)."""
        if self.on_host:
            return self._steps, list(self._exp_avg), list(self._exp_avg_sq)
        return copy.deepcopy(self.optimizer.state_dict())

    def restore(self, snapshot) -> None:
        """Back to the state of :meth:`snapshot`."""
        if self.on_host:
            self._steps, self._exp_avg, self._exp_avg_sq = snapshot[0], list(snapshot[1]), list(snapshot[2])
        else:
            self.optimizer.load_state_dict(snapshot)

    def _to_optimizer_state(self) -> None:
        if self._steps == 0:
            return
        param = self.param
        self.optimizer.state[param] = {
            "step": torch.tensor(float(self._steps)),
            "exp_avg": torch.tensor(self._exp_avg, dtype=param.dtype, device=param.device),
            "exp_avg_sq": torch.tensor(self._exp_avg_sq, dtype=param.dtype, device=param.device),
        }

    def _from_optimizer_state(self) -> None:
        state = self.optimizer.state.get(self.param)
        if not state:
            self._reset()
            return
        self._steps = int(state["step"])
        self._exp_avg, self._exp_avg_sq = state["exp_avg"].tolist(), state["exp_avg_sq"].tolist()

    def _reset(self) -> None:
        """No step taken yet: Adam's moments start at zero."""
        size = self.param.numel()
        self._steps, self._exp_avg, self._exp_avg_sq = 0, [0.0] * size, [0.0] * size


class SavesOptimizer:
    """Mixin for a balancer with its own optimiser (``self.optimizer``) over its scalars: the
    optimiser's state travels in the balancer's ``state_dict()`` (``_extra_state``), so that a
    resumed run continues the same Adam moments."""

    optimizer: torch.optim.Optimizer

    def get_extra_state(self):
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state) -> None:
        self.optimizer.load_state_dict(state["optimizer"])


def _float32(values: list[float]) -> list[float]:
    """Round to float32, as the moments are stored in a float32 tensor by torch.optim.Adam."""
    return array("f", values).tolist()


def _is_plain_adam(optimizer: torch.optim.Optimizer, param: nn.Parameter) -> bool:
    if type(optimizer) is not torch.optim.Adam or param.dtype != torch.float32 or param.dim() != 1:
        return False
    if len(optimizer.param_groups) != 1 or len(optimizer.param_groups[0]["params"]) != 1:
        return False
    group = optimizer.param_groups[0]
    flags = ("amsgrad", "maximize", "capturable", "differentiable", "fused", "decoupled_weight_decay")
    return (group["params"][0] is param and group["weight_decay"] == 0 and not any(group.get(f) for f in flags)
            and not any(isinstance(group[k], torch.Tensor) for k in ("lr", "eps"))
            and not any(isinstance(b, torch.Tensor) for b in group["betas"]))
