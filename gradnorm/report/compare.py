"""Comparisons between methods run by run: each run is compared with the reference run of the same
experiment and seed (same data and initialisation, paper §4). :func:`compare_runs` is the one entry
point of a report that compares method X with a reference R over seeds on one metric
(``gradnorm.report.stats`` grades it)."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np

from gradnorm.report import claims as C
from gradnorm.report.curves import late_mean
from gradnorm.report.runs import Run, method_of
from gradnorm.report.stats import MACHINE_DRIFT_PERCENT, MIN_SEEDS, Outcome, compare, decide, percent_gain
from gradnorm.report.tables import fmt

#: GradNorm static counts as "close to GradNorm" when every paired % difference is within this band.
STATIC_CLOSE_PERCENT = 5.0


def by_seed(runs: Sequence[Run], value: Callable[[Run], float]) -> dict:
    """seed -> ``value(run)`` for the completed runs (one run per seed expected; a later one replaces an
    earlier one of the same seed)."""
    return {run.config.get("seed"): value(run) for run in runs if run.status == "completed"}


def compare_runs(runs: Sequence[Run], reference: Sequence[Run], metric: str = "task_normalized_loss", *,
                 higher_is_better: bool = False, band: float = MACHINE_DRIFT_PERCENT, min_n: int = MIN_SEEDS,
                 until: int | None = None) -> Outcome:
    """Method X (``runs``) against reference R (``reference``) on ``metric``, paired by seed: each run's
    value is its late mean (``curves.late_mean``: the mean of its last evaluations, up to step ``until``),
    the outcome better / worse / inconclusive by ``stats.compare`` (positive % = X better)."""
    value = lambda run: late_mean(run, metric, until)  # noqa: E731
    return compare(by_seed(runs, value), by_seed(reference, value), higher_is_better=higher_is_better, band=band,
                   min_n=min_n)


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
    """The run's late value (``curves.late_mean``) of each lower-is-better metric."""
    return np.array([late_mean(run, m) for m in metric_names(metrics, run)])


def reference_for(run: Run, references: Sequence[Run]) -> Run | None:
    """The reference run with the same setting and seed, if any."""
    for ref in references:
        if setting_key(ref) == setting_key(run) and ref.config.get("seed") == run.config.get("seed"):
            return ref
    return None


def gains(runs: Sequence[Run], references: Sequence[Run], metrics: Sequence[str]) -> list[float]:
    """Average % gain of each run over its same-seed reference (positive = better); NaN if none."""
    return list(paired_gains(runs, references, metrics).values()) + [
        math.nan for run in runs if reference_for(run, references) is None]


def paired_gains(runs: Sequence[Run], references: Sequence[Run], metrics: Sequence[str]) -> dict:
    """seed -> average % gain over tasks of the run over its same-seed reference (``stats.percent_gain``
    of the late values): the paired differences of a multi-metric comparison."""
    out = {}
    for run in runs:
        ref = reference_for(run, references)
        if ref is not None:
            out[run.config.get("seed")] = percent_gain(errors(run, metrics), errors(ref, metrics))
    return out


def within(differences: dict, band: float) -> bool | None:
    """"X is close to R": every paired difference within ±band -> True; every one outside it on the same
    side (``stats.decide`` better or worse) -> False; otherwise None (too few seeds count as None)."""
    values = [v for v in differences.values() if math.isfinite(v)]
    if len(values) < MIN_SEEDS:
        return None
    if all(abs(v) <= band for v in values):
        return True
    return False if decide(differences, band=band).holds is not None else None


def static_claim(static: list[Run], gradnorm: list[Run], equal: list[Run], metrics: Sequence[str], setting: str,
                 shown_in: str) -> C.ClaimResult:
    """GradNorm static (§5.2) beats equal weights (the core) and stays close to GradNorm."""
    check = ("paired per seed: the average % gain over tasks of the late values (100·(ref−err)/ref, lower-is-better "
             f"metrics {', '.join(metrics)}). Core: GradNorm static better than equal weights (every seed > "
             f"+{MACHINE_DRIFT_PERCENT:g}%, ≥ {MIN_SEEDS} seeds); minor: close to GradNorm (every seed within "
             f"±{STATIC_CLOSE_PERCENT:g}%). Core fails: not reproduced; core inconclusive: inconclusive; core and "
             "minor hold: reproduced; core only: partly")
    over_equal = decide(paired_gains(static, equal, metrics))
    over_gradnorm = paired_gains(static, gradnorm, metrics)
    if not over_equal.n and not over_gradnorm:
        return C.ClaimResult("table1.static_close_to_gradnorm", setting, C.NO_DATA,
                             "no GradNorm static runs with a same-seed equal or GradNorm run", check, shown_in)
    close = within(over_gradnorm, STATIC_CLOSE_PERCENT)
    evidence = (f"static vs equal weights: {over_equal.text()}; static vs GradNorm: "
                f"{decide(over_gradnorm, band=STATIC_CLOSE_PERCENT).numbers()}, "
                f"{ {True: 'close', False: 'not close', None: 'closeness inconclusive'}[close]}")
    return C.ClaimResult("table1.static_close_to_gradnorm", setting, C.verdict([over_equal.holds], [close]),
                         evidence, check, shown_in, value=over_equal.mean)


def weight_distance(run: Run, reference: Run) -> float:
    """‖w_run − E_t[w_reference]‖₂: the fixed weights of a grid run vs GradNorm's time average (§5.3)."""
    w = np.asarray((run.summary or {}).get("mean_weights") or [], dtype=float)
    ref = np.asarray((reference.summary or {}).get("mean_weights") or [], dtype=float)
    return float(np.linalg.norm(w - ref)) if w.shape == ref.shape and w.size else math.nan


def describe_weights(weights: Sequence[float]) -> str:
    return "(" + ", ".join(fmt(w, 2) for w in weights) + ")"
