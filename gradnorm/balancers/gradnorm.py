"""GradNorm (Chen et al., ICML 2018, Algorithm 1; docs/paper.md §3).

With W the last shared layer's weights, at every step t:

    G_i(t)    = || ∇_W (w_i(t) L_i(t)) ||_2 = w_i(t) · n_i(t),  n_i(t) = || ∇_W L_i(t) ||_2
    Ḡ(t)      = mean_i G_i(t)
    r_i(t)    = L̃_i(t) / mean_j L̃_j(t),   L̃_i(t) = L_i(t) / L_i(0)
    L_grad(t) = Σ_i | G_i(t) − Ḡ(t) · r_i(t)^α |      (target held constant)

L_grad is differentiated with respect to the w_i only. With the target constant,
∂L_grad/∂w_i = sign(G_i − target_i) · n_i, so no second-order backward is needed. The weights take
one optimiser step on that gradient and are then renormalised so that Σ_i w_i = T. The network
itself is trained on ∇ Σ_i w_i(t) L_i(t), with the weights before the update.

Two exact ways to get the n_i (identical results up to float rounding):

* ``features`` given (per-task views of the last shared representation z, as fed to the heads):
  one backward pass of Σ_i w_i L_i. Hooks catch each task's gradient at z and, just before the
  backward pass continues below z, :mod:`gradnorm.balancers.last_layer` turns them into the T
  per-task gradients at W with the layer's own formulas (Linear, convolution), or one backward
  pass batched over the tasks through the layer for any other layer.
* otherwise: one batched ``autograd.grad`` of the T losses at W (``is_grads_batched``), then the
  ordinary backward.

``features`` must carry every path from the losses to W (the heads read nothing else that depends on
W): that is checked at each call, on the heads' part of the graph only; where a head also reads
another tensor that depends on W (a skip from W's layer into a head), GradNorm warns once and takes the
route without features, which is exact for any graph. Both fast routes read autograd's saved tensors
(``_saved_*``); where one is missing or not as expected (another torch version), GradNorm warns once and
takes the batched route instead: never a crash, never a wrong number.

Under data parallelism the per-task gradients at W are averaged over processes, like the network's
own gradient, before their norms are taken.

Gradient accumulation: with k ``backward`` calls (micro-batches, losses divided by k) before ``step``,
the per-task gradients at W are summed over the micro-batches before their norms are taken (they are
linear in the samples), the losses summed, and the weights updated once, in ``step``: the same update as
one step on the k× bigger batch. Mixed precision: with a ``backward_fn`` that scales the loss by S (a
GradScaler), the per-task gradients are divided by S before their norms are taken, in float32; norms
that overflowed make the update be skipped (the scaler skips the network's step too).

Departures from the paper, all off by default: ``every=k`` updates the weights every k steps only;
``norm_at="features"`` measures gradient norms at the representation z instead of at W.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from gradnorm import distributed
from gradnorm.balancers.base import Balancer, run_backward
from gradnorm.balancers.gradients import vjps
from gradnorm.balancers.last_layer import LayerGrads, SavedTensorsUnavailable, find_last_layer, squared_norm
from gradnorm.balancers.scalar_optim import SavesOptimizer, ScalarOptimizer
from gradnorm.balancers.task_split import NOT_USED, Split, SplitFinder, features_cover
from gradnorm.checks import as_float

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

#: A weight pushed by the optimiser below this floor is clamped to it before renormalisation.
#: Algorithm 1 has no guard (a weight could turn negative); with the guard, trajectories in which
#: every weight stays above the floor are unchanged.
WEIGHT_FLOOR = 1e-6


class GradNorm(SavesOptimizer, Balancer):
    """Adaptive task weights that equalise the tasks' gradient norms at the last shared layer.

    Args:
        num_tasks: T.
        alpha: the asymmetry α ≥ 0 (paper: 0.12 for the toy, 1.5 for NYUv2).
        optimizer: builds the weights' optimiser from a list of parameters
            (paper: Adam, learning rate 0.025).
        every: update the weights every ``every`` steps (1 = the paper).
        norm_at: ``"weights"`` (the paper: norms at W) or ``"features"`` (norms at the shared
            representation; needs ``features`` in :meth:`backward`).
        initial_losses: optional L_i(0) (e.g. log C for C-class cross-entropy, the paper's
            footnote 2); by default the losses of the first :meth:`backward` call.
    """

    name = "gradnorm"
    label = "GradNorm α={alpha:g}"
    color = "#0072B2"
    log_prefix = "gradnorm/"

    def __init__(
        self,
        num_tasks: int,
        alpha: float = 1.5,
        optimizer: OptimizerFactory = functools.partial(torch.optim.Adam, lr=0.025),
        every: int = 1,
        norm_at: str = "weights",
        initial_losses: Sequence[float] | None = None,
    ):
        super().__init__(num_tasks)
        self.alpha = as_float(alpha, "alpha", minimum=0.0)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        if norm_at not in ("weights", "features"):
            raise ValueError(f"norm_at must be 'weights' or 'features', got {norm_at!r}")
        self.every = every
        self.norm_at = norm_at
        self.task_weights = nn.Parameter(torch.ones(num_tasks))
        self.optimizer = optimizer([self.task_weights])
        self._weight_optimizer = ScalarOptimizer(self.optimizer, self.task_weights)
        if initial_losses is not None:
            values = [as_float(v, "initial_losses", minimum=0.0, strict=True) for v in initial_losses]
            if len(values) != num_tasks:
                raise ValueError(f"initial_losses needs {num_tasks} values, got {len(values)}")
            init = torch.tensor(values)
        else:
            init = torch.full((num_tasks,), math.nan)
        self.register_buffer("initial_losses", init)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))  # steps taken
        self._info_keys = [(f"gradnorm/grad_norm_{i}", f"gradnorm/relative_rate_{i}") for i in range(num_tasks)]
        self._progress = _Progress()
        self._notes: set[str] = set()  # slower routes already warned about
        self._unbatchable = False  # a batched backward failed: go task by task
        self._find_split = SplitFinder()  # where the tasks split above W, remembered across steps
        self._update: _Update | None = None  # what this update's micro-batches have measured
        self._sync_progress()

    @property
    def weights(self) -> Tensor:
        return self.task_weights.detach().clone()

    def backward(self, losses, shared_params=(), features=None, *, backward_fn=None):
        """``shared_params``: W, as parameters or as a module (a layer's ``weight``, as
        ``MultiTaskModel.last_shared_parameters``; a module with submodules: all its parameters)."""
        losses = self._check_losses(losses)
        shared_params = parameter_list(shared_params)
        if self._progress.steps % self.every != 0:
            self._progress.weight_grad = None
            return super().backward(losses, shared_params, backward_fn=backward_fn)

        w = self.task_weights.detach().to(device=losses.device, dtype=losses.dtype)
        with_features = _usable_features(features, self.num_tasks)
        if self.norm_at == "features" and not with_features:
            raise ValueError("GradNorm(norm_at='features') needs the per-task features in backward()")
        if self.norm_at == "weights" and not shared_params:
            raise ValueError("GradNorm needs the parameters of the last shared layer (shared_params)")
        if with_features and self.norm_at == "weights":
            uncovered = features_cover(losses, features, shared_params)
            if uncovered is not None:
                self._note(f"the features do not carry every path from the losses to W ({uncovered})")
                with_features = False
        if with_features:
            top = features[0].grad_fn.next_functions[0][0]  # the node that produced z
            layer = self._guarded(find_last_layer, top, shared_params) if self.norm_at == "weights" else None
            measured = self._one_backward(losses, w, shared_params, top, features[0], layer,
                                          functools.partial(_hook_features, features), backward_fn)
        else:
            split = self._guarded(self._find_split, losses, shared_params, default="no split")
            if isinstance(split, Split):
                z = split.edges()[0] if len(split.outputs) == 1 else split.edges()
                measured = self._one_backward(losses, w, shared_params, split.node, z, split.layer,
                                              functools.partial(_hook_consumers, split.consumers), backward_fn,
                                              slots=len(split.outputs))
            elif split == NOT_USED:
                raise ValueError("GradNorm: no task loss depends on the shared_params given (W must be the "
                                 "last shared layer's weights, a tensor in the losses' graph)")
            else:
                if split != "no split":
                    self._note(f"no single split of the tasks above W ({split})")
                measured = self._batched_route(losses, w, shared_params, backward_fn)
        update = self._update or _Update()
        self._update = update
        return self._prepare_update(update.add(losses.detach(), measured, self._global_mean), w,
                                    scaled=backward_fn is not None)

    def _guarded(self, find, *args, default=None):
        """``find(*args)``, or ``default`` with one warning when autograd's saved tensors are not as expected."""
        try:
            return find(*args)
        except SavedTensorsUnavailable as err:
            self._note(f"autograd's saved tensors are not as expected ({err})")
            return default

    def _one_backward(self, losses, w, shared_params, top, z, layer, hook, backward_fn, slots=1):
        """One backward pass of Σ w_i L_i; returns this micro-batch's measurement: the per-task gradients
        at W (a :class:`LayerGrads`, or (T, *p.shape) per parameter), or for norm_at='features' the
        squared norms at z, all with the loss scale divided out.

        ``top`` is the node that produced z (a tensor, a gradient edge, or a list of edges when z is
        several outputs of ``top``); ``hook(captured)`` registers the hooks that put task i's
        gradient at z (output slot s) into ``captured[i][s]`` and returns their handles.
        """
        num_tasks = self.num_tasks
        captured = [[None] * slots for _ in range(num_tasks)]
        handles = hook(captured)
        per_task: list = []
        if self.norm_at == "weights":

            def per_task_weight_grads(_grad_outputs):
                # Runs when the gradient of z is complete, before the layers below z run (their saved
                # tensors are still there). (A backward pass from here passes this node again: the
                # non-empty list stops the recursion.)
                if per_task:
                    return None
                per_task.append(None)
                grads = _complete(captured, z)
                if layer is not None:
                    try:
                        per_task[:] = [layer.capture(z, grads[0])]
                        return None
                    except SavedTensorsUnavailable as err:
                        self._note(f"autograd's saved tensors are not as expected ({err})")
                per_task[:] = self._per_task_grads(z if isinstance(z, list) else [z], shared_params,
                                                   [torch.stack(g) for g in grads])
                return None

            handles.append(top.register_prehook(per_task_weight_grads))
        try:
            scale = run_backward((w * losses).sum(), backward_fn, losses=losses, coefficients=w)
        finally:
            for handle in handles:
                handle.remove()

        if self.norm_at == "features":
            # Norms at z. Across processes z is the concatenation of the local batches and the global
            # loss is the mean of the local ones, so ||g||² = Σ_ranks ||g_local||² / R².
            squared = torch.stack([squared_norm(g) for g in _complete(captured, z)[0]])
            world = distributed.world_size()
            squared = distributed.all_reduce_sum(squared) / world**2
            return _SquaredAtZ(squared if isinstance(scale, float) else squared / scale.float() ** 2)
        if not per_task:  # z's node never ran: nothing reached W
            return [torch.zeros(num_tasks, *p.shape, device=p.device, dtype=p.dtype) for p in shared_params]
        if isinstance(per_task[0], LayerGrads):
            per_task[0].scale = scale
            if distributed.world_size() == 1:
                return per_task[0]  # evaluated as the cheapest route allows (usually norms only)
            return [self._global_mean(per_task[0].weight_grads())]
        if not isinstance(scale, float):
            per_task = [g / scale.to(g.dtype) for g in per_task]
        # Per-task gradients at W are averaged over processes like the network's own gradient.
        return [self._global_mean(g) for g in per_task]

    def _batched_route(self, losses, w, shared_params, backward_fn) -> list[Tensor]:
        """The backward pass of Σ w_i L_i, then the T gradients ∇_W (w_i L_i) by one batched backward of
        the losses (task by task where it cannot be batched), at the same loss scale."""
        scale = run_backward((w * losses).sum(), backward_fn, losses=losses, coefficients=w, retain_graph=True)
        seeds = torch.diag(w if isinstance(scale, float) else w * scale.to(w))
        grads = self._per_task_grads([losses], shared_params, [seeds])
        if not isinstance(scale, float):
            grads = [g / scale.to(g.dtype) for g in grads]
        return [self._global_mean(g) for g in grads]

    def _per_task_grads(self, outputs, params, batched_grad_outputs) -> list[Tensor]:
        """(T, *p.shape) per parameter: :func:`gradients.vjps`, batched over the tasks until that fails
        once (then task by task, with one warning)."""
        grads, failed = vjps(outputs, params, batched_grad_outputs, batched=not self._unbatchable)
        if failed is not None:
            self._unbatchable = True
            self._note(f"the backward pass cannot be batched over the tasks ({failed}); one per task")
        return grads

    def _note(self, reason: str) -> None:
        """Warn once per reason that GradNorm takes a slower (still exact) route."""
        if reason not in self._notes:
            self._notes.add(reason)
            warnings.warn(f"GradNorm: {reason}; the per-task gradients at W take extra backward passes",
                          RuntimeWarning, stacklevel=3)

    def _prepare_update(self, update: tuple[Tensor, Tensor], w: Tensor, scaled: bool) -> dict[str, float]:
        """Algorithm 1 from the update's losses L_i (summed over its micro-batches), the weights w_i and the
        norms G_i = ||∇_W (w_i L_i)||.

        The arithmetic runs on T Python floats after one transfer (one sync on a GPU): with a few
        tasks, the fixed cost of a dozen tiny tensor operations would be most of GradNorm's cost.
        """
        num_tasks, progress = self.num_tasks, self._progress
        losses, grad_norms = update
        values = torch.cat([losses.to(w), grad_norms.to(w), w]).tolist()
        loss_values, norm_values, weight_values = (values[i * num_tasks:(i + 1) * num_tasks] for i in range(3))
        progress.weight_grad = None
        initial = progress.initial_losses
        if initial is None:  # L_i(0): this (first) update's losses, stored when it ends (step)
            if not all(0 < loss < math.inf for loss in loss_values):
                raise ValueError(f"GradNorm needs positive finite initial losses L_i(0), got {loss_values}; "
                                 "set balancer.initial_losses")
            initial = loss_values
        loss_ratios = [loss / first for loss, first in zip(loss_values, initial)]  # L̃_i
        mean_ratio = sum(loss_ratios) / num_tasks
        if not (0 < mean_ratio < math.inf and min(loss_ratios) >= 0):
            raise ValueError(f"GradNorm needs finite non-negative task losses, not all zero; got {loss_values}")
        relative_rates = [ratio / mean_ratio for ratio in loss_ratios]  # r_i
        info = {}
        for (norm_key, rate_key), norm, rate in zip(self._info_keys, norm_values, relative_rates):
            info[norm_key], info[rate_key] = norm, rate
        if not all(math.isfinite(norm) for norm in norm_values):
            if not scaled:
                raise ValueError(f"GradNorm: non-finite gradient norms at W {norm_values} with finite losses "
                                 f"{loss_values}")
            info["gradnorm/overflow"] = 1.0  # a float16 overflow: no weight update (the scaler skips the step)
            return info
        mean_norm = sum(norm_values) / num_tasks  # Ḡ
        try:
            targets = [mean_norm * rate**self.alpha for rate in relative_rates]  # Ḡ · r_i^α
        except OverflowError:
            raise ValueError(f"GradNorm: the target Ḡ·r_i^α overflows: r_i^α with α = {self.alpha:g} and r_i = "
                             f"{max(relative_rates):.4g} is beyond the float range; α is meaningful between 0 and a "
                             "few (the paper: 0.12 on the toy, 1.5 on NYUv2; α ≥ 3 is unstable there)") from None
        gaps = [norm - target for norm, target in zip(norm_values, targets)]  # G_i − target_i
        # ∂L_grad/∂w_i = sign(G_i − target_i) · n_i, with n_i = G_i / w_i.
        progress.weight_grad = [((gap > 0) - (gap < 0)) * norm / weight
                                for gap, norm, weight in zip(gaps, norm_values, weight_values)]
        progress.weight_values, progress.update_losses = weight_values, loss_values
        return {"gradnorm/l_grad": sum(abs(gap) for gap in gaps), **info}

    def step(self) -> None:
        progress = self._progress
        if progress.weight_grad is not None:
            if progress.initial_losses is None:  # the first update's losses are L_i(0)
                self.initial_losses.copy_(torch.tensor(progress.update_losses))
                progress.initial_losses = progress.update_losses
            stepped = self._weight_optimizer.step(progress.weight_values, progress.weight_grad)
            progress.weight_grad = None
            stepped = [max(weight, WEIGHT_FLOOR) for weight in stepped]
            scale = sum(stepped) / self.num_tasks  # Σ_i w_i = T
            with torch.no_grad():
                self.task_weights.copy_(torch.tensor([weight / scale for weight in stepped]))
        self._update = None
        self.num_updates.add_(1)
        progress.steps += 1

    def discard(self) -> None:
        self._progress.weight_grad = None
        self._update = None

    def set_extra_state(self, state) -> None:
        # Called by load_state_dict after the buffers are loaded.
        super().set_extra_state(state)
        self._sync_progress()

    def _sync_progress(self) -> None:
        self._progress.steps = int(self.num_updates)
        initial = self.initial_losses.tolist()
        self._progress.initial_losses = None if any(math.isnan(v) for v in initial) else initial

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, alpha={self.alpha}, every={self.every}, norm_at={self.norm_at!r}"


