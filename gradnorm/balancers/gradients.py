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
   unweighted (the methods' papers update θ_i with ∇ L_i; a method may say otherwise).

Data parallelism: every process must take the same direction. With ``at="shared"`` the per-task
gradients are averaged over processes (:func:`gradnorm.distributed.all_reduce_mean`) before K is
formed; the ordinary backward of Σ_i L_i that follows is all-reduced by DistributedDataParallel as
usual (it gives the heads their averaged gradients), and then the shared parameters' ``.grad`` is
overwritten with d, which is the same on every process. With ``at="representation"`` z is the
concatenation of the processes' batches and the global loss is the mean of the local ones, so
K = Σ_ranks K_local / R²; the β-scaled backward is then all-reduced by DistributedDataParallel,
which averages Σ_i β_i ∇_θ L_i^local into the global Σ_i β_i ∇_θ L_i.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from gradnorm import distributed
from gradnorm.balancers.base import Balancer
from gradnorm.checks import first_line

PLACES = ("shared", "representation")


class GradientBalancer(Balancer):
    """Base class of the balancers whose direction is d = Σ_i β_i g_i (see the module docstring).

    Args:
        num_tasks: T.
        at: ``"shared"`` (gradients on every shared parameter) or ``"representation"`` (at z).

    ``weights`` are the coefficients β of the last step (ones before the first); they are also
    returned by :meth:`backward` as ``<log_prefix>beta_<i>``.
    """

    log_prefix: str | None = None

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

    @property
    def weights(self) -> Tensor:
        return self.coefficients_used.clone()

    def coefficients(self, gram: np.ndarray, losses: list[float]) -> np.ndarray:
        """β from the T×T Gram matrix K (float64) and the task losses (global means)."""
        raise NotImplementedError

    def finish_shared(self, params: Sequence[Tensor]) -> dict[str, float]:
        """Hook after the shared parameters received d (e.g. Nash-MTL's norm clipping)."""
        return {}

    def backward(self, losses, shared_params=(), features=None):
        losses = self._check_losses(losses)
        if self.at == "shared":
            params = [p for p in shared_params if p.requires_grad]
            if not params:
                raise ValueError(f"{type(self).__name__} needs the shared parameters (shared_params)")
            grads, failed = task_gradients(losses, params, batched=not self._unbatchable)
            if failed is not None:
                self._unbatchable = True
                warnings.warn(f"{type(self).__name__}: the backward pass cannot be batched over the tasks ({failed}); "
                              "one per task", RuntimeWarning, stacklevel=2)
            gram = gram_matrix(grads)
        else:
            if features is None or len(features) != self.num_tasks:
                raise ValueError(f"{type(self).__name__}(at='representation') needs the per-task features "
                                 "in backward()")
            gram = representation_gram(losses, features)
        loss_values = self._global_mean(losses.detach()).tolist()
        beta = np.asarray(self.coefficients(gram, loss_values), dtype=np.float64)
        if beta.shape != (self.num_tasks,) or not np.isfinite(beta).all():
            raise ValueError(f"{type(self).__name__}: non-finite combination coefficients {beta.tolist()}")
        beta_t = torch.tensor(beta, dtype=losses.dtype, device=losses.device)
        info: dict[str, float] = {}
        if self.at == "shared":
            losses.sum().backward()
            for p, g in zip(params, grads):
                p.grad = torch.tensordot(beta_t.to(g.dtype), g, dims=1)
            info.update(self.finish_shared(params))
        else:
            handles = [f.register_hook(lambda g, b=beta_t[i]: g * b.to(g.dtype)) for i, f in enumerate(features)]
            try:
                losses.sum().backward()
            finally:
                for handle in handles:
                    handle.remove()
        with torch.no_grad():
            self.coefficients_used.copy_(torch.tensor(beta, dtype=torch.float32))
        info.update(zip(self._keys, beta.tolist()))
        return info

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


def task_gradients(losses: Tensor, params: Sequence[Tensor], batched: bool = True) -> tuple[list[Tensor], str | None]:
    """Per-task gradients of the T losses on ``params``, each of shape (T, *param.shape), averaged
    over data-parallel processes, by :func:`vjps` (also its second value)."""
    eye = torch.eye(losses.numel(), device=losses.device, dtype=losses.dtype)
    grads, failed = vjps([losses], params, [eye], batched)
    return [distributed.all_reduce_mean(g) for g in grads], failed


def gram_matrix(grads: Sequence[Tensor]) -> np.ndarray:
    """K_ij = g_i · g_j over several parameters (each gradient of shape (T, *shape)), float64."""
    gram = None
    for g in grads:  # one parameter at a time: no concatenated copy of all the gradients
        flat = g.flatten(1).double()
        gram = flat @ flat.T if gram is None else gram.addmm_(flat, flat.T)
    return gram.cpu().numpy()


def representation_gram(losses: Tensor, features: Sequence[Tensor]) -> np.ndarray:
    """K_ij = (∂L_i/∂z) · (∂L_j/∂z) at the shared representation z (``features[i]`` is the view of z
    that task i's head consumed), over the global batch when data-parallel (Σ_ranks K_local / R²)."""
    zgrads = [torch.autograd.grad(losses[i], f, retain_graph=True, allow_unused=True, materialize_grads=True)[0]
              for i, f in enumerate(features)]
    flat = torch.stack([g.flatten().double() for g in zgrads])
    local = flat @ flat.T
    world = distributed.world_size()
    return (distributed.all_reduce_sum(local) / world**2).cpu().numpy()
