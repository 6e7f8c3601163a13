"""What the gradient-based balancers share: the tasks' gradients, their Gram matrix, and the update.

PCGrad, MGDA, CAGrad, IMTL-G and Nash-MTL all end with a direction that is a linear combination of
the tasks' gradients g_i = ∇_θ L_i on the shared parameters θ,

    d = Σ_i β_i g_i,

with coefficients β that depend on the g_i only through their Gram matrix K_ij = g_i · g_j (and,
for some, the losses). :class:`GradientBalancer` therefore does the same three things for all of
them, and a subclass only turns K into β (:meth:`GradientBalancer.coefficients`):

1. K, in float64, at one of two places (``at``):

   * ``"shared"``: g_i on every shared parameter (``MultiTaskModel.shared_parameters()``), from one
     batched ``autograd.grad`` of the T losses (``is_grads_batched``);
   * ``"representation"``: g_i = ∂L_i/∂z at the shared representation z that the heads consume
     (MGDA-UB, IMTL's choice); one backward through each head.

2. β = ``coefficients(K, losses)``, on the host (T is a handful).

3. The network's ``.grad``: the shared parameters get d = Σ_i β_i g_i (at the representation:
   d = Σ_i β_i ∇_θ L_i, by scaling each task's gradient at z by β_i on its way into the trunk), and
   the task-specific parameters (the heads) get ∇ Σ_i L_i: each head its own task's gradient,
   unweighted (the methods' papers update θ_i with ∇ L_i; a method may say otherwise). Both are
   *added* to what ``.grad`` held (the :class:`~gradnorm.balancers.base.Balancer` contract).

Gradient accumulation (k calls of ``backward`` before ``step``). With ``at="shared"`` the per-task
gradients are summed over the micro-batches and d is the direction of the sums, recomputed at each
micro-batch (the shared parameters' ``.grad`` holds the latest d, replacing the one the previous
micro-batch wrote): after the last micro-batch it is exactly the direction of the k× bigger batch.
With ``at="representation"`` the z-gradients belong to each micro-batch's own samples and its trunk
backward runs at once, so each micro-batch takes its own β (the recorded weights are their mean):
accumulation there is the sum of the micro-batches' directions, not the big batch's.

Mixed precision. The backward pass of Σ L_i runs through ``backward_fn`` (e.g. a GradScaler's), which
may scale it by S; S is measured at the losses (:func:`gradnorm.balancers.base.run_backward`), the
per-task gradients are taken with the same S (so float16 does not underflow) and divided by it, and
the shared parameters receive S·d, which the scaler's ``unscale_`` turns into d. Per-task gradients
that overflow under a scaler fill the shared ``.grad`` with inf, so that the scaler skips the step.

Data parallelism: every process must take the same direction. With ``at="shared"`` the per-task
gradients are averaged over processes (:func:`gradnorm.distributed.all_reduce_mean`) before K is
formed; the ordinary backward of Σ_i L_i is all-reduced by DistributedDataParallel as usual (it gives
the heads their averaged gradients), and the shared parameters' gradient from that backward is
replaced by d, the same on every process (what their ``.grad`` held before is kept as it was). With
``at="representation"`` z is the concatenation of the processes' batches and the global loss is the
mean of the local ones, so K = Σ_ranks K_local / R²; the β-scaled backward is then all-reduced by
DistributedDataParallel, which averages Σ_i β_i ∇_θ L_i^local into the global Σ_i β_i ∇_θ L_i.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from gradnorm import distributed
from gradnorm.balancers.base import Balancer, run_backward
from gradnorm.balancers.task_split import leaves_above
from gradnorm.checks import first_line

PLACES = ("shared", "representation")


class _Update:
    """What the micro-batches of one update have gathered so far (reset by ``step``/``discard``)."""

    __slots__ = ("params", "sums", "written", "losses", "beta_sum", "count")

    def __init__(self, params: list[Tensor] | None = None):
        self.params = params  # at="shared": the parameters the sums belong to
        self.sums: list[Tensor] | None = None  # at="shared": Σ over micro-batches of the per-task gradients
        self.written: list[Tensor] | None = None  # what the last micro-batch added to the shared .grad
        self.losses: list[float] | None = None  # Σ over micro-batches of the (global mean) losses
        self.beta_sum: np.ndarray | None = None  # Σ of the β applied (for the recorded weights)
        self.count = 0


class GradientBalancer(Balancer):
    """Base class of the balancers whose direction is d = Σ_i β_i g_i (see the module docstring).

    Args:
        num_tasks: T.
        at: ``"shared"`` (gradients on every shared parameter) or ``"representation"`` (at z).

    ``weights`` are the coefficients β applied by the last update (ones before the first); they are also
    returned by :meth:`backward` as ``<log_prefix>beta_<i>``.
    """

    log_prefix: str | None = None
    weight_scale = "unconstrained"

    def __init__(self, num_tasks: int, at: str = "shared"):
        super().__init__(num_tasks)
        if at not in PLACES:
            raise ValueError(f"at must be 'shared' or 'representation', got {at!r}")
        self.at = at
        # What the training loop passes as shared_params: every shared parameter, or (when the
        # gradients are taken at z) the last shared layer's, which this class does not use.
        self.needs = "shared" if at == "shared" else "last_shared"
        self.register_buffer("coefficients_used", torch.ones(num_tasks))
        self._keys = [f"{self.log_prefix or ''}beta_{i}" for i in range(num_tasks)]
        self._unbatchable = False  # a batched backward failed: the tasks' gradients one by one
        self._update: _Update | None = None
        self._measure_scale: Tensor | float = 1.0  # S of the last backward: scales the z-gradients taken before it
        self._warned_reset = False

    @property
    def weights(self) -> Tensor:
        return self.coefficients_used.clone()

    def coefficients(self, gram: np.ndarray, losses: list[float]) -> np.ndarray:
        """β from the T×T Gram matrix K (float64) and the task losses (global means)."""
        raise NotImplementedError

    def adjust_direction(self, direction: list[Tensor]) -> tuple[float, dict[str, float]]:
        """Hook: rescale the shared parameters' direction d in place before it is written (Nash-MTL clips
        its norm); returns the factor applied (the reported weights are β times it) and scalars to log."""
        return 1.0, {}

    def step(self) -> None:
        self._update = None

    def discard(self) -> None:
        self._update = None

    def backward(self, losses, shared_params=(), features=None, *, backward_fn=None):
        losses = self._check_losses(losses)
        update = self._update
        if update is None:
            update = self._update = _Update()
        if self.at == "shared":
            params = [p for p in shared_params if p.requires_grad]
            if not params:
                raise ValueError(f"{type(self).__name__} needs the shared parameters (shared_params)")
            if update.params is not None and (len(params) != len(update.params)
                                              or any(p is not q for p, q in zip(params, update.params))):
                update = self._update = _Update()  # other parameters: another problem, a new update
            elif update.written is not None and any(p.grad is None for p in params):
                self._warn_reset()
                update = self._update = _Update()
            update.params = params
            return self._backward_shared(losses, params, update, backward_fn, features)
        if features is None or len(features) != self.num_tasks:
            raise ValueError(f"{type(self).__name__}(at='representation') needs the per-task features "
                             "in backward()")
        return self._backward_representation(losses, features, update, backward_fn)

    def _backward_shared(self, losses, params, update: _Update, backward_fn, features) -> dict[str, float]:
        # ∇ Σ L_i for the heads; the shared parameters' part of it is set aside and replaced by d. In one
        # process that backward pass accumulates into the heads only (inputs=, found above the features):
        # the trunk's share of it would be thrown away. Under DDP it runs whole (its reducer expects every
        # parameter's gradient).
        held = [p.grad for p in params]
        for p in params:
            p.grad = None
        heads = leaves_above(losses, params, features) if distributed.world_size() == 1 else None
        scale = run_backward(losses.sum(), backward_fn, losses=losses, retain_graph=True, inputs=heads or None)
        grads, failed = task_gradients(losses, params, batched=not self._unbatchable, scale=scale)
        if failed is not None:
            self._unbatchable = True
            warnings.warn(f"{type(self).__name__}: the backward pass cannot be batched over the tasks ({failed}); "
                          "one per task", RuntimeWarning, stacklevel=3)
        update.sums = grads if update.sums is None else [a + g for a, g in zip(update.sums, grads)]
        loss_values = self._add_losses(update, losses)
        beta = self._beta(gram_matrix(update.sums), loss_values, scaled=backward_fn is not None)
        if beta is None:  # overflow under a scaler: make it skip the step
            for p, before in zip(params, held):
                p.grad = torch.full_like(p, math.inf) if before is None else before + math.inf
            update.written = None
            return {f"{self.log_prefix or ''}overflow": 1.0}
        beta_t = torch.tensor(beta, dtype=losses.dtype, device=losses.device)
        direction = [torch.tensordot(beta_t.to(s.dtype), s, dims=1) for s in update.sums]
        factor, info = self.adjust_direction(direction)
        beta = beta * factor  # the coefficients the direction was made of
        written = direction if isinstance(scale, float) else [d * scale.to(d.dtype) for d in direction]
        previous = update.written or [None] * len(params)
        for p, before, new, old in zip(params, held, written, previous):
            if before is None:
                p.grad = new
            else:
                p.grad = before + new if old is None else before - old + new
        update.written = written
        self._record(update, beta, replace=True)
        info.update(zip(self._keys, beta.tolist()))
        return info

    def _backward_representation(self, losses, features, update: _Update, backward_fn) -> dict[str, float]:
        gram = representation_gram(losses, features, scale=self._measure_scale)
        loss_values = self._global_mean(losses.detach()).tolist()
        beta = self._beta(gram, loss_values, scaled=backward_fn is not None)
        if beta is None:  # an overflow under a scaler: the backward passes inf into the trunk, the scaler skips
            beta = np.full(self.num_tasks, math.inf)
        beta_t = torch.tensor(beta, dtype=losses.dtype, device=losses.device)
        handles = [f.register_hook(lambda g, b=beta_t[i]: g * b.to(g.dtype)) for i, f in enumerate(features)]
        try:
            self._measure_scale = run_backward(losses.sum(), backward_fn, losses=losses)
        finally:
            for handle in handles:
                handle.remove()
        if not np.isfinite(beta).all():
            return {f"{self.log_prefix or ''}overflow": 1.0}
        self._record(update, beta, replace=False)
        return dict(zip(self._keys, beta.tolist()))

    def _add_losses(self, update: _Update, losses: Tensor) -> list[float]:
        values = self._global_mean(losses.detach()).tolist()
        update.losses = values if update.losses is None else [a + b for a, b in zip(update.losses, values)]
        return update.losses

    def _beta(self, gram: np.ndarray, losses: list[float], scaled: bool) -> np.ndarray | None:
        """β = ``coefficients(K, losses)``, checked; None when K overflowed under a loss scaler."""
        if scaled and not np.isfinite(gram).all():
            return None
        beta = np.asarray(self.coefficients(gram, losses), dtype=np.float64)
        if beta.shape != (self.num_tasks,) or not np.isfinite(beta).all():
            if scaled:
                return None
            raise ValueError(f"{type(self).__name__}: non-finite combination coefficients {beta.tolist()}")
        return beta

    def _record(self, update: _Update, beta: np.ndarray, replace: bool) -> None:
        """The weights reported: β of the whole update (at="shared") or the mean of the micro-batches' β."""
        if replace or update.beta_sum is None:
            update.beta_sum, update.count = beta.copy(), 1
        else:
            update.beta_sum, update.count = update.beta_sum + beta, update.count + 1
        with torch.no_grad():
            self.coefficients_used.copy_(torch.tensor(update.beta_sum / update.count, dtype=torch.float32))

    def _warn_reset(self) -> None:
        if not self._warned_reset:
            self._warned_reset = True
            warnings.warn(f"{type(self).__name__}: backward() after the gradients were zeroed without step(): "
                          "starting a new update (call balancer.step() after optimizer.step())",
                          RuntimeWarning, stacklevel=4)

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, at={self.at!r}"


