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

The public implementations resolve the choices the paper leaves open differently (docs/gradnorm_variants.md,
with the code each one follows); each choice is an argument here, the paper's the default:

* ``parametrization``: ``direct`` (the paper: w_i themselves, after each step floored at 1e-6 and
  renormalised to Σ w_i = T); ``softmax`` (LibMTL: w = T·softmax(θ), the optimiser steps θ, θ₀ = 1);
  ``l1`` (lucidrains: after each step w ← T·w / Σ_i |w_i|, signs kept, no floor); ``unnormalized``
  (Aligned-MTL: the network gets the raw w_i, which are never renormalised; L_grad uses ŵ = T·w / Σ_i w_i).
  ``renormalize="epoch"`` renormalises (direct, l1) once every ``epoch_steps`` steps instead (brianlan).
* ``norm_at``: ``weights`` (W, the paper), ``shared`` (every shared parameter: one vector of all their
  gradients; LibMTL's default), ``features`` (the representation z), ``features_batch_sum`` (the
  gradient at z summed over the batch before its norm: LibMTL's ``rep_grad``).
* ``initial_losses_from``: ``first_step`` (the paper); ``first_epoch_mean`` (LibMTL: equal weights and
  no GradNorm for the first ``epoch_steps`` steps, L_i(0) the mean of their losses); ``first_epoch``
  (brianlan: L_i(0) overwritten by every step of the first ``epoch_steps``, so r_i = 1 there);
  ``ema`` (lucidrains' ``initial_losses_decay``: after the first step L_i(0) ← β·L_i(0) + (1−β)·L_i(t)
  before the rates are taken, β = ``initial_losses_decay``).
* ``rate_sign``: the target Ḡ·r_i^(rate_sign·α); −1 is lucidrains' since its commit 3e3e632.
* ``grad_loss_reduction``: L_grad as the ``sum`` over tasks (the paper) or their ``mean`` (lucidrains).
* ``optimizer`` and ``reset_optimizer``: the weights' optimiser, and whether its state is dropped
  before every step (LucasBoTang re-creates its Adam every step: each step is Adam's first).
* ``grad_through_norms``: L_grad's gradient also reaches the network (lucidrains, LucasBoTang take the
  per-task gradients with ``create_graph``): besides ∇ Σ_i w_i L_i the network receives
  ∂L_grad/∂θ = c·Σ_i sign(G_i − target_i)·|w_i|·∂n_i/∂θ with the target held constant (c = 1 for the sum,
  1/T for the mean). Exact, by double backward (one per task): slower, one process, no accumulation.
* ``extra_unweighted_grad``: every parameter but W also receives ∇ Σ_i L_i (Aligned-MTL's code: its
  per-task backward passes leave their gradients in every parameter but the last shared layer's).
* ``weighted_heads=False``: the heads are trained on their unweighted losses, the shared parameters on
  Σ_i w_i ∇L_i (LibMTL: its per-task backward passes leave ∇L_i in the task-specific parameters and only
  the shared parameters' gradients are replaced). With ``norm_at="shared"`` (LibMTL's default) exact for any
  network: the backward pass of Σ_i L_i, then Σ_i (w_i − 1) ∇L_i added to the shared parameters. With
  ``norm_at`` at the features (LibMTL's ``rep_grad``, which detaches the representation): task i's gradient
  at z is multiplied by w_i on its way into the trunk, exact where the features carry every path into it.

Every variant is exact; those that change the backward pass (``norm_at="shared"``,
``grad_through_norms``, ``extra_unweighted_grad``) take the route with per-task gradients by autograd
instead of the fast one. The default route is unchanged.
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
from gradnorm.checks import as_float, boolean, choice, positive_int

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

#: A weight pushed by the optimiser below this floor is clamped to it before renormalisation.
#: Algorithm 1 has no guard (a weight could turn negative); with the guard, trajectories in which
#: every weight stays above the floor are unchanged.
WEIGHT_FLOOR = 1e-6

#: The choices of the public implementations (docs/gradnorm_variants.md); the first of each is the paper's.
PARAMETRIZATIONS = ("direct", "softmax", "l1", "unnormalized")
NORM_AT = ("weights", "shared", "features", "features_batch_sum")
INITIAL_LOSSES_FROM = ("first_step", "first_epoch_mean", "first_epoch", "ema")
GRAD_LOSS_REDUCTIONS = ("sum", "mean")
RENORMALIZE = ("step", "epoch")
#: the arguments that pick a variant, with the paper's values (``variant_name`` names the others)
PAPER_CHOICES = {"parametrization": "direct", "renormalize": "step", "norm_at": "weights",
                 "initial_losses_from": "first_step", "rate_sign": 1, "grad_loss_reduction": "sum",
                 "reset_optimizer": False, "grad_through_norms": False, "extra_unweighted_grad": False,
                 "weighted_heads": True}


class GradNorm(SavesOptimizer, Balancer):
    """Adaptive task weights that equalise the tasks' gradient norms at the last shared layer.

    Args:
        num_tasks: T.
        alpha: the asymmetry α ≥ 0 (paper: 0.12 for the toy, 1.5 for NYUv2).
        optimizer: builds the weights' optimiser from a list of parameters
            (paper: Adam, learning rate 0.025).
        every: update the weights every ``every`` steps (1 = the paper).
        norm_at: where the gradient norms are taken: ``"weights"`` (the paper: W), ``"shared"`` (every
            parameter passed as ``shared_params``; the loop passes the whole shared trunk),
            ``"features"`` (the shared representation z; needs ``features`` in :meth:`backward`) or
            ``"features_batch_sum"`` (z's gradient summed over the batch, LibMTL's ``rep_grad``).
        initial_losses: optional L_i(0) (e.g. log C for C-class cross-entropy, the paper's
            footnote 2); by default the losses of the first :meth:`backward` call.
        parametrization, renormalize, initial_losses_from, initial_losses_decay, epoch_steps, rate_sign,
        grad_loss_reduction, reset_optimizer, grad_through_norms, extra_unweighted_grad, weighted_heads: the choices of
            the public implementations (module docstring; docs/gradnorm_variants.md), the paper's by default.
            ``epoch_steps``: steps per pass over the training data, for the choices that count epochs.
        variant: a name for reports (``conf/balancer/gradnorm_<variant>.yaml`` sets it); by default
            :func:`variant_name` names the choices that differ from the paper's.
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
        *,
        parametrization: str = "direct",
        renormalize: str = "step",
        initial_losses_from: str = "first_step",
        initial_losses_decay: float = 0.99,
        epoch_steps: int | None = None,
        rate_sign: int = 1,
        grad_loss_reduction: str = "sum",
        reset_optimizer: bool = False,
        grad_through_norms: bool = False,
        extra_unweighted_grad: bool = False,
        weighted_heads: bool = True,
        variant: str | None = None,
    ):
        super().__init__(num_tasks)
        self.alpha = as_float(alpha, "alpha", minimum=0.0)
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be a positive integer, got {every!r}")
        self.every = every
        self.norm_at = choice(norm_at, "norm_at", NORM_AT)
        self.parametrization = choice(parametrization, "parametrization", PARAMETRIZATIONS)
        self.renormalize = choice(renormalize, "renormalize", RENORMALIZE)
        self.initial_losses_from = choice(initial_losses_from, "initial_losses_from", INITIAL_LOSSES_FROM)
        self.initial_losses_decay = as_float(initial_losses_decay, "initial_losses_decay", minimum=0.0)
        if self.initial_losses_decay > 1:
            raise ValueError(f"initial_losses_decay must be a number in [0, 1], got {initial_losses_decay!r}")
        self.epoch_steps = None if epoch_steps is None else positive_int(epoch_steps, "epoch_steps")
        if isinstance(rate_sign, bool) or rate_sign not in (1, -1):
            raise ValueError(f"rate_sign must be 1 or -1, got {rate_sign!r}")
        self.rate_sign = int(rate_sign)
        self.grad_loss_reduction = choice(grad_loss_reduction, "grad_loss_reduction", GRAD_LOSS_REDUCTIONS)
        self.reset_optimizer = boolean(reset_optimizer, "reset_optimizer")
        self.grad_through_norms = boolean(grad_through_norms, "grad_through_norms")
        self.extra_unweighted_grad = boolean(extra_unweighted_grad, "extra_unweighted_grad")
        self.weighted_heads = boolean(weighted_heads, "weighted_heads")
        if not self.weighted_heads and (self.norm_at == "weights" or self.extra_unweighted_grad
                                        or self.grad_through_norms):
            raise ValueError("weighted_heads=false needs norm_at shared, features or features_batch_sum, without "
                             "extra_unweighted_grad and grad_through_norms")
        if variant is not None and not isinstance(variant, str):
            raise ValueError(f"variant must be a name (text) or null, got {variant!r}")
        self.variant = variant
        counts_epochs = self.initial_losses_from in ("first_epoch_mean", "first_epoch") or self.renormalize == "epoch"
        if counts_epochs and self.epoch_steps is None:
            raise ValueError("epoch_steps (steps per pass over the training data) is needed by "
                             f"initial_losses_from={self.initial_losses_from} / renormalize={self.renormalize}")
        if self.renormalize == "epoch" and self.parametrization not in ("direct", "l1"):
            raise ValueError(f"renormalize=epoch needs parametrization direct or l1, got {self.parametrization!r}")
        if self.extra_unweighted_grad and self.norm_at != "weights":
            raise ValueError(f"extra_unweighted_grad needs norm_at=weights (W is the layer it spares), got {norm_at!r}")
        # The loop passes every shared parameter where the norms are taken over all of them.
        self.needs = "shared" if self.norm_at == "shared" else "last_shared"
        self.weight_scale = "sum=T" if self.parametrization in ("direct", "softmax") and self.renormalize == "step" \
            else "unconstrained"
        if self.parametrization == "softmax":  # w = T·softmax(θ): the optimiser steps θ (LibMTL's θ₀ = 1)
            self.task_logits = nn.Parameter(torch.ones(num_tasks))
            self.register_buffer("task_weights", torch.ones(num_tasks))
            variable = self.task_logits
        else:
            self.task_weights = nn.Parameter(torch.ones(num_tasks))
            variable = self.task_weights
        self.optimizer = optimizer([variable])
        self._weight_optimizer = ScalarOptimizer(self.optimizer, variable)
        if initial_losses is not None:
            if self.initial_losses_from not in ("first_step", "ema"):
                raise ValueError(f"initial_losses (given values) cannot be used with initial_losses_from="
                                 f"{self.initial_losses_from}: that choice measures them")
            values = [as_float(v, "initial_losses", minimum=0.0, strict=True) for v in initial_losses]
            if len(values) != num_tasks:
                raise ValueError(f"initial_losses needs {num_tasks} values, got {len(values)}")
            init = torch.tensor(values)
        else:
            init = torch.full((num_tasks,), math.nan)
        self.register_buffer("initial_losses", init)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))  # steps taken
        if self.initial_losses_from == "first_epoch_mean":  # Σ of the first epoch's losses so far (resumable)
            self.register_buffer("warmup_loss_sum", torch.zeros(num_tasks))
        self._info_keys = [(f"gradnorm/grad_norm_{i}", f"gradnorm/relative_rate_{i}") for i in range(num_tasks)]
        self._progress = _Progress()
        self._notes: set[str] = set()  # slower routes already warned about
        self._unbatchable = False  # a batched backward failed: go task by task
        self._find_split = SplitFinder()  # where the tasks split above W, remembered across steps
        self._update: _Update | None = None  # what this update's micro-batches have measured
        self._second_order: Tensor | None = None  # grad_through_norms: the n_i, still attached to the graph
        self._sync_progress()

    @classmethod
    def label_for(cls, config=None) -> str:
        """``GradNorm α=0.12``, and the variant when it is not the paper's: ``GradNorm α=1.5 [libmtl]``."""
        label = super().label_for(config)
        name = variant_name(config) if config is not None else PAPER
        return label if name == PAPER else f"{label} [{name}]"

    @property
    def weights(self) -> Tensor:
        return self.task_weights.detach().clone()

    def backward(self, losses, shared_params=(), features=None, *, backward_fn=None):
        """``shared_params``: W, as parameters or as a module (a layer's ``weight``, as
        ``MultiTaskModel.last_shared_parameters``; a module with submodules: all its parameters)."""
        losses = self._check_losses(losses)
        shared_params = parameter_list(shared_params)
        progress = self._progress
        if self._warming_up():  # LibMTL's epoch 0: equal weights, the losses summed for L_i(0)
            progress.weight_grad = None
            update_losses = self._global_mean(losses.detach())
            progress.warmup_losses = update_losses if progress.warmup_losses is None else \
                progress.warmup_losses + update_losses
            return super().backward(losses, shared_params, backward_fn=backward_fn)
        if progress.steps % self.every != 0:
            progress.weight_grad = None
            return super().backward(losses, shared_params, backward_fn=backward_fn)

        w = self.task_weights.detach().to(device=losses.device, dtype=losses.dtype)
        with_features = _usable_features(features, self.num_tasks)
        on_features = self.norm_at in ("features", "features_batch_sum")
        if on_features and not with_features:
            raise ValueError(f"GradNorm(norm_at={self.norm_at!r}) needs the per-task features in backward()")
        if not on_features and not shared_params:
            raise ValueError("GradNorm needs the parameters of the last shared layer (shared_params)")
        if self.grad_through_norms:
            measured = self._second_order_route(losses, w, shared_params, features, backward_fn)
        elif self.norm_at == "shared" or self.extra_unweighted_grad:
            measured = self._batched_route(losses, w, shared_params, backward_fn)
        else:
            measured = self._fast_routes(losses, w, shared_params, features, with_features, backward_fn)
        update = self._update or _Update()
        self._update = update
        info = self._prepare_update(update.add(losses.detach(), measured, self._global_mean), w,
                                    scaled=backward_fn is not None)
        if self._second_order is not None:
            self._backward_through_norms(backward_fn)
        return info

    def _warming_up(self) -> bool:
        return self.initial_losses_from == "first_epoch_mean" and self._progress.steps < self.epoch_steps

    def _fast_routes(self, losses, w, shared_params, features, with_features, backward_fn):
        """One backward pass of Σ w_i L_i that also measures the per-task gradients at W (or at z)."""
        if with_features and self.norm_at == "weights":
            uncovered = features_cover(losses, features, shared_params)
            if uncovered is not None:
                self._note(f"the features do not carry every path from the losses to W ({uncovered})")
                with_features = False
        if with_features:
            top = features[0].grad_fn.next_functions[0][0]  # the node that produced z
            layer = self._guarded(find_last_layer, top, shared_params) if self.norm_at == "weights" else None
            return self._one_backward(losses, w, shared_params, top, features[0], layer,
                                      functools.partial(_hook_features, features, self._head_scales(w)), backward_fn)
        split = self._guarded(self._find_split, losses, shared_params, default="no split")
        if isinstance(split, Split):
            z = split.edges()[0] if len(split.outputs) == 1 else split.edges()
            return self._one_backward(losses, w, shared_params, split.node, z, split.layer,
                                      functools.partial(_hook_consumers, split.consumers), backward_fn,
                                      slots=len(split.outputs))
        if split == NOT_USED:
            raise ValueError("GradNorm: no task loss depends on the shared_params given (W must be the "
                             "last shared layer's weights, a tensor in the losses' graph)")
        if split != "no split":
            self._note(f"no single split of the tasks above W ({split})")
        return self._batched_route(losses, w, shared_params, backward_fn)

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
        squared norms at z (for 'features_batch_sum' the gradients at z summed over the batch, (T, *z.shape[1:])),
        all with the loss scale divided out.

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
            coefficients = w if self.weighted_heads else torch.ones_like(w)  # the hooks weight z's gradients
            scale = run_backward((coefficients * losses).sum(), backward_fn, losses=losses, coefficients=coefficients)
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
        if self.norm_at == "features_batch_sum":
            # Σ over the batch of z's gradient: linear in the samples, so the global one is the mean over
            # processes of the local ones (each local loss is a mean over its own batch).
            summed = torch.stack([g.sum(0) for g in _complete(captured, z)[0]])
            return [self._global_mean(summed if isinstance(scale, float) else summed / scale.to(summed.dtype))]
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

    def _head_scales(self, w: Tensor) -> Tensor | None:
        """weighted_heads=False at the features: the factors w_i that the hooks on the features apply to task i's
        gradient at z on its way into the trunk (the heads get ∇L_i); else None."""
        return None if self.weighted_heads else w

    def _network_backward(self, losses, w, backward_fn) -> tuple[Tensor | float, Tensor | None]:
        """The backward pass of Σ_i c_i L_i, keeping the graph, and what the shared parameters' gradient must be
        corrected by afterwards, per task: c = w (the paper); ``extra_unweighted_grad``: c = w + 1, then −1 × ∇_W L_i
        (W gets Σ w_i ∇L_i, the rest Σ (w_i + 1) ∇L_i); ``weighted_heads=False``: c = 1, then (w_i − 1) × ∇L_i
        (the shared parameters get Σ w_i ∇L_i, the heads ∇L_i). Returns the loss scale and the correction factors
        (None: none)."""
        if self.extra_unweighted_grad:
            coefficients, correction = w + 1, -torch.ones_like(w)
        elif not self.weighted_heads:
            coefficients, correction = torch.ones_like(w), w - 1
        else:
            coefficients, correction = w, None
        scale = run_backward((coefficients * losses).sum(), backward_fn, losses=losses, coefficients=coefficients,
                             retain_graph=True)
        return scale, correction

    def _batched_route(self, losses, w, shared_params, backward_fn) -> list[Tensor]:
        """The backward pass of Σ w_i L_i, then the T gradients ∇_W (w_i L_i) by one batched backward of
        the losses (task by task where it cannot be batched), at the same loss scale.

        ``extra_unweighted_grad`` and ``weighted_heads=False`` change the network's gradient as
        :meth:`_network_backward` says; the correction uses the per-task gradients measured here."""
        scale, correction = self._network_backward(losses, w, backward_fn)
        if correction is None:
            seeds = torch.diag(w if isinstance(scale, float) else w * scale.to(w))
            grads = self._per_task_grads([losses], shared_params, [seeds])
        else:
            eye = torch.eye(self.num_tasks, device=w.device, dtype=w.dtype)
            unweighted = self._per_task_grads([losses], shared_params,
                                              [eye if isinstance(scale, float) else eye * scale.to(w)])
            with torch.no_grad():
                for p, g in zip(shared_params, unweighted):
                    by_task = correction.view(-1, *([1] * (g.dim() - 1))).to(g.dtype)
                    p.grad += self._global_mean((by_task * g).sum(0))  # at the loss scale, as p.grad
            grads = [g * w.view(-1, *([1] * (g.dim() - 1))).to(g.dtype) for g in unweighted]
        if not isinstance(scale, float):
            grads = [g / scale.to(g.dtype) for g in grads]
        return [self._global_mean(g) for g in grads]

    def _second_order_route(self, losses, w, shared_params, features, backward_fn):
        """``grad_through_norms``: the backward pass of Σ w_i L_i, then per task n_i = ||∇ L_i|| where the
        norms are taken, by ``autograd.grad`` with ``create_graph`` (kept in ``self._second_order`` for
        :meth:`_backward_through_norms`); returns the measurement as the other routes do."""
        if self._update is not None:
            raise ValueError("GradNorm(grad_through_norms=True) takes one backward() per update: it cannot "
                             "accumulate micro-batches (trainer.accumulate_steps must be 1)")
        if distributed.world_size() > 1:
            raise ValueError("GradNorm(grad_through_norms=True) runs in one process only")
        scale, _ = self._network_backward(losses, w, backward_fn)
        on_features = self.norm_at in ("features", "features_batch_sum")
        squared, parts, unweighted = [], [], []
        for i in range(self.num_tasks):
            inputs = [features[i]] if on_features else list(shared_params)
            grads = torch.autograd.grad(losses[i], inputs, retain_graph=True, create_graph=True, allow_unused=True)
            grads = [torch.zeros_like(x) if g is None else g for g, x in zip(grads, inputs)]
            if self.norm_at == "features_batch_sum":
                grads = [g.sum(0) for g in grads]
            squared.append(sum(squared_norm(g) for g in grads))
            unweighted.append([g.detach() for g in grads])
            parts.append([w[i].to(g.dtype) * g.detach() for g in grads])
        squared = torch.stack(squared)
        if self.extra_unweighted_grad:  # Σ_i ∇_W L_i back out of W's gradient, at the loss scale
            with torch.no_grad():
                for k, p in enumerate(shared_params):
                    p.grad -= scale * sum(g[k] for g in unweighted)
        self._second_order = squared
        if self.norm_at == "features":
            return _SquaredAtZ(w.float() ** 2 * squared.detach())
        return [torch.stack(per_param) for per_param in zip(*parts)]

    def _backward_through_norms(self, backward_fn) -> None:
        """L_grad's gradient into the network: the backward pass of c·Σ_i sign(G_i − target_i)·|w_i|·n_i
        (the target and the weights held constant), through the graph of the n_i."""
        squared, self._second_order = self._second_order, None
        coefficients = self._progress.norm_coefficients
        if coefficients is None:  # no update this step (an overflow): L_grad has no gradient to give
            return
        keep = [i for i, c in enumerate(coefficients) if c != 0]
        if not keep:
            return
        index = torch.tensor(keep, device=squared.device)
        coefficient = torch.tensor([coefficients[i] for i in keep], device=squared.device, dtype=squared.dtype)
        run_backward((coefficient * squared.index_select(0, index).sqrt()).sum(), backward_fn)

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
        progress.weight_grad = progress.norm_coefficients = None
        initial = self._initial_losses_now(loss_values)
        if initial is None:
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
        # The coefficients c_i of the G_i = |c_i|·n_i in L_grad: the weights, or ŵ = T·w / Σ w (unnormalized).
        coefficients, norms = weight_values, norm_values
        if self.parametrization == "unnormalized":
            total = sum(weight_values)
            if total == 0:
                raise ValueError(f"GradNorm(parametrization='unnormalized'): the weights {weight_values} sum to 0")
            coefficients = [num_tasks * weight / total for weight in weight_values]
            norms = [abs(c) * norm / abs(weight) if weight else 0.0
                     for c, norm, weight in zip(coefficients, norm_values, weight_values)]
        mean_norm = sum(norms) / num_tasks  # Ḡ
        exponent = self.rate_sign * self.alpha
        try:
            targets = [mean_norm * rate**exponent for rate in relative_rates]  # Ḡ · r_i^α
        except (OverflowError, ZeroDivisionError):
            raise ValueError(f"GradNorm: the target Ḡ·r_i^α overflows: r_i^α with α = {exponent:g} and r_i from "
                             f"{min(relative_rates):.4g} to {max(relative_rates):.4g} is beyond the float range; α is "
                             "meaningful between 0 and a few (the paper: 0.12 on the toy, 1.5 on NYUv2; α ≥ 3 is "
                             "unstable there)") from None
        gaps = [norm - target for norm, target in zip(norms, targets)]  # G_i − target_i
        signs = [(gap > 0) - (gap < 0) for gap in gaps]
        reduction = 1 if self.grad_loss_reduction == "sum" else 1 / num_tasks
        # ∂L_grad/∂c_i = sign(G_i − target_i) · n_i · sign(c_i), with n_i = G_i / |c_i| (times 1/T for the mean).
        grad = [reduction * sign * norm / c if c else 0.0 for sign, norm, c in zip(signs, norms, coefficients)]
        if self.parametrization == "softmax":  # w = T·softmax(θ): ∂/∂θ_j = w_j (g_j − Σ_i g_i w_i / T)
            dot = sum(g * weight for g, weight in zip(grad, weight_values)) / num_tasks
            grad = [weight * (g - dot) for g, weight in zip(grad, weight_values)]
            variable = progress.logits
        elif self.parametrization == "unnormalized":  # ŵ = T·w / S: ∂/∂w_j = (T/S)(g_j − Σ_i g_i w_i / S)
            total = sum(weight_values)
            dot = sum(g * weight for g, weight in zip(grad, weight_values)) / total
            grad = [num_tasks / total * (g - dot) for g in grad]
            variable = weight_values
        else:
            variable = weight_values
        if self.grad_through_norms:
            progress.norm_coefficients = [reduction * sign * abs(c) if norm > 0 else 0.0
                                          for sign, c, norm in zip(signs, coefficients, norm_values)]
        progress.weight_grad = grad
        progress.weight_values, progress.update_losses = variable, loss_values
        return {"gradnorm/l_grad": reduction * sum(abs(gap) for gap in gaps), **info}

    def _initial_losses_now(self, loss_values: list[float]) -> list[float] | None:
        """L_i(0) for this update (None: these losses are the first), and what :meth:`step` stores
        (``progress.next_initial``)."""
        progress = self._progress
        initial, mode = progress.initial_losses, self.initial_losses_from
        progress.next_initial = None
        if mode == "first_epoch" and progress.steps < self.epoch_steps:
            initial = None  # overwritten by every update of the first epoch (r_i = 1 there)
        elif mode == "ema" and initial is not None and self.initial_losses_decay < 1:
            # lucidrains: L(0).lerp_(L(t), 1 − β), before the rates are taken
            keep = 1 - self.initial_losses_decay
            initial = [first + keep * (loss - first) for first, loss in zip(initial, loss_values)]
            progress.next_initial = initial
        if initial is None:
            progress.next_initial = loss_values
        return initial

    def step(self) -> None:
        progress = self._progress
        if self._warming_up():
            self._end_warmup_step()
        elif progress.weight_grad is not None:
            if progress.next_initial is not None:  # L_i(0): the first update's losses (or as the choice says)
                self.initial_losses.copy_(torch.tensor(progress.next_initial))
                progress.initial_losses = list(progress.next_initial)
            if self.reset_optimizer:
                self._weight_optimizer.reset()
            stepped = self._weight_optimizer.step(progress.weight_values, progress.weight_grad)
            progress.weight_grad = None
            self._set_weights(stepped, renormalize=self.renormalize == "step")
        if self.renormalize == "epoch" and (progress.steps + 1) % self.epoch_steps == 0:
            self._set_weights(self.task_weights.tolist(), renormalize=True)
        self._update = None
        self._second_order = None
        self.num_updates.add_(1)
        progress.steps += 1

    def _set_weights(self, stepped: list[float], renormalize: bool) -> None:
        """The weights after a step of their variable (``stepped``), projected as the parametrization says."""
        num_tasks = self.num_tasks
        with torch.no_grad():
            if self.parametrization == "softmax":
                self.task_logits.copy_(torch.tensor(stepped))
                self._progress.logits = self.task_logits.tolist()
                self.task_weights.copy_(num_tasks * torch.softmax(self.task_logits, dim=0))
                return
            if renormalize and self.parametrization == "direct":
                stepped = [max(weight, WEIGHT_FLOOR) for weight in stepped]
                scale = sum(stepped) / num_tasks  # Σ_i w_i = T
                stepped = [weight / scale for weight in stepped]
            elif renormalize and self.parametrization == "l1":  # T·w / max(Σ|w|, 1e-12), as F.normalize(p=1)
                scale = max(sum(abs(weight) for weight in stepped), 1e-12) / num_tasks
                stepped = [weight / scale for weight in stepped]
            self.task_weights.copy_(torch.tensor(stepped))

    def _end_warmup_step(self) -> None:
        """One step of LibMTL's epoch 0: its losses join the sum; after the last, L_i(0) = their mean."""
        progress = self._progress
        if progress.warmup_losses is not None:
            self.warmup_loss_sum.add_(progress.warmup_losses.to(self.warmup_loss_sum))
            progress.warmup_losses = None
        if progress.steps + 1 == self.epoch_steps:
            mean = (self.warmup_loss_sum / self.epoch_steps).tolist()
            self.initial_losses.copy_(torch.tensor(mean))
            progress.initial_losses = mean

    def discard(self) -> None:
        self._progress.weight_grad = None
        self._progress.warmup_losses = None
        self._update = None
        self._second_order = None

    def set_extra_state(self, state) -> None:
        # Called by load_state_dict after the buffers are loaded.
        super().set_extra_state(state)
        self._sync_progress()

    def _sync_progress(self) -> None:
        self._progress.steps = int(self.num_updates)
        initial = self.initial_losses.tolist()
        self._progress.initial_losses = None if any(math.isnan(v) for v in initial) else initial
        self._progress.logits = self.task_logits.tolist() if self.parametrization == "softmax" else None

    def extra_repr(self) -> str:
        choices = "".join(f", {key}={getattr(self, key)!r}" for key, paper in PAPER_CHOICES.items()
                          if key != "norm_at" and getattr(self, key) != paper)
        return f"num_tasks={self.num_tasks}, alpha={self.alpha}, every={self.every}, norm_at={self.norm_at!r}{choices}"


#: the name :func:`variant_name` gives the paper's GradNorm
PAPER = "paper"


def variant_name(config=None) -> str:
    """The GradNorm variant of a balancer config (a mapping of GradNorm's arguments): its ``variant`` when set
    (the presets ``conf/balancer/gradnorm_<name>.yaml``), ``"paper"`` when every choice of
    :data:`PAPER_CHOICES` is the paper's, else the choices that differ (``"parametrization=softmax"``)."""
    config = dict(config or {})
    if config.get("variant"):
        return str(config["variant"])
    differ = []
    for key, paper in PAPER_CHOICES.items():
        value = config.get(key, paper)
        if value != paper and str(value) != str(paper):
            differ.append(f"{key}={str(value).lower() if isinstance(value, bool) else value}")
    return ",".join(differ) or PAPER


class _Progress:
    """What every step reads or writes, kept off nn.Module's (slow) attribute machinery.

    ``steps`` and ``initial_losses`` are Python copies of the buffers ``num_updates`` and
    ``initial_losses`` (None until known; reading a buffer on a GPU would be a sync), ``logits`` of the
    softmax parametrization's θ; ``weight_grad`` is ∂L_grad/∂(the weights' variable) from
    :meth:`GradNorm.backward`, ``weight_values`` the variable's values it was taken at,
    ``update_losses`` the update's losses and ``next_initial`` the L_i(0) to store, Python floats waiting
    for :meth:`GradNorm.step`; ``norm_coefficients`` the c·sign_i·|w_i| of ``grad_through_norms``;
    ``warmup_losses`` the losses of an update of LibMTL's epoch 0 (a tensor).
    """

    __slots__ = ("steps", "initial_losses", "logits", "weight_grad", "weight_values", "update_losses",
                 "next_initial", "norm_coefficients", "warmup_losses")

    def __init__(self):
        self.steps, self.initial_losses, self.logits, self.weight_grad, self.weight_values = 0, None, None, None, None
        self.update_losses = self.next_initial = self.norm_coefficients = self.warmup_losses = None


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


def _hook_features(features, scales: Tensor | None, captured: list) -> list:
    """Tensor hooks on the T views of z: task i's gradient at z into ``captured[i][0]``; with ``scales``,
    times ``scales[i]`` (which z then receives)."""
    if scales is None:
        return [f.register_hook(functools.partial(_store, captured[i])) for i, f in enumerate(features)]
    return [f.register_hook(functools.partial(_store_scaled, captured[i], scales[i])) for i, f in enumerate(features)]


def _store(slots: list, grad: Tensor) -> None:
    slots[0] = grad


def _store_scaled(slots: list, scale: Tensor, grad: Tensor) -> Tensor:
    slots[0] = grad * scale.to(grad.dtype)
    return slots[0]


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
