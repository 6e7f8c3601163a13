"""MultiMNIST: GradNorm on real data (experiments/multimnist.yaml, docs/multimnist.md).

Per variant (the standard two tasks, ``dataset.third_task=none``; with the sum task on another loss scale,
``third_task=sum``), from the runs' ``summary.json`` and ``history.csv`` only:

* ``multimnist_table.md``: each method's late mean accuracy over the classification tasks, each task's
  accuracy and the sum task's test MSE, mean ± std over seeds; every method against equal weights and
  against GradNorm (each α), paired by seed on the late mean accuracy, in accuracy points; the weights
  and the per-task accuracies over the first epochs.
* ``multimnist_verdicts.md``: sentences computed from those numbers, and the paper's claim "GradNorm
  improves accuracy over equal weights and uncertainty weighting on real data" (abstract, §5) per
  variant and α: REPORT.md's section "GradNorm on real data (MultiMNIST)" and the results README.
* ``multimnist_accuracy.png/pdf`` (accuracy against epoch, the paired differences against equal weights),
  ``multimnist_weights.png/pdf`` (the weights against step, each method on its own ``weight_scale``),
  ``multimnist_first_epochs.png/pdf`` (the first epochs of the variant with the sum task).

A run's value is its late value (``curves.late_mean``: the mean of its last evaluations). A comparison of
accuracies is graded in points, not in % of the reference (docs/multimnist.md §7): d_s = acc_X,s − acc_R,s,
better when every seed's d_s > +:data:`ACCURACY_BAND_POINTS`, worse when every one is below −that, with
≥ 3 seeds (``gradnorm.report.stats.decide``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from gradnorm import io
from gradnorm.report import claims as C
from gradnorm.report.compare import by_seed
from gradnorm.report.curves import LAST_EVALUATIONS, late_mean, plot_band, seed_frame, series, smooth
from gradnorm.report.methods import METHODS as METHOD_ORDER
from gradnorm.report.runs import Run, method_of
from gradnorm.report.stats import (
    BETTER,
    INCONCLUSIVE,
    MIN_SEEDS,
    NO_DATA,
    POINTS,
    WORSE,
    Outcome,
    absolute_differences,
    decide,
)
from gradnorm.report.style import method_color, method_label, new_figure, save_figure
from gradnorm.report.tables import DASH, fmt_mean_std, markdown, seed_stats

#: the variants (``dataset.third_task``) and their names in tables and figures
VARIANTS = {"none": "2 tasks", "sum": "2 tasks + sum"}
#: the minimum effect of an accuracy comparison, in accuracy points (docs/multimnist.md §7): every seed's
#: paired difference must clear it. The stats module's default band (3% of the reference) would be ~2.7
#: points at 90% accuracy, wider than the spread of the paired differences; 1 point is above the drift of a
#: run under a rounding-level change of its arithmetic (docs/multimnist.md §7).
ACCURACY_BAND_POINTS = 1.0
#: the claim of the paper this experiment judges (paper_numbers.yaml)
CLAIM = "real_data.improves_accuracy"
#: the other methods of the paper's claim: GradNorm against each
CLAIM_REFERENCES = ("equal", "uncertainty")
#: the methods of the weights figure, besides GradNorm (every α): each on its own weight scale
WEIGHT_METHODS = ("uncertainty", "famo", "mgda")
#: the methods of the first-epochs figure and tables, besides GradNorm (every α)
FIRST_EPOCH_METHODS = ("equal", "uncertainty", "famo", "mgda")
#: how many epochs the first-epochs figure and tables show
FIRST_EPOCHS = 6
#: the steps of the first-epochs weights table besides the ends of epochs 1..FIRST_EPOCHS (even steps: the
#: archived histories keep every other step of a 690-step run)
FIRST_STEPS = (0, 10, 20, 30, 40)
#: the step (besides the end of the first epoch) at which the sentences give the sum task's share of the weights
SHARE_STEP = 10
#: "learned": the mean accuracy level whose first epoch the first-epochs table gives
LEARNED_PERCENT = 50.0
#: the colour of each task in the weights figure
TASK_COLORS = {"left": "#0072B2", "right": "#E69F00", "sum": "#009E73"}
#: the section of REPORT.md and of the results README this report writes
VERDICTS_FILE = "multimnist_verdicts.md"
OUTCOMES = (BETTER, WORSE, INCONCLUSIVE, NO_DATA)


# -- the runs --------------------------------------------------------------------------------------------
def variant_of(run: Run) -> str:
    """``none`` or ``sum``: the run's ``dataset.third_task`` (recorded in ``task_setup``)."""
    setup = (run.summary or {}).get("task_setup") or {}
    third = setup.get("third_task") or (run.config.get("dataset") or {}).get("third_task")
    return str(third) if third else ("sum" if "sum" in run.task_names else "none")


