"""The toy sensitivity study: its experiment spec (settings, follow-up sweeps), the claims-map
aggregation on hand-made runs, the new toy set-up keys, and the `overrides` round trip."""

import json
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from test_report import write_toy_run  # the hand-made toy runs of the Figure 2 report tests

from gradnorm.data import ToyRegression
from gradnorm.experiments import load_experiment, sweep_command
from gradnorm.report import claims as C
from gradnorm.report import sensitivity
from gradnorm.report.runs import load_runs

ROOT = Path(__file__).resolve().parent.parent


def _write(root, setting, gradnorm_final):
    """Three seeds of equal / uncertainty / GradNorm at T=2 under ``setting``; late values (the last five
    evaluations, steps 60..100): equal 1.2 (+0.01·seed), uncertainty 1.0, GradNorm 2 − 0.8·(2 − gradnorm_final)."""
    for balancer in ("equal", "uncertainty", "gradnorm"):
        for seed in (0, 1, 2):
            path = root / setting / f"{balancer}_seed{seed}"
            write_toy_run(path, balancer, seed, gradnorm_final=gradnorm_final)
            summary = json.loads((path / "summary.json").read_text())
            summary["config"]["setting"] = setting
            (path / "summary.json").write_text(json.dumps(summary))


@pytest.fixture
def study(tmp_path):
    root = tmp_path / "runs"
    _write(root, "default", gradnorm_final=1.5)   # GradNorm worst: "not reproduced"
    _write(root, "better", gradnorm_final=0.5)    # GradNorm lowest: "reproduced"
    _write(root, "same", gradnorm_final=1.6)
    return load_runs(root)


def test_thelength_check_compares_the_reference_with_a_longer_run(study):
    groups = sensitivity.group(study, "default")
    cells = {s: sensitivity.figure2_cells(rs) for s, rs in groups.items()}
    line = sensitivity.length_check(cells, groups, "default", {"same": {"trainer.max_steps": "200"}})
    assert line == "- Training length: `default` (100 steps) and `same` (100 steps) agree on 5 of 5 verdicts."
    assert sensitivity.length_check(cells, groups, "default", {"better": {"trainer.optimizer.lr": "1e-4"}}) == ""


def test_claims_map_cells_and_differing_settings(study):
    groups = sensitivity.group(study, "default")
    assert list(groups) == ["default", "better", "same"]  # the reference first
    cells = {s: sensitivity.figure2_cells(rs) for s, rs in groups.items()}
    lowest = {s: cells[s][2]["fig2.lowest_test_loss"] for s in cells}
    assert lowest["default"].result.verdict == C.NOT_REPRODUCED
    assert lowest["better"].result.verdict == C.REPRODUCED
    # key number: GradNorm's mean paired % gain in its weaker comparison (against uncertainty, late 1.0 + 0.01 s):
    # 100·0.2/(1 + 0.01 s) in "better" (GradNorm 0.8 + 0.01 s), 100·(−0.6)/(1 + 0.01 s) in "default" (1.6 + 0.01 s)
    assert lowest["better"].result.value == pytest.approx(np.mean([20 / (1 + 0.01 * s) for s in range(3)]))
    assert lowest["default"].result.value == pytest.approx(np.mean([-60 / (1 + 0.01 * s) for s in range(3)]))
    assert sensitivity.differing_settings_from(cells, "default") == ["better"]
    assert sensitivity.differing_settings(study, "default", "fig2.lowest_test_loss", "toy T=2") == ["better"]
    # paired per-seed gains over equal weights: 100·(1.2 + 0.01 s − (0.8 + 0.01 s)) / (1.2 + 0.01 s)
    gain = sensitivity.paired_gain(groups["better"], 2)
    assert gain.outcome == "better"
    assert list(gain.values.values()) == pytest.approx([40 / (1.2 + 0.01 * s) for s in range(3)])


def test_a_setting_where_nothing_trains_is_flagged(tmp_path):
    root = tmp_path / "runs"
    _write(root, "default", gradnorm_final=1.5)
    runs = load_runs(root)
    assert sensitivity.barely_trained(runs) == {}  # uncertainty's late loss 1.0 + 0.01 seed of 2: 50%
    for run in runs:
        run.history["task_normalized_loss"] = run.history["task_normalized_loss"].where(
            run.history["task_normalized_loss"].isna(), 1.9)
    assert sensitivity.barely_trained(runs) == {2: pytest.approx(0.95)}