class _Progress:
    """What every step reads or writes, kept off nn.Module's (slow) attribute machinery.

    ``steps`` and ``initial_losses`` are Python copies of the buffers ``num_updates`` and
    ``initial_losses`` (None until known; reading a buffer on a GPU would be a sync); ``weight_grad``
    is ∂L_grad/∂w from :meth:`GradNorm.backward`, ``weight_values`` the weights it was taken at and
    ``update_losses`` the update's losses, Python floats waiting for :meth:`GradNorm.step`.
    """

    __slots__ = ("steps", "initial_losses", "weight_grad", "weight_values", "update_losses")

    def __init__(self):
        self.steps, self.initial_losses, self.weight_grad, self.weight_values, self.update_losses = (
            0, None, None, None, None)


class _SquaredAtZ:
    """norm_at='features': one micro-batch's squared norms ||w_i ∂L_i/∂z||² at z (T,)."""

    __slots__ = ("squared",)

    def __init__(self, squared: Tensor):
        self.squared = squared


class _Update:
    """What the micro-batches of one update have measured, combined as one step on their union would:
    the losses summed, the per-task gradients at W summed before their norms are taken (norms at z:
    the squared norms summed, z being the concatenation of the micro-batches)."""

    __slots__ = ("losses", "lazy", "sums", "squared")

    def __init__(self):
        self.losses: Tensor | None = None
        self.lazy: LayerGrads | None = None  # the first micro-batch's, unevaluated (usually needs norms only)
        self.sums: list[Tensor] | None = None
        self.squared: Tensor | None = None

    def add(self, losses: Tensor, measured, global_mean) -> tuple[Tensor, Tensor]:
        """Add one micro-batch; return the update's losses (global means, summed) and norms G_i so far."""
        losses = global_mean(losses)
        self.losses = losses if self.losses is None else self.losses + losses
        if isinstance(measured, _SquaredAtZ):
            self.squared = measured.squared if self.squared is None else self.squared + measured.squared
            norms = self.squared.sqrt()
        elif isinstance(measured, LayerGrads) and self.lazy is None and self.sums is None:
            self.lazy = measured
            norms = measured.squared_norms().sqrt()
        else:
            grads = [measured.weight_grads()] if isinstance(measured, LayerGrads) else measured
            if self.lazy is not None:
                self.sums, self.lazy = [self.lazy.weight_grads()], None
            self.sums = grads if self.sums is None else [a + g.to(a) for a, g in zip(self.sums, grads)]
            norms = per_task_norms(self.sums)
        return self.losses, norms