def label_of(run: Run) -> str:
    """The method's label with its settings (``GradNorm α=0.5``): one row of the tables."""
    return method_of(run.config, run.choices)[1]


def groups(runs: Sequence[Run]) -> dict[str, dict[str, list[Run]]]:
    """Completed runs -> {variant: {method label: runs}}, variants as in :data:`VARIANTS`, methods in the
    order of the table of methods (GradNorm by α)."""
    out: dict[str, dict[str, list[Run]]] = {}
    for run in runs:
        if run.status == "completed" and run.task_names:
            out.setdefault(variant_of(run), {}).setdefault(label_of(run), []).append(run)
    order = {m: i for i, m in enumerate(METHOD_ORDER)}

    def key(item):
        label, rs = item
        method = method_of(rs[0].config, rs[0].choices)[0]
        alpha = (rs[0].config.get("balancer") or {}).get("alpha") if method == "gradnorm" else None
        return order.get(method, len(order)), method, float(alpha or 0), label

    known = [v for v in VARIANTS if v in out] + sorted(v for v in out if v not in VARIANTS)
    return {v: dict(sorted(out[v].items(), key=key)) for v in known}


def method_name(runs: Sequence[Run]) -> str:
    return method_of(runs[0].config, runs[0].choices)[0] if runs else ""


def labels_of(by_label: dict[str, list[Run]], method: str) -> list[str]:
    """The labels of ``method``'s rows (GradNorm: one per α)."""
    return [label for label, rs in by_label.items() if method_name(rs) == method]


def accuracy_tasks(run: Run) -> list[str]:
    """The classification tasks: those with an ``<task>/acc`` metric."""
    metrics = (run.summary or {}).get("metrics") or {}
    history = run.history
    return [t for t in run.task_names if f"{t}/acc" in metrics or (history is not None and f"{t}/acc" in history)]


def other_tasks(run: Run) -> list[str]:
    return [t for t in run.task_names if t not in accuracy_tasks(run)]


def late_accuracy(run: Run, task: str | None = None) -> float:
    """The run's late accuracy in % (mean of its last evaluations): of ``task``, or the mean over its
    classification tasks."""
    tasks = [task] if task else accuracy_tasks(run)
    values = [late_mean(run, f"{t}/acc") for t in tasks]
    return 100.0 * float(np.mean(values)) if values else math.nan


def accuracy_curve(run: Run, task: str | None = None) -> pd.Series:
    """Accuracy in % at each evaluation (step-indexed): of ``task``, or the mean over the classification tasks."""
    tasks = [task] if task else accuracy_tasks(run)
    frame = pd.DataFrame({t: series(run, f"{t}/acc") for t in tasks})
    return 100.0 * frame.mean(axis=1, skipna=False).dropna() if not frame.empty else pd.Series(dtype=float)


def curve_frame(runs: Sequence[Run], task: str | None = None) -> pd.DataFrame:
    """One column per run of :func:`accuracy_curve`."""
    data = {str(r.path): accuracy_curve(r, task) for r in runs}
    return pd.DataFrame({k: v for k, v in data.items() if len(v)}).sort_index()


