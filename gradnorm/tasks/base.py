"""A task: its name, the size of its head's output, its loss and its test metrics."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING

import torch
import torch.distributed as dist
from torch import Tensor

if TYPE_CHECKING:  # torchmetrics (2 s to import, with torchvision) only where a task's metrics are built
    from torchmetrics import MetricCollection


class Task(ABC):
    """One output of a multitask network.

    Subclasses define :meth:`loss` (a scalar averaged over the batch, masked to valid targets) and
    may define :meth:`metrics` (a fresh torchmetrics collection; accumulated over the whole test set
    and reduced across processes by torchmetrics). A task without metrics of its own (the toy's)
    has :class:`NoMetrics`, so that training it never imports torchmetrics.
    """

    #: channels (or features) of the head's output
    out_channels: int

    def __init__(self, name: str):
        self.name = name

    @abstractmethod
    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        """The training loss L_i, a scalar tensor."""

    def metrics(self) -> MetricCollection | NoMetrics:
        """Test metrics named ``<prefix>/<metric>``; the test loss is handled by the trainer."""
        return NoMetrics()

    def metric_directions(self) -> dict[str, bool]:
        """Each metric's name -> whether higher is better (used by :func:`delta_m`)."""
        return {}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class NoMetrics:
    """The test metrics of a task that has none besides its loss: what the trainer calls of a
    ``torchmetrics.MetricCollection`` (``to``, ``update``, ``compute``), measuring nothing."""

    def to(self, device) -> NoMetrics:
        return self

    def update(self, pred: Tensor, target: Tensor) -> None:
        pass

    def compute(self) -> dict[str, Tensor]:
        return {}


class WeightedMean:
    """Mean of per-batch values weighted by batch size, summed over processes.

    total = Σ_b w_b v_b and count = Σ_b w_b in float64; :meth:`compute` sums both over the processes
    of a ``torchrun`` group (as torchmetrics' ``dist_reduce_fx="sum"`` did) and returns total / count.
    """

    def __init__(self):
        self.total = torch.zeros((), dtype=torch.float64)
        self.count = torch.zeros((), dtype=torch.float64)

    def to(self, device) -> WeightedMean:
        self.total, self.count = self.total.to(device), self.count.to(device)
        return self

    def update(self, value: Tensor, weight: float | Tensor = 1.0) -> None:
        self.total += value.detach().double() * weight
        self.count += torch.as_tensor(weight, dtype=torch.float64, device=self.count.device)

    def compute(self) -> Tensor:
        sums = torch.stack([self.total, self.count])
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            dist.all_reduce(sums)
        return sums[0] / sums[1]


def delta_m(metrics: Mapping[str, float], baselines: Mapping[str, float],
            higher_is_better: Mapping[str, bool]) -> float:
    """Average relative change (%) of a multitask model against single-task baselines.

    Δm = 100 / K · Σ_k (−1)^{l_k} (M_k − B_k) / B_k  over the K metrics k that have a baseline B_k,
    with l_k = 1 when lower is better (Maninis et al. 2019; Vandenhende et al. 2021). Positive
    Δm: the multitask model is better on average.
    """
    terms = []
    for name, baseline in baselines.items():
        if name not in metrics:
            continue
        sign = 1.0 if higher_is_better[name] else -1.0
        terms.append(sign * (metrics[name] - baseline) / baseline)
    if not terms:
        raise ValueError(f"none of the baseline metrics {sorted(baselines)} was measured")
    return 100.0 * sum(terms) / len(terms)


#: The Δm conventions every evaluation reports (docs/nyuv2.md §3), metric name -> what it is.
DELTA_M_CONVENTIONS = {
    "delta_m": "flat: mean over the K metrics of ±(M_k − B_k)/B_k, higher = better (Maninis et al. 2019)",
    "delta_m_nash_mtl": "Nash-MTL/CAGrad code (delta_fn): the same flat mean with the sign flipped, lower = better",
    "delta_m_libmtl": "LibMTL (Δp): mean within each task first, then over the tasks, higher = better",
}


def delta_m_by_task(metrics: Mapping[str, float], baselines: Mapping[str, float],
                    higher_is_better: Mapping[str, bool]) -> float:
    """LibMTL's Δp (%): the relative changes averaged within each task first, then over the tasks,

    Δp = 100 / T · Σ_t (1/N_t) Σ_{k ∈ task t} (−1)^{l_k} (M_k − B_k) / B_k,

    with a metric's task the prefix of its name (``depth/rmse`` -> ``depth``). Positive: better.
    """
    by_task: dict[str, list[str]] = {}
    for name in baselines:
        if name in metrics:
            by_task.setdefault(name.split("/", 1)[0], []).append(name)
    if not by_task:
        raise ValueError(f"none of the baseline metrics {sorted(baselines)} was measured")
    means = [delta_m(metrics, {n: baselines[n] for n in names}, higher_is_better) for names in by_task.values()]
    return sum(means) / len(means)


def delta_m_all(metrics: Mapping[str, float], baselines: Mapping[str, float],
                higher_is_better: Mapping[str, bool]) -> dict[str, float]:
    """Every convention of :data:`DELTA_M_CONVENTIONS` for one evaluation."""
    flat = delta_m(metrics, baselines, higher_is_better)
    return {"delta_m": flat, "delta_m_nash_mtl": -flat,
            "delta_m_libmtl": delta_m_by_task(metrics, baselines, higher_is_better)}
