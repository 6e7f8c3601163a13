"""Why published GradNorm numbers disagree (issue 21; docs/gradnorm_variants.md): GradNorm as each public
implementation computes it, and each of their choices alone, against the paper's GradNorm and equal weights.

The runs of ``experiments/gradnorm_variants.yaml`` (the toy) and ``gradnorm_variants_nyuv2.yaml`` (NYUv2) carry
``setting``, the variant's name; the ``reference`` setting holds the paper's GradNorm, the ``baseline`` setting
equal weights. In every group (the toy: T = 2, T = 10; NYUv2: its one set-up) each variant's runs are paired with
the references' by seed (same data, same initial network) on one metric (``metric``, the run's late value or as
``epoch_choice`` says) and the per-seed differences graded better / worse / inconclusive beyond a minimum effect
``band`` (``gradnorm.report.stats.decide``). A variant *moves the verdict* when its outcome against equal weights differs from the paper's
GradNorm's; by how much is its paired difference from the paper's GradNorm. A run that *diverged* (stopped on
non-finite values: status ``failed``, its error naming them) stays in the comparison with its late value before it
stopped, so that a diverging variant reads as worse instead of losing its worst seeds; the report names such runs.

Written files (into the results folder):
  ``variants.md``   per group, every variant: its value, its paired difference from the paper's GradNorm and from
                    equal weights with the outcomes, and whether the verdict moved; the sweeps' wall time;
  ``variants.png``  per group, the per-seed differences from the paper's GradNorm and from equal weights;
  ``disagree.md``   sentences computed from the numbers: the part of results/REPORT.md's section "Why published
                    GradNorm numbers disagree" that this experiment settles (:func:`report_section` writes it).
Verdicts: ``variants.verdict_unchanged`` per group (paper_numbers.yaml).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradnorm import io
from gradnorm.balancers.gradnorm import variant_name
from gradnorm.experiments import ExperimentError, available, load_experiment
from gradnorm.report import claims as C
from gradnorm.report import literature
from gradnorm.report.curves import LAST_EVALUATIONS, late_mean, reported_value
from gradnorm.report.runs import Run, method_of
from gradnorm.report.stats import (
    BETTER,
    MIN_SEEDS,
    NO_DATA,
    POINTS,
    WORSE,
    Outcome,
    absolute_differences,
    decide,
    relative_differences,
)
from gradnorm.report.style import method_label, new_figure, save_figure
from gradnorm.report.tables import DASH, fmt, fmt_mean_std, markdown, seed_stats

#: the metric each kind of run is compared on, unless the spec says: lower is better for all of them
DIRECTIONS = {"task_normalized_loss": False, "delta_m_nash_mtl": False, "delta_m": True, "delta_m_libmtl": True}
DIFFERENCES = ("relative", "absolute")
#: how a run's value is read: ``late`` (``curves.late_mean``, the toy reports' budget-robust value) or one of
#: ``curves.EPOCH_CHOICES`` (``final``; ``last10_mean``, the SegNet-MTAN protocol's)
VALUE_CHOICES = ("late", "final", "last10_mean")
CLAIM = "variants.verdict_unchanged"
CHECK = ("per group, every variant's outcome against equal weights (paired by seed, better/worse/inconclusive beyond "
         "the band) is compared with the paper's GradNorm's: all the same: reproduced; some differ: partly; all "
         "differ: not reproduced")
#: the file of sentences the report writes: results/REPORT.md's section and the results README's (build.README_SECTIONS)
SENTENCES_FILE = "disagree.md"
#: the figure's x range for % differences: a diverged variant's points sit at its edge (drawn as arrows)
CLIP_PERCENT = 200.0


@dataclass
class Comparison:
    """One variant in one group: its runs' values by seed and its two paired comparisons."""

    setting: str
    label: str
    overrides: str
    values: dict
    against_paper: Outcome
    against_equal: Outcome
    diverged: tuple = ()  # the seeds whose run stopped on non-finite values

    def diverged_text(self) -> str:
        """``diverged in 3 of 5 seeds``, or empty."""
        return f"diverged in {len(self.diverged)} of {len(self.values)} seeds" if self.diverged else ""

    def moved(self, paper_outcome: str) -> bool | None:
        """Whether its verdict against equal weights differs from the paper's GradNorm's (None: no data)."""
        if NO_DATA in (self.against_equal.outcome, paper_outcome):
            return None
        return self.against_equal.outcome != paper_outcome