def steps_per_epoch(run: Run) -> int:
    """Training pairs // batch size (the incomplete last batch is dropped); the evaluation interval if the
    run does not say."""
    pairs = (((run.summary or {}).get("task_setup") or {}).get("pairs") or {}).get("train")
    trainer = run.config.get("trainer") or {}
    batch = trainer.get("batch_size")
    if pairs and batch and int(pairs) >= int(batch):
        return int(pairs) // int(batch)
    return int(trainer.get("eval_every") or 1)


def weight_share(run: Run, task: str) -> pd.Series:
    """w_task / Σ_i w_i at every recorded step: comparable across weight scales."""
    history = run.history
    columns = [f"weight/{t}" for t in run.task_names]
    if history is None or not all(c in history for c in columns) or f"weight/{task}" not in history:
        return pd.Series(dtype=float)
    frame = history[["step", *columns]].dropna().drop_duplicates("step", keep="first").set_index("step")
    total = frame[columns].sum(axis=1)
    return (frame[f"weight/{task}"] / total.where(total != 0)).astype(float)


def epoch_reaching(run: Run, level: float = LEARNED_PERCENT) -> float:
    """The first epoch at whose end the mean accuracy is ≥ ``level`` %; inf if never."""
    curve = accuracy_curve(run)
    reached = curve[curve >= level]
    return float(reached.index[0]) / steps_per_epoch(run) if len(reached) else math.inf


# -- the comparisons -------------------------------------------------------------------------------------
def compare_accuracy(runs: Sequence[Run], reference: Sequence[Run], band: float = ACCURACY_BAND_POINTS) -> Outcome:
    """X against R on the late mean accuracy, paired by seed, in points (positive: X more accurate)."""
    diffs = absolute_differences(by_seed(runs, late_accuracy), by_seed(reference, late_accuracy),
                                 higher_is_better=True)
    return decide(diffs, band=band, unit=POINTS)


def references(by_label: dict[str, list[Run]]) -> list[str]:
    """The reference rows: equal weights, then GradNorm at each α."""
    return labels_of(by_label, "equal") + labels_of(by_label, "gradnorm")


def comparisons(grouped: dict[str, dict[str, list[Run]]], band: float = ACCURACY_BAND_POINTS
                ) -> dict[str, dict[str, dict[str, Outcome]]]:
    """variant -> method label -> reference label (and uncertainty's, for the claim) -> outcome."""
    out = {}
    for variant, by_label in grouped.items():
        refs = references(by_label) + labels_of(by_label, "uncertainty")
        out[variant] = {label: {ref: compare_accuracy(runs, by_label[ref], band) for ref in refs if ref != label}
                        for label, runs in by_label.items()}
    return out


def check_text(band: float) -> str:
    return (f"late mean accuracy over the classification tasks (each run's mean of its last {LAST_EVALUATIONS} "
            f"evaluations, in %), paired by seed: d_s = acc_GradNorm − acc_reference in points. Against a reference: "
            f"better if every d_s > +{band:g} point, worse if every d_s < −{band:g}, with ≥ {MIN_SEEDS} seeds; "
            "otherwise inconclusive. Core: better than equal weights and better than uncertainty weighting; worse "
            "than either: not reproduced; otherwise inconclusive")


def check_claims(grouped: dict, outcomes: dict, shown_in: str, band: float = ACCURACY_BAND_POINTS
                 ) -> list[C.ClaimResult]:
    """One verdict per variant and GradNorm α on the paper's claim (:data:`CLAIM`)."""
    results = []
    check = check_text(band)
    for variant, by_label in grouped.items():
        setting = f"MultiMNIST {VARIANTS.get(variant, variant)}"
        gradnorms = labels_of(by_label, "gradnorm")
        refs = {m: labels_of(by_label, m) for m in CLAIM_REFERENCES}
        if not gradnorms or not all(refs.values()):
            missing = [method_label(m) for m in ("gradnorm", *CLAIM_REFERENCES) if not labels_of(by_label, m)]
            results.append(C.ClaimResult(CLAIM, setting, C.NO_DATA, f"no completed runs of {', '.join(missing)}",
                                         check, shown_in))
            continue
        for label in gradnorms:
            parts = [outcomes[variant][label][refs[m][0]] for m in CLAIM_REFERENCES]
            evidence = "; ".join(f"against {method_label(m)}: {o.text()}" for m, o in zip(CLAIM_REFERENCES, parts))
            means = ", ".join(f"{name} {fmt_mean_std(*seed_stats(late_values(by_label[name])))}"
                              for name in (label, *[refs[m][0] for m in CLAIM_REFERENCES]))
            results.append(C.ClaimResult(CLAIM, f"{setting}, {label}", C.verdict([o.holds for o in parts]),
                                         f"{evidence} (mean accuracy %: {means})", check, shown_in,
                                         value=parts[0].mean if parts[0].n else None))
    return results


