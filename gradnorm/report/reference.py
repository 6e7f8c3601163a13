"""How a regenerated results folder differs from the one it replaces (docs/experiments.md, "Machine to
machine").

The same seeds and the same pinned torch give slightly different numbers on another CPU: the float
rounding of the kernels differs, and 10,000 steps of training amplify it. At the end of every
reproduction the report compares the new ``runs.csv`` and verdicts with the reference they replace (on a
fresh clone: the committed ones) and writes ``<prefix>comparison.md``: per table the largest relative
change of a final metric and of a group mean, and every verdict that changed.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from gradnorm import io
from gradnorm.report.tables import markdown

#: columns that are not results (identity, bookkeeping, timing)
_NOT_RESULTS = {"wall_time_s", "steps", "max_steps", "seed", "num_tasks", "alpha", "grid_index"}
#: what identifies a group whose mean is compared
_GROUP_KEYS = ["setting", "method", "label", "num_tasks"]


@dataclass
class Reference:
    """The runs table and verdicts of a results folder before it is rewritten."""

    runs: pd.DataFrame | None
    verdicts: dict[tuple[str, str], str]

    @classmethod
    def read(cls, runs_csv: Path, claims_json: Path) -> Reference:
        try:
            runs = pd.read_csv(runs_csv)
        except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
            runs = None
        return cls(runs, read_verdicts(claims_json))


def read_verdicts(path: Path) -> dict[tuple[str, str], str]:
    """(claim id, setting) -> verdict from a ``claims_*.json``; empty if absent."""
    try:
        claims = json.loads(Path(path).read_text())["claims"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    return {(c["id"], c["setting"]): c["verdict"] for c in claims}


def result_columns(frame: pd.DataFrame) -> list[str]:
    """The final-result columns: metrics and weights (numeric, not bookkeeping)."""
    return [c for c in frame.columns if c not in _NOT_RESULTS and pd.api.types.is_numeric_dtype(frame[c])]


def largest_change(old: pd.DataFrame, new: pd.DataFrame, key: list[str]) -> tuple[float, str]:
    """Largest |new − old| / |old| over the result columns of rows matched on ``key``; (value, where)."""
    key = [k for k in key if k in old.columns and k in new.columns]
    if not key:
        return math.nan, ""
    merged = old.merge(new, on=key, suffixes=("_old", "_new"))
    best, where = math.nan, ""
    for column in result_columns(old):
        if f"{column}_new" not in merged:
            continue
        a, b = merged[f"{column}_old"].astype(float), merged[f"{column}_new"].astype(float)
        rel = ((b - a).abs() / a.abs()).where(a != 0)
        if rel.notna().any():
            i = int(rel.idxmax())
            if not rel.iloc[i] <= best:  # NaN-safe max
                row = merged.iloc[i]
                best = float(rel.iloc[i])
                label = ", ".join(f"{k}={row[k]}" for k in key if pd.notna(row[k]))
                where = f"{column} ({label}): {a.iloc[i]:.4g} → {b.iloc[i]:.4g}"
    return best, where


def group_means(frame: pd.DataFrame) -> pd.DataFrame:
    keys = [k for k in _GROUP_KEYS if k in frame.columns and frame[k].notna().any()]
    done = frame[frame["status"] == "completed"] if "status" in frame else frame
    columns = [c for c in result_columns(done) if c.startswith(("task_normalized_loss", "test_loss/", "delta_m"))]
    if not keys or not columns:
        return pd.DataFrame()
    return done.groupby(keys, dropna=False)[columns].mean().reset_index()


def comparison_markdown(reference: Reference, runs_csv: Path, claims_json: Path, title: str) -> str:
    """The comparison of the rewritten folder's ``runs_csv`` / ``claims_json`` with ``reference``."""
    text = f"# {title}: new numbers against the reference they replaced\n\n"
    if reference.runs is None:
        return text + "No reference: this is the first report in this folder.\n"
    new = pd.read_csv(runs_csv)
    rows = []
    value, where = largest_change(reference.runs, new, ["run_dir"])
    rows.append(["per run (final metrics and weights)", _percent(value), where or "–"])
    old_means, new_means = group_means(reference.runs), group_means(new)
    if not old_means.empty and not new_means.empty:
        keys = [k for k in _GROUP_KEYS if k in old_means.columns]
        value, where = largest_change(old_means, new_means, keys)
        rows.append(["group means over seeds", _percent(value), where or "–"])
    text += ("Largest relative change |new − old| / |old|, rows matched by run folder (and by group for the "
             "means). The reference is the folder's previous content: on a fresh clone, the committed results. "
             "Changes of a few % between machines are expected (docs/experiments.md).\n\n"
             + markdown(["Table", "Largest change", "Where"], rows, "lrl"))
    new_verdicts = read_verdicts(claims_json)
    changed = [[cid, setting, old, new_verdicts[(cid, setting)]] for (cid, setting), old in reference.verdicts.items()
               if (cid, setting) in new_verdicts and new_verdicts[(cid, setting)] != old]
    same = sum(1 for k, v in reference.verdicts.items() if new_verdicts.get(k) == v)
    text += f"\nVerdicts: {same} unchanged, {len(changed)} changed"
    text += (":\n\n" + markdown(["Claim", "Setting", "Was", "Now"], changed) if changed else ".\n")
    return text


def write_comparison(reference: Reference, out_dir: Path, prefix: str, experiment: str) -> Path:
    out_dir = Path(out_dir)
    text = comparison_markdown(reference, out_dir / f"{prefix}runs.csv", out_dir / f"claims_{experiment}.json",
                               f"`{experiment}`")
    return io.write_text(out_dir / f"{prefix}comparison.md", text)


def _percent(value: float) -> str:
    return "–" if not math.isfinite(value) else f"{100 * value:.2f}%"
