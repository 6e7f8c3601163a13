"""Comparisons between methods run by run: each run is compared with the reference run of the same
experiment and seed (same data and initialisation, paper §4), on lower-is-better task metrics."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from gradnorm.report import claims as C
from gradnorm.report.runs import Run, method_of
from gradnorm.report.stats import percent_gain
from gradnorm.report.tables import fmt, fmt_mean_std, seed_stats

#: GradNorm static counts as "close to GradNorm" within this average % difference.
STATIC_CLOSE_PERCENT = 5.0


def completed_by_method(runs: Sequence[Run]) -> dict[str, list[Run]]:
    out: dict[str, list[Run]] = {}
    for run in runs:
        if run.status == "completed":
            out.setdefault(method_of(run.config, run.choices)[0], []).append(run)
    return out


def setting_key(run: Run) -> tuple:
    """Runs comparable with each other: same experiment preset (or data set), model and tasks."""
    return (run.choices.get("experiment") or run.config.get("dataset", {}).get("_target_"),
            run.choices.get("model") or run.config.get("model", {}).get("_target_"), tuple(run.task_names))


#: how tables name a data set (Hydra's dataset choice -> label)
DATASET_LABELS = {"nyuv2": "NYUv2+seg"}


def setting_label(run: Run) -> str:
    """A readable name of a run's setting: "toy T=10", or "<data set> <model>" ("NYUv2+seg segnet")."""
    dataset = run.config.get("dataset", {}).get("_target_", "")
    if dataset.endswith("ToyRegression"):
        return f"toy T={len(run.task_names)}"
    model = run.choices.get("model") or str(run.config.get("model", {}).get("_target_", "")).rsplit(".")[-1]
    name = run.choices.get("dataset") or dataset.rsplit(".")[-1]
    return f"{DATASET_LABELS.get(name, name)} {model}".strip()


def metric_names(patterns: Sequence[str], run: Run) -> list[str]:
    """Expand ``test_loss/*`` into one metric per task of ``run``; other names stay as given."""
    out = []
    for pattern in patterns:
        out += [pattern.replace("*", n) for n in run.task_names] if "*" in pattern else [pattern]
    return out


def errors(run: Run, metrics: Sequence[str]) -> np.ndarray:
    values = (run.summary or {}).get("metrics") or {}
    return np.array([_float(values.get(m)) for m in metric_names(metrics, run)])


def reference_for(run: Run, references: Sequence[Run]) -> Run | None:
    """The reference run with the same setting and seed, if any."""
    for ref in references:
        if setting_key(ref) == setting_key(run) and ref.config.get("seed") == run.config.get("seed"):
            return ref
    return None


def gains(runs: Sequence[Run], references: Sequence[Run], metrics: Sequence[str]) -> list[float]:
    """Average % gain of each run over its same-seed reference (positive = better); NaN if none."""
    out = []
    for run in runs:
        ref = reference_for(run, references)
        out.append(percent_gain(errors(run, metrics), errors(ref, metrics)) if ref else math.nan)
    return out


def static_claim(static: list[Run], gradnorm: list[Run], equal: list[Run], metrics: Sequence[str], setting: str,
                 shown_in: str) -> C.ClaimResult:
    """GradNorm static (§5.2) beats equal weights and stays close to GradNorm."""
    check = ("average % gain over tasks (100·(ref−err)/ref, same seed, lower-is-better metrics "
             f"{', '.join(metrics)}), mean over seeds: (a) GradNorm static vs equal weights > 0; (b) |GradNorm "
             f"static vs GradNorm| ≤ {STATIC_CLOSE_PERCENT:g}%. Both: reproduced, one: partly")
    over_equal = seed_stats(gains(static, equal, metrics))
    over_gradnorm = seed_stats(gains(static, gradnorm, metrics))
    if not over_equal[2] and not over_gradnorm[2]:
        return C.ClaimResult("table1.static_close_to_gradnorm", setting, C.NO_DATA,
                             "no GradNorm static runs with a same-seed equal or GradNorm run", check, shown_in)
    beats = over_equal[2] > 0 and over_equal[0] > 0
    close = over_gradnorm[2] > 0 and abs(over_gradnorm[0]) <= STATIC_CLOSE_PERCENT
    evidence = (f"gain of static over equal: {fmt_mean_std(*over_equal)}%; over GradNorm: "
                f"{fmt_mean_std(*over_gradnorm)}%")
    return C.ClaimResult("table1.static_close_to_gradnorm", setting, C.graded(int(beats) + int(close), 2),
                         evidence, check, shown_in)


def weight_distance(run: Run, reference: Run) -> float:
    """‖w_run − E_t[w_reference]‖₂: the fixed weights of a grid run vs GradNorm's time average (§5.3)."""
    w = np.asarray((run.summary or {}).get("mean_weights") or [], dtype=float)
    ref = np.asarray((reference.summary or {}).get("mean_weights") or [], dtype=float)
    return float(np.linalg.norm(w - ref)) if w.shape == ref.shape and w.size else math.nan


def describe_weights(weights: Sequence[float]) -> str:
    return "(" + ", ".join(fmt(w, 2) for w in weights) + ")"


def _float(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return math.nan
