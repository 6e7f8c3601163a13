"""Curves from ``history.csv``: per-seed series, their mean and spread, smoothing, the budget-robust
late value of a run (:func:`late_mean`), a band plot and the per-task loss figure."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd

from gradnorm.report.runs import EVALUATION_COLUMN, Run
from gradnorm.report.style import method_color, method_label, new_figure, plain_log_ticks, save_figure

#: A run's value for comparisons: the mean of its last this many test evaluations (docs/reporting.md,
#: "Budget-robust values"): on the toy's 200-step evaluations the last 800 steps, on curves still
#: falling or jumping between evaluations (RLW) steadier than one evaluation.
LAST_EVALUATIONS = 5


def series(run: Run, column: str) -> pd.Series:
    """``column`` of a run's history indexed by step, NaN rows dropped (empty if absent). (Reports ask for
    thousands of these: numpy, not a DataFrame round trip.)"""
    history = run.history
    if history is None or column not in history:
        return pd.Series(dtype=float)
    values = history[column].to_numpy(dtype=float, na_value=np.nan)
    steps = history["step"].to_numpy(dtype=float, na_value=np.nan)
    keep = ~(np.isnan(values) | np.isnan(steps))
    return pd.Series(values[keep], index=pd.Index(steps[keep].astype(np.int64), name="step"), name=column)


def late_window(run: Run, until: int | None = None, k: int = LAST_EVALUATIONS,
                column: str | None = None) -> tuple[int, int] | None:
    """(first, last) step of the run's last ``k`` evaluations after step 0 at or before step ``until``
    (default: the end); None without a history. The evaluation at step 0 (the untrained network, L_i(0))
    is no late value: a run with no other evaluation gives that one."""
    evaluations = series(run, EVALUATION_COLUMN)
    if evaluations.empty and column is not None:  # a history without the toy's evaluation column: the metric's own
        evaluations = series(run, column)
    steps = evaluations.index if until is None else evaluations.index[evaluations.index <= until]
    if not len(steps):
        return None
    steps = steps[steps > 0] if (steps > 0).any() else steps
    chosen = steps[-k:]
    return int(chosen[0]), int(chosen[-1])


def late_mean(run: Run, column: str, until: int | None = None, k: int = LAST_EVALUATIONS) -> float:
    """The mean of ``column`` over the window of the run's last ``k`` evaluations (up to ``until``): for a
    test metric the mean of its last k evaluations, for a per-step column (``train_loss/<task>``,
    ``step_time_s``) the mean of its steps in that window. A run without a history gives its summary's
    final metric (``until`` None) or NaN."""
    window = late_window(run, until, k, column)
    values = series(run, column)
    if window is None or values.empty:
        final = ((run.summary or {}).get("metrics") or {}).get(column) if until is None else None
        return float(final) if final is not None else math.nan
    first, last = window
    chosen = values[(values.index >= first) & (values.index <= last)]
    return float(chosen.mean()) if len(chosen) else math.nan


#: how a table's value of a metric is chosen among a run's evaluations (literature.yaml's ``epoch_choice``):
#: its final evaluation, or the mean of its last 10 (the SegNet-MTAN protocol: "the last 10 epochs")
EPOCH_CHOICES = {"final": None, "last10_mean": 10}


def reported_value(run: Run, metric: str, epoch_choice: str = "final") -> float:
    """The value of ``metric`` a table reports for ``run``: ``final``, its last evaluation (summary.json);
    ``last10_mean``, :func:`late_mean` over its last 10 evaluations after step 0. NaN when the run lacks
    the metric."""
    if epoch_choice not in EPOCH_CHOICES:
        raise ValueError(f"epoch_choice must be one of {', '.join(EPOCH_CHOICES)}, got {epoch_choice!r}")
    if epoch_choice == "final":
        value = ((run.summary or {}).get("metrics") or {}).get(metric)
        return math.nan if value is None else float(value)
    if run.history is None or metric not in run.history:
        return math.nan
    return late_mean(run, metric, k=EPOCH_CHOICES[epoch_choice])


def first_value(run: Run, column: str) -> float:
    """``column`` at the run's first recorded step (the initial test loss L_i(0)); NaN if absent."""
    values = series(run, column)
    return float(values.iloc[0]) if len(values) else math.nan


