"""GradNorm static (paper §5.2): retrain with the time-averaged weights of a finished GradNorm run.

The paper takes E_t[w_i(t)] of a GradNorm run and trains a fresh network with those weights held
fixed. Here the average is the finished run's ``mean_weights`` in ``summary.json`` (the mean of the
weights used at every training step; the averaging window, which the paper does not state, is the
whole run).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from gradnorm import run_record
from gradnorm.balancers.fixed import FixedWeights


class GradNormStatic(FixedWeights):
    """Fixed weights read from ``<from_run>/summary.json`` (its ``mean_weights``).

    Args:
        num_tasks: T; must match the number of tasks of ``from_run``.
        from_run: a finished run directory (``status`` "completed"), normally a GradNorm run with the
            same data set and seed.
        task_names: optional task names to check against those of ``from_run`` (the config's
            ``tasks`` when a subset is trained).
    """

    name = "gradnorm_static"
    label = "GradNorm static"
    color = "#009E73"

    def __init__(self, num_tasks: int, from_run: str | Path | None = None, task_names=None):
        source_names, weights = read_mean_weights(from_run, num_tasks, task_names)
        super().__init__(num_tasks, weights)
        self.from_run = str(from_run)
        self.source_task_names = source_names

    def extra_repr(self) -> str:
        return f"num_tasks={self.num_tasks}, from_run={self.from_run!r}"


def read_mean_weights(run_dir, num_tasks: int, task_names=None) -> tuple[list[str], list[float]]:
    """The task names and time-averaged weights of a completed run; one clear ValueError otherwise."""
    if run_dir in (None, "", "???"):
        raise ValueError("balancer.from_run must name a finished GradNorm run directory, got none")
    if not run_record.has_summary(run_dir):
        raise ValueError(f"balancer.from_run={run_dir}: no summary.json there (is it a finished run directory?)")
    try:
        summary = run_record.read_summary(run_dir)
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"balancer.from_run={run_dir}: unreadable summary.json ({err})") from None
    status = summary.get("status")
    if status != run_record.COMPLETED:
        raise ValueError(f"balancer.from_run={run_dir}: the run's status is {status!r}, need 'completed'")
    names = list(summary.get("task_names") or [])
    weights = summary.get("mean_weights") or []
    if len(names) != num_tasks or len(weights) != num_tasks:
        raise ValueError(f"balancer.from_run={run_dir}: that run has {len(names)} tasks {names}, this one has "
                         f"{num_tasks}")
    if task_names is not None and list(task_names) != names:
        raise ValueError(f"balancer.from_run={run_dir}: that run's tasks are {names}, this one's are "
                         f"{list(task_names)}")
    if any(w is None or not math.isfinite(w) or w <= 0 for w in weights):
        raise ValueError(f"balancer.from_run={run_dir}: mean_weights must be positive numbers, got {weights}")
    return names, [float(w) for w in weights]
