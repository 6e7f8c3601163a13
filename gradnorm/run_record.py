"""The run record: what a run directory holds, the one interface between training and reporting.

``summary.json`` (written at the end of a run, also a failed or interrupted one) and ``history.csv``
(one row per step, rewritten at every checkpoint) are written here, by the training loop and the
command line's failure path, and read here, by reporting and by GradNorm static (docs/architecture.md,
"Run outputs", lists their fields).
"""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from gradnorm import io

if TYPE_CHECKING:  # pandas only where tables are read: a run writes its history and summary without it
    import pandas as pd

SUMMARY = "summary.json"
HISTORY = "history.csv"
#: a run's history kept with its results (gzip, fewer rows: gradnorm/report/archive.py); read like history.csv
ARCHIVED_HISTORY = "history.csv.gz"
#: ``summary.json``'s ``status``: a run that finished, that stopped on an error, or that a signal stopped
COMPLETED, FAILED, INTERRUPTED = "completed", "failed", "interrupted"
#: history columns that are not final metrics of the run (weights, training losses)
_PER_STEP_PREFIXES = ("weight/", "train_loss/")
#: per-step columns of the loop itself: the update's wall time, a float16 overflow that skipped it
_PER_STEP_COLUMNS = ("step_time_s", "overflow", "skipped")


def history_columns(history: list[dict]) -> list[str]:
    """history.csv's columns: ``step``, the weights and the training losses, then the rest in the order
    they first appear."""
    seen = list(dict.fromkeys(key for row in history for key in row))
    first = ["step"] + sorted(c for c in seen if c.startswith("weight/")) + sorted(
        c for c in seen if c.startswith("train_loss/"))
    return first + [c for c in seen if c not in first] if history else []


def summarize(status: str, error: str | None, task_names: list[str], weights: list[float], history: list[dict],
              steps: int, max_steps: int, wall_time_s: float, config: dict, num_parameters: int,
              log_prefix: str | None = None, task_setup: dict | None = None, precision: str | None = None,
              weight_scale: str | None = None) -> dict:
    """``summary.json`` of a run from its history.

    ``mean_weights`` is the time average of the weights used at the training steps (GradNorm
    static's E_t[w_i(t)]); ``metrics`` the last evaluation's values, less the per-step columns and
    the balancer's own scalars (those under ``log_prefix``, e.g. ``"gradnorm/"``); ``task_setup`` the
    data set's realised set-up of the tasks (e.g. the toy's σ_i, which reports read); ``precision`` the
    autocast dtype the run used (float32, bfloat16, float16); ``weight_scale`` how the balancer's weights
    are normalised (``"sum=T"``, ``"sum=1"``, ``"unconstrained"``, ...).
    """
    train_rows = [r for r in history if r["step"] < max_steps and f"weight/{task_names[0]}" in r]
    mean_weights = [
        sum(r[f"weight/{n}"] for r in train_rows) / len(train_rows) if train_rows else float("nan")
        for n in task_names
    ]
    evaluated = [r for r in history if "task_normalized_loss" in r]
    not_metrics = _PER_STEP_PREFIXES + ((log_prefix,) if log_prefix else ()) + _PER_STEP_COLUMNS
    metrics = {k: v for k, v in (evaluated[-1] if evaluated else {}).items()
               if k != "step" and not k.startswith(not_metrics)}
    summary = {
        "status": status,
        "task_names": task_names,
        "weights": weights,
        "mean_weights": mean_weights,
        "weight_scale": weight_scale,
        "precision": precision,
        "metrics": metrics,
        "metrics_step": evaluated[-1]["step"] if evaluated else None,
        "steps": steps,
        "wall_time_s": round(wall_time_s, 3),
        "num_parameters": num_parameters,
        "task_setup": task_setup or {},
        "config": config,
    }
    if error:
        summary["error"] = error
    return summary


def failed_summary(error: str, config: dict) -> dict:
    """The summary of a run that failed before training started (e.g. a bad value in a sweep)."""
    return {"status": FAILED, "error": error, "task_names": [], "weights": [], "mean_weights": [],
            "metrics": {}, "steps": 0, "wall_time_s": 0.0, "config": config}


def write_history(run_dir: str | Path, history: list[dict]) -> Path:
    """history.csv with the csv module (a run need not import pandas), cell for cell as pandas writes
    it: a missing value or NaN empty, a column of integers with a gap written as floats (``1.0``)."""
    columns = history_columns(history)
    integral = {c for c in columns if all(isinstance(row.get(c), int) and not isinstance(row.get(c), bool)
                                          for row in history)}

    def cell(value, column: str) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return ""
        if isinstance(value, int | float) and not isinstance(value, bool):
            return str(value) if column in integral else repr(float(value))
        return str(value)

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as file:
            out = csv.writer(file, lineterminator="\n")
            out.writerow(columns)
            out.writerows([cell(row.get(c), c) for c in columns] for row in history)

    return io.atomic_write(Path(run_dir) / HISTORY, write)


def write_summary(run_dir: str | Path, summary: dict) -> Path:
    return io.write_json(Path(run_dir) / SUMMARY, summary)


def has_summary(run_dir: str | Path) -> bool:
    return (Path(run_dir) / SUMMARY).is_file()


def read_summary(run_dir: str | Path) -> dict:
    """``summary.json`` of ``run_dir``; ``OSError`` if absent, ``json.JSONDecodeError`` if unreadable."""
    return json.loads((Path(run_dir) / SUMMARY).read_text())


def write_archived_history(run_dir: str | Path, frame: pd.DataFrame) -> Path:
    """``history.csv.gz``: a history table, gzip-compressed with neither a timestamp nor a file name in the
    header (the atomic write's temporary name would be stored), so the same table gives the same bytes;
    floats to 6 significant digits."""
    import gzip

    data = gzip.compress(frame.to_csv(index=False, float_format="%.6g").encode(), mtime=0)
    return io.atomic_write(Path(run_dir) / ARCHIVED_HISTORY, lambda tmp: Path(tmp).write_bytes(data))


def read_history(run_dir: str | Path) -> pd.DataFrame | None:
    """``history.csv`` of ``run_dir`` (or, in an archived run, ``history.csv.gz``) as a table; None if absent
    or unreadable."""
    import pandas as pd

    for name in (HISTORY, ARCHIVED_HISTORY):
        path = Path(run_dir) / name
        if path.is_file():
            try:
                return pd.read_csv(path)
            except (OSError, EOFError, pd.errors.ParserError, pd.errors.EmptyDataError):
                return None
    return None
