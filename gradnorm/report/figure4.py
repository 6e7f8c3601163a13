"""Grid search against GradNorm (paper §5.3, Figure 4), with GradNorm static (§5.2).

Every grid run (fixed random weights) is compared with the GradNorm run of the same setting and
seed at the same step: x = ‖w_grid − E_t[w_GradNorm]‖₂, y = average % change in test performance
over the tasks relative to GradNorm, 100·(err_GN − err_grid)/err_GN averaged over tasks (positive:
the grid network is better). Figure 4 is the scatter of y against x, with the correlation.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from gradnorm import io
from gradnorm.report import claims as C
from gradnorm.report.compare import (
    completed_by_method,
    describe_weights,
    errors,
    gains,
    metric_names,
    reference_for,
    setting_label,
    static_claim,
    weight_distance,
)
from gradnorm.report.stats import MACHINE_DRIFT_PERCENT, pearson, percent_gain
from gradnorm.report.style import finish_scatter, method_color, method_label, new_figure
from gradnorm.report.tables import DASH, fmt, fmt_mean_std, markdown, seed_stats

STRONG_CORRELATION = -0.5   # Pearson r ≤ this: "reproduced"; between it and 0: "partly"
FEW_BEAT_FRACTION = 0.1     # at most this fraction of grid points beating GradNorm: "partly"


def points(grid: list, gradnorm: list, metrics: list[str]) -> list[dict]:
    """One point per grid run that has a same-seed GradNorm reference."""
    out = []
    for run in grid:
        ref = reference_for(run, gradnorm)
        if ref is None:
            continue
        out.append({"run": run, "index": run.config.get("balancer", {}).get("index"), "seed": run.config.get("seed"),
                    "weights": run.summary.get("mean_weights"), "distance": weight_distance(run, ref),
                    "gain": percent_gain(errors(run, metrics), errors(ref, metrics))})
    return out


def report(runs: list, out: Path, footer: str = "", prefix: str = "grid_", metrics=("test_loss/*",),
           title: str = "", setting: str = "") -> tuple[list[Path], list[C.ClaimResult]]:
    """Write ``<prefix>figure4.png/pdf`` and ``<prefix>table.md``; verdicts on §5.3 and §5.2's claims."""
    metrics = list(metrics)
    by_method = completed_by_method(runs)
    grid, gradnorm = by_method.get("grid", []), by_method.get("gradnorm", [])
    static, equal = by_method.get("gradnorm_static", []), by_method.get("equal", [])
    pts = points(grid, gradnorm, metrics)
    r = pearson([p["distance"] for p in pts], [p["gain"] for p in pts])
    setting = setting or (setting_label(gradnorm[0]) if gradnorm else "")
    figure_name = f"{prefix}figure4"
    files = figure(pts, static, equal, gradnorm, metrics, r, out / figure_name, title)
    table = table_markdown(pts, static, equal, gradnorm, metrics, r, title)
    files.append(io.write_text(out / f"{prefix}table.md", table + "\n" + footer))
    shown = f"{figure_name}.png"
    results = claims(pts, r, setting, shown)
    results.append(static_claim(static, gradnorm, equal, metrics, setting, f"{prefix}table.md"))
    return files, results


def figure(pts, static, equal, gradnorm, metrics, r, base: Path, title: str) -> list[Path]:
    fig, axes = new_figure(1, 1, width=5.0, height=3.8)
    ax = axes[0][0]
    ax.axhline(0.0, color=method_color("gradnorm"), lw=1, ls="--", label="GradNorm (reference)")
    ax.scatter([p["distance"] for p in pts], [p["gain"] for p in pts], s=18, color=method_color("grid"),
               label=f"grid search (n={len(pts)}, r={fmt(r, 2)})")
    for method, runs in (("gradnorm_static", static), ("equal", equal)):
        xs, ys = [], []
        for run in runs:
            ref = reference_for(run, gradnorm)
            if ref is not None:
                xs.append(weight_distance(run, ref))
                ys.append(percent_gain(errors(run, metrics), errors(ref, metrics)))
        if xs:
            ax.scatter(xs, ys, s=40, marker="D", color=method_color(method), label=method_label(method))
    return finish_scatter(fig, ax, base, "‖w − E_t[w_GradNorm]‖₂", "avg % change in test performance vs GradNorm\n(> 0: lower test error than GradNorm)",
                          title or "Grid search vs GradNorm (paper §5.3, Figure 4)")


