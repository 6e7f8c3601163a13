"""Figure 7 (supplement): GradNorm's average % gain over equal weights against the asymmetry α, per
setting, with the claims that every α tried helps (and, on NYUv2, that the gain peaks near α = 1.5).
The report of an α sweep: it also draws Figure 5 (``figure5``) and writes one table of both.

Gain of a GradNorm run = average over tasks of 100·(err_equal − err)/err_equal against the equal-weights
run of the same setting and seed (positive: GradNorm is better). Runs are grouped by setting
(experiment preset: the toy's T, or the NYUv2 backbone), one curve per setting.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gradnorm import io
from gradnorm.report import claims as C
from gradnorm.report import figure5
from gradnorm.report.compare import completed_by_method, gains, paired_gains
from gradnorm.report.runs import shorter_budgets, truncate
from gradnorm.report.stats import MACHINE_DRIFT_PERCENT, MIN_SEEDS, decide
from gradnorm.report.style import finish_scatter, method_color, new_figure
from gradnorm.report.tables import fmt, fmt_mean_std, markdown, seed_stats

PEAK_RANGE = (1.0, 2.0)         # "peak near α = 1.5"


def report(runs: list, out: Path, footer: str = "", prefix: str = "alpha_", metrics=("test_loss/*",),
           traces_alphas=(), check_peak: bool = False, sigmas: bool = True, title: str = "",
           budgets: list[int] | tuple[int, ...] = ()) -> tuple[list[Path], list[C.ClaimResult]]:
    """Write ``<prefix>figure7``, ``<prefix>figure5`` (PNG+PDF) and ``<prefix>table.md``.

    Args:
        metrics: lower-is-better task metrics of the gain (``test_loss/*`` = every task's test loss).
        traces_alphas: the two α of Figure 5 (default: the smallest and largest swept).
        check_peak: grade "peaks near α=1.5" (a NYUv2 claim; the toy uses α=0.12).
        sigmas: colour the tasks of Figure 5 by the toy's σ_i.
        budgets: shorter training lengths (steps) at which the claims are also checked, on the runs truncated
            there (``runs.truncate``); a verdict that differs there is marked budget-dependent.
    """
    metrics = list(metrics)
    groups, gain, outcomes, results = _checked(runs, metrics, prefix, check_peak)
    for steps in shorter_budgets(runs, budgets):
        C.mark_budgets(results, _checked([truncate(r, steps) for r in runs], metrics, prefix, check_peak)[3], steps)
    files = figure(gain, out / f"{prefix}figure7", title)
    files += figure5.figure(groups, traces_alphas, sigmas, out / f"{prefix}figure5")
    files.append(io.write_text(out / f"{prefix}table.md", table_markdown(groups, gain, outcomes, metrics, title) + "\n"
                               + footer))
    return files, results


def _checked(runs: list, metrics: list[str], prefix: str, check_peak: bool):
    """(runs by setting and α, gains mean/std/n, paired outcomes, verdicts)."""
    equal = completed_by_method(runs).get("equal", [])
    groups = figure5.by_setting_and_alpha(runs)
    gain = {key: {a: seed_stats(gains(rs, equal, metrics)) for a, rs in alphas.items()}
            for key, alphas in groups.items()}
    outcomes = {key: {a: decide(paired_gains(rs, equal, metrics)) for a, rs in alphas.items()}
                for key, alphas in groups.items()}
    results = [r for key, alphas in groups.items() for r in claims(alphas, gain[key], outcomes[key], key, prefix,
                                                                   check_peak)]
    return groups, gain, outcomes, results


def figure(gain: dict, base: Path, title: str) -> list[Path]:
    fig, axes = new_figure(1, 1, width=5.0, height=3.6)
    ax = axes[0][0]
    ax.axhline(0.0, color=method_color("equal"), lw=1, ls="--", label="equal weights")
    ax.axhspan(-MACHINE_DRIFT_PERCENT, MACHINE_DRIFT_PERCENT, color="#dddddd", alpha=0.6, lw=0,
               label=f"±{MACHINE_DRIFT_PERCENT:g}%: machine-to-machine drift")
    for i, (key, by_alpha) in enumerate(gain.items()):
        alphas = list(by_alpha)
        means = np.array([by_alpha[a][0] for a in alphas])
        stds = np.nan_to_num(np.array([by_alpha[a][1] for a in alphas]))
        seeds = sorted({by_alpha[a][2] for a in alphas})
        ax.errorbar(alphas, means, yerr=stds, marker="os^v"[i % 4], color=method_color("gradnorm"),
                    ls=["-", "--", ":", "-."][i % 4], capsize=2,
                    label=f"GradNorm, {key}: mean ± std over {'/'.join(map(str, seeds))} seeds")
    return finish_scatter(fig, ax, base, "α", "avg % gain over equal weights\n(> 0: better than equal weights)",
                          title or "Gain over equal weights vs α (Figure 7)")


def table_markdown(groups: dict, gain: dict, outcomes: dict, metrics: list[str], title: str) -> str:
    keys = list(groups)
    alphas = sorted({a for by_alpha in groups.values() for a in by_alpha})
    header = ["α"] + [f"{k}: % gain over equal" for k in keys] + [f"{k}: paired outcome" for k in keys] + [
        f"{k}: spread of E_t[w]" for k in keys]
    rows = []
    for a in alphas:
        cells = [fmt_mean_std(*gain[k][a]) if a in gain[k] else "–" for k in keys]
        cells += [outcomes[k][a].text() if a in outcomes[k] else "–" for k in keys]
        cells += [fmt_mean_std(*seed_stats([figure5.spread(r) for r in groups[k][a]])) if a in groups[k] else "–"
                  for k in keys]
        rows.append([f"{a:g}"] + cells)
    return (f"# {title or 'GradNorm α sweep (Figures 5 and 7)'}\n\n"
            "% gain over equal = average over tasks of 100·(err_equal − err)/err_equal against the same-seed "
            f"equal-weights run, metrics {', '.join(metrics)} (positive: GradNorm better). Spread = std over tasks "
            "of the time-averaged weights. Mean ± std over seeds (n runs). Paired outcome: the per-seed gains graded by "
            f"gradnorm.report.stats (every seed beyond ±{MACHINE_DRIFT_PERCENT:g}%, ≥ {MIN_SEEDS} seeds).\n\n" + markdown(header, rows))


def claims(by_alpha: dict, gain: dict, outcomes: dict, setting: str, prefix: str, check_peak: bool
           ) -> list[C.ClaimResult]:
    out = [figure5.spread_claim(by_alpha, setting, prefix)]
    tried = [a for a in by_alpha if 0 < a < 3 and outcomes[a].n]
    check = ("per α in (0, 3) swept: the average % gain over tasks of the late values against the same-seed "
             "equal-weights run, graded better / worse / inconclusive (every seed beyond "
             f"±{MACHINE_DRIFT_PERCENT:g}%, ≥ {MIN_SEEDS} seeds). Better for every α: reproduced; worse for some: "
             "partly if better for others, else not reproduced; otherwise inconclusive")
    out.append(C.ClaimResult("fig7.gain_for_every_alpha", setting, C.every([outcomes[a].holds for a in tried]),
                             "; ".join(f"α={a:g}: {outcomes[a].text()}" for a in tried) or "no equal-weights "
                             "reference", check, f"{prefix}figure7.png",
                             value=min((outcomes[a].mean for a in tried), default=None)))
    if check_peak:
        finite = {a: g[0] for a, g in gain.items() if g[2] and math.isfinite(g[0])}
        check = (f"mean gain over seeds per α: the best α inside [{PEAK_RANGE[0]:g}, {PEAK_RANGE[1]:g}] above the best "
                 f"outside by more than {MACHINE_DRIFT_PERCENT:g} points: reproduced; the other way round: not "
                 "reproduced; closer than that (or no α on one side): inconclusive")
        inside = {a: g for a, g in finite.items() if PEAK_RANGE[0] <= a <= PEAK_RANGE[1]}
        outside = {a: g for a, g in finite.items() if a not in inside}
        if finite:
            best = max(finite, key=finite.get)
            margin = (max(inside.values()) - max(outside.values())) if inside and outside else math.nan
            verdict = (C.INCONCLUSIVE if not math.isfinite(margin) or abs(margin) <= MACHINE_DRIFT_PERCENT
                       else C.REPRODUCED if margin > 0 else C.NOT_REPRODUCED)
            out.append(C.ClaimResult("fig7.peak_near_1_5", setting, verdict,
                                     f"peak at α={best:g} ({fmt(finite[best])}%); best inside minus best outside "
                                     f"[{PEAK_RANGE[0]:g}, {PEAK_RANGE[1]:g}]: {fmt(margin)} points", check,
                                     f"{prefix}figure7.png", value=margin))
        else:
            out.append(C.ClaimResult("fig7.peak_near_1_5", setting, C.NO_DATA, "no gains", check))
    return out