def late_values(runs: Sequence[Run], task: str | None = None) -> list[float]:
    return [late_accuracy(r, task) for r in runs]


# -- the report ------------------------------------------------------------------------------------------
def report(runs: list[Run], out: Path, footer: str = "", prefix: str = "", band: float = ACCURACY_BAND_POINTS,
           timing: dict[str, float] | None = None) -> tuple[list[Path], list[C.ClaimResult]]:
    """Write the tables, figures and the REPORT.md section; return them and the claim's verdicts.

    Args:
        band: the minimum effect of an accuracy comparison, in points.
        timing: sweep -> wall seconds of the sweeps that made the runs (``sweep_times.json``), quoted.
    """
    grouped = groups(runs)
    outcomes = comparisons(grouped, band)
    shown = f"{prefix}multimnist_accuracy.png"
    verdicts = check_claims(grouped, outcomes, shown, band)
    files = accuracy_figure(grouped, outcomes, out / f"{prefix}multimnist_accuracy", band)
    files += weights_figure(grouped, out / f"{prefix}multimnist_weights")
    if "sum" in grouped:
        files += first_epochs_figure(grouped["sum"], out / f"{prefix}multimnist_first_epochs")
    text = ("# MultiMNIST: GradNorm on real data\n\n"
            "Generated by `scripts/reproduce.py multimnist` (docs/multimnist.md); do not edit by hand.\n\n"
            + "\n".join(variant_markdown(variant, by_label, outcomes[variant], band)
                        for variant, by_label in grouped.items())
            + ("\n" + first_epochs_markdown(grouped["sum"]) if "sum" in grouped else "") + "\n" + footer)
    files.append(io.write_text(out / f"{prefix}multimnist_table.md", text))
    files.append(io.write_text(out / VERDICTS_FILE, verdicts_markdown(grouped, outcomes, verdicts, band, timing)))
    return files, verdicts


def _cell(outcome: Outcome | None) -> str:
    if outcome is None or not outcome.n:
        return DASH
    return f"**{outcome.outcome}** {outcome.numbers()}"


def run_time(runs: Sequence[Run]) -> str:
    times = [float((r.summary or {}).get("wall_time_s") or math.nan) for r in runs]
    mean, std, n = seed_stats(times)
    return fmt_mean_std(mean, std, n, digits=2)


def variant_markdown(variant: str, by_label: dict[str, list[Run]], outcomes: dict, band: float) -> str:
    """The variant's table of accuracies and its table of paired comparisons."""
    any_run = next(iter(by_label.values()))[0]
    acc_tasks, others = accuracy_tasks(any_run), other_tasks(any_run)
    header = (["Method", "mean accuracy (%)"] + [f"{t} accuracy (%)" for t in acc_tasks]
              + [f"{t}: test MSE" for t in others] + ["run time (s)"])
    rows = []
    for label, runs in by_label.items():
        rows.append([label, fmt_mean_std(*seed_stats(late_values(runs)))]
                    + [fmt_mean_std(*seed_stats(late_values(runs, t))) for t in acc_tasks]
                    + [fmt_mean_std(*seed_stats([late_mean(r, f"test_loss/{t}") for r in runs])) for t in others]
                    + [run_time(runs)])
    refs = references(by_label)
    comparison_rows = [[label] + [_cell(outcomes[label].get(ref)) for ref in refs] for label in by_label]
    return (f"## {VARIANTS.get(variant, variant)}\n\n"
            + markdown(header, rows)
            + f"\nLate values: each run's mean over its last {LAST_EVALUATIONS} evaluations (one an epoch), then mean "
            "± sample std over seeds (n runs). Mean accuracy: over the classification tasks. Run time: the run's "
            "own wall time (`wall_time_s`), on whatever else the machine was running.\n\n"
            + f"### Paired comparisons ({VARIANTS.get(variant, variant)})\n\n"
            + markdown(["Method", *[f"against {r}" for r in refs]], comparison_rows, "l" * (1 + len(refs)))
            + f"\nd_s = late mean accuracy of the method − of the reference, same seed, in points (> 0: the method is "
            f"more accurate). better / worse: every seed beyond ±{band:g} point on one side, ≥ {MIN_SEEDS} seeds; "
            "otherwise inconclusive (docs/multimnist.md §7). Mean, range over seeds, n.\n")