def seed_frame(runs: Sequence[Run], column: str) -> pd.DataFrame:
    """One column per run (seed), indexed by step; steps missing in a run are NaN."""
    data = {str(run.path): series(run, column) for run in runs}
    data = {k: v for k, v in data.items() if len(v)}
    return pd.DataFrame(data).sort_index() if data else pd.DataFrame()


def band(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean, sample std, min and max over the columns (seeds), per step."""
    return pd.DataFrame({"mean": frame.mean(axis=1), "std": frame.std(axis=1, ddof=1).fillna(0.0),
                         "min": frame.min(axis=1), "max": frame.max(axis=1), "n": frame.count(axis=1)})


def smooth(values: pd.Series, fraction: float = 0.01) -> pd.Series:
    """Centred rolling mean over ``fraction`` of the points (at least 1)."""
    window = max(1, int(round(len(values) * fraction)))
    return values.rolling(window, center=True, min_periods=1).mean()


#: the opacity of a band over seeds (a mean line is drawn over it, thinner than the band is wide)
BAND_ALPHA = 0.35


def plot_band(ax, frame: pd.DataFrame, color, label: str | None, spread: str = "std", log: bool = False) -> None:
    """Mean line with a band over seeds: ± std (``spread="std"``) or min–max (``"range"``, fainter).

    ``log``: for a log axis, a std band that would reach zero or below stops at the lowest seed.
    """
    if frame.empty:
        return
    stats = band(frame)
    low, high = ((stats["mean"] - stats["std"], stats["mean"] + stats["std"]) if spread == "std"
                 else (stats["min"], stats["max"]))
    if log:
        low = low.where(low > 0, stats["min"])
    if frame.shape[1] > 1:  # under the line, opaque enough to see on noisy curves
        ax.fill_between(stats.index, low, high, color=color, alpha=BAND_ALPHA, lw=0)
    ax.plot(stats.index, stats["mean"], color=color, label=label, lw=1.0)


def task_loss_figure(groups: dict[str, Sequence[Run]], task_names: Sequence[str], base, title: str = "",
                     baselines: dict[str, dict[str, float]] | None = None,
                     task_labels: Sequence[str] | None = None) -> list:
    """One row per task: training loss (left, smoothed over 2% of the steps) and test loss (right), one
    colour per method, mean over seeds with a ± std band (paper Figure 3's layout).

    ``groups`` maps a method name to its runs; ``baselines``: task -> {"train_loss"/"test_loss": value},
    drawn as a dashed black line (e.g. the toy's zero predictor); ``task_labels``: the panels' task names.
    """
    fig, axes = new_figure(len(task_names), 2, width=4.2, height=2.6)
    for row, task in enumerate(task_names):
        for col, (kind, training) in enumerate((("train_loss", True), ("test_loss", False))):
            ax = axes[row][col]
            for method, runs in groups.items():
                frame = seed_frame(runs, f"{kind}/{task}")
                if training and not frame.empty:  # the per-step training loss is noisy: smooth it
                    frame = frame.apply(smooth, fraction=0.02)
                plot_band(ax, frame, method_color(method), method_label(method))
            level = (baselines or {}).get(task, {}).get(kind)
            if level is not None and math.isfinite(level):
                ax.axhline(level, color="black", lw=0.9, ls="--", label="zero predictor")
            label = task_labels[row] if task_labels else task
            ax.set_title(f"{label}: {'training' if training else 'test'} loss")
            ax.set_xlabel("step")
            if _positive(ax):
                ax.set_yscale("log")
                plain_log_ticks(ax, "y")
    axes[0][1].legend(frameon=False, fontsize=7)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, base)


def _positive(ax) -> bool:
    ys = [line.get_ydata() for line in ax.get_lines()]
    return bool(ys) and all(np.all(np.asarray(y, dtype=float) > 0) for y in ys)