@dataclass
class Group:
    """One group (the toy at one T, or NYUv2): the references' values and every variant's comparisons."""

    name: str
    paper: dict
    equal: dict
    paper_vs_equal: Outcome
    variants: list[Comparison]
    unit: str


def report(runs: list[Run], out: Path, footer: str = "", reference: str = "paper", baseline: str = "equal",
           metric: str = "task_normalized_loss", epoch_choice: str = "late", difference: str = "relative",
           band: float = 3.0, higher_is_better: bool | None = None, prefix: str = "",
           settings: dict | None = None, timing: dict | None = None) -> tuple[list[Path], list[C.ClaimResult]]:
    """Write ``variants.md``, ``variants.png/pdf`` and ``disagree.md``; return (files, verdicts).

    Args:
        reference, baseline: the settings of the paper's GradNorm and of equal weights.
        metric, epoch_choice: what is compared (:func:`value_of`); ``higher_is_better`` defaults to
            :data:`DIRECTIONS`.
        difference: ``relative`` (per seed, % of the reference's value) or ``absolute`` (the metric's unit).
        band: the minimum effect, in the difference's unit.
        settings: setting name -> its overrides (the spec's ``settings``); timing: sweep -> wall seconds.
    """
    if difference not in DIFFERENCES:
        raise ExperimentError(f"report.difference must be one of {', '.join(DIFFERENCES)}, got {difference!r}")
    if epoch_choice not in VALUE_CHOICES:
        raise ExperimentError(f"report.epoch_choice must be one of {', '.join(VALUE_CHOICES)}, got {epoch_choice!r}")
    higher = DIRECTIONS.get(metric, False) if higher_is_better is None else bool(higher_is_better)
    settings = settings or {}
    groups = compare_groups(runs, reference, baseline, metric, epoch_choice, difference, float(band), higher, settings)
    files = figure(groups, out / f"{prefix}variants", metric)
    text = ("# GradNorm's variants: the public implementations' choices\n\n"
            "Generated by `scripts/reproduce.py` (docs/gradnorm_variants.md); do not edit by hand.\n\n"
            + table_markdown(groups, metric, epoch_choice, difference, band, higher) + timing_line(timing) + "\n" + footer)
    files.append(io.write_text(out / f"{prefix}variants.md", text))
    files.append(io.write_text(out / f"{prefix}{SENTENCES_FILE}", disagree_markdown(groups, metric, timing)))
    return files, [verdict(g, f"{prefix}variants.md") for g in groups]


def value_of(run: Run, metric: str, epoch_choice: str) -> float:
    """A run's value of ``metric``: its late value (``late``) or as ``curves.reported_value`` reads it."""
    return late_mean(run, metric) if epoch_choice == "late" else reported_value(run, metric, epoch_choice)


def setting_of(run: Run) -> str:
    return str(run.config.get("setting") or "")


def diverged(run: Run) -> bool:
    """Whether the run stopped on non-finite values (the trainer's error names them)."""
    return run.status == "failed" and "non-finite" in str((run.summary or {}).get("error") or "")


def group_name(run: Run) -> str:
    dataset = str(run.choices.get("dataset") or "toy")
    return f"{'toy' if dataset == 'toy' else dataset} T={len(run.task_names)}"


def compare_groups(runs: list[Run], reference: str, baseline: str, metric: str, epoch_choice: str, difference: str,
                   band: float, higher: bool, settings: dict) -> list[Group]:
    """Every group's references and variants, the variants in the spec's order of settings."""
    values: dict[str, dict[str, dict]] = {}
    stopped: dict[tuple[str, str], set] = {}  # (group, setting) -> the seeds whose run diverged
    labels: dict[str, str] = {}
    for run in runs:
        setting = setting_of(run)
        stopped_early = diverged(run)
        if not (run.status == "completed" or stopped_early) or not run.task_names or not setting:
            continue
        group, seed = group_name(run), run.config.get("seed")
        values.setdefault(group, {}).setdefault(setting, {}).setdefault(seed, []).append(
            value_of(run, metric, epoch_choice))
        if stopped_early:
            stopped.setdefault((group, setting), set()).add(seed)
        method, label = method_of(run.config, run.choices)
        labels.setdefault(setting, label if method != "gradnorm" else _gradnorm_label(run))
    differ = relative_differences if difference == "relative" else absolute_differences
    unit = "%" if difference == "relative" else POINTS
    order = [s for s in settings if s not in (reference, baseline)]
    groups = []
    for name in sorted(values, key=_group_order):
        found = {s: {seed: float(np.mean(v)) for seed, v in by_seed.items()} for s, by_seed in values[name].items()}
        paper, equal = found.get(reference, {}), found.get(baseline, {})
        paper_vs_equal = decide(differ(paper, equal, higher_is_better=higher), band=band, unit=unit)
        names = order + sorted(s for s in found if s not in order and s not in (reference, baseline))
        variants = [Comparison(s, labels.get(s, s), _overrides(settings.get(s)), found[s],
                               decide(differ(found[s], paper, higher_is_better=higher), band=band, unit=unit),
                               decide(differ(found[s], equal, higher_is_better=higher), band=band, unit=unit),
                               tuple(sorted(stopped.get((name, s), set()), key=str)))
                    for s in names if s in found]
        groups.append(Group(name, paper, equal, paper_vs_equal, variants, unit))
    return groups


