"""GradNorm (Chen et al., ICML 2018, Algorithm 1; PAPER.md §1).

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
  one backward pass of Σ_i w_i L_i. Hooks catch each task's gradient at z, and just before the
  backward continues below z, one batched backward through the last shared layer turns the T
  captured gradients into the T per-task gradients at W.
* otherwise: one batched ``autograd.grad`` of the T losses at W (``is_grads_batched``), then the
  ordinary backward.

Departures from the paper, all off by default: ``every=k`` updates the weights every k steps only;
``norm_at="features"`` measures gradient norms at the representation z instead of at W.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from gradnorm import distributed
from gradnorm.balancers.base import Balancer, as_float

OptimizerFactory = Callable[[list[nn.Parameter]], torch.optim.Optimizer]

#: A weight pushed by the optimiser below this floor is clamped to it before renormalisation.
#: Algorithm 1 has no guard (a weight could turn negative); with the guard, trajectories in which
#: every weight stays above the floor are unchanged.
WEIGHT_FLOOR = 1e-6


class GradNorm(Balancer):
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
        if initial_losses is not None:
            values = [as_float(v, "initial_losses", minimum=0.0, strict=True) for v in initial_losses]
            if len(values) != num_tasks:
                raise ValueError(f"initial_losses needs {num_tasks} values, got {len(values)}")
            init = torch.tensor(values)
        else:
            init = torch.full((num_tasks,), math.nan)
        self.register_buffer("initial_losses", init)
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self._weight_grad: Tensor | None = None

    @property
    def weights(self) -> Tensor:
        return self.task_weights.detach().clone()

    def backward(self, losses, shared_params=(), features=None):
        losses = self._check_losses(losses)
        if int(self.num_updates) % self.every != 0:
            self._weight_grad = None
            return super().backward(losses, shared_params)

        w = self.task_weights.detach().to(device=losses.device, dtype=losses.dtype)
        shared_params = [p for p in shared_params if p.requires_grad]
        if self.norm_at == "features" and not _usable_features(features, self.num_tasks):
            raise ValueError("GradNorm(norm_at='features') needs the per-task features in backward()")
        if _usable_features(features, self.num_tasks):
            weighted_norms = self._backward_with_features(losses, w, shared_params, features)
        else:
            if not shared_params:
                raise ValueError("GradNorm needs the parameters of the last shared layer (shared_params)")
            grads = torch.autograd.grad(
                losses,
                shared_params,
                grad_outputs=torch.eye(self.num_tasks, device=losses.device, dtype=losses.dtype),
                is_grads_batched=True,
                retain_graph=True,
                allow_unused=True,
                materialize_grads=True,
            )
            (w * losses).sum().backward()
            weighted_norms = w * _per_task_norms([self._global_mean(g) for g in grads])

        return self._prepare_update(losses.detach(), w, weighted_norms)

    def _backward_with_features(self, losses, w, shared_params, features) -> Tensor:
        """One backward pass; returns G_i = ||∇_W (w_i L_i)|| (or at z, for norm_at='features')."""
        captured: list[Tensor | None] = [None] * self.num_tasks
        result: dict[str, Tensor] = {}
        handles = []
        for i, feature in enumerate(features):
            handles.append(feature.register_hook(functools.partial(_store, captured, i)))

        if self.norm_at == "weights":
            base_node = features[0].grad_fn.next_functions[0][0]

            def per_task_weight_grads(_grad_outputs):
                # Runs once, when the gradient of z is complete and before the layers below it run.
                # (The inner backward passes this node again: the flag stops the recursion.)
                if "grads" in result:
                    return None
                result["grads"] = ()
                result["grads"] = torch.autograd.grad(
                    features[0],
                    shared_params,
                    grad_outputs=torch.stack([_zeros_if_none(g, features[0]) for g in captured]),
                    is_grads_batched=True,
                    retain_graph=True,
                    allow_unused=True,
                    materialize_grads=True,
                )
                return None

            handles.append(base_node.register_prehook(per_task_weight_grads))
        try:
            (w * losses).sum().backward()
        finally:
            for handle in handles:
                handle.remove()

        if self.norm_at == "weights":
            return _per_task_norms([self._global_mean(g) for g in result["grads"]])
        # Norms at z. Across processes z is the concatenation of the local batches and the global
        # loss is the mean of the local ones, so ||g||² = Σ_ranks ||g_local||² / R².
        squared = torch.stack([_zeros_if_none(g, features[0]).pow(2).sum() for g in captured])
        world = distributed.world_size()
        return (distributed.all_reduce_sum(squared) / world**2).sqrt()

    def _prepare_update(self, losses: Tensor, w: Tensor, weighted_norms: Tensor) -> dict[str, float]:
        losses = self._global_mean(losses)
        if torch.isnan(self.initial_losses).any():
            self.initial_losses.copy_(losses.to(self.initial_losses))
        initial = self.initial_losses.to(losses)
        grad_norms = weighted_norms  # G_i
        mean_norm = grad_norms.mean()
        loss_ratio = losses / initial  # inverse training rate L̃_i
        relative_rate = loss_ratio / loss_ratio.mean()  # r_i
        target = (mean_norm * relative_rate.pow(self.alpha)).detach()
        gap = grad_norms - target
        # ∂L_grad/∂w_i = sign(G_i − target_i) · n_i with n_i = G_i / w_i.
        self._weight_grad = torch.sign(gap) * grad_norms / w
        info = {"gradnorm/l_grad": gap.abs().sum().item()}
        for i in range(self.num_tasks):
            info[f"gradnorm/grad_norm_{i}"] = grad_norms[i].item()
            info[f"gradnorm/relative_rate_{i}"] = relative_rate[i].item()
        return info

    def step(self) -> None:
        if self._weight_grad is not None:
            self.task_weights.grad = self._weight_grad.to(self.task_weights)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            self._weight_grad = None
            with torch.no_grad():
                self.task_weights.clamp_(min=WEIGHT_FLOOR)
                self.task_weights.mul_(self.num_tasks / self.task_weights.sum())
        self.num_updates += 1

    def get_extra_state(self):
        return {"optimizer": self.optimizer.state_dict()}

    def set_extra_state(self, state) -> None:
        self.optimizer.load_state_dict(state["optimizer"])

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, alpha={self.alpha}, every={self.every}, norm_at={self.norm_at!r}"


def _usable_features(features, num_tasks: int) -> bool:
    """Per-task features are usable when they are T distinct views of one tensor in the graph."""
    if features is None or len(features) != num_tasks:
        return False
    nodes = [getattr(f, "grad_fn", None) for f in features]
    if any(n is None or not n.next_functions or n.next_functions[0][0] is None for n in nodes):
        return False
    bases = {id(n.next_functions[0][0]) for n in nodes}
    return len(bases) == 1 and len({id(n) for n in nodes}) == num_tasks


def _store(captured: list, index: int, grad: Tensor) -> None:
    captured[index] = grad


def _zeros_if_none(grad: Tensor | None, like: Tensor) -> Tensor:
    return torch.zeros_like(like) if grad is None else grad


def _per_task_norms(batched_grads: Sequence[Tensor]) -> Tensor:
    """L2 norm per task over several parameters, each gradient of shape (T, *param.shape)."""
    return torch.stack([g.flatten(1).pow(2).sum(1) for g in batched_grads]).sum(0).sqrt()
