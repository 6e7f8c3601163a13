"""Curves from ``history.csv``: per-seed series, their mean and spread, smoothing, and a band plot."""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from gradnorm.report.runs import Run


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