def vjps(outputs: Sequence[Tensor], params: Sequence[Tensor], grad_outputs: Sequence[Tensor],
         batched: bool = True) -> tuple[list[Tensor], str | None]:
    """The T vector-Jacobian products of ``outputs`` with the T rows of each ``grad_outputs`` tensor,
    on ``params``: one tensor of shape (T, *p.shape) per parameter; the graph is kept.

    One backward pass batched over the rows (``is_grads_batched``) when ``batched``; where the graph
    cannot be batched (e.g. a ``torch.compile``d backward: "Batching rule not implemented for
    aten::mm.out") one backward per row instead. Returns the products and, when the batched pass
    failed, the first line of its error (the caller warns once and passes ``batched=False`` after).
    """
    kwargs = dict(retain_graph=True, allow_unused=True, materialize_grads=True)
    failed = None
    if batched:
        try:
            return list(torch.autograd.grad(list(outputs), list(params), grad_outputs=list(grad_outputs),
                                            is_grads_batched=True, **kwargs)), None
        except RuntimeError as err:
            failed = first_line(err)
    rows = grad_outputs[0].shape[0]
    per_row = [torch.autograd.grad(list(outputs), list(params), grad_outputs=[g[i] for g in grad_outputs], **kwargs)
               for i in range(rows)]
    return [torch.stack(g) for g in zip(*per_row)], failed


