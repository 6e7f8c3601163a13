"""NYUv2+seg: Figure 3 (paper §5.1): per-task training and test loss curves of GradNorm, equal weights
and uncertainty weighting on one backbone, from the runs of Table 1, and the claim that GradNorm
overfits less (a higher training loss and a lower test error than equal weights).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from gradnorm import io
from gradnorm.report import claims as C
from gradnorm.report.compare import compare_runs, completed_by_method
from gradnorm.report.curves import LAST_EVALUATIONS, task_loss_figure
from gradnorm.report.runs import Run
from gradnorm.report.stats import MACHINE_DRIFT_PERCENT, MIN_SEEDS
from gradnorm.report.table1 import by_model, row_runs, spec


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
    """Figure 3's layout (``curves.task_loss_figure``): one row per task, training loss (left) and test loss
    (right), one colour per method, mean over seeds with a ± std band."""
    return task_loss_figure(groups, task_names, out_base, title)


def _less_overfitting(gradnorm, equal, setting, shown_in) -> C.ClaimResult:
    metric_of = {row["task"]: c["metric"] for row in spec()["rows"] if row["method"] == "single_task"
                 for c in spec()["columns"] if c["key"] == row["task"]}
    check = (f"per task, paired per seed on late values (training loss: mean over the steps of the last "
             f"{LAST_EVALUATIONS} evaluations; test error: mean of those evaluations): GradNorm's training loss higher "
             "than equal weights' AND its test error lower, each every seed beyond "
             f"±{MACHINE_DRIFT_PERCENT:g}% on one side, ≥ {MIN_SEEDS} seeds. A task holds when both do, fails when "
             "either is the other way. All tasks hold: reproduced; some fail: partly if some hold, else not "
             "reproduced; otherwise inconclusive")
    if not gradnorm or not equal:
        return C.ClaimResult("fig3.less_overfitting", setting, C.NO_DATA, "needs GradNorm and equal runs", check)
    parts, texts = [], []
    for task in gradnorm[0].task_names:
        metric = metric_of.get(task, f"test_loss/{task}")
        train = compare_runs(gradnorm, equal, f"train_loss/{task}", higher_is_better=True)
        test = compare_runs(gradnorm, equal, metric)
        holds = C.verdict([train.holds, test.holds])
        parts.append({C.REPRODUCED: True, C.NOT_REPRODUCED: False}.get(holds))
        texts.append(f"{task}: train loss higher by {train.numbers()}, {metric} lower by {test.numbers()}")
    return C.ClaimResult("fig3.less_overfitting", setting, C.every(parts), "GradNorm vs equal: " + "; ".join(texts),
                         check, shown_in)
