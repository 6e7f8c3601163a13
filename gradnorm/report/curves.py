"""Curves from ``history.csv``: per-seed series, their mean and spread, and the Figure 3 plot."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from gradnorm.report.runs import Run
from gradnorm.report.style import METHOD_LABELS, method_color, new_figure, save_figure


def series(run: Run, column: str) -> pd.Series:
    """``column`` of a run's history indexed by step, NaN rows dropped (empty if absent)."""
    history = run.history
    if history is None or column not in history:
        return pd.Series(dtype=float)
    return history[["step", column]].dropna().set_index("step")[column].astype(float)


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


def plot_band(ax, frame: pd.DataFrame, color, label: str | None, spread: str = "std") -> None:
    """Mean line with a band over seeds: ± std (``spread="std"``) or min–max (``"range"``, fainter)."""
    if frame.empty:
        return
    stats = band(frame)
    low, high = ((stats["mean"] - stats["std"], stats["mean"] + stats["std"]) if spread == "std"
                 else (stats["min"], stats["max"]))
    ax.plot(stats.index, stats["mean"], color=color, label=label, lw=1.4 if spread == "std" else 1.2)
    if frame.shape[1] > 1:
        ax.fill_between(stats.index, low, high, color=color, alpha=0.2 if spread == "std" else 0.15, lw=0)


def figure3(groups: dict[str, list[Run]], task_names: Sequence[str], out_base: str | Path,
            title: str = "") -> list[Path]:
    """Figure 3's layout: one row per task, training loss (left) and test loss (right), one colour per
    method, mean over seeds with a ± std band.

    ``groups`` maps a method name (``equal``, ``uncertainty``, ``gradnorm``...) to its runs.
    """
    fig, axes = new_figure(len(task_names), 2, width=4.2, height=2.6)
    for row, task in enumerate(task_names):
        for col, (kind, training) in enumerate((("train_loss", True), ("test_loss", False))):
            ax = axes[row][col]
            for method, runs in groups.items():
                frame = seed_frame(runs, f"{kind}/{task}")
                if training and not frame.empty:  # the per-step training loss is noisy: smooth it
                    frame = frame.apply(smooth, fraction=0.02)
                plot_band(ax, frame, method_color(method), METHOD_LABELS.get(method, method))
            ax.set_title(f"{task}: {'training' if training else 'test'} loss")
            ax.set_xlabel("step")
            if _positive(ax):
                ax.set_yscale("log")
    axes[0][1].legend(frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_base)


def _positive(ax) -> bool:
    ys = [line.get_ydata() for line in ax.get_lines()]
    return bool(ys) and all(np.all(np.asarray(y, dtype=float) > 0) for y in ys)
