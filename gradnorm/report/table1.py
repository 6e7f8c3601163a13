"""NYUv2+seg: Table 1 (paper §5) per backbone, with the published numbers beside ours.

Two tables per backbone (``<prefix>table1.md``):

1. The paper's Table 1: rows and columns from ``paper_numbers.yaml`` (``table1``): single-task
   baselines (one per task), equal weights, uncertainty, GradNorm static and GradNorm α=1.5; one
   column pair (ours | paper) per task metric, the paper's numbers from ``literature.yaml`` (its
   source ``gradnorm_paper``; VGG SegNet only, other backbones show ``–``); then the later methods.
2. Beside the SegNet-MTAN literature (``literature.yaml``, setting ``literature``): LibMTL's format,
   each of our methods' rows followed by the rows that report the same method ("reported by"),
   on the nine metrics of those tables in their units, with Δm in each convention the suite computes
   (``gradnorm.tasks.DELTA_M_CONVENTIONS``) recomputed for every row against one base (the
   single-task row of ``delta_m_base``), the Δm as printed, and the protocol differences of each
   published row from our runs (``literature.protocol_differences``).

Our cells are mean ± std over seeds of each run's reported value (``epoch_choice``: ``final`` or
``last10_mean``, ``gradnorm.report.curves.reported_value``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gradnorm import io
from gradnorm.report import claims as C
from gradnorm.report import literature as lit_mod
from gradnorm.report.claims import paper
from gradnorm.report.compare import by_seed, completed_by_method, static_claim
from gradnorm.report.curves import late_mean, reported_value, series
from gradnorm.report.methods import LATER_METHODS, PAPER_METHODS
from gradnorm.report.stats import MACHINE_DRIFT_PERCENT, MIN_SEEDS, beyond, compare, decide
from gradnorm.report.style import SINGLE_TASK, method_label
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
#: Column headers of the nine SegNet-MTAN metrics (literature.yaml's values_order), in their printed units.
LITERATURE_HEADERS = {
    "seg/miou": "mIoU %", "seg/pix_acc": "Pix Acc %", "depth/abs_err": "Abs Err", "depth/rel_err": "Rel Err",
    "normals/mean_angle": "Mean °", "normals/median_angle": "Median °", "normals/within_11.25": "11.25° %",
    "normals/within_22.5": "22.5° %", "normals/within_30": "30° %",
}
EPOCH_CHOICE_TEXT = {"final": "final evaluation", "last10_mean": "mean of the last 10 evaluations"}


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


def paper_metrics(row: dict) -> dict[str, float]:
    """The paper's printed numbers of one Table 1 row (``literature.yaml``, source ``table1.source``)."""
    found = [r for r in lit_mod.load().select(source=spec()["source"], method=row["method"], task=row.get("task"))
             if "alpha" not in row or (r.alpha is not None and math.isclose(r.alpha, float(row["alpha"])))]
    return found[0].metrics if found else {}