def test_the_factor_table_has_the_paired_gain_and_sentences_only_for_decided_outcomes(study):
    groups = sensitivity.group(study, "default")
    settings = {"default": {}, "better": {"trainer.optimizer.lr": "1e-4"}, "same": {"dataset.num_train": "500"}}
    table = sensitivity.factor_table(groups, settings, "default")
    row = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| `")}
    assert "| `better` | `trainer.optimizer.lr=1e-4` | **better** +33.1% (seeds +32.8…+33.3%, n=3) |" in row["`better`"]
    assert "**worse** -33.1%" in row["`default`"] and "the defaults" in row["`default`"]
    sentences = sensitivity.factor_sentences(groups, settings, "default")
    assert sentences[0].startswith("- T=2, `default`: GradNorm is **worse** than equal weights by -33.1% (seeds")
    # `same` is worse too (no sentence: it does not differ); `better` differs and is decided
    assert len(sentences) == 2 and sentences[1].startswith(
        "- T=2, `better` (`trainer.optimizer.lr=1e-4`): GradNorm is **better** than equal weights by +33.1%")
    # one seed of `better` inside the drift band: inconclusive, and no sentence for it
    for run in groups["better"]:
        if run.config["seed"] == 2 and "GradNorm" in str(run.config["balancer"]["_target_"]):
            history = run.history
            history["task_normalized_loss"] = history["task_normalized_loss"] * (1.2 / 0.8)
    assert sensitivity.paired_gain(groups["better"], 2).outcome == "inconclusive"
    assert len(sensitivity.factor_sentences(groups, settings, "default")) == 1


def test_an_inconclusive_verdict_has_its_own_mark():
    result = C.ClaimResult("fig2.weights_stable", "toy T=2", C.INCONCLUSIVE, "", "", value=0.12)
    assert sensitivity.Cell(result).text() == "? 0.120"
    assert sensitivity.VERDICT_COLORS[C.INCONCLUSIVE] != sensitivity.VERDICT_COLORS[C.NO_DATA]


def test_report_writes_the_map_figures_and_sentences(study, tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    files, verdicts = sensitivity.report(study, out, settings={"default": {}, "better": {"trainer.optimizer.lr": "1e-4"},
                                                                "same": {"dataset.num_train": "500"}},
                                         timing={"default": 60.0, "better": 60.0, "same": 60.0})
    assert {p.name for p in files} >= {"claims_map.md", "claims_map.png", "gain.png", "curves.png", "decides.md"}
    table = (out / "claims_map.md").read_text()
    row = {line.split("|")[1].strip(): line for line in table.splitlines() if line.startswith("| `")}
    assert "**✓ +19.8%**" in row["`better`"] and "✗ -59.4%" in row["`default`"]  # bold: differs from the reference
    assert "**" not in row["`same`"].split("|")[2]
    assert "- `better`: `trainer.optimizer.lr=1e-4`" in table
    decides = (out / "decides.md").read_text()
    assert "| `better` | `trainer.optimizer.lr=1e-4` | **better** +33.1% (seeds +32.8…+33.3%, n=3) |" in decides
    assert "T=2, *GradNorm lowest loss*: not reproduced in `default`; a different decided verdict in 1 of 2 other " \
           "settings: `better` (reproduced)." in decides
    assert "The sweeps took 3 min" in decides
    assert {v.setting for v in verdicts} == {"toy T=2, default", "toy T=2, better", "toy T=2, same"}


def test_settings_become_sweeps_and_followups_name_their_setting(tmp_path):
    experiment = load_experiment("toy_sensitivity")
    assert len(experiment.settings) >= 8 and "default" in experiment.settings
    sgd = experiment.sweeps["sgd_momentum"]
    assert sgd["trainer.optimizer._target_"] == "torch.optim.SGD" and sgd["++setting"] == "sgd_momentum"
    assert sgd["balancer"] == "equal,uncertainty,gradnorm" and sgd["experiment"] == "toy_t2,toy_t10"
    name = experiment.add_followup("adam_lr1e-4")
    assert name == "adam_lr1e-4__grid"
    follow = experiment.sweeps[name]
    assert follow["balancer"] == "grid" and follow["experiment"] == "toy_t2" and follow["seed"] == "0"
    assert follow["trainer.optimizer.lr"] == "0.0001" and follow["++setting"] == "adam_lr1e-4"
    command = sweep_command(experiment, name, tmp_path, [])
    excluded = next(c for c in command if c.startswith("hydra.job.config.override_dirname.exclude_keys="))
    assert "trainer.optimizer.lr" in excluded and "setting" in excluded  # in the sweep folder's name already