def _epoch_text(values: list[float]) -> str:
    """``7 (seeds 6–8)``; ``never`` parts counted."""
    reached = [v for v in values if math.isfinite(v)]
    never = len(values) - len(reached)
    if not reached:
        return f"not within the run ({never} of {never} seeds)" if never else DASH
    low, high = min(reached), max(reached)
    text = f"{np.mean(reached):.1f}" + (f" (seeds {low:g}–{high:g})" if high > low else "")
    return text + (f"; not reached in {never} of {len(values)} seeds" if never else "")


def first_epoch_labels(by_label: dict[str, list[Run]]) -> list[str]:
    return [label for label, rs in by_label.items() if method_name(rs) in ("gradnorm", *FIRST_EPOCH_METHODS)]


def first_epochs_markdown(by_label: dict[str, list[Run]]) -> str:
    """The first epochs of the variant with the sum task: the sum task's share of the weights at the first
    steps, and each task's accuracy at the first evaluations (means over seeds)."""
    labels = first_epoch_labels(by_label)
    if not labels:
        return ""
    any_run = by_label[labels[0]][0]
    per_epoch = steps_per_epoch(any_run)
    steps = sorted(set(FIRST_STEPS) | {e * per_epoch for e in range(1, FIRST_EPOCHS + 1)})
    share_rows = []
    for label in labels:
        frame = pd.DataFrame({str(r.path): weight_share(r, "sum") for r in by_label[label]})
        share_rows.append([label] + [_percent(frame.loc[s].mean()) if s in frame.index else DASH for s in steps])
    epochs = range(FIRST_EPOCHS + 1)
    tasks = accuracy_tasks(any_run)
    acc_rows = []
    for label in labels:
        runs = by_label[label]
        for task in [*tasks, None]:
            frame = curve_frame(runs, task)
            cells = [f"{frame.loc[e * per_epoch].mean():.1f}" if e * per_epoch in frame.index else DASH for e in epochs]
            acc_rows.append([label, task or "mean"] + cells
                            + ([_epoch_text([epoch_reaching(r) for r in runs])] if task is None else [""]))
    return ("## The first epochs (2 tasks + sum)\n\n"
            f"The sum task's share of the weights, 100·w_sum / Σ_i w_i (%), at the first steps (an epoch is {per_epoch} "
            "steps); mean over seeds (each method's weights are on their own scale: the share is what compares):\n\n"
            + markdown(["Method", *[f"step {s}" for s in steps]], share_rows)
            + f"\nAccuracy (%) at the end of the first epochs (epoch 0: the untrained network), mean over seeds; the "
            f"last column: the first epoch whose mean accuracy is ≥ {LEARNED_PERCENT:g}%, mean (range) over seeds:\n\n"
            + markdown(["Method", "task", *[f"epoch {e}" for e in epochs], f"first epoch ≥ {LEARNED_PERCENT:g}%"],
                       acc_rows, "ll" + "r" * (len(epochs) + 1)))


# -- the sentences ---------------------------------------------------------------------------------------
def _percent(share: float) -> str:
    return f"{100 * share:.1f}" if math.isfinite(share) else DASH


