"""NYUv2+seg: Table 1 (paper §5) per backbone with the paper's numbers beside ours.

Rows and columns come from ``paper_numbers.yaml`` (``table1``): single-task baselines (one per task),
equal weights, uncertainty, GradNorm static and GradNorm α=1.5; one column pair (ours | paper) per
task metric. The paper's numbers are for VGG SegNet; other backbones show ``–`` there.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gradnorm import io
from gradnorm.report import claims as C
from gradnorm.report.claims import paper
from gradnorm.report.compare import by_seed, compare_runs, completed_by_method, static_claim
from gradnorm.report.curves import series
from gradnorm.report.methods import LATER_METHODS
from gradnorm.report.stats import MACHINE_DRIFT_PERCENT, MIN_SEEDS, beyond, decide
from gradnorm.report.style import method_label
from gradnorm.report.tables import DASH, fmt, fmt_mean_std, markdown, seed_stats
from gradnorm.tasks import DELTA_M_CONVENTIONS

OVERHEAD_OK, OVERHEAD_PARTLY = 0.10, 0.20   # GradNorm's extra step time: ≤10% reproduced, ≤20% partly
#: history.csv's column of each training step's wall seconds (train_step only; gradnorm/train.py)
STEP_TIME = "step_time_s"
WARMUP_STEPS = 10                            # steps before this are left out of a run's step time


#: Column headers of the Δm conventions (gradnorm.tasks.DELTA_M_CONVENTIONS, docs/nyuv2.md §3).
DELTA_M_HEADERS = {
    "delta_m": "Δm % flat (ours, ↑)",
    "delta_m_nash_mtl": "Δm % Nash-MTL (↓)",
    "delta_m_libmtl": "Δm % LibMTL (↑)",
}


def spec() -> dict:
    return paper()["table1"]


def by_model(runs: list) -> dict[str, list]:
    out: dict[str, list] = {}
    for run in runs:
        model = run.choices.get("model") or str(run.config.get("model", {}).get("_target_", "")).rsplit(".")[-1]
        out.setdefault(model, []).append(run)
    return out


def row_runs(row: dict, by_method: dict[str, list]) -> list:
    """The completed runs of one Table 1 row."""
    method = row["method"]
    runs = by_method.get(method, [])
    if method == "single_task":
        return [r for r in runs if r.task_names == [row["task"]]]
    if method == "gradnorm" and "alpha" in row:
        return [r for r in runs if math.isclose(float(r.config["balancer"]["alpha"]), float(row["alpha"]))]
    return runs


def report(runs: list, out: Path, footer: str = "", prefix: str = "", models=("segnet", "resnet", "fcn"),
           ) -> tuple[list[Path], list[C.ClaimResult]]:
    """Write ``<prefix>table1.md``; verdicts on Table 1's claims and on GradNorm's time overhead."""
    table = spec()
    columns = table["columns"]
    metrics = [c["metric"] for c in columns]
    text = (f"# NYUv2+seg: {table['section']}\n\nTest error, lower is better; ours: mean ± std over seeds (n runs), "
            f"final step. Paper numbers: {paper()['paper']}, for {table['backbone']} only. Δm columns (when the runs "
            "have single-task baselines): flat = our `delta_m`, mean over the metrics, higher is better; Nash-MTL = "
            "the Nash-MTL/CAGrad code's `delta_fn`, the same with the sign flipped, lower is better; LibMTL = mean "
            "within each task first, then over tasks, higher is better (docs/nyuv2.md §3). Rows after the "
            "paper's: the later methods (docs/methods.md).\n")
    results = []
    grouped = by_model(runs)
    for model in [m for m in models if m in grouped] + [m for m in grouped if m not in models]:
        by_method = completed_by_method(grouped[model])
        header = ["Method"] + [h for c in columns for h in (f"{c['header']} ours", "paper")]
        rows = []
        for row in table["rows"]:
            selected = row_runs(row, by_method)
            cells = [row["label"]]
            for column in columns:
                values = [r.summary["metrics"].get(column["metric"], math.nan) for r in selected]
                relevant = row["method"] != "single_task" or column["key"] == row["task"]
                cells.append(fmt_mean_std(*seed_stats(values)) if relevant else DASH)
                paper_value = row.get(column["key"]) if model == table["backbone"] else None
                cells.append(DASH if paper_value is None else str(paper_value))  # as printed in the paper
            rows.append(cells)
        for method in [m for m in LATER_METHODS if by_method.get(m)]:  # the later methods, after the paper's rows
            cells = [method_label(method)]
            for column in columns:
                values = [r.summary["metrics"].get(column["metric"], math.nan) for r in by_method[method]]
                cells += [fmt_mean_std(*seed_stats(values)), DASH]
            rows.append(cells)
        deltas = [k for k in DELTA_M_CONVENTIONS
                  if any(k in r.summary["metrics"] for rs in by_method.values() for r in rs)]
        if deltas:  # Δm in each convention that the runs report (docs/nyuv2.md §3)
            header = header + [DELTA_M_HEADERS[k] for k in deltas]
            labelled = [(row_runs(row, by_method), row) for row in table["rows"]] + [
                (by_method[m], None) for m in LATER_METHODS if by_method.get(m)]
            for cells, (selected, row) in zip(rows, labelled):
                single = row is not None and row["method"] == "single_task"
                cells += [DASH if single else fmt_mean_std(*seed_stats(
                    [r.summary["metrics"].get(k, math.nan) for r in selected])) for k in deltas]
        text += f"\n## {model}\n\n" + markdown(header, rows)
        gradnorm = row_runs({"method": "gradnorm", "alpha": 1.5}, by_method)
        equal, static = by_method.get("equal", []), by_method.get("gradnorm_static", [])
        results.append(_beats_equal(gradnorm, equal, columns, f"NYUv2+seg {model}", f"{prefix}table1.md"))
        results.append(static_claim(static, gradnorm, equal, metrics, f"NYUv2+seg {model}", f"{prefix}table1.md"))
        results.append(_overhead(gradnorm, equal, f"NYUv2+seg {model}", f"{prefix}table1.md"))
    files = [io.write_text(out / f"{prefix}table1.md", text + "\n" + footer)]
    return files, results


def _beats_equal(gradnorm, equal, columns, setting, shown_in) -> C.ClaimResult:
    check = ("per task metric (lower is better), paired per seed on late values: GradNorm α=1.5 vs equal weights "
             f"better / worse / inconclusive (every seed beyond ±{MACHINE_DRIFT_PERCENT:g}% on one side, ≥ "
             f"{MIN_SEEDS} seeds). Better on all: reproduced; worse on some: partly if better on others, else not "
             "reproduced; otherwise inconclusive")
    if not gradnorm or not equal:
        return C.ClaimResult("table1.gradnorm_beats_equal", setting, C.NO_DATA, "needs GradNorm and equal runs", check)
    parts, texts = [], []
    for column in columns:
        outcome = compare_runs(gradnorm, equal, column["metric"])
        if outcome.n:
            parts.append(outcome.holds)
            texts.append(f"{column['metric']}: {outcome.text()}")
    return C.ClaimResult("table1.gradnorm_beats_equal", setting, C.every(parts),
                         "; ".join(texts) or "metrics missing", check, shown_in)


def step_time(run) -> float:
    """The run's median wall time of one training step (``step_time_s`` of history.csv: train_step only, no
    evaluation), the first steps (warm-up, compilation) left out; NaN when the run does not record it."""
    times = series(run, STEP_TIME)
    times = times[times.index >= WARMUP_STEPS] if (times.index >= WARMUP_STEPS).any() else times
    return float(times.median()) if len(times) else math.nan


def _overhead(gradnorm, equal, setting, shown_in) -> C.ClaimResult:
    check = (f"per seed: GradNorm's median training-step time ({STEP_TIME} of history.csv, steps ≥ {WARMUP_STEPS}) / "
             f"equal weights' − 1, paired by seed. Every seed ≤ {OVERHEAD_OK:.0%}: reproduced; every seed > "
             f"{OVERHEAD_PARTLY:.0%}: not reproduced; every seed ≤ {OVERHEAD_PARTLY:.0%}: partly; otherwise inconclusive")
    gn, eq = by_seed(gradnorm, step_time), by_seed(equal, step_time)
    extra = {s: 100 * (gn[s] / eq[s] - 1) for s in gn if s in eq and math.isfinite(gn[s] / eq[s])}
    if not extra:
        return C.ClaimResult("footnote1.overhead", setting, C.NO_DATA,
                             f"needs GradNorm and equal runs of the same seed with {STEP_TIME} in history.csv", check)
    ok = beyond(extra, 100 * OVERHEAD_OK, above=False)
    partly = beyond(extra, 100 * OVERHEAD_PARTLY, above=False)
    verdict = (C.REPRODUCED if ok.holds else C.NOT_REPRODUCED if partly.holds is False
               else C.PARTLY if partly.holds else C.INCONCLUSIVE)
    return C.ClaimResult("footnote1.overhead", setting, verdict,
                         f"{decide(extra).numbers()} (median step {fmt(1e3 * np.nanmean(list(gn.values())))} ms vs "
                         f"{fmt(1e3 * np.nanmean(list(eq.values())))} ms, mean over seeds)", check, shown_in,
                         value=float(np.mean(list(extra.values()))))