def _gradnorm_label(run: Run) -> str:
    balancer = run.config.get("balancer") or {}
    label = method_label("gradnorm", balancer)
    return label if variant_name(balancer) != "paper" else f"{label} [paper]"


def _group_order(name: str):
    dataset, _, t = name.rpartition(" T=")
    return dataset != "toy", dataset, int(t) if t.isdigit() else 0


def _overrides(overrides) -> str:
    if not overrides:
        return ""
    return ", ".join(f"{k.removeprefix('balancer.')}={v}" for k, v in overrides.items())


def table_markdown(groups: list[Group], metric: str, epoch_choice: str, difference: str, band: float,
                   higher: bool) -> str:
    if not groups:
        return "No completed runs with a `setting`.\n\n"
    unit = "%" if difference == "relative" else POINTS
    parts = []
    for g in groups:
        mean, std, n = seed_stats(g.paper.values())
        e_mean, e_std, e_n = seed_stats(g.equal.values())
        parts.append(f"## {g.name}\n\nThe paper's GradNorm: {fmt_mean_std(mean, std, n)}; equal weights: "
                     f"{fmt_mean_std(e_mean, e_std, e_n)}; the paper's GradNorm against equal weights: "
                     f"**{g.paper_vs_equal.text()}**.\n")
        rows = []
        for c in g.variants:
            v_mean, v_std, v_n = seed_stats(c.values.values())
            moved = c.moved(g.paper_vs_equal.outcome)
            value = fmt_mean_std(v_mean, v_std, v_n) + (f" ({c.diverged_text()})" if c.diverged else "")
            rows.append([c.setting, c.label, c.overrides or DASH, value,
                         c.against_paper.text(), c.against_equal.text(),
                         DASH if moved is None else ("**moved**" if moved else "same")])
        parts.append(markdown(["Setting", "Variant", "Overrides", f"{metric} (mean ± std)", "vs the paper's GradNorm",
                               "vs equal weights", "Verdict vs equal"], rows, "lllrlll"))
    direction = "higher" if higher else "lower"
    how = ("100·(reference − variant)/reference per seed, in %" if difference == "relative" and not higher else
           "100·(variant − reference)/reference per seed, in %" if difference == "relative" else
           "reference − variant per seed" if not higher else "variant − reference per seed")
    notes = (f"\nValues: `{metric}` ({direction} is better), "
             + {"late": f"the late value of each run (the mean of its last {LAST_EVALUATIONS} evaluations)",
                "final": "the final evaluation of each run",
                "last10_mean": "the mean of each run's last 10 evaluations"}[epoch_choice] + ". "
             + f"Comparisons are paired by seed (same data, same initial network): {how}, positive when the "
             f"variant is better; **better** when every seed's difference exceeds +{band:g}{unit}, **worse** when every "
             f"one is below −{band:g}{unit}, else inconclusive (and with fewer than {MIN_SEEDS} seeds). A variant "
             "**moved** the verdict when its outcome against equal weights differs from the paper's GradNorm's. "
             "A run that diverged (stopped on non-finite values) is paired with its late value before it stopped.\n")
    return "\n".join(parts) + notes


def timing_line(timing: dict | None) -> str:
    if not timing:
        return ""
    total = sum(float(v) for v in timing.values())
    return (f"\nThe sweeps took {total / 60:.0f} min of wall time on the machine that ran them "
            f"({len(timing)} sweeps).\n")