def _names(labels: list[str]) -> str:
    return ", ".join(labels) if labels else "none"


def variant_sentences(variant: str, by_label: dict[str, list[Run]], outcomes: dict, band: float) -> list[str]:
    """Sentences on one variant, every number computed from the runs."""
    name = VARIANTS.get(variant, variant)
    means = {label: seed_stats(late_values(runs)) for label, runs in by_label.items()}
    means = {k: v for k, v in means.items() if v[2]}
    if not means:
        return [f"**{name}**: no completed runs."]
    seeds = max(v[2] for v in means.values())
    best, worst = max(means, key=lambda k: means[k][0]), min(means, key=lambda k: means[k][0])
    stds = [v[1] for v in means.values() if math.isfinite(v[1])]
    text = [f"**{name}** ({len(means)} methods, up to {seeds} seed{'s' if seeds != 1 else ''}): the late mean accuracy ranges from "
            f"{means[worst][0]:.1f}% ({worst}) to {means[best][0]:.1f}% ({best})"
            + (f"; its std over seeds is {min(stds):.1f}–{max(stds):.1f} points." if stds else ".")]
    for ref in references(by_label):
        against = {label: o[ref] for label, o in outcomes.items() if ref in o and o[ref].n}
        if not against:
            continue
        counts = {k: [label for label, o in against.items() if o.outcome == k] for k in (BETTER, WORSE)}
        rest = len(against) - len(counts[BETTER]) - len(counts[WORSE])
        level = f" ({means[ref][0]:.1f}%)" if ref in means else ""
        text.append(f"Against {ref}{level}: better {len(counts[BETTER])} "
                    f"({_names(counts[BETTER])}), worse {len(counts[WORSE])} ({_names(counts[WORSE])}), "
                    f"inconclusive {rest}.")
    return text


def first_epoch_sentence(by_label: dict[str, list[Run]]) -> str:
    """How fast each method moves the sum task's weight and learns to classify, from the numbers."""
    labels = first_epoch_labels(by_label)
    gradnorms = labels_of(by_label, "gradnorm")
    if not gradnorms:
        return ""

    def share(label, step):
        values = [weight_share(r, "sum") for r in by_label[label]]
        values = [v.loc[step] for v in values if step in v.index]
        return f"{_percent(float(np.mean(values)))}%" if values else DASH

    def reach(label):
        return _epoch_text([epoch_reaching(r) for r in by_label[label]])

    others = [label for label in labels if label not in gradnorms]
    per_epoch = steps_per_epoch(by_label[labels[0]][0])
    at = {per_epoch: f"step {per_epoch} (the end of epoch 1)", SHARE_STEP: f"step {SHARE_STEP}"}
    parts = [f"{label}: " + " and ".join(f"{share(label, s)} at {at[s]}" for s in sorted(at)) for label in labels]
    return ("**The first epochs (2 tasks + sum)**: the sum task's share of the weights, 100·w_sum / Σ_i w_i (mean over "
            f"seeds): {'; '.join(parts)}. The first epoch whose mean accuracy is ≥ {LEARNED_PERCENT:g}% (mean over "
            "seeds): " + "; ".join(f"{label} {reach(label)}" for label in gradnorms + others) + ".")