def report(runs: list, out: Path, footer: str = "", prefix: str = "", models=("segnet", "resnet", "fcn"),
           epoch_choice: str = "final", literature: str | None = "nyuv2_segnet_mtan",
           delta_m_base: str = "nash_mtl_paper", alpha: float = 1.5) -> tuple[list[Path], list[C.ClaimResult]]:
    """Write ``<prefix>table1.md``; verdicts on Table 1's claims and on GradNorm's time overhead.

    Args:
        epoch_choice: our reported value per run, ``final`` or ``last10_mean``.
        literature: the setting of ``literature.yaml`` whose rows go beside ours (None: none).
        delta_m_base: the source whose single-task row is the base of every recomputed Δm.
        alpha: GradNorm's α of our GradNorm rows.
    """
    table = spec()
    columns = table["columns"]
    metrics = [c["metric"] for c in columns]
    lit = lit_mod.load()
    source = lit.sources[table["source"]]

    def value(run, metric):
        return reported_value(run, metric, epoch_choice)

    text = (f"# NYUv2+seg: {table['section']}\n\nTest error, lower is better; ours: mean ± std over seeds (n runs) "
            f"of each run's {EPOCH_CHOICE_TEXT[epoch_choice]}. Paper numbers: {source['cite']}, {source['table']}, "
            f"for {table['backbone']} only (literature.yaml). Δm columns (when the runs "
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
            printed = paper_metrics(row) if model == table["backbone"] else {}
            cells = [row["label"]]
            for column in columns:
                relevant = row["method"] != "single_task" or column["key"] == row["task"]
                cells.append(fmt_mean_std(*seed_stats([value(r, column["metric"]) for r in selected]))
                             if relevant else DASH)
                paper_value = printed.get(column["metric"])
                cells.append(DASH if paper_value is None else str(paper_value))  # as printed in the paper
            rows.append(cells)
        for method in [m for m in LATER_METHODS if by_method.get(m)]:  # the later methods, after the paper's rows
            cells = [method_label(method)]
            for column in columns:
                cells += [fmt_mean_std(*seed_stats([value(r, column["metric"]) for r in by_method[method]])), DASH]
            rows.append(cells)
        deltas = [k for k in DELTA_M_CONVENTIONS
                  if any(k in r.summary["metrics"] for rs in by_method.values() for r in rs)]
        if deltas:  # Δm in each convention that the runs report (docs/nyuv2.md §3)
            header = header + [DELTA_M_HEADERS[k] for k in deltas]
            labelled = [(row_runs(row, by_method), row) for row in table["rows"]] + [
                (by_method[m], None) for m in LATER_METHODS if by_method.get(m)]
            for cells, (selected, row) in zip(rows, labelled):
                single = row is not None and row["method"] == "single_task"
                cells += [DASH if single else fmt_mean_std(*seed_stats([value(r, k) for r in selected]))
                          for k in deltas]
        text += f"\n## {model}\n\n" + markdown(header, rows)
        if model == table["backbone"]:
            ours = _protocol(by_method, model, epoch_choice)
            if ours is not None:
                text += ("\nPaper column, protocol differences from our runs: "
                         + "; ".join(lit_mod.protocol_differences(lit.protocols[source["protocol"]], ours)) + ".\n")
        if literature:
            text += _literature_section(lit, literature, delta_m_base, by_method, model, epoch_choice, alpha)
        gradnorm = row_runs({"method": "gradnorm", "alpha": alpha}, by_method)
        equal, static = by_method.get("equal", []), by_method.get("gradnorm_static", [])
        results.append(_beats_equal(gradnorm, equal, columns, f"NYUv2+seg {model}", f"{prefix}table1.md", epoch_choice))
        results.append(static_claim(static, gradnorm, equal, metrics, f"NYUv2+seg {model}", f"{prefix}table1.md"))
        results.append(_overhead(gradnorm, equal, f"NYUv2+seg {model}", f"{prefix}table1.md"))
    files = [io.write_text(out / f"{prefix}table1.md", text + "\n" + footer)]
    return files, results


# -- beside the literature --------------------------------------------------------------------------------
def _protocol(by_method: dict[str, list], model: str, epoch_choice: str) -> dict | None:
    """Our protocol tags, from the multitask runs (seeds: the most runs of any method)."""
    multitask = [rs for m, rs in by_method.items() if m != SINGLE_TASK and rs]
    if not multitask:
        return None
    run = multitask[0][0]
    return lit_mod.run_protocol(run.config, run.summary or {}, model, max(len(rs) for rs in multitask), epoch_choice)


def _our_runs(method: str, by_method: dict[str, list], alpha: float) -> list:
    runs = by_method.get(method, [])
    if method == "gradnorm":
        runs = [r for r in runs if math.isclose(float(r.config["balancer"].get("alpha", math.nan)), alpha)]
    return runs


def _literature_section(lit, setting: str, base_source: str, by_method: dict[str, list], model: str,
                        epoch_choice: str, alpha: float) -> str:
    """The SegNet-MTAN table: our rows, each followed by the published rows of the same method."""
    names = list(lit.values_order)
    base = lit.baselines(setting, base_source)
    published = lit.select(setting=setting)
    methods = [m for m in (SINGLE_TASK, *PAPER_METHODS, "gradnorm_static", *LATER_METHODS)
               if _our_runs(m, by_method, alpha) or any(r.method == m for r in published)]
    ours = _protocol(by_method, model, epoch_choice)
    header = ["Method", "Reported by", *[LITERATURE_HEADERS[n] for n in names],
              *[DELTA_M_HEADERS[k] for k in DELTA_M_CONVENTIONS], "Δm % as printed", "Protocol differences"]
    rows = []
    for method in methods:
        runs = _our_runs(method, by_method, alpha)
        label = method_label(method) + (f" α={alpha:g}" if method == "gradnorm" else "")
        rows.append([f"**{label}**", f"ours ({EPOCH_CHOICE_TEXT[epoch_choice]})",
                     *_our_metric_cells(method, runs, names, lit, epoch_choice),
                     *_our_delta_cells(method, runs, names, base, epoch_choice), DASH, DASH])
        for group in _groups([r for r in published if r.method == method]):
            first = group[0]
            deltas = {} if method == SINGLE_TASK else lit_mod.delta_m(first.suite_metrics, base)
            protocols = sorted({lit.sources[r.source]["protocol"] for r in group})
            rows.append([f"↳ {first.label}", ", ".join(lit.short(r.source) for r in group),
                         *[DASH if n not in first.metrics else f"{first.metrics[n]:g}" for n in names],
                         *[fmt(deltas.get(k), 3) if k in deltas else DASH for k in DELTA_M_CONVENTIONS],
                         _printed(group, lit),
                         "; ".join(f"{p}: {_differing_tags(lit.protocols[p], ours)}" for p in protocols)])
    sources = ", ".join(f"{lit.short(k)}: {s['cite']}" for k, s in lit.sources.items() if s["setting"] == setting)
    used = sorted({lit.sources[r.source]["protocol"] for r in published})
    legend = "\n".join(f"- `{p}`: " + ("; ".join(lit_mod.protocol_differences(lit.protocols[p], ours)) or "none")
                       for p in used) if ours else "- (no multitask runs of ours: nothing to compare)"
    return (f"\n### Beside the published SegNet-MTAN numbers ({model})\n\n"
            f"{lit.settings[setting]}. Published rows (↳, from literature.yaml) follow our row of the same method; "
            "rows with the same numbers in several tables are one row. Metrics in the units the papers print "
            "(% for mIoU, pixel accuracy and the within-t° fractions). Δm recomputed by the suite for every row, "
            f"in each convention, against the single-task row of {lit.short(base_source)}; 'as printed' is each "
            "source's own Δm (↓ = lower is better; Aligned-MTL's task-weighted = −LibMTL convention). Protocol "
            "differences: the tags of the published protocol (literature.yaml) that differ from our runs', or "
            "that it leaves unstated; each in full below the table.\n\n"
            + markdown(header, rows, "ll" + "r" * (len(header) - 3) + "l")
            + f"\nProtocol differences from our runs (theirs, ours in brackets):\n\n{legend}\n\nSources: {sources}.\n")


def _differing_tags(theirs: dict, ours: dict | None) -> str:
    """The tags of a published protocol that differ from ours ("batch, epochs"), then the unstated ones."""
    if ours is None:
        return DASH
    phrases = lit_mod.protocol_differences(theirs, ours)
    differing = [p.split(" ")[0] for p in phrases if not p.endswith(lit_mod.UNSTATED)]
    unstated = [p.split(" ")[0] for p in phrases if p.endswith(lit_mod.UNSTATED)]
    return ", ".join(differing) + (f"; unstated: {', '.join(unstated)}" if unstated else "") if phrases else "none"


def _groups(rows: list) -> list[list]:
    """Published rows with the same printed metrics, together (a reprint is not a second result)."""
    out: dict[tuple, list] = {}
    for row in rows:
        out.setdefault(tuple(sorted(row.metrics.items())), []).append(row)
    return list(out.values())


def _printed(group: list, lit) -> str:
    """The Δm as each source of a group printed it: "5.59 (CAGrad, Nash-MTL); 5.46, task-weighted −1.07 (...)"."""
    by_text: dict[str, list[str]] = {}
    for row in group:
        bits = []
        if "delta_m_nash_mtl" in row.printed:
            bits.append(f"{row.printed['delta_m_nash_mtl']:g}")
        if "delta_m_task_weighted" in row.printed:
            bits.append(f"task-weighted {row.printed['delta_m_task_weighted']:g}")
        if bits:
            by_text.setdefault(", ".join(bits), []).append(lit.sources[row.source]["short"])
    return "; ".join(f"{text} ({', '.join(names)})" for text, names in by_text.items()) or DASH


def _single_task_values(runs: list, metric: str, epoch_choice: str) -> list[float]:
    """A single-task row's values of ``metric``: from the runs that trained ``metric``'s task."""
    task = metric.split("/")[0]
    return [reported_value(r, metric, epoch_choice) for r in runs if r.task_names == [task]]


def _our_metric_cells(method: str, runs: list, names: list[str], lit, epoch_choice: str) -> list[str]:
    cells = []
    for name in names:
        values = (_single_task_values(runs, name, epoch_choice) if method == SINGLE_TASK
                  else [reported_value(r, name, epoch_choice) for r in runs])
        values = [lit.to_printed_units(name, v) for v in values]
        cells.append(fmt_mean_std(*seed_stats(values), digits=4))
    return cells


def _our_delta_cells(method: str, runs: list, names: list[str], base: dict, epoch_choice: str) -> list[str]:
    if method == SINGLE_TASK:
        return [DASH] * len(DELTA_M_CONVENTIONS)
    per_run = [lit_mod.delta_m({n: reported_value(r, n, epoch_choice) for n in names}, base) for r in runs]
    return [fmt_mean_std(*seed_stats([d.get(k, math.nan) for d in per_run])) for k in DELTA_M_CONVENTIONS]


# -- verdicts -------------------------------------------------------------------------------------------
def _beats_equal(gradnorm, equal, columns, setting, shown_in, epoch_choice="final") -> C.ClaimResult:
    value_kind = "late values" if epoch_choice == "final" else f"each run's {epoch_choice}"
    check = (f"per task metric (lower is better), paired per seed on {value_kind}: GradNorm α=1.5 vs equal weights "
             f"better / worse / inconclusive (every seed beyond ±{MACHINE_DRIFT_PERCENT:g}% on one side, ≥ "
             f"{MIN_SEEDS} seeds). Better on all: reproduced; worse on some: partly if better on others, else not "
             "reproduced; otherwise inconclusive")
    if not gradnorm or not equal:
        return C.ClaimResult("table1.gradnorm_beats_equal", setting, C.NO_DATA, "needs GradNorm and equal runs", check)
    parts, texts = [], []
    for column in columns:
        metric = column["metric"]
        # final values are judged on late values (the mean of the last evaluations); a protocol's own choice as it is
        value = ((lambda r, m=metric: late_mean(r, m)) if epoch_choice == "final"
                 else (lambda r, m=metric: reported_value(r, m, epoch_choice)))
        outcome = compare(by_seed(gradnorm, value), by_seed(equal, value))
        if outcome.n:
            parts.append(outcome.holds)
            texts.append(f"{metric}: {outcome.text()}")
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
