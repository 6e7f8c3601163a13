"""NYUv2+seg: Table 1 (paper §5) per backbone with the paper's numbers beside ours.

Rows and columns come from ``paper_numbers.yaml`` (``table1``): single-task baselines (one per task),
equal weights, uncertainty, GradNorm static and GradNorm α=1.5; one column pair (ours | paper) per
task metric. The paper's numbers are for VGG SegNet; other backbones show ``–`` there.
"""

from __future__ import annotations

import math
from pathlib import Path

from gradnorm import io
from gradnorm.report import claims as C
from gradnorm.report.claims import paper
from gradnorm.report.compare import completed_by_method, static_claim
from gradnorm.report.methods import LATER_METHODS
from gradnorm.report.style import method_label
from gradnorm.report.tables import DASH, fmt, fmt_mean_std, markdown, seed_stats
from gradnorm.tasks import DELTA_M_CONVENTIONS

OVERHEAD_OK, OVERHEAD_PARTLY = 0.10, 0.20   # GradNorm's extra wall time: ≤10% reproduced, ≤20% partly


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
    check = "per task metric, mean over seeds: GradNorm α=1.5 < equal weights on all: reproduced, some: partly"
    if not gradnorm or not equal:
        return C.ClaimResult("table1.gradnorm_beats_equal", setting, C.NO_DATA, "needs GradNorm and equal runs", check)
    better, parts = 0, []
    for column in columns:
        gn = seed_stats([r.summary["metrics"].get(column["metric"], math.nan) for r in gradnorm])
        eq = seed_stats([r.summary["metrics"].get(column["metric"], math.nan) for r in equal])
        if gn[2] and eq[2]:
            better += gn[0] < eq[0]
            parts.append(f"{column['metric']}: {fmt(gn[0])} vs {fmt(eq[0])}")
    total = len(parts)
    return C.ClaimResult("table1.gradnorm_beats_equal", setting, C.graded(better, total),
                         "; ".join(parts) or "metrics missing", check, shown_in)


def _overhead(gradnorm, equal, setting, shown_in) -> C.ClaimResult:
    check = (f"mean wall time of GradNorm runs / equal-weights runs − 1 (same steps, evaluation included): ≤ "
             f"{OVERHEAD_OK:.0%}: reproduced, ≤ {OVERHEAD_PARTLY:.0%}: partly")
    gn = seed_stats([r.summary.get("wall_time_s", math.nan) for r in gradnorm])
    eq = seed_stats([r.summary.get("wall_time_s", math.nan) for r in equal])
    if not gn[2] or not eq[2]:
        return C.ClaimResult("footnote1.overhead", setting, C.NO_DATA, "needs GradNorm and equal runs", check)
    extra = gn[0] / eq[0] - 1
    verdict = C.REPRODUCED if extra <= OVERHEAD_OK else C.PARTLY if extra <= OVERHEAD_PARTLY else C.NOT_REPRODUCED
    return C.ClaimResult("footnote1.overhead", setting, verdict,
                         f"{100 * extra:+.1f}% ({fmt(gn[0])} s vs {fmt(eq[0])} s)", check, shown_in)