def _usable_features(features, num_tasks: int) -> bool:
    """Per-task features are usable when they are T distinct views of one tensor in the graph."""
    if features is None or len(features) != num_tasks:
        return False
    nodes = [getattr(f, "grad_fn", None) for f in features]
    if any(n is None or not n.next_functions or n.next_functions[0][0] is None for n in nodes):
        return False
    bases = {id(n.next_functions[0][0]) for n in nodes}
    return len(bases) == 1 and len({id(n) for n in nodes}) == num_tasks


def parameter_list(shared_params) -> list[Tensor]:
    """W as a list of tensors: a layer (a module without submodules) gives its ``weight``, any other
    module all its parameters, an iterable its tensors; those that need no gradient are left out."""
    if isinstance(shared_params, nn.Module):
        weight = getattr(shared_params, "weight", None)
        leaf = next(shared_params.children(), None) is None
        shared_params = [weight] if leaf and isinstance(weight, Tensor) else shared_params.parameters()
    return [p for p in shared_params if p.requires_grad]


def _hook_features(features, captured: list) -> list:
    """Tensor hooks on the T views of z: task i's gradient at z into ``captured[i][0]``."""
    return [f.register_hook(functools.partial(_store, captured[i])) for i, f in enumerate(features)]


def _store(slots: list, grad: Tensor) -> None:
    slots[0] = grad