def verdicts_markdown(grouped: dict, outcomes: dict, verdicts: list[C.ClaimResult], band: float,
                      timing: dict[str, float] | None) -> str:
    """REPORT.md's section "GradNorm on real data (MultiMNIST)" (and the results README's)."""
    text = ("Generated by `scripts/reproduce.py multimnist` (`multimnist/multimnist_table.md` has every number; "
            "docs/multimnist.md the set-up). MultiMNIST from 5,000 real MNIST digits, MultiLeNet, 15 epochs; two "
            "variants: the standard two tasks (left and right digit), and with a third task on another loss scale "
            "(the digits' sum, squared error in raw units). Accuracy: each run's late mean accuracy over the two "
            f"digits; comparisons paired by seed, in points, with a minimum effect of {band:g} point "
            "(docs/multimnist.md §7).\n\n")
    text += ("The paper's claim, *GradNorm improves accuracy over equal weights and uncertainty weighting on real "
             "data* (abstract, §5), per variant and α:\n\n")
    text += markdown(["Setting", "Verdict", "Numbers"], [[v.setting, v.verdict_text(), v.evidence] for v in verdicts],
                     "lll")
    sentences = []
    for variant, by_label in grouped.items():
        sentences += variant_sentences(variant, by_label, outcomes[variant], band)
        if variant == "sum":
            sentences.append(first_epoch_sentence(by_label))
    if timing:
        total = sum(timing.values())
        sentences.append(f"The sweeps took {total / 60:.1f} minutes of wall time ("
                         + ", ".join(f"{k} {v / 60:.1f}" for k, v in timing.items()) + ").")
    text += "\n" + "\n\n".join(s for s in sentences if s) + "\n"
    return text


# -- the figures -----------------------------------------------------------------------------------------
def _line_style(label: str, method: str) -> str:
    """GradNorm's α are told apart by the line: α=1.5 (the paper's NYUv2 value) solid, any other α dashed."""
    return "-" if method != "gradnorm" or label.endswith("α=1.5") else "--"


def _plot(ax, frame: pd.DataFrame, method: str, label: str, log: bool = False) -> None:
    """:func:`curves.plot_band` in the method's colour and line style (nothing for an empty frame)."""
    if frame.empty:
        return
    plot_band(ax, frame, method_color(method), label, log=log)
    ax.get_lines()[-1].set_linestyle(_line_style(label, method))


def accuracy_figure(grouped: dict, outcomes: dict, base: Path, band: float) -> list[Path]:
    """Per variant: mean accuracy against epoch (mean ± std over seeds), and every method's paired
    difference against equal weights (dots: seeds, diamond: mean, bar: range, grey: the band)."""
    fig, axes = new_figure(2, max(len(grouped), 1), width=5.4, height=4.2)
    for col, (variant, by_label) in enumerate(grouped.items()):
        ax, ax_diff = axes[0][col], axes[1][col]
        for label, runs in by_label.items():
            frame = curve_frame(runs)
            frame.index = frame.index / steps_per_epoch(runs[0])
            _plot(ax, frame, method_name(runs), f"{label} (n={frame.shape[1]})")
        ax.set_title(f"MultiMNIST, {VARIANTS.get(variant, variant)}: mean accuracy (mean ± std over seeds)", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel("mean accuracy of the digits (%)")
        ax.legend(frameon=False, fontsize=6, ncol=2)
        equal = labels_of(by_label, "equal")
        shown = [label for label in by_label if equal and equal[0] in outcomes[variant][label]
                 and outcomes[variant][label][equal[0]].n]
        ax_diff.axvspan(-band, band, color="#dddddd", lw=0)
        ax_diff.axvline(0, color=method_color("equal"), lw=1)
        for i, label in enumerate(shown):
            o = outcomes[variant][label][equal[0]]
            color = method_color(method_name(by_label[label]))
            ax_diff.plot([o.low, o.high], [i, i], color=color, lw=2.5, alpha=0.6)
            ax_diff.scatter(list(o.values.values()), [i] * o.n, s=12, color=color, zorder=3)
            ax_diff.scatter([o.mean], [i], s=45, marker="D", color=color, edgecolor="black", lw=0.5, zorder=4)
            ax_diff.text(1.01, i, o.outcome, transform=ax_diff.get_yaxis_transform(), va="center", fontsize=7)
        ax_diff.set_yticks(range(len(shown)), shown, fontsize=7)
        ax_diff.set_ylim(len(shown) - 0.5, -0.5)
        ax_diff.xaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:+g}" if v else "0"))
        ax_diff.set_xlabel("accuracy points above equal weights, paired by seed (> 0: more accurate)")
        ax_diff.set_title(f"{VARIANTS.get(variant, variant)}: against equal weights (◆ mean, • seeds, bar: range; "
                          f"grey: ±{band:g} point)", fontsize=8)
    fig.tight_layout()
    return save_figure(fig, base)


