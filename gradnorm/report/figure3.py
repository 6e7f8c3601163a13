"""NYUv2+seg: Figure 3 (paper §5.1): per-task training and test loss curves of GradNorm, equal weights
and uncertainty weighting on one backbone, from the runs of Table 1, and the claim that GradNorm
overfits less (a higher training loss and a lower test error than equal weights).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from gradnorm import io
from gradnorm.report import claims as C
from gradnorm.report.compare import completed_by_method, errors
from gradnorm.report.curves import plot_band, seed_frame, smooth
from gradnorm.report.runs import Run
from gradnorm.report.style import method_color, method_label, new_figure, save_figure
from gradnorm.report.table1 import by_model, row_runs, spec
from gradnorm.report.tables import fmt

LATE_FRACTION = 0.1                          # "final training loss" = mean over the last 10% of steps


def report(runs: list, out: Path, footer: str = "", prefix: str = "", model: str = "segnet", alpha: float = 1.5,
                   ) -> tuple[list[Path], list[C.ClaimResult]]:
    """Figure 3: per-task training and test curves of GradNorm, equal weights and uncertainty."""
    by_method = completed_by_method(by_model(runs).get(model, []))
    groups = {"equal": by_method.get("equal", []), "uncertainty": by_method.get("uncertainty", []),
              "gradnorm": row_runs({"method": "gradnorm", "alpha": alpha}, by_method)}
    any_run = next((r for rs in groups.values() for r in rs), None)
    if any_run is None:
        return [], [C.ClaimResult("fig3.less_overfitting", f"NYUv2+seg {model}", C.NO_DATA,
                                  "no completed runs of equal, uncertainty or GradNorm", "")]
    files = figure(groups, any_run.task_names, out / f"{prefix}figure3",
                    title=f"NYUv2+seg, {model}: training and test loss per task (Figure 3)")
    files.append(io.write_text(out / f"{prefix}figure3.md", f"# Figure 3 ({model})\n\nSee `{prefix}figure3.png`.\n\n"
                               + footer))
    return files, [_less_overfitting(groups["gradnorm"], groups["equal"], f"NYUv2+seg {model}",
                                     f"{prefix}figure3.png")]


def figure(groups: dict[str, list[Run]], task_names: Sequence[str], out_base: str | Path,
            title: str = "") -> list[Path]:
    """Figure 3's layout: one row per task, training loss (left) and test loss (right), one colour per
    method, mean over seeds with a ± std band.

    ``groups`` maps a method name (``equal``, ``uncertainty``, ``gradnorm``...) to its runs.
    """
    fig, axes = new_figure(len(task_names), 2, width=4.2, height=2.6)
    for row, task in enumerate(task_names):
        for col, (kind, training) in enumerate((("train_loss", True), ("test_loss", False))):
            ax = axes[row][col]
            for method, runs in groups.items():
                frame = seed_frame(runs, f"{kind}/{task}")
                if training and not frame.empty:  # the per-step training loss is noisy: smooth it
                    frame = frame.apply(smooth, fraction=0.02)
                plot_band(ax, frame, method_color(method), method_label(method))
            ax.set_title(f"{task}: {'training' if training else 'test'} loss")
            ax.set_xlabel("step")
            if _positive(ax):
                ax.set_yscale("log")
    axes[0][1].legend(frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, out_base)


def _less_overfitting(gradnorm, equal, setting, shown_in) -> C.ClaimResult:
    metric_of = {row["task"]: c["metric"] for row in spec()["rows"] if row["method"] == "single_task"
                 for c in spec()["columns"] if c["key"] == row["task"]}
    check = (f"per task: final training loss (mean over the last {LATE_FRACTION:.0%} of steps, mean over seeds) of "
             "GradNorm above equal weights' AND its test error below: all tasks: reproduced, some: partly")
    if not gradnorm or not equal:
        return C.ClaimResult("fig3.less_overfitting", setting, C.NO_DATA, "needs GradNorm and equal runs", check)
    passed, parts = 0, []
    for task in gradnorm[0].task_names:
        metric = metric_of.get(task, f"test_loss/{task}")
        train = [np.nanmean([_late_mean(r, f"train_loss/{task}") for r in rs]) for rs in (gradnorm, equal)]
        test = [np.nanmean([errors(r, [metric])[0] for r in rs]) for rs in (gradnorm, equal)]
        passed += train[0] > train[1] and test[0] < test[1]
        parts.append(f"{task}: train {fmt(train[0])} vs {fmt(train[1])}, {metric} {fmt(test[0])} vs {fmt(test[1])}")
    return C.ClaimResult("fig3.less_overfitting", setting, C.graded(passed, len(parts)),
                         "GradNorm vs equal: " + "; ".join(parts), check, shown_in)


def _late_mean(run, column: str) -> float:
    values = seed_frame([run], column)
    if values.empty:
        return math.nan
    values = values.iloc[:, 0]
    return float(values[values.index >= (1 - LATE_FRACTION) * values.index.max()].mean())


def _positive(ax) -> bool:
    ys = [line.get_ydata() for line in ax.get_lines()]
    return bool(ys) and all(np.all(np.asarray(y, dtype=float) > 0) for y in ys)