def test_recorded_overrides_keep_interpolations_as_typed(tmp_path):
    from gradnorm.report.runs import load_run

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text(
        "- balancer=gradnorm_static\n- balancer.from_run='/r/gradnorm/${hydra:runtime.choices.experiment}/seed${seed}'\n")
    assert load_run(tmp_path).overrides == ("balancer=gradnorm_static "
                                            "'balancer.from_run='\"'\"'/r/gradnorm/${hydra:runtime.choices.experiment}/"
                                            "seed${seed}'\"'\"''")


def test_toy_variance_reading_and_fresh_samples():
    std = ToyRegression(num_train=50, num_test=10, seed=3)
    var = ToyRegression(num_train=50, num_test=10, seed=3, spread_as="variance")
    assert torch.allclose(var.B, std.B / 10**0.5) and torch.allclose(var.epsilons, std.epsilons * (3.5**0.5 / 3.5))
    setup = var.task_setup()
    zero = setup.pop("zero_predictor_loss")
    assert setup == {"sigmas": [1.0, 100.0], "b_std": 10**0.5, "eps_std": 3.5**0.5, "num_train": 50}
    # the loss of predicting 0: mean over points and outputs of f_i(x)², per task and split
    assert zero["test"] == pytest.approx([float(var.test_targets[f"task_{i}"].pow(2).mean()) for i in (0, 1)])
    assert zero["train"][1] == pytest.approx(float(var.train_targets["task_1"].pow(2).mean()))
    fresh = ToyRegression(num_train=50, num_test=10, seed=3, fresh_samples=True)
    assert fresh.task_setup()["num_train"] is None and fresh.task_setup()["zero_predictor_loss"]["train"] is None
    a = fresh.train_batches(8, seed=5)
    first, second = next(a), next(a)
    assert not torch.equal(first[0], second[0])  # a new sample at every step
    again = next(fresh.train_batches(8, seed=5, start_step=1))  # a pure function of (seed, step)
    assert torch.equal(again[0], second[0]) and torch.equal(again[1]["task_1"], second[1]["task_1"])
    # targets are f_i of the unstandardised x: x_net / scale
    x = second[0] / fresh.input_scale
    assert torch.allclose(second[1]["task_0"], torch.tanh(x @ (fresh.B + fresh.epsilons[0]).T), atol=1e-6)
    halves = [next(fresh.train_batches(4, seed=5, start_step=1, rank=r, world_size=2))[0] for r in (0, 1)]
    assert torch.equal(torch.cat(halves), second[0])
    with pytest.raises(ValueError, match="dataset.spread_as must be one of std, variance"):
        ToyRegression(spread_as="var")


@pytest.mark.slow
def test_a_recorded_row_re_runs_to_the_same_summary(tmp_path):
    """runs.csv's `overrides` re-create the run: `python run.py <overrides>` gives the same summary."""
    runs_dir, out = tmp_path / "runs", tmp_path / "results"
    tiny = ["experiment=toy_t2", "balancer=gradnorm", "seed=1", "trainer.max_steps=30", "trainer.eval_every=10",
            "dataset.num_train=300", "dataset.num_test=50", "logger=none"]
    # hydra/launcher=basic: the one job in run.py's own process (the launcher is not what is tested)
    result = subprocess.run([sys.executable, "scripts/reproduce.py", "toy_sensitivity", "--sweeps", "adam_lr1e-4", *tiny,
                             "hydra/launcher=basic",
                             "--runs-dir", str(runs_dir), "--out", str(out)], cwd=ROOT, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    [row] = pd.read_csv(out / "runs.csv").to_dict("records")
    assert row["setting"] == "adam_lr1e-4" and row["status"] == "completed"
    overrides = shlex.split(row["overrides"])
    assert "trainer.optimizer.lr=0.0001" in overrides and "++setting=adam_lr1e-4" in overrides
    again = subprocess.run([sys.executable, "run.py", *overrides, f"hydra.run.dir={tmp_path / 'again'}"], cwd=ROOT,
                           capture_output=True, text=True, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    first = json.loads((runs_dir / row["run_dir"] / "summary.json").read_text())
    second = json.loads((tmp_path / "again" / "summary.json").read_text())
    for key in ("metrics", "weights", "mean_weights", "steps", "task_setup"):
        assert second[key] == first[key], key
    assert second["task_setup"]["sigmas"] == [1.0, 100.0]
