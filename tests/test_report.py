"""Reporting on hand-made run directories: aggregation (with failed, missing and incomplete runs),
tables with the paper's numbers beside ours, figures, and the verdicts on Figure 2's claims."""

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from gradnorm.experiments import count_values, load_experiment, merged_overrides, sweep_command
from gradnorm.report import claims as C
from gradnorm.report.build import REPORTS
from gradnorm.report.curves import reported_value
from gradnorm.report.figure2 import check_claims, group_by_t
from gradnorm.report.runs import load_runs, runs_frame
from gradnorm.report.stats import pearson, percent_gain, spearman
from gradnorm.report.tables import fmt_mean_std, group_stats, markdown, not_completed_section

TARGETS = {"equal": "gradnorm.balancers.EqualWeights", "uncertainty": "gradnorm.balancers.Uncertainty",
           "gradnorm": "gradnorm.balancers.GradNorm", "gradnorm_static": "gradnorm.balancers.GradNormStatic"}
STEPS = 100


def _config(balancer, seed, T=2, sigmas=(1.0, 100.0), tasks=None, model="gradnorm.models.MLP"):
    return {"seed": seed, "tasks": tasks, "sweep_group": "toy/figure2",
            "dataset": {"_target_": "gradnorm.data.ToyRegression", "num_tasks": T, "sigmas": list(sigmas)},
            "model": {"_target_": model},
            "balancer": {"_target_": TARGETS[balancer], **({"alpha": 0.12} if balancer == "gradnorm" else {})},
            "trainer": {"max_steps": STEPS}}


def _toy_curves(balancer, seed, gradnorm_final=0.5):
    """Hand-made curves with known verdicts: GradNorm lowest, uncertainty fast then worse."""
    steps = np.arange(STEPS + 1)
    noise = 0.01 * seed
    if balancer == "equal":
        norm = 2 - steps / STEPS + noise
    elif balancer == "gradnorm":
        norm = 2 - (2 - gradnorm_final) * steps / STEPS + noise
    else:
        norm = np.where(steps <= 10, 2 - 1.7 * steps / 10, 0.3 + 0.9 * (steps - 10) / 90) + noise
    if balancer == "gradnorm":
        w0 = np.minimum(1 + 0.9 * steps / 20, 1.9)
    elif balancer == "uncertainty":
        w0 = 1 + steps / 10
    else:
        w0 = np.ones_like(steps, dtype=float)
    w1 = (2 - w0) if balancer == "gradnorm" else (np.ones_like(w0) if balancer == "equal" else 1 / (1 + steps))
    # Equal weights: task 0 (σ=1) barely improves (q=0.9), task 1 (σ=100) a lot (q=0.1).
    q0 = 1 - 0.1 * steps / STEPS
    q1 = 1 - 0.9 * steps / STEPS
    return steps, norm, w0, w1, q0, q1


#: the zero predictor's per-task losses the hand-made runs record (train, test)
ZERO = {"train": [1.0, 1e4], "test": [1.0, 1e4]}


def write_toy_run(path, balancer, seed, *, status="completed", drop_metric=None, gradnorm_final=0.5, norm=None):
    """A hand-made toy run (T=2, σ = 1, 100; STEPS steps, evaluations every 10); ``norm`` replaces the
    task-normalised test loss curve (one value per step)."""
    path.mkdir(parents=True)
    steps, curve, w0, w1, q0, q1 = _toy_curves(balancer, seed, gradnorm_final)
    norm = curve if norm is None else np.asarray(norm, dtype=float)
    history = pd.DataFrame({"step": steps, "weight/task_0": w0, "weight/task_1": w1,
                            "train_loss/task_0": q0, "train_loss/task_1": 1e4 * q1})
    evals = steps % 10 == 0
    history.loc[evals, "test_loss/task_0"] = q0[evals]
    history.loc[evals, "test_loss/task_1"] = 1e4 * q1[evals]
    history.loc[evals, "task_normalized_loss"] = norm[evals]
    history.to_csv(path / "history.csv", index=False)
    metrics = {"test_loss/task_0": q0[-1], "test_loss/task_1": 1e4 * q1[-1], "task_normalized_loss": norm[-1]}
    metrics.pop(drop_metric, None)
    (path / "summary.json").write_text(json.dumps({
        "status": status, "task_names": ["task_0", "task_1"], "weights": [w0[-1], w1[-1]],
        "mean_weights": [w0[:-1].mean(), w1[:-1].mean()], "metrics": metrics if status == "completed" else {},
        "steps": STEPS, "wall_time_s": 1.0, "config": _config(balancer, seed),
        "task_setup": {"sigmas": [1.0, 100.0], "zero_predictor_loss": ZERO},
        **({"error": "non-finite loss (task_1=nan) at step 7"} if status == "failed" else {})}))