def task_gradients(losses: Tensor, params: Sequence[Tensor], batched: bool = True,
                   scale: Tensor | float = 1.0) -> tuple[list[Tensor], str | None]:
    """Per-task gradients of the T losses on ``params``, each of shape (T, *param.shape), averaged
    over data-parallel processes, by :func:`vjps` (also its second value). ``scale``: the loss scale S
    the backward passes run at (float16: no underflow); the result is divided by it."""
    eye = torch.eye(losses.numel(), device=losses.device, dtype=losses.dtype)
    if isinstance(scale, float):
        grads, failed = vjps([losses], params, [eye], batched)
    else:
        grads, failed = vjps([losses], params, [eye * scale.to(eye)], batched)
        grads = [g / scale.to(g.dtype) for g in grads]
    return [distributed.all_reduce_mean(g) for g in grads], failed


def gram_matrix(grads: Sequence[Tensor]) -> np.ndarray:
    """K_ij = g_i · g_j over several parameters (each gradient of shape (T, *shape)), float64."""
    gram = None
    for g in grads:  # one parameter at a time: no concatenated copy of all the gradients
        flat = g.flatten(1).double()
        gram = flat @ flat.T if gram is None else gram.addmm_(flat, flat.T)
    return gram.cpu().numpy()


def representation_gram(losses: Tensor, features: Sequence[Tensor], scale: Tensor | float = 1.0) -> np.ndarray:
    """K_ij = (∂L_i/∂z) · (∂L_j/∂z) at the shared representation z (``features[i]`` is the view of z
    that task i's head consumed), over the global batch when data-parallel (Σ_ranks K_local / R²).
    ``scale``: a loss scale S to take the gradients at (float16), divided out again."""
    seed = None if isinstance(scale, float) else scale.to(losses)
    zgrads = [torch.autograd.grad(losses[i], f, grad_outputs=seed, retain_graph=True, allow_unused=True,
                                  materialize_grads=True)[0] for i, f in enumerate(features)]
    if seed is not None:
        zgrads = [g.double() / float(scale) for g in zgrads]
    flat = torch.stack([g.flatten().double() for g in zgrads])
    local = flat @ flat.T
    world = distributed.world_size()
    return (distributed.all_reduce_sum(local) / world**2).cpu().numpy()
