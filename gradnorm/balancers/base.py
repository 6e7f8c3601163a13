"""The one interface every loss balancer implements.

A balancer owns the task weights w(t) of the total loss L(t) = sum_i w_i(t) L_i(t) (paper §3).
The training loop calls, once per step::

    info = balancer.backward(losses, shared_params)   # fills .grad of the network
    optimizer.step()
    balancer.step()                                   # updates w(t) -> w(t+1)

so a new balancer is one file that subclasses :class:`Balancer` (plus a yaml in ``conf/balancer``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from gradnorm import distributed

#: The table of methods: conf/balancer name -> Balancer subclass (filled as the subclasses are defined;
#: ``gradnorm.balancers`` imports every module of the package, so the table is complete once it is imported).
METHODS: dict[str, type[Balancer]] = {}


class Balancer(nn.Module):
    """Base class: equal weights unless a subclass says otherwise.

    Subclasses override :attr:`weights` and, where they learn, :meth:`backward` and :meth:`step`.
    All state that a resumed run needs must live in ``state_dict()`` (parameters, buffers, or
    :meth:`get_extra_state`).

    A subclass that sets :attr:`name` is a method of the suite: it joins :data:`METHODS`, the one table
    of methods that training and reporting read (names, labels and colours in tables and figures, the
    log keys kept out of a run's metrics).
    """

    #: its ``conf/balancer/<name>.yaml``; the method's key in reports
    name: ClassVar[str]
    #: shown in tables and figures; ``{field}`` parts are formatted from the run's balancer config
    label: ClassVar[str]
    #: its matplotlib colour in every figure
    color: ClassVar[str]
    #: prefix of the scalars :meth:`backward` returns (e.g. ``"gradnorm/"``); kept out of summary metrics
    log_prefix: ClassVar[str | None] = None
    #: the ``shared_params`` the loop passes: ``"last_shared"`` (the last shared layer's weights W,
    #: GradNorm's) or ``"shared"`` (every parameter of the shared trunk)
    needs: ClassVar[str] = "last_shared"

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__:
            known = METHODS.get(cls.name)
            if known is not None and (known.__module__, known.__qualname__) != (cls.__module__, cls.__qualname__):
                raise TypeError(f"two balancers are named {cls.name!r}: {METHODS[cls.name].__qualname__} and "
                                f"{cls.__qualname__}")
            if cls.needs not in ("last_shared", "shared"):
                raise TypeError(f"{cls.__qualname__}.needs must be 'last_shared' or 'shared', got {cls.needs!r}")
            METHODS[cls.name] = cls

    @classmethod
    def label_for(cls, config: Mapping | None = None) -> str:
        """:attr:`label` with its ``{field}`` parts taken from a run's balancer config ("GradNorm α=0.12");
        without a config, or with a field missing, the label before its first field ("GradNorm")."""
        if config is not None:
            values = {k: _number_or_value(v) for k, v in config.items()}
            try:
                return cls.label.format_map(values)
            except (KeyError, ValueError, TypeError, IndexError):
                pass
        return re.sub(r"\s*\S*\{.*$", "", cls.label) or cls.name

    def __init__(self, num_tasks: int):
        super().__init__()
        self.num_tasks = check_num_tasks(num_tasks)

    @property
    def weights(self) -> Tensor:
        """The current task weights w(t), a detached 1-D tensor of length T."""
        return torch.ones(self.num_tasks)

    def backward(
        self,
        losses: Tensor,
        shared_params: Sequence[Tensor] = (),
        features: Sequence[Tensor] | None = None,
    ) -> dict[str, float]:
        """Accumulate the gradient of sum_i w_i L_i into the network's ``.grad``.

        Args:
            losses: the T task losses, a 1-D tensor still attached to the graph.
            shared_params: parameters of the last shared layer (GradNorm's W).
            features: optional per-task views of the last shared representation, one per task, as
                fed to the task heads (see ``gradnorm.models.MultiTaskModel``). Balancers may use them
                to avoid extra backward passes; results never depend on whether they are given.

        Returns:
            Scalars worth logging (may be empty).
        """
        losses = self._check_losses(losses)
        weights = self.weights.to(device=losses.device, dtype=losses.dtype)
        (weights * losses).sum().backward()
        return {}

    def step(self) -> None:
        """Update the balancer's own state after the network's optimiser step. Default: nothing."""

    # -- helpers for subclasses -------------------------------------------------------------------
    def _check_losses(self, losses: Tensor) -> Tensor:
        if losses.dim() != 1 or losses.numel() != self.num_tasks:
            raise ValueError(
                f"{type(self).__name__} expects a 1-D tensor of {self.num_tasks} task losses, "
                f"got shape {tuple(losses.shape)}"
            )
        return losses

    @staticmethod
    def _global_mean(t: Tensor) -> Tensor:
        """Mean of ``t`` over data-parallel processes (identity in a single process)."""
        return distributed.all_reduce_mean(t)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}"


def check_num_tasks(num_tasks) -> int:
    if isinstance(num_tasks, bool) or not isinstance(num_tasks, int) or num_tasks < 1:
        raise ValueError(f"num_tasks must be a positive integer, got {num_tasks!r}")
    return num_tasks


def _number_or_value(value):
    """A config value as a float where it is a number written as text (so ``{alpha:g}`` formats it)."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value