def write_toy_study(root, seeds=(0, 1, 2), **kwargs):
    """equal, uncertainty and GradNorm runs of every seed (hand-made curves, see _toy_curves)."""
    for balancer in ("equal", "uncertainty", "gradnorm"):
        for seed in seeds:
            write_toy_run(root / f"{balancer}_seed{seed}", balancer, seed, **kwargs)
    return root


@pytest.fixture
def toy_runs(tmp_path):
    root = tmp_path / "runs"
    for balancer in ("equal", "uncertainty", "gradnorm"):
        for seed in (0, 1):
            write_toy_run(root / "figure2" / f"{balancer}_seed{seed}", balancer, seed)
    write_toy_run(root / "figure2" / "gradnorm_seed2", "gradnorm", 2, drop_metric="task_normalized_loss")
    write_toy_run(root / "figure2" / "equal_seed2", "equal", 2, status="failed")
    crashed = root / "figure2" / "uncertainty_seed2" / ".hydra"
    crashed.mkdir(parents=True)
    (crashed / "config.yaml").write_text("seed: 2\nalpha: 0.12\nbalancer:\n  _target_: gradnorm.balancers.Uncertainty\n"
                                         "logger:\n  group: ${hydra:runtime.choices.experiment}\n")
    return root


def test_runs_frame_has_one_row_per_run_including_failed_and_missing(toy_runs):
    frame = runs_frame(load_runs(toy_runs), toy_runs)
    assert len(frame) == 9
    status = dict(zip(frame["run_dir"], frame["status"]))
    assert status["figure2/equal_seed2"] == "failed"
    assert status["figure2/uncertainty_seed2"] == "missing"
    assert (frame["status"] == "completed").sum() == 7
    crashed = frame.set_index("run_dir").loc["figure2/uncertainty_seed2"]
    assert crashed["method"] == "uncertainty" and crashed["seed"] == 2 and "no summary.json" in crashed["error"]
    gradnorm = frame[frame["method"] == "gradnorm"].set_index("seed")
    assert gradnorm["alpha"].tolist() == [0.12] * 3 and gradnorm["label"].iloc[0] == "GradNorm α=0.12"
    assert math.isnan(gradnorm.loc[2, "task_normalized_loss"])
    assert gradnorm.loc[0, "task_normalized_loss"] == pytest.approx(0.5)
    assert gradnorm.loc[0, "mean_weight/task_0"] == pytest.approx(np.minimum(1 + 0.9 * np.arange(100) / 20, 1.9).mean())
    assert {"weight/task_1", "test_loss/task_1", "num_tasks", "sweep"} <= set(frame.columns)


def test_group_stats_counts_only_completed_runs_with_the_metric(toy_runs):
    frame = runs_frame(load_runs(toy_runs), toy_runs)
    stats = group_stats(frame, ["method"], ["task_normalized_loss"]).set_index("method")
    assert stats.loc["gradnorm", "runs"] == 3 and stats.loc["gradnorm", "task_normalized_loss/n"] == 2
    assert stats.loc["gradnorm", "task_normalized_loss/mean"] == pytest.approx(0.505)
    assert stats.loc["equal", "completed"] == 2
    assert stats.loc["uncertainty", "runs"] == 3 and stats.loc["uncertainty", "completed"] == 2
    section = not_completed_section(frame, {"toy/figure2": 12})
    assert "`figure2/equal_seed2` (failed): non-finite loss" in section
    assert "`figure2/uncertainty_seed2` (missing)" in section
    assert "sweep `toy/figure2`: 12 runs expected, 0 run directories found" not in section  # 8 have the group
    assert "12 runs expected, 8 run directories found" in section


def test_mean_std_cells_and_markdown():
    assert fmt_mean_std(2.0, 1.0, 3) == "2.00 ± 1.0 (n=3)"  # 3 significant digits, 2 for the std
    assert fmt_mean_std(0.5, math.nan, 1) == "0.500 (n=1)"
    assert fmt_mean_std(math.nan, math.nan, 0) == "–"
    assert fmt_mean_std(1234.4, 10.0, 2, total=3) == "1234 ± 10 (n=2 of 3)"
    assert markdown(["a", "b"], [["x|y", None]]) == "| a | b |\n|:---|---:|\n| x\\|y | – |\n"