def verdict(group: Group, shown_in: str) -> C.ClaimResult:
    decided = [(c, c.moved(group.paper_vs_equal.outcome)) for c in group.variants]
    decided = [(c, m) for c, m in decided if m is not None]
    same = [c for c, m in decided if not m]
    moved = [c for c, m in decided if m]
    result = C.every([not m for _, m in decided])
    evidence = (f"the paper's GradNorm vs equal weights: {group.paper_vs_equal.text()}; "
                f"{len(same)} of {len(decided)} variants keep that verdict"
                + ("; moved by: " + ", ".join(f"{c.setting} ({c.against_equal.outcome}, "
                                                 f"{c.against_equal.numbers()})" for c in moved) if moved else ""))
    return C.ClaimResult(CLAIM, group.name, result, evidence, CHECK, shown_in,
                         value=float(len(moved)) if decided else None)


def figure(groups: list[Group], base: Path, metric: str) -> list[Path]:
    """Per group: the per-seed differences of every variant from the paper's GradNorm (left) and from equal
    weights (right), the band shaded."""
    fig, axes = new_figure(max(len(groups), 1), 2, width=5.0,
                           height=max(2.5, 0.22 * max((len(g.variants) for g in groups), default=1) + 1.0))
    for row, g in enumerate(groups):
        names = [c.setting for c in g.variants]
        for col, (title, pick) in enumerate((("vs the paper's GradNorm", lambda c: c.against_paper),
                                             ("vs equal weights", lambda c: c.against_equal))):
            ax = axes[row][col]
            band = pick(g.variants[0]).band if g.variants else 0.0
            ax.axvspan(-band, band, color="#dddddd", lw=0)
            ax.axvline(0, color="#888888", lw=0.8)
            clip = CLIP_PERCENT if g.unit == "%" else math.inf
            for y, c in enumerate(g.variants):
                outcome = pick(c)
                colour = {BETTER: "#1b9e77", WORSE: "#d95f02"}.get(outcome.outcome, "#7570b3")
                xs = list(outcome.values.values())
                inside = [x for x in xs if abs(x) <= clip]
                ax.scatter(inside, [y] * len(inside), s=10, color=colour, alpha=0.7)
                for x in xs:  # off the scale (a diverged variant): an arrow at the edge
                    if abs(x) > clip:
                        ax.scatter([math.copysign(clip, x)], [y], s=25, color=colour, marker="<" if x < 0 else ">")
                if xs and abs(outcome.mean) <= clip:
                    ax.plot([outcome.mean], [y], marker="|", markersize=10, color=colour)
            if col == 1 and g.paper_vs_equal.n:
                ax.axvline(g.paper_vs_equal.mean, color="#0072B2", lw=1, ls="--", label="the paper's GradNorm (mean)")
                ax.legend(frameon=False, fontsize=7, loc="lower right")
            ax.set_yticks(range(len(names)))
            ax.set_yticklabels(names if col == 0 else [""] * len(names), fontsize=7)
            ax.invert_yaxis()
            ax.set_xlabel(f"paired difference{' (%)' if g.unit == '%' else ''}, positive = variant better")
            ax.set_title(f"{g.name}: {title}", fontsize=9)
    fig.suptitle(f"GradNorm's variants, {metric}: per seed (dots) and mean (bar); grey: within the band")
    fig.tight_layout()
    return save_figure(fig, base)


def disagree_markdown(groups: list[Group], metric: str, timing: dict | None) -> str:
    """What these runs show, one bullet per group, computed from the numbers."""
    if not groups:
        return "No completed runs.\n"
    lines = []
    for g in groups:
        decided = [(c, c.moved(g.paper_vs_equal.outcome)) for c in g.variants]
        moved = [c for c, m in decided if m]
        kept = [c for c, m in decided if m is False]
        apart = [c for c in g.variants if c.against_paper.outcome in (BETTER, WORSE)]
        diverging = [c for c in g.variants if c.diverged]
        stable = [c for c in g.variants if not c.diverged and c.against_paper.n]
        largest = max(stable, key=lambda c: abs(c.against_paper.mean), default=None)
        text = (f"- **{g.name}**: the paper's GradNorm against equal weights is **{g.paper_vs_equal.outcome}** "
                f"({g.paper_vs_equal.numbers()}, `{metric}`). ")
        if moved:
            text += (f"{len(moved)} of {len(moved) + len(kept)} variants move that verdict: "
                     + "; ".join(f"`{c.setting}` → {c.against_equal.outcome} ({c.against_equal.numbers()})"
                                 for c in moved) + ". ")
        else:
            text += f"None of the {len(kept)} variants moves it. "
        if apart:
            text += ("Beyond the band from the paper's GradNorm: " + "; ".join(
                f"`{c.setting}` {c.against_paper.outcome} ({c.against_paper.numbers()})" for c in apart) + ". ")
        else:
            text += "No variant ends beyond the band from the paper's GradNorm. "
        for c in diverging:
            text += (f"`{c.setting}` diverged in {len(c.diverged)} of its {len(c.values)} seeds (stopped on "
                     "non-finite values; paired with their late values before they stopped). ")
        if largest is not None:
            among = " among the variants that did not diverge" if diverging else ""
            text += f"The largest mean change{among}: `{largest.setting}`, {largest.against_paper.numbers()}."
        lines.append(text)
    return "\n".join(lines) + "\n" + timing_line(timing)