def _hook_consumers(consumers, captured: list) -> list:
    """Post-hooks on the nodes that consume z (:class:`Split`): what each sends to z, summed per task."""
    return [node.register_hook(functools.partial(_add_sent, captured[task], edges)) for node, task, edges in consumers]


def _add_sent(slots: list, edges, grad_inputs, _grad_outputs) -> None:
    for index, slot in edges:
        grad = grad_inputs[index]
        if grad is not None:
            slots[slot] = grad if slots[slot] is None else slots[slot] + grad


def _complete(captured: list, z) -> list[list[Tensor]]:
    """Per output slot, the T gradients at z, zeros for a task that sent none."""
    out = []
    for slot in range(len(captured[0])):
        grads = [c[slot] for c in captured]
        like = next((g for g in grads if g is not None), z if isinstance(z, Tensor) else None)
        if like is None:
            raise RuntimeError("GradNorm: no task's gradient reached the shared representation")
        out.append([torch.zeros_like(like) if g is None else g for g in grads])
    return out


def per_task_norms(batched_grads: Sequence[Tensor]) -> Tensor:
    """L2 norm per task over several parameters, each gradient of shape (T, *param.shape)."""
    return torch.stack([squared_norm(g.flatten(1), dim=1) for g in batched_grads]).sum(0).sqrt()