def test_statistics_on_known_inputs():
    assert spearman([1, 2, 3, 4], [10, 20, 25, 100]) == pytest.approx(1.0)
    assert spearman([1, 100], [1.9, 0.1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert math.isnan(pearson([1, 2], [1, 2]))
    # err (1, 3) vs ref (2, 2): gains +50% and −50% -> 0.
    assert percent_gain([1.0, 3.0], [2.0, 2.0]) == pytest.approx(0.0)
    assert percent_gain([1.0, 1.0], [2.0, 4.0]) == pytest.approx(62.5)


def test_figure2_report_writes_figure_table_and_verdicts(tmp_path):
    out = tmp_path / "results"
    files, verdicts = REPORTS["figure2"](load_runs(write_toy_study(tmp_path / "runs")), out, footer="FOOTER\n")
    names = sorted(p.name for p in files)
    assert names == ["figure2.pdf", "figure2.png", "mechanism.pdf", "mechanism.png", "table.md"]
    assert (out / "figure2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "figure2.pdf").read_bytes()[:5] == b"%PDF-"
    table = (out / "table.md").read_text()
    # late value: mean of the evaluations at steps 60..100 of 2 − 1.5·t/100 (+0.01·seed): 0.8, 0.81, 0.82
    assert "| GradNorm α=0.12 | 0.810 ± 0.010 (n=3) | curves only |" in table
    assert "| Equal weights | 1.21 ± 0.010 (n=3) | curves only |" in table
    # paired: 100·(1.2 + .01s − (0.8 + .01s))/(1.2 + .01s): 33.3, 33.1, 32.8 %
    assert "| T=2 | full length | GradNorm vs Equal weights | **better** | +33.1% (seeds +32.8…+33.3%, n=3) |" in table
    # the mechanism table: the zero predictor's row, then each method's late train/test loss per task
    assert "| predicting 0 | 1.00 | 1.00 | – | 10000 | 10000 | – |" in table
    assert "| GradNorm | 0.920 ± 0 (n=3) |" in table
    assert table.endswith("FOOTER\n")
    by_id = {v.id: v for v in verdicts}
    assert {v.setting for v in verdicts} == {"toy T=2"}
    assert all(v.verdict == C.REPRODUCED for v in verdicts), [(v.id, v.verdict, v.evidence) for v in verdicts]
    # u_small = 1 − 0.92 = 0.08, u_large = 1 − 0.28 = 0.72: R = 0.111
    assert "R = 0.11 (n=3, seeds 0.11…0.11)" in by_id["fig2.equal_swamped"].evidence
    # uncertainty: lowest 5-evaluation window 0.5 (+0.01 s), late window 1.0 (+0.01 s): +100%, +98%, +96.2%
    assert "deteriorates: late value over its lowest window mean +98.1% (n=3, seeds +96.2…+100.0%)" in by_id[
        "fig2.uncertainty_deteriorates"].evidence


def test_verdict_is_not_reproduced_when_gradnorm_is_worst(tmp_path):
    groups = group_by_t(load_runs(write_toy_study(tmp_path, gradnorm_final=1.5)))
    by_id = {v.id: v for v in check_claims(2, groups[2], "figure2.png")}
    assert by_id["fig2.lowest_test_loss"].verdict == C.NOT_REPRODUCED
    assert "GradNorm vs Equal weights: worse: -33.1%" in by_id["fig2.lowest_test_loss"].evidence
    assert by_id["fig2.weights_favour_small_sigma"].verdict == C.REPRODUCED


def test_one_seed_decides_no_comparison(tmp_path):
    groups = group_by_t(load_runs(write_toy_study(tmp_path, seeds=(0,))))
    by_id = {v.id: v for v in check_claims(2, groups[2], "figure2.png")}
    assert by_id["fig2.lowest_test_loss"].verdict == C.INCONCLUSIVE


def _write_nyuv2_run(path, balancer, seed, metrics, tasks=None, wall=100.0, model="segnet", alpha=1.5,
                     step_time=None):
    """A run with final ``metrics`` only; ``step_time``: a history.csv with that ``step_time_s`` at every step
    (a slow first step, as a real one)."""
    path.mkdir(parents=True)
    if step_time is not None:
        times = np.full(21, step_time)
        times[0] = 10 * step_time
        pd.DataFrame({"step": np.arange(21), "step_time_s": times}).to_csv(path / "history.csv", index=False)
    names = tasks or ["depth", "seg", "normals"]
    config = _config(balancer, seed, T=len(names), tasks=tasks)
    if balancer == "gradnorm":
        config["balancer"]["alpha"] = alpha
    (path / "summary.json").write_text(json.dumps({
        "status": "completed", "task_names": names, "weights": [1.0] * len(names),
        "mean_weights": [1.0] * len(names), "metrics": metrics, "steps": 10, "wall_time_s": wall, "config": config}))
    (path / ".hydra").mkdir()
    (path / ".hydra" / "hydra.yaml").write_text(
        f"hydra:\n  runtime:\n    choices:\n      model: {model}\n      dataset: nyuv2\n      experiment: nyuv2_{model}\n")


def test_table1_puts_the_paper_numbers_beside_ours(tmp_path):
    _write_nyuv2_run(tmp_path / "eq0", "equal", 0, {"depth/rmse": 0.9, "normals/err": 0.2}, wall=100)
    _write_nyuv2_run(tmp_path / "eq1", "equal", 1, {"depth/rmse": 1.0, "normals/err": 0.2}, wall=100)
    _write_nyuv2_run(tmp_path / "gn0", "gradnorm", 0, {"depth/rmse": 0.8, "seg/err": 60.0, "normals/err": 0.3},
                     wall=104)
    _write_nyuv2_run(tmp_path / "gn_other_alpha", "gradnorm", 0, {"depth/rmse": 5.0}, alpha=0.5)
    _write_nyuv2_run(tmp_path / "depth", "equal", 0, {"depth/rmse": 1.1}, tasks=["depth"])
    _write_nyuv2_run(tmp_path / "res", "equal", 0, {"depth/rmse": 0.7}, model="resnet")
    files, verdicts = REPORTS["table1"](load_runs(tmp_path), tmp_path / "out", models=["segnet", "resnet"])
    table = files[0].read_text()
    segnet, resnet = table.split("## segnet")[1].split("## resnet")
    assert "| Depth only | 1.10 (n=1) | 1.038 | – | – | – | – |" in segnet
    assert "| Equal weights | 0.950 ± 0.071 (n=2) | 0.944 | – | 70.1 | 0.200 ± 0 (n=2) | 0.192 |" in segnet
    assert "| GradNorm α=1.5 | 0.800 (n=1) | 0.925 | 60.0 (n=1) | 67.8 | 0.300 (n=1) | 0.174 |" in segnet
    assert "| Uncertainty (Kendall) | – | – | – | – | – | – |" in segnet
    assert "| Equal weights | 0.700 (n=1) | – |" in resnet   # no paper numbers for other backbones
    by_key = {(v.id, v.setting): v for v in verdicts}
    assert by_key[("table1.gradnorm_beats_equal", "NYUv2+seg segnet")].verdict == C.INCONCLUSIVE  # 1 paired seed
    assert by_key[("footnote1.overhead", "NYUv2+seg segnet")].verdict == C.NO_DATA  # no step_time_s recorded
    assert by_key[("table1.gradnorm_beats_equal", "NYUv2+seg resnet")].verdict == C.NO_DATA


#: Nash-MTL's Table 2 row of equal weights (LS), in the suite's units
LS = {"seg/miou": 0.3929, "seg/pix_acc": 0.6533, "depth/abs_err": 0.5493, "depth/rel_err": 0.2263,
      "normals/mean_angle": 28.15, "normals/median_angle": 23.96, "normals/within_11.25": 0.2209,
      "normals/within_22.5": 0.4750, "normals/within_30": 0.6108}


def _write_mtan_run(path, balancer, seed, last10, other, alpha=1.5):
    """An MTAN-protocol run whose last 10 evaluations average to ``last10`` (each metric ± 1%, alternating)
    while its earlier evaluations, and step 0, hold ``other``; 200 epochs of 397 steps at batch 2."""
    path.mkdir(parents=True)
    config = {"seed": seed, "tasks": None, "model": {"_target_": "gradnorm.models.MTAN"},
              "balancer": {"_target_": TARGETS[balancer], **({"alpha": alpha} if balancer == "gradnorm" else {})},
              "dataset": {"_target_": "gradnorm.data.NYUv2", "augmentation": True, "scales": [1.0, 1.2, 1.5],
                          "flip_prob": 0.5, "metric_average": "batches"},
              "trainer": {"max_steps": 79400, "batch_size": 2}}
    rows = [{"step": 0, **other}, {"step": 397, **other}, {"step": 794, **other}]
    for k in range(10):
        rows.append({"step": 397 * (k + 3), **{n: v * (1.01 if k % 2 else 0.99) for n, v in last10.items()}})
    pd.DataFrame(rows).to_csv(path / "history.csv", index=False)
    (path / "summary.json").write_text(json.dumps({
        "status": "completed", "task_names": ["seg", "depth", "normals"], "weights": [1.0] * 3,
        "mean_weights": [1.0] * 3, "metrics": rows[-1], "steps": 79400, "wall_time_s": 10.0, "config": config,
        "task_setup": {"image_size": [288, 384], "train_samples": 795, "test_samples": 654}}))
    (path / ".hydra").mkdir()
    (path / ".hydra" / "hydra.yaml").write_text(
        "hydra:\n  runtime:\n    choices:\n      model: mtan\n      dataset: nyuv2\n      experiment: nyuv2_mtan\n")


def test_reported_value_is_final_or_the_mean_of_the_last_10_evaluations(tmp_path):
    _write_mtan_run(tmp_path / "eq", "equal", 0, LS, {n: 0.1 for n in LS})
    [run] = load_runs(tmp_path)
    assert reported_value(run, "seg/miou", "final") == pytest.approx(0.3929 * 1.01)
    assert reported_value(run, "seg/miou", "last10_mean") == pytest.approx(0.3929)
    assert math.isnan(reported_value(run, "depth/rmse", "last10_mean"))
    history = pd.read_csv(tmp_path / "eq" / "history.csv").head(4)  # step 0 and three evaluations after it
    history.to_csv(tmp_path / "eq" / "history.csv", index=False)
    [run] = load_runs(tmp_path)
    assert reported_value(run, "seg/miou", "last10_mean") == pytest.approx((0.1 + 0.1 + 0.3929 * 0.99) / 3)
    with pytest.raises(ValueError, match="epoch_choice must be one of final, last10_mean, got 'best'"):
        reported_value(run, "seg/miou", "best")


def test_table1_sets_the_published_segnet_mtan_rows_under_ours(tmp_path):
    _write_mtan_run(tmp_path / "eq0", "equal", 0, LS, {n: 0.1 for n in LS})
    _write_mtan_run(tmp_path / "gn0", "gradnorm", 0, LS, {n: 0.1 for n in LS})
    files, _ = REPORTS["table1"](load_runs(tmp_path), tmp_path / "out", models=["mtan"], epoch_choice="last10_mean")
    text = files[0].read_text()
    section = text.split("### Beside the published SegNet-MTAN numbers (mtan)")[1]
    lines = section.splitlines()
    equal = lines.index(next(line for line in lines if line.startswith("| **Equal weights** |")))
    # ours: the mean of the last 10 evaluations (= Nash-MTL's LS row), Δm against Nash-MTL's STL row
    assert lines[equal].startswith("| **Equal weights** | ours (mean of the last 10 evaluations) | 39.29 (n=1) | "
                                   "65.33 (n=1) | 0.5493 (n=1) |")
    assert "| -5.59 (n=1) | 5.59 (n=1) | 0.878 (n=1) | – | – |" in lines[equal]
    # then the published rows of the same method, reprints merged, each with its protocol differences
    assert lines[equal + 1].startswith("| ↳ MTAN | CAGrad Table 1, Nash-MTL Table 2, FAMO Table 1 | 39.29 | 65.33 | "
                                       "0.5493 | 0.2263 | 28.15 | 23.96 | 22.09 | 47.5 | 61.08 | -5.59 | 5.59 | 0.878 | "
                                       "5.59 (CAGrad, Nash-MTL, FAMO) | segnet_mtan_code: seeds |")
    assert lines[equal + 2].startswith("| ↳ Baseline: Uniform | Aligned-MTL Table 2 | 39.29 | 65.33 | 0.55 |")
    assert lines[equal + 2].endswith("| 5.46, task-weighted -1.07 (Aligned-MTL) | aligned_mtl_code: metric_average, "
                                     "seeds; unstated: epoch_choice |")
    assert lines[equal + 3].startswith("| ↳ EW | LibMTL Table 2 of segnet_results.pdf | 40.89 |")
    gradnorm = lines.index(next(line for line in lines if line.startswith("| **GradNorm α=1.5** |")))
    assert lines[gradnorm + 1].startswith("| ↳ GradNorm | Aligned-MTL Table 2 | 20.09 | 52.06 | 0.72 | 0.28 |")
    assert "| -7.37 | 7.37 | -11.7 | 7.22, task-weighted 11.51 (Aligned-MTL) |" in lines[gradnorm + 1]
    assert lines[gradnorm + 2].startswith("| ↳ GradNorm | LibMTL Table 2 of segnet_results.pdf | 40.12 | 65.65 |")
    assert "| 4.03 | -4.03 | 7.63 | – |" in lines[gradnorm + 2]
    assert "- `segnet_mtan_code`: seeds 3 (ours 1)" in section
    assert ("- `aligned_mtl_code`: epoch_choice unstated; metric_average pixels (ours batches); seeds 3 (ours 1)"
            in section)
    assert "| **FAMO** | ours (mean of the last 10 evaluations) | – (n=0)" not in section  # no runs: plain dashes
    assert "| ↳ FAMO | FAMO Table 1 | 38.88 |" in section
def test_table1_verdicts_are_paired_over_seeds_and_the_overhead_uses_step_times(tmp_path):
    for seed in range(3):
        _write_nyuv2_run(tmp_path / f"eq{seed}", "equal", seed, {"depth/rmse": 1.0, "seg/err": 50.0, "normals/err": 0.2},
                         step_time=0.100)
        # depth: 20% better in every seed; seg: −2%, 0, +2% (mixed); normals: 50% worse in every seed
        _write_nyuv2_run(tmp_path / f"gn{seed}", "gradnorm", seed, {"depth/rmse": 0.8, "seg/err": 51.0 - seed,
                                                                    "normals/err": 0.3}, step_time=0.105 + 0.001 * seed)
    by_id = {v.id: v for v in REPORTS["table1"](load_runs(tmp_path), tmp_path / "out", models=["segnet"])[1]}
    beats = by_id["table1.gradnorm_beats_equal"]
    assert beats.verdict == C.PARTLY  # better on one metric, worse on another
    assert "depth/rmse: better: +20.0% (seeds +20.0…+20.0%, n=3)" in beats.evidence
    assert "seg/err: inconclusive: +0.0% (seeds -2.0…+2.0%, n=3)" in beats.evidence
    assert "normals/err: worse: -50.0%" in beats.evidence
    overhead = by_id["footnote1.overhead"]
    # median step time (steps ≥ 10) 0.105/0.106/0.107 s against 0.100 s: +5, +6, +7 %
    assert overhead.verdict == C.REPRODUCED and overhead.evidence.startswith("+6.0% (seeds +5.0…+7.0%, n=3)")


def test_sweep_commands_merge_extras_and_chain_static_runs(tmp_path):
    experiment = load_experiment("toy_grid")
    extras = ["seed=0", "balancer.index=range(0,2)", "trainer.max_steps=3", "hydra/launcher=basic"]
    assert "balancer.index" not in merged_overrides(experiment, "gradnorm", extras)
    assert merged_overrides(experiment, "grid", extras)["balancer.index"] == "range(0,2)"
    static = sweep_command(experiment, "static", tmp_path, extras)
    assert f"balancer.from_run='{tmp_path}/gradnorm/${{hydra:runtime.choices.experiment}}/seed${{seed}}'" in static
    assert "++sweep_group=toy_grid/static" in static and "seed=0" in static and "trainer.max_steps=3" in static
    assert any(a.startswith("hydra.job.config.override_dirname.exclude_keys=[sweep_group,") for a in static)
    assert count_values("range(0,100)") == 100 and count_values("[depth],[seg],[normals]") == 3
    assert count_values("'a,b',c") == 2 and count_values("toy_t2") == 1


def _write_fixed_run(path, balancer, seed, losses, mean_weights, **balancer_cfg):
    path.mkdir(parents=True)
    config = _config(balancer if balancer in TARGETS else "equal", seed)
    if balancer == "grid":
        config["balancer"] = {"_target_": "gradnorm.balancers.GridWeights", **balancer_cfg}
    config["balancer"].update(balancer_cfg if balancer != "grid" else {})
    metrics = {f"test_loss/task_{i}": v for i, v in enumerate(losses)}
    (path / "summary.json").write_text(json.dumps({
        "status": "completed", "task_names": ["task_0", "task_1"], "weights": mean_weights,
        "mean_weights": mean_weights, "metrics": metrics, "steps": STEPS, "wall_time_s": 1.0, "config": config}))


def test_grid_report_measures_distance_and_gain_against_same_seed_gradnorm(tmp_path):
    _write_fixed_run(tmp_path / "gn", "gradnorm", 0, [1.0, 100.0], [1.8, 0.2], alpha=0.12)
    _write_fixed_run(tmp_path / "gn_seed1", "gradnorm", 1, [9.0, 900.0], [1.0, 1.0], alpha=0.12)  # not seed 0
    for k in range(1, 4):  # further from GradNorm's weights, worse: gain −5k %
        _write_fixed_run(tmp_path / f"grid{k}", "grid", 0, [1.0 + 0.1 * k, 100.0], [1.8 - 0.4 * k, 0.2 + 0.4 * k],
                         index=k)
    _write_fixed_run(tmp_path / "static", "gradnorm_static", 0, [1.0, 101.0], [1.8, 0.2])
    _write_fixed_run(tmp_path / "equal", "equal", 0, [1.5, 100.0], [1.0, 1.0])
    for seed in (1, 2):  # two more seeds of static and equal (GradNorm seed 1 is above; seed 2 has none)
        _write_fixed_run(tmp_path / f"static{seed}", "gradnorm_static", seed, [9.0, 909.0], [1.8, 0.2])
        _write_fixed_run(tmp_path / f"equal{seed}", "equal", seed, [13.5, 900.0], [1.0, 1.0])
    files, verdicts = REPORTS["figure4"](load_runs(tmp_path), tmp_path / "out", title="T")
    assert {p.name for p in files} == {"grid_figure4.png", "grid_figure4.pdf", "grid_table.md"}
    table = (tmp_path / "out" / "grid_table.md").read_text()
    # Best grid point: k=1, distance ‖(−0.4, 0.4)‖ = 0.566, gain (−10 + 0)/2 = −5 %.
    assert "| Best grid point (#1, seed 0) | (1.4, 0.60) | 0.566 | -5.00 | 1.10 | 100 |" in table
    assert "Grid points: 3; beating GradNorm by more than 3%: 0; Pearson r(distance, % change) = -1.0." in table
    by_id = {v.id: v for v in verdicts}
    assert by_id["fig4.no_random_beats_gradnorm"].verdict == C.REPRODUCED
    assert by_id["fig4.negative_correlation"].verdict == C.REPRODUCED
    static = by_id["table1.static_close_to_gradnorm"]
    # over equal, every seed: (100·0.5/1.5 − 1)/2 = 16.17 %; over GradNorm (seeds 0, 1): (0 − 1)/2 = −0.5 %, −0.5 %
    assert "static vs equal weights: better: +16.2% (seeds +16.2…+16.2%, n=3)" in static.evidence
    assert "static vs GradNorm: -0.5% (seeds -0.5…-0.5%, n=2), closeness inconclusive" in static.evidence
    assert static.verdict == C.PARTLY  # the core holds; "close" needs 3 paired seeds


def test_alpha_report_gain_over_equal_and_weight_spread(tmp_path):
    for seed in (0, 1, 2):
        _write_fixed_run(tmp_path / f"eq{seed}", "equal", seed, [1.0, 10.0], [1.0, 1.0])
        for a in (0.5, 1.0, 2.0):
            _write_fixed_run(tmp_path / f"gn{a}_{seed}", "gradnorm", seed, [0.9, 10.0 * (1 - 0.1 * a)],
                             [1 + 0.1 * a, 1 - 0.1 * a], alpha=a)
    files, verdicts = REPORTS["figure7"](load_runs(tmp_path), tmp_path / "out", traces_alphas=[0.5, 2.0])
    assert {p.name for p in files} == {"alpha_figure7.png", "alpha_figure7.pdf", "alpha_figure5.png",
                                       "alpha_figure5.pdf", "alpha_table.md"}
    by_id = {v.id: v for v in verdicts}
    spread = by_id["fig5.alpha_spreads_weights"]
    # std over tasks of (1 ± 0.1α): 0.05, 0.1, 0.2 -> ρ = 1, +300% from α=0.5 to α=2, in every seed.
    assert spread.verdict == C.REPRODUCED
    assert "widening from α=0.5 to α=2: +300.0% (seeds +300.0…+300.0%, n=3)" in spread.evidence
    gain = by_id["fig7.gain_for_every_alpha"]
    # α=0.5: (10 % + 5 %)/2 = 7.5 %; α=1: (10 % + 10 %)/2 = 10 %: every seed beyond 3 %.
    assert gain.verdict == C.REPRODUCED and "α=1: better: +10.0%" in gain.evidence and gain.setting == "toy T=2"
    assert "fig7.peak_near_1_5" not in by_id
    assert "| 2 | 15.0 ± 0 (n=3) | better: +15.0% (seeds +15.0…+15.0%, n=3) | 0.200 ± 0 (n=3) |" in (
        tmp_path / "out" / "alpha_table.md").read_text()


def test_figure3_report_on_per_task_curves(tmp_path):
    steps = np.arange(11)
    for seed in (0, 1, 2):
        for balancer, train_scale, test_error in (("equal", 1.0, 2.0), ("gradnorm", 1.5, 1.0),
                                                  ("uncertainty", 1.2, 1.5)):
            path = tmp_path / f"{balancer}{seed}"
            _write_nyuv2_run(path, balancer, seed, {"depth/rmse": test_error, "seg/err": 50 * test_error,
                                                    "normals/err": 0.1 * test_error})
            history = {"step": steps}
            for task in ("depth", "seg", "normals"):
                history[f"train_loss/{task}"] = train_scale / (1 + steps)
                history[f"test_loss/{task}"] = np.where(steps % 5 == 0, test_error / (1 + 0.1 * steps), np.nan)
            history["task_normalized_loss"] = np.where(steps % 5 == 0, 3.0, np.nan)
            pd.DataFrame(history).to_csv(path / "history.csv", index=False)
    files, [verdict] = REPORTS["figure3"](load_runs(tmp_path), tmp_path / "out")
    assert {p.name for p in files} == {"figure3.png", "figure3.pdf", "figure3.md"}
    assert verdict.id == "fig3.less_overfitting" and verdict.setting == "NYUv2+seg segnet"
    assert verdict.verdict == C.REPRODUCED
    # training loss ×1.5 at every step: +50 %; test error 1 vs 2: 50 % lower
    assert "depth: train loss higher by +50.0% (seeds +50.0…+50.0%, n=3), depth/rmse lower by +50.0%" in verdict.evidence


def _captured_figures(monkeypatch, *modules):
    """Figures the report functions would save, kept open for inspection."""
    import gradnorm.report.style as style

    figures = []

    def keep(fig, base):
        figures.append(fig)
        return [Path(base).with_suffix(".png")]

    for module in (style, *modules):
        monkeypatch.setattr(module, "save_figure", keep)
    return figures


def _write_t10_run(path, seed, sigma_seed=0):
    from gradnorm.data.toy import draw_sigmas

    """A GradNorm run on the T=10 toy (σ drawn with sigma_seed) whose weight i settles at 0.2 + 0.2 i."""
    steps = np.arange(STEPS + 1)
    names = [f"task_{i}" for i in range(10)]
    history = {"step": steps}
    for i, name in enumerate(names):
        history[f"weight/{name}"] = 1 + (0.2 * i - 0.9) * np.minimum(steps / 20, 1) + 0.01 * seed
    frame = pd.DataFrame(history)
    frame.loc[steps % 10 == 0, "task_normalized_loss"] = 10 - 5 * steps[steps % 10 == 0] / STEPS
    path.mkdir(parents=True)
    frame.to_csv(path / "history.csv", index=False)
    config = _config("gradnorm", seed, T=10)
    config["dataset"].update(sigmas=None, sigma_std=50.0, sigma_seed=sigma_seed, sigma_min=1.0)
    (path / "summary.json").write_text(json.dumps({
        "status": "completed", "task_names": names, "weights": frame.iloc[-1, 1:11].tolist(),
        "mean_weights": frame.iloc[:-1, 1:11].mean().tolist(), "metrics": {"task_normalized_loss": 5.0},
        "steps": STEPS, "wall_time_s": 1.0, "config": config,
        "task_setup": {"sigmas": draw_sigmas(10, 50.0, sigma_seed, 1.0)}}))


def test_log_ticks_are_plain_numbers():
    import matplotlib.pyplot as plt

    from gradnorm.report.style import plain_log_ticks

    fig, ax = plt.subplots()
    ax.bar(range(3), [15.0, 40.0, 110.0])
    ax.set_yscale("log")
    ax.set_ylim(12, 120)
    plain_log_ticks(ax, "y")
    fig.canvas.draw()
    labels = {t.get_text() for t in ax.get_yticklabels(minor=False) + ax.get_yticklabels(minor=True)
              if t.get_text() and 12 <= t.get_position()[1] <= 120}  # the ticks in view
    plt.close(fig)
    assert labels == {"20", "50", "100"}  # no "2×10¹"


def test_t10_weight_traces_get_a_colour_bar_that_maps_colour_to_sigma(tmp_path, monkeypatch):
    import gradnorm.report.figure2 as figure2
    from gradnorm.data.toy import draw_sigmas
    from gradnorm.report.style import task_colors

    for seed in (0, 1):
        _write_t10_run(tmp_path / "runs" / f"gradnorm_seed{seed}", seed)
    figures = _captured_figures(monkeypatch, figure2)
    REPORTS["figure2"](load_runs(tmp_path / "runs"), tmp_path / "out")
    (fig,) = figures
    (bar_ax,) = [ax for ax in fig.axes if ax.get_ylabel() == "task scale σ_i"]
    colorbar = bar_ax._colorbar  # matplotlib keeps a colour bar's Colorbar on its axes
    sigmas = draw_sigmas(10, 50.0, 0, 1.0)
    for sigma, color in zip(sigmas, task_colors(sigmas)):  # a line's colour is its σ's colour on the bar
        assert np.allclose(colorbar.cmap(colorbar.norm(sigma)), color, atol=0.01), sigma
    weights_ax = next(ax for ax in fig.axes if ax.get_title().startswith("GradNorm"))
    assert weights_ax.get_legend() is None  # ten lines: the colour bar, not a legend
    assert len(weights_ax.collections) == 10  # a seed band per task


def test_figure4_and_figure7_say_which_sign_is_better_and_what_the_error_bars_are(tmp_path, monkeypatch):
    import gradnorm.report.figure5 as figure5

    _write_fixed_run(tmp_path / "gn", "gradnorm", 0, [1.0, 100.0], [1.8, 0.2], alpha=0.12)
    _write_fixed_run(tmp_path / "grid1", "grid", 0, [1.1, 100.0], [1.4, 0.6], index=1)
    figures = _captured_figures(monkeypatch)
    REPORTS["figure4"](load_runs(tmp_path), tmp_path / "out4", title="T")
    assert "(> 0: lower test error than GradNorm)" in figures[-1].axes[0].get_ylabel()
    for seed in (0, 1):
        _write_fixed_run(tmp_path / "alpha" / f"eq{seed}", "equal", seed, [1.0, 10.0], [1.0, 1.0])
        _write_fixed_run(tmp_path / "alpha" / f"gn{seed}", "gradnorm", seed, [0.9, 9.0 + seed], [1.1, 0.9], alpha=1.0)
    figures = _captured_figures(monkeypatch, figure5)
    REPORTS["figure7"](load_runs(tmp_path / "alpha"), tmp_path / "out7")
    ax = figures[0].axes[0]
    assert "(> 0: better than equal weights)" in ax.get_ylabel()
    assert "GradNorm, toy T=2: mean ± std over 2 seeds" in [t.get_text() for t in ax.get_legend().get_texts()]


def test_a_std_band_on_a_log_axis_stops_at_the_lowest_seed():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from gradnorm.report.curves import plot_band

    frame = pd.DataFrame({"s0": [0.1, 0.2], "s1": [0.1, 0.2], "s2": [10.0, 20.0]}, index=[0, 1])  # mean − std < 0
    lows = {}
    for log in (False, True):
        fig, ax = plt.subplots()
        plot_band(ax, frame, "k", None, log=log)
        lows[log] = ax.collections[0].get_paths()[0].vertices[:, 1].min()
        plt.close(fig)
    assert lows[False] < 0 and lows[True] == pytest.approx(0.1)
