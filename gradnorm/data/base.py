"""What the training loop needs from a data set, and a fast iterator for in-memory data.

A batch is ``(inputs, targets)`` with ``targets`` a dict task name -> tensor. Training batches are a
pure function of (seed, step), so a resumed run sees the batches an uninterrupted run would.
"""

from __future__ import annotations

import functools
from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch
from torch import Tensor

from gradnorm.tasks import Task, delta_m_all

Batch = tuple[Tensor, dict[str, Tensor]]


class MultiTaskData(ABC):
    """A multitask data set: its tasks, the model's input size, train and test batches."""

    tasks: list[Task]
    #: metric name -> the single-task model's value; when set, :meth:`extra_metrics` adds ``delta_m``
    single_task_baselines: dict[str, float] | None = None

    @property
    def task_names(self) -> list[str]:
        return [t.name for t in self.tasks]

    def select_tasks(self, names) -> None:
        """Keep only the named tasks (single-task baselines), in the order given."""
        by_name = {t.name: t for t in self.tasks}
        unknown = [n for n in names if n not in by_name]
        if unknown or not names:
            raise ValueError(f"tasks must be a non-empty subset of {list(by_name)}, got {list(names)}")
        self.tasks = [by_name[n] for n in names]

    def set_single_task_baselines(self, baselines) -> None:
        """Check and keep the single-task baselines (metric name -> value) used by ``delta_m``."""
        if not baselines:
            self.single_task_baselines = None
            return
        known = {k for t in self.tasks for k in t.metric_directions()}
        out = {}
        for name, value in dict(baselines).items():
            if name not in known:
                raise ValueError(f"single_task_baselines: unknown metric {name!r}; choose from {sorted(known)}")
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < float("inf"):
                raise ValueError(f"single_task_baselines: {name} must be a positive number, got {value!r}")
            out[str(name)] = float(value)
        self.single_task_baselines = out

    def extra_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        """Metrics derived from the task metrics of one evaluation: the average relative change against
        the single-task baselines (%) in each convention of ``gradnorm.tasks.DELTA_M_CONVENTIONS``
        (``delta_m``, ``delta_m_nash_mtl``, ``delta_m_libmtl``) when baselines are set and any was measured."""
        if not self.single_task_baselines:
            return {}
        directions = {k: v for t in self.tasks for k, v in t.metric_directions().items()}
        measured = {k: v for k, v in self.single_task_baselines.items() if k in directions and k in metrics}
        return delta_m_all(metrics, measured, directions) if measured else {}

    def task_setup(self) -> dict:
        """The realised set-up of the tasks (e.g. the toy's σ_i), recorded in ``summary.json``."""
        return {}

    @abstractmethod
    def model_kwargs(self) -> dict:
        """Arguments that size the model's input (e.g. ``in_features`` or ``in_channels``)."""

    @abstractmethod
    def train_batches(self, batch_size: int, seed: int, start_step: int = 0, rank: int = 0,
                      world_size: int = 1) -> Iterator[Batch]:
        """An endless iterator of this process's training batches from ``start_step`` on."""

    @abstractmethod
    def test_batches(self, batch_size: int, rank: int = 0, world_size: int = 1) -> Iterator[Batch]:
        """One pass over this process's share of the test set."""


@functools.lru_cache(maxsize=4)  # drawn once per epoch, not at every step (read-only: callers only slice it)
def epoch_permutation(n: int, seed: int, epoch: int) -> Tensor:
    """The order of the ``n`` training samples in ``epoch``, a pure function of (seed, epoch)."""
    generator = torch.Generator().manual_seed(int(seed) * 1_000_003 + int(epoch))
    return torch.randperm(n, generator=generator)


def step_indices(n: int, batch_size: int, seed: int, step: int, rank: int = 0, world_size: int = 1) -> Tensor:
    """Sample indices of this process's share of the global batch at ``step``.

    Every epoch is a fresh permutation; the incomplete last global batch of an epoch is dropped.
    The global batch is ``batch_size * world_size`` samples, of which rank r takes the r-th slice,
    so that a run on R processes sees the same global batches as one process with R× the batch.
    """
    global_batch = batch_size * world_size
    per_epoch = n // global_batch
    if per_epoch == 0:
        raise ValueError(f"batch of {global_batch} samples is larger than the {n} training samples")
    epoch, index = divmod(step, per_epoch)
    order = epoch_permutation(n, seed, epoch)
    start = index * global_batch + rank * batch_size
    return order[start:start + batch_size]


class InMemoryData(MultiTaskData):
    """Data held as tensors (the toy): batches are slices, no DataLoader needed."""

    train_inputs: Tensor
    train_targets: dict[str, Tensor]
    test_inputs: Tensor
    test_targets: dict[str, Tensor]

    def train_batches(self, batch_size, seed, start_step=0, rank=0, world_size=1):
        step = start_step
        n = len(self.train_inputs)
        while True:
            idx = step_indices(n, batch_size, seed, step, rank, world_size)
            yield self.train_inputs[idx], {t.name: self.train_targets[t.name][idx] for t in self.tasks}
            step += 1

    def test_batches(self, batch_size, rank=0, world_size=1):
        n = len(self.test_inputs)
        first, end = n * rank // world_size, n * (rank + 1) // world_size  # this process's share
        for start in range(first, end, batch_size):
            sl = slice(start, min(start + batch_size, end))
            yield self.test_inputs[sl], {t.name: self.test_targets[t.name][sl] for t in self.tasks}