# -- results/REPORT.md's section -----------------------------------------------------------------------------
#: the experiments whose disagree.md the section reads, and what each settles
SECTION_EXPERIMENTS = {"gradnorm_variants": "the toy", "gradnorm_variants_nyuv2": "NYUv2 (SegNet-MTAN protocol)"}
LITERATURE_SETTING = "nyuv2_segnet_mtan"
LITERATURE_BASE = "nash_mtl_paper"


def report_section(results_root: Path) -> str:
    """``## Why published GradNorm numbers disagree``: the published GradNorm rows of the SegNet-MTAN benchmark
    (literature.yaml, Δm recomputed), then what each variants experiment found (its ``disagree.md``) or how to
    run it, then what only NYUv2 can settle."""
    text = "\n## Why published GradNorm numbers disagree\n\n" + published_rows() + "\n"
    for name, what in SECTION_EXPERIMENTS.items():
        if name not in available():
            continue
        spec = load_experiment(name)
        found = results_root / spec.results.name / SENTENCES_FILE
        command = f"`scripts/reproduce.py {name}`"
        if found.is_file():
            text += f"**On {what}** ({command}, `{spec.results.name}/variants.md`):\n\n" + found.read_text() + "\n"
        elif spec.gpu:
            text += f"**On {what}**: needs NYUv2 on a GPU; run {command}.\n\n"
        else:
            text += f"**On {what}**: not run yet; run {command} (`make reproduce-toy-variants`).\n\n"
    text += ONLY_NYUV2
    return text


def published_rows() -> str:
    """The published GradNorm rows of the SegNet-MTAN NYUv2 benchmark, with Δm recomputed against one base."""
    try:
        lit = literature.load()
        base = lit.baselines(LITERATURE_SETTING, LITERATURE_BASE)
        rows = lit.select(setting=LITERATURE_SETTING, method="gradnorm")
    except (OSError, literature.LiteratureError):
        return "The published GradNorm rows could not be read (gradnorm/report/literature.yaml).\n"
    parts = []
    for row in rows:
        dm = literature.delta_m(row.suite_metrics, base).get("delta_m_nash_mtl", math.nan)
        miou = row.metrics.get("seg/miou")
        parts.append(f"{lit.short(row.source)} prints GradNorm at mIoU {fmt(miou, 4)} (Δm {dm:+.2f}%)")
    return ("On the SegNet-MTAN NYUv2 benchmark (the protocol of the MTAN / CAGrad / Nash-MTL / FAMO code), "
            + "; ".join(parts) + f" — Δm recomputed by the suite against {lit.short(LITERATURE_BASE)}'s single-task "
            "row, the Nash-MTL convention (lower is better; `gradnorm/report/literature.yaml`). The public "
            "implementations resolve the choices the paper leaves open differently (docs/gradnorm_variants.md); each "
            "is a config value of the suite's GradNorm and a preset `balancer=gradnorm_<name>`, tested against a "
            "reference written from that code (tests/test_gradnorm_variants.py).\n")


ONLY_NYUV2 = (
    "**What only NYUv2 can settle.** The toy has one shared trunk of four layers, no attention and 20 steps per "
    "epoch; the published rows come from MTAN, where the shared parameters include every task's attention (so "
    "LibMTL's norm over all shared parameters and its unweighted heads act on a different split), an epoch is "
    "397 steps (LibMTL's GradNorm trains its first epoch at equal weights), α = 1.5 against the toy's 0.12, and "
    "the reported value is the mean of the last 10 of 200 epochs. Aligned-MTL's code as released cannot run "
    "GradNorm on that benchmark (its MTAN has no last shared layer), so its row is not re-runnable from the code; "
    "the `aligned_mtl` preset shows what its GradNorm does where it can run. Whether the implementations' choices "
    "account for a gap of 20 mIoU points is what `experiments/gradnorm_variants_nyuv2.yaml` measures.\n")
