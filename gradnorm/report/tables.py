"""Aggregation over seeds and Markdown tables.

Cells read ``mean ± std (n=k)``: the mean and the sample standard deviation (ddof=1) over the
completed runs of a group, and how many runs are behind them. Failed and missing runs never enter
a mean; :func:`not_completed_section` lists them. A metric that no run has shows as ``–``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

DASH = "–"


def completed(frame: pd.DataFrame) -> pd.DataFrame:
    return frame[frame["status"] == "completed"]


def seed_stats(values: Iterable[float]) -> tuple[float, float, int]:
    """(mean, sample std, n) of the finite values; NaN mean when there are none."""
    array = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=float)
    if array.size == 0:
        return math.nan, math.nan, 0
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else math.nan, int(array.size)


def group_stats(frame: pd.DataFrame, by: Sequence[str], metrics: Sequence[str]) -> pd.DataFrame:
    """Per group of ``by``: ``<metric>/mean``, ``<metric>/std``, ``<metric>/n`` over completed runs,
    plus ``runs`` (all runs of the group) and ``completed``."""
    rows = []
    for key, group in frame.groupby(list(by), dropna=False, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        row = dict(zip(by, key))
        done = completed(group)
        row["runs"], row["completed"] = len(group), len(done)
        for metric in metrics:
            mean, std, n = seed_stats(done[metric]) if metric in done else (math.nan, math.nan, 0)
            row[f"{metric}/mean"], row[f"{metric}/std"], row[f"{metric}/n"] = mean, std, n
        rows.append(row)
    return pd.DataFrame(rows)


def fmt(value, digits: int = 3) -> str:
    """A number with ``digits`` significant digits (fixed notation where sensible), ``–`` if absent."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    value = float(value)
    if value == 0:
        return "0"
    magnitude = math.floor(math.log10(abs(value)))
    if -3 <= magnitude < 5:
        return f"{value:.{max(digits - 1 - magnitude, 0)}f}"
    return f"{value:.{digits - 1}e}"


def fmt_mean_std(mean: float, std: float, n: int, digits: int = 3, total: int | None = None) -> str:
    """``mean ± std (n=k)``; ``(n=k of m)`` when m runs were expected; ``–`` without data."""
    count = f"n={n}" if total is None or total == n else f"n={n} of {total}"
    if n == 0 or not math.isfinite(mean):
        return DASH if total in (None, 0) else f"{DASH} ({count})"
    spread = f" ± {fmt(std, 2)}" if math.isfinite(std) else ""
    return f"{fmt(mean, digits)}{spread} ({count})"


def markdown(header: Sequence[str], rows: Sequence[Sequence], align: str | None = None) -> str:
    """A GitHub Markdown table; ``align`` is one letter per column (l, r, c), default l then r."""
    align = align or "l" + "r" * (len(header) - 1)
    marks = {"l": ":---", "r": "---:", "c": ":---:"}
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |",
             "|" + "|".join(marks[a] for a in align) + "|"]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def not_completed_section(frame: pd.DataFrame, expected: dict[str, int] | None = None) -> str:
    """Markdown listing every run that did not complete, and sweeps (``sweep`` column, the ``sweep_group`` set
    by ``scripts/reproduce.py``) with fewer run directories than expected. The tables leave such runs out,
    except where a report says it keeps them (the variants report pairs a diverged run's late value)."""
    lines = []
    if expected:
        for sweep, count in expected.items():
            found = int((frame["sweep"] == sweep).sum()) if "sweep" in frame else 0
            if found < count:
                lines.append(f"- sweep `{sweep}`: {count} runs expected, {found} run directories found")
    others = frame[frame["status"] != "completed"] if len(frame) else frame
    for _, row in others.iterrows():
        error = row.get("error")
        reason = f": {error}" if isinstance(error, str) and error else ""
        lines.append(f"- `{row['run_dir']}` ({row['status']}){reason}")
    if not lines:
        return "All runs completed.\n"
    return "Runs that did not complete (listed, never silently dropped):\n\n" + "\n".join(lines) + "\n"


def runs_table(frame: pd.DataFrame, metrics: Sequence[str] | None = None) -> str:
    """The generic table of ``scripts/report.py``: one row per (experiment, dataset, model, method
    label, tasks), one column per final metric."""
    by = ["experiment", "dataset", "model", "label", "tasks"]
    if metrics is None:
        metrics = [c for c in frame.columns if c == "task_normalized_loss" or "/" in c and not c.startswith(
            ("weight/", "mean_weight/"))]
        metrics = sorted(metrics, key=lambda m: (m != "task_normalized_loss", m))
    keyed = frame.copy()
    for column in by:
        keyed[column] = keyed[column].fillna(DASH).astype(str) if column in keyed else DASH
    keyed["tasks"] = [t if t.count("+") < 4 else f"{t.count('+') + 1} tasks" for t in keyed["tasks"]]
    stats = group_stats(keyed, by, metrics)
    header = ["experiment", "dataset", "model", "method", "tasks", "runs"] + list(metrics)
    rows = []
    for _, row in stats.iterrows():
        cells = [row[c] for c in by] + [f"{row['completed']}/{row['runs']}"]
        cells += [fmt_mean_std(row[f"{m}/mean"], row[f"{m}/std"], row[f"{m}/n"]) for m in metrics]
        rows.append(cells)
    return markdown(header, rows, "lllll" + "r" * (1 + len(metrics)))


def _cell(value) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return DASH
    return str(value).replace("|", "\\|").replace("\n", " ")