def weight_labels(by_label: dict[str, list[Run]]) -> list[str]:
    return labels_of(by_label, "gradnorm") + [label for m in WEIGHT_METHODS for label in labels_of(by_label, m)]


def weights_figure(grouped: dict, base: Path) -> list[Path]:
    """Per variant (rows) and method (columns: GradNorm at each α and :data:`WEIGHT_METHODS`): each task's
    weight against step, mean ± std over seeds, smoothed over 2% of the steps, on the method's own scale
    (its ``weight_scale`` in summary.json)."""
    columns = max((len(weight_labels(by_label)) for by_label in grouped.values()), default=1)
    fig, axes = new_figure(max(len(grouped), 1), max(columns, 1), width=3.4, height=2.8)
    for row, (variant, by_label) in enumerate(grouped.items()):
        labels = weight_labels(by_label)
        for col in range(columns):
            ax = axes[row][col]
            if col >= len(labels):
                ax.axis("off")
                continue
            runs = by_label[labels[col]]
            for task in runs[0].task_names:
                frame = seed_frame(runs, f"weight/{task}")
                if not frame.empty:
                    frame = frame.apply(smooth, fraction=0.02)
                plot_band(ax, frame, TASK_COLORS.get(task, "#999999"), task)
            scale = (runs[0].summary or {}).get("weight_scale") or "scale not recorded"
            ax.set_title(f"{VARIANTS.get(variant, variant)}: {labels[col]}", fontsize=8)
            ax.set_ylabel(f"w_i ({scale})")
            ax.set_xlabel("step")
            ax.legend(frameon=False, fontsize=7)
    fig.suptitle("MultiMNIST: the task weights each method applied (mean ± std over seeds, smoothed over 2% of the "
                 "steps)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, base)


def first_epochs_figure(by_label: dict[str, list[Run]], base: Path) -> list[Path]:
    """The variant with the sum task over its first :data:`FIRST_EPOCHS` epochs: the sum task's share of the
    weights against step, each digit's accuracy and the sum's test MSE against epoch (mean ± std over seeds)."""
    labels = first_epoch_labels(by_label)
    fig, axes = new_figure(1, 4, width=3.6, height=3.0)
    ax_share, ax_left, ax_right, ax_mse = axes[0]
    if not labels:
        return save_figure(fig, base)
    per_epoch = steps_per_epoch(by_label[labels[0]][0])
    last = FIRST_EPOCHS * per_epoch
    tasks = accuracy_tasks(by_label[labels[0]][0])
    for label in labels:
        runs = by_label[label]
        method = method_name(runs)
        share = pd.DataFrame({str(r.path): weight_share(r, "sum") for r in runs}).sort_index()
        _plot(ax_share, share.loc[:last], method, label)
        for ax, task in zip((ax_left, ax_right), tasks):
            frame = curve_frame(runs, task).loc[:last]
            frame.index = frame.index / per_epoch
            _plot(ax, frame, method, label)
        mse = seed_frame(runs, "test_loss/sum").loc[:last]
        mse.index = mse.index / per_epoch
        _plot(ax_mse, mse, method, label, log=True)
    ax_share.set_title("the sum task's share of the weights", fontsize=9)
    ax_share.set_ylabel("w_sum / Σ_i w_i")
    ax_share.set_xlabel(f"step (an epoch: {per_epoch} steps)")
    ax_share.legend(frameon=False, fontsize=6)
    for ax, task in zip((ax_left, ax_right), tasks):
        ax.set_title(f"{task} digit: test accuracy", fontsize=9)
        ax.set_ylabel("accuracy (%)")
        ax.set_xlabel("epoch")
    ax_mse.set_title("sum: test MSE", fontsize=9)
    ax_mse.set_yscale("log")
    ax_mse.set_xlabel("epoch")
    fig.suptitle(f"MultiMNIST, 2 tasks + sum: the first {FIRST_EPOCHS} epochs (mean ± std over seeds)", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, base)