def table_markdown(pts, static, equal, gradnorm, metrics, r, title: str) -> str:
    text = f"# {title or 'Grid search vs GradNorm (paper §5.3, Figure 4)'}\n\n"
    if not gradnorm:
        return text + "No completed GradNorm run: nothing to compare with.\n"
    names = metric_names(metrics, gradnorm[0])
    header = ["Method", "weights (time-averaged)", "‖w − w_GN‖₂", "% vs GradNorm"] + names
    rows = []
    gn_errors = np.array([errors(run, metrics) for run in gradnorm])
    gn_weights = np.nanmean([run.summary.get("mean_weights") for run in gradnorm], axis=0)
    rows.append([f"GradNorm α={float(gradnorm[0].config['balancer']['alpha']):g}", describe_weights(gn_weights),
                 "0", "0"] + [fmt_mean_std(*seed_stats(gn_errors[:, i])) for i in range(len(names))])
    for method, runs in (("gradnorm_static", static), ("equal", equal)):
        if not runs:
            continue
        errs = np.array([errors(run, metrics) for run in runs])
        dist = [weight_distance(run, ref) for run in runs if (ref := reference_for(run, gradnorm))]
        rows.append([method_label(method), describe_weights(np.nanmean([x.summary["mean_weights"] for x in runs], 0)),
                     fmt_mean_std(*seed_stats(dist)), fmt_mean_std(*seed_stats(gains(runs, gradnorm, metrics)))]
                    + [fmt_mean_std(*seed_stats(errs[:, i])) for i in range(len(names))])
    if pts:
        best = max(pts, key=lambda p: p["gain"] if math.isfinite(p["gain"]) else -math.inf)
        rows.append([f"Best grid point (#{best['index']}, seed {best['seed']})", describe_weights(best["weights"]),
                     fmt(best["distance"]), fmt(best["gain"])]
                    + [fmt(v) for v in errors(best["run"], metrics)])
    text += ("Errors are late test metrics (the mean of each run's last evaluations; lower is better), mean ± std "
             "over seeds (n runs). % vs GradNorm = "
             "average over tasks of 100·(err_GN − err)/err_GN against the same-seed GradNorm run (positive: "
             "better than GradNorm).\n\n" + markdown(header, rows, "llrr" + "r" * len(names)))
    beating = beats([p["gain"] for p in pts])
    text += (f"\nGrid points: {len(pts)}; beating GradNorm by more than {MACHINE_DRIFT_PERCENT:g}%: {beating}; Pearson r(distance, % change) = "
             f"{fmt(r, 2)}.\n" if pts else f"\nGrid points: none ({DASH}).\n")
    return text


def claims(pts, r: float, setting: str, shown_in: str) -> list[C.ClaimResult]:
    out = []
    check = ("each grid point is one run against the same-seed GradNorm run: it beats GradNorm when its average % "
             f"change (late values) is above +{MACHINE_DRIFT_PERCENT:g}% (the machine-to-machine drift; within "
             f"±{MACHINE_DRIFT_PERCENT:g}%: a tie). None beats GradNorm: reproduced; at most {FEW_BEAT_FRACTION:.0%} of "
             "them: partly; more: not reproduced")
    if pts:
        gains_ = [p["gain"] for p in pts]
        beating = beats(gains_)
        ties = sum(1 for g in gains_ if abs(g) <= MACHINE_DRIFT_PERCENT)
        verdict = (C.REPRODUCED if beating == 0 else C.PARTLY if beating <= FEW_BEAT_FRACTION * len(pts)
                   else C.NOT_REPRODUCED)
        out.append(C.ClaimResult("fig4.no_random_beats_gradnorm", setting, verdict,
                                 f"{beating} of {len(pts)} grid points beat GradNorm by more than "
                                 f"{MACHINE_DRIFT_PERCENT:g}%, {ties} within ±{MACHINE_DRIFT_PERCENT:g}%; best "
                                 f"{fmt(max(gains_))}%, median {fmt(float(np.median(gains_)))}%", check, shown_in,
                                 value=float(beating)))
    else:
        out.append(C.ClaimResult("fig4.no_random_beats_gradnorm", setting, C.NO_DATA, "no grid runs", check))
    check = (f"Pearson r between ‖w_grid − E_t[w_GN]‖₂ and the average % change vs GradNorm: r ≤ "
             f"{STRONG_CORRELATION}: reproduced, r < 0: partly, r ≥ 0: not reproduced")
    verdict = (C.NO_DATA if not math.isfinite(r) else C.REPRODUCED if r <= STRONG_CORRELATION
               else C.PARTLY if r < 0 else C.NOT_REPRODUCED)
    out.append(C.ClaimResult("fig4.negative_correlation", setting, verdict, f"r={fmt(r, 2)} over {len(pts)} grid "
                             "points", check, shown_in, value=r))
    return out


def beats(gains: list[float]) -> int:
    """How many grid points beat GradNorm by more than the machine-to-machine drift."""
    return sum(1 for g in gains if g > MACHINE_DRIFT_PERCENT)
