"""The one interface every loss balancer implements.

A balancer owns the task weights w(t) of the total loss L(t) = sum_i w_i(t) L_i(t) (paper §3).
The training loop calls, once per update::

    info = balancer.backward(losses, shared_params)   # adds ∇ Σ w_i L_i to the network's .grad
    optimizer.step()
    balancer.step()                                   # updates w(t) -> w(t+1)

so a new balancer is one file that subclasses :class:`Balancer` (plus a yaml in ``conf/balancer``).

The contract, for every balancer (tests/test_contract.py checks each method of the table):

* ``backward`` *accumulates* into ``.grad``, as ``loss.backward()`` does: what ``.grad`` held before
  (a regulariser's gradient, earlier micro-batches) is kept.
* Gradient accumulation: ``backward`` may be called k times (k micro-batches, their losses divided by k)
  before ``step``; the update then uses the statistics of all k, as one step on the k× bigger batch
  would, wherever the method's maths allows it (docs/library.md, "Gradient accumulation", says what it
  means for each method). ``step`` ends the update; ``discard`` ends it without moving the balancer's
  own state (a skipped update, e.g. a float16 overflow that made ``GradScaler`` skip the optimiser).
* ``weights`` read after ``backward`` (before ``step``) are the weights that ``backward`` applied (with
  several micro-batches that applied different ones: their mean); ``weight_scale`` says how they are
  normalised.
* ``backward_fn`` runs the backward pass of the combined loss instead of ``Tensor.backward``: a
  ``GradScaler``'s (``lambda loss, **kw: scaler.scale(loss).backward(**kw)``) or a framework's
  (Lightning's ``manual_backward``), so that loss scaling and the framework's hooks apply. Whatever
  factor S it scales by is measured (the gradient that reaches the losses) and divided out of every
  gradient a balancer measures, so the weights never depend on it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from gradnorm import distributed

#: The table of methods: conf/balancer name -> Balancer subclass (filled as the subclasses are defined;
#: ``gradnorm.balancers`` imports every module of the package, so the table is complete once it is imported).
METHODS: dict[str, type[Balancer]] = {}

#: runs the backward pass of a scalar loss (``Tensor.backward`` by default); may scale it and take
#: ``retain_graph`` as ``Tensor.backward`` does
BackwardFn = Callable[..., None]

#: :attr:`Balancer.weight_scale`'s values: Σ_i w_i = T, Σ_i w_i = 1, or no constraint on the weights
WEIGHT_SCALES = ("sum=T", "sum=1", "unconstrained")


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
    #: how the weights are normalised, one of :data:`WEIGHT_SCALES` or ``"sum=<x>"`` (a fixed sum); an
    #: instance may set its own (RLW's ``total``, fixed weights); ``summary.json`` records it
    weight_scale: str = "sum=T"

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
        *,
        backward_fn: BackwardFn | None = None,
    ) -> dict[str, float]:
        """Accumulate the gradient of sum_i w_i L_i into the network's ``.grad``.

        Args:
            losses: the T task losses, a 1-D tensor still attached to the graph (with k micro-batches
                per update: each micro-batch's losses divided by k, as for any accumulation).
            shared_params: parameters of the last shared layer (GradNorm's W), or of the whole shared
                trunk for the balancers whose :attr:`needs` is ``"shared"``.
            features: optional per-task views of the last shared representation, one per task, as
                fed to the task heads (see ``gradnorm.models.MultiTaskModel``): every path from a loss
                to the shared layers must pass through them. Balancers may use them to avoid extra
                backward passes; results never depend on whether they are given.
            backward_fn: runs the backward pass of the combined loss (default ``Tensor.backward``):
                a GradScaler's or a framework's (see the module docstring).

        Returns:
            Scalars worth logging (may be empty).
        """
        losses = self._check_losses(losses)
        weights = self.weights.to(device=losses.device, dtype=losses.dtype)
        run_backward((weights * losses).sum(), backward_fn)
        return {}

    def step(self) -> None:
        """End the update: update the balancer's own state after the network's optimiser step.
        Default: nothing."""

    def discard(self) -> None:
        """End the update without it: forget what :meth:`backward` gathered since the last
        :meth:`step` and leave the balancer's own state as it was (the optimiser skipped this update,
        e.g. on a float16 overflow). Default: nothing to forget."""

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


def run_backward(total: Tensor, backward_fn: BackwardFn | None = None, *, losses: Tensor | None = None,
                 coefficients: Tensor | None = None, retain_graph: bool = False,
                 inputs: Sequence[Tensor] | None = None) -> Tensor | float:
    """Run the backward pass of ``total`` = Σ_i c_i L_i through ``backward_fn`` (or ``total.backward()``)
    and return the factor S by which ``backward_fn`` scaled it: 1.0 without one; with one (and
    ``losses``/``coefficients`` given), measured where the gradient reaches the losses,

        S = Σ_i ∂(S·total)/∂L_i / Σ_i c_i,

    a 0-d tensor (no host sync). A GradScaler's S is its current scale; the balancers divide it out of
    every gradient they measure. ``inputs``: accumulate into these leaves only (``Tensor.backward``'s
    ``inputs``; autograd then skips what leads only elsewhere)."""
    kwargs = {"retain_graph": True} if retain_graph else {}
    if inputs is not None:
        kwargs["inputs"] = list(inputs)
    if backward_fn is None:
        total.backward(**kwargs)
        return 1.0
    if losses is None or not losses.requires_grad:
        backward_fn(total, **kwargs)
        return 1.0
    arrived: list[Tensor] = []
    handle = losses.register_hook(arrived.append)
    try:
        backward_fn(total, **kwargs)
    finally:
        handle.remove()
    if not arrived:
        raise RuntimeError("backward_fn did not run the backward pass of the loss it was given")
    reference = coefficients.sum() if coefficients is not None else torch.tensor(float(losses.numel()))
    return (arrived[0].sum() / reference.to(arrived[0])).detach()


def sum_scale(total: float, num_tasks: int) -> str:
    """The :attr:`Balancer.weight_scale` of weights with a fixed sum: ``"sum=T"``, ``"sum=1"`` or ``"sum=<x>"``."""
    if abs(total - num_tasks) <= 1e-6 * num_tasks:
        return "sum=T"
    return "sum=1" if abs(total - 1.0) <= 1e-6 else f"sum={total:g}"


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
