"""What a run shows on the terminal: a compact progress bar and the one line that says how it ended.

The bar fits an 80-column terminal::

    gradnorm s0  4200/10000 |██████▍        | 512it/s <00:11 ΣL/L0 0.153 w 1.94/0.06

(the run's method and seed; steps; speed; time left; the last evaluation's task-normalised test
loss Σ_i L_i(t)/L_i(0); the current task weights, or their range ``w 0.2–2.7`` for more than four tasks).
The final line names the status, the run folder, the task-normalised test loss, each task's main
metric (the first of its ``Task.metric_directions``, e.g. ``depth/rmse``) and the final weights.
This module imports nothing of the project.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from tqdm import tqdm

#: steps, speed, time left, then the postfix (the bar takes what is left of the terminal's width)
BAR_FORMAT = "{desc} {n_fmt}/{total_fmt} |{bar}| {rate_noinv_fmt} <{remaining}{postfix}"
#: more tasks than this: the weights as their range
SHORT_WEIGHTS = 4


def run_label(method: str, seed) -> str:
    """What distinguishes a run in a list of runs: its method and seed, e.g. ``gradnorm s0``."""
    return f"{method} s{seed}"


def short_weights(weights: Sequence[float]) -> str:
    """``w 1.94/0.06`` for up to four tasks, ``w 0.2–2.7`` (smallest–largest) for more."""
    if len(weights) > SHORT_WEIGHTS:
        return f"w {min(weights):.1f}–{max(weights):.1f}"
    return "w " + "/".join(f"{w:.2f}" for w in weights)


def bar(total: int, initial: int, label: str, enabled: bool) -> tqdm:
    """The run's progress bar (nothing is drawn when not ``enabled``)."""
    return tqdm(total=total, initial=initial, desc=label, disable=not enabled, bar_format=BAR_FORMAT,
                dynamic_ncols=True, mininterval=1.0)


def postfix(normalized_loss: float | None, weights: Sequence[float]) -> str:
    """The bar's tail: ``ΣL/L0 0.153 w 1.94/0.06`` (the loss once a test evaluation has happened)."""
    loss = "" if normalized_loss is None or not math.isfinite(normalized_loss) else f"ΣL/L0 {normalized_loss:.3g} "
    return f"{loss}{short_weights(weights)}"


def final_line(summary: dict, run_dir: str | Path) -> str:
    """``completed: RUN_DIR | ΣL/L0 0.153 | w 1.94 0.06`` (and each task's main metric, when it has any)."""
    metrics, tasks = summary.get("metrics") or {}, summary.get("task_names") or []
    parts = [f"{summary.get('status', '?')}: {run_dir}", f"step {summary.get('steps', 0)}"]
    if metrics.get("task_normalized_loss") is not None:
        parts.append(f"ΣL/L0 {metrics['task_normalized_loss']:.4g}")
    main = [f"{key} {metrics[key]:.4g}" for key in (_main_metric(metrics, task) for task in tasks) if key]
    if main:
        parts.append(" ".join(main))
    weights = summary.get("weights") or []
    if weights:
        parts.append("w " + " ".join(f"{w:.3g}" for w in weights))
    return " | ".join(parts)


def _main_metric(metrics: dict, task: str) -> str | None:
    """A task's main metric: the first of its metrics in the summary (tasks list their main one first)."""
    return next((k for k in metrics if k.startswith(f"{task}/") and isinstance(metrics[k], int | float)), None)
