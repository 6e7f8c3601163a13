"""Figure 5: GradNorm's weights w_i(t) for two values of the asymmetry α (paper §3), per setting, and
the claim that a larger α spreads the weights further apart.

Runs are grouped by setting (experiment preset: the toy's T, or the NYUv2 backbone). Spread of a run
= std over tasks of its time-averaged weights. Drawn by the α-sweep report (``figure7.report``).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gradnorm.report import claims as C
from gradnorm.report.compare import completed_by_method, setting_label
from gradnorm.report.curves import plot_band, seed_frame
from gradnorm.report.figure2 import toy_sigmas
from gradnorm.report.stats import beyond, spearman
from gradnorm.report.style import new_figure, save_figure, sigma_colorbar, task_colors
from gradnorm.report.tables import fmt, seed_stats

STRONG_RANK_CORRELATION = 0.5   # per seed, Spearman ρ(α, spread) above this...
#: ...and the spread at the largest α more than this % wider than at the smallest: a spread that shows in
#: Figure 5's traces (a few % is the size of the machine-to-machine drift of a run's numbers)
MIN_WIDENING_PERCENT = 20.0


def by_setting_and_alpha(runs: list) -> dict[str, dict[float, list]]:
    """GradNorm runs -> {setting label: {α: runs}}."""
    out: dict[str, dict[float, list]] = {}
    for run in completed_by_method(runs).get("gradnorm", []):
        alpha = float(run.config["balancer"]["alpha"])
        out.setdefault(setting_label(run), {}).setdefault(alpha, []).append(run)
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def spread(run) -> float:
    """Std over tasks of the time-averaged weights (weights sum to T, so their mean is 1)."""
    return float(np.std(run.summary.get("mean_weights") or [math.nan]))


def figure(groups: dict, traces_alphas, sigmas: bool, base: Path) -> list[Path]:
    fig, axes = new_figure(max(len(groups), 1), 2, width=4.2, height=3.0)
    for row, (key, by_alpha) in enumerate(groups.items()):
        chosen = [float(a) for a in traces_alphas if float(a) in by_alpha] or (
            [min(by_alpha), max(by_alpha)] if by_alpha else [])
        limits = []
        for col, alpha in enumerate(chosen[:2]):
            ax = axes[row][col]
            runs = by_alpha[alpha]
            names = runs[0].task_names
            colors = _task_colors(runs[0], sigmas)
            for i, name in enumerate(names):
                plot_band(ax, seed_frame(runs, f"weight/{name}"), colors[i], name if len(names) <= 4 else None,
                          spread="range")
            ax.set_title(f"{key}: GradNorm α={alpha:g}\n(mean of {len(runs)} seeds, band min–max)")
            ax.set_xlabel("step")
            ax.set_ylabel("w_i(t)")
            limits.append(ax.get_ylim())
            if len(names) <= 4 and ax.get_legend_handles_labels()[0]:
                ax.legend(frameon=False, fontsize=7)
            elif sigmas and run_sigmas(runs[0]):  # the colour bar maps a line's colour to its task's σ_i
                sigma_colorbar(fig, ax, run_sigmas(runs[0]))
        if limits:  # the same y axis for both α, so their spreads compare at a glance
            for col in range(len(limits)):
                axes[row][col].set_ylim(min(lo for lo, _ in limits), max(hi for _, hi in limits))
    fig.suptitle("Task weights for two values of α (Figure 5)")
    fig.tight_layout()
    return save_figure(fig, base)


def spread_claim(by_alpha: dict, setting: str, prefix: str) -> C.ClaimResult:
    """Figure 5: a larger α spreads the weights further apart (by a widening that matters)."""
    alphas = list(by_alpha)
    spreads = {a: {r.config.get("seed"): spread(r) for r in by_alpha[a]} for a in alphas}
    seeds = sorted(set.intersection(*(set(v) for v in spreads.values())), key=str) if spreads else []
    widening = {s: 100 * (spreads[alphas[-1]][s] / spreads[alphas[0]][s] - 1) for s in seeds
                if len(alphas) > 1 and spreads[alphas[0]][s] > 0}
    rhos = {s: spearman(alphas, [spreads[a][s] for a in alphas]) for s in seeds}
    widen, rho = beyond(widening, MIN_WIDENING_PERCENT, unit="%"), beyond(rhos, STRONG_RANK_CORRELATION)
    check = ("spread = std over tasks of GradNorm's time-averaged weights, per seed (the same seed at every α): "
             f"Spearman ρ(α, spread) > {STRONG_RANK_CORRELATION} and the spread at the largest α more than "
             f"{MIN_WIDENING_PERCENT:g}% wider than at the smallest, in every seed: reproduced; either in no seed: "
             "not reproduced; seeds disagree: inconclusive")
    means = [seed_stats(spreads[a].values())[0] for a in alphas]
    verdict = C.verdict([widen.holds, rho.holds]) if widening else C.NO_DATA
    return C.ClaimResult("fig5.alpha_spreads_weights", setting, verdict, (
        f"widening from α={alphas[0]:g} to α={alphas[-1]:g}: {widen.numbers()}; ρ per seed "
        f"{fmt(rho.low, 2)}…{fmt(rho.high, 2)}; mean spread " + ", ".join(f"α={a:g}: {fmt(m)}" for a, m in zip(alphas, means))),
        check, f"{prefix}figure5.png", value=widen.mean if widening else None)


def run_sigmas(run) -> list[float] | None:
    """The toy's σ_i of a run (None for other data sets)."""
    return toy_sigmas(run) if run.config.get("dataset", {}).get("num_tasks") else None


def _task_colors(run, sigmas: bool) -> list:
    if sigmas and run_sigmas(run):
        return task_colors(run_sigmas(run))
    import matplotlib.pyplot as plt

    return [plt.get_cmap("tab10")(i % 10) for i in range(len(run.task_names))]
