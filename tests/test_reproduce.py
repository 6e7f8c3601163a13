"""End to end on tiny settings: scripts/reproduce.py runs the sweeps through `run.py -m`, chains
GradNorm -> GradNorm static, and writes the results folder and REPORT.md."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gradnorm.experiments import load_experiment
from gradnorm.report.build import build_report

ROOT = Path(__file__).resolve().parent.parent
TINY = ["trainer.max_steps=4", "trainer.eval_every=2", "trainer.progress=false", "logger=none", "seed=0"]


def _reproduce(*args, timeout=240):
    return subprocess.run([sys.executable, "scripts/reproduce.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout)


@pytest.mark.slow
def test_reproduce_toy_end_to_end(tmp_path):
    result = _reproduce("toy", *TINY, "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "results" / "toy"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "==> [toy] sweep 'figure2': 6 runs" in result.stdout
    out = tmp_path / "results" / "toy"
    assert {"runs.csv", "table.md", "figure2.png", "figure2.pdf", "README.md", "claims_toy.json"} <= {
        p.name for p in out.iterdir()}
    runs = pd.read_csv(out / "runs.csv")
    assert len(runs) == 6 and set(runs["status"]) == {"completed"}
    assert sorted(runs["method"]) == ["equal", "equal", "gradnorm", "gradnorm", "uncertainty", "uncertainty"]
    assert set(runs["sweep"]) == {"toy/figure2"} and set(runs["num_tasks"]) == {2, 10}
    verdicts = json.loads((out / "claims_toy.json").read_text())["claims"]
    assert {v["setting"] for v in verdicts} == {"toy T=2", "toy T=10"} and len(verdicts) == 10
    report = (tmp_path / "results" / "REPORT.md").read_text()
    assert "GradNorm's weights are stable and convergent" in report and "needs NYUv2 on a GPU" in report

    # Report only, from the same runs: the same table.
    table = (out / "table.md").read_text()
    build_report(load_experiment("toy"), tmp_path / "runs", out)
    assert (out / "table.md").read_text() == table


@pytest.mark.slow
def test_grid_experiment_chains_gradnorm_into_static_runs(tmp_path):
    runs_dir = tmp_path / "runs"
    # The chaining is what is tested, not the launcher: each one-job sweep runs in run.py's own process.
    result = _reproduce("toy_grid", *TINY, "hydra/launcher=basic", "--sweeps", "gradnorm,static", "--runs-dir", str(runs_dir),
                        "--out", str(tmp_path / "results" / "toy"))
    assert result.returncode == 0, result.stderr[-2000:]
    assert "sweep 'equal'" not in result.stdout
    gradnorm = json.loads((runs_dir / "gradnorm" / "toy_t2" / "seed0" / "summary.json").read_text())
    [static_dir] = [p for p in (runs_dir / "static").iterdir() if p.is_dir()]
    static = json.loads((static_dir / "summary.json").read_text())
    assert static["status"] == "completed"
    assert static["config"]["balancer"]["from_run"] == str(runs_dir / "gradnorm" / "toy_t2" / "seed0")
    assert static["weights"] == pytest.approx(gradnorm["mean_weights"], rel=1e-6)
    grid = pd.read_csv(tmp_path / "results" / "toy" / "grid_runs.csv")
    assert sorted(grid["method"]) == ["gradnorm", "gradnorm_static"]
    table = (tmp_path / "results" / "toy" / "grid_table.md").read_text()
    assert "| GradNorm static |" in table and "sweep `toy_grid/grid`: 20 runs expected, 0" in table


@pytest.fixture(scope="module")
def reproduce():
    """scripts/reproduce.py as a module: its main() in this process (no start-up of its own)."""
    spec = importlib.util.spec_from_file_location("reproduce_script", ROOT / "scripts" / "reproduce.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_unknown_experiment_is_one_line_error(reproduce, capsys):
    assert reproduce.main(["nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: unknown experiment 'nope'; choose one of: alpha_nyuv2,")


def test_dry_run_prints_every_sweep_command(reproduce, capsys):
    assert reproduce.main(["table1", "--dry-run", "hydra/launcher=submitit_slurm"]) == 0
    out = capsys.readouterr().out
    assert [line.split("'")[1] for line in out.splitlines() if line.startswith("==> [table1] sweep")] == [
        "single_task", "baselines", "gradnorm", "static", "later_methods", "later_dwa"]
    assert "27 runs" in out and "hydra/launcher=submitit_slurm" in out  # 3 backbones × 3 tasks × 3 seeds


def test_report_run_is_logged_to_wandb_offline_and_skipped_with_logger_none(tmp_path):
    from gradnorm.report.wandb_report import log_report

    table = tmp_path / "runs.csv"
    pd.DataFrame({"method": ["equal"], "task_normalized_loss": [1.5]}).to_csv(table, index=False)
    assert log_report("toy", [table], ["logger=none"]) is False
    assert log_report("toy", [table], [f"logger.dir={tmp_path}", "logger.mode=offline"]) is True
    [run] = list((tmp_path / "wandb").glob("offline-run-*"))
    assert list(run.glob("files/media/table/runs_*.table.json"))


@pytest.mark.parametrize("resume", [None, "trainer.resume=auto"])
def test_a_resumed_reproduction_keeps_its_finished_runs(tmp_path, reproduce, monkeypatch, resume):
    finished = tmp_path / "runs" / "figure2" / "t2_seed0" / "summary.json"
    finished.parent.mkdir(parents=True)
    finished.write_text("{}")
    monkeypatch.setattr(reproduce, "run_with_bar", lambda *args: 0)
    extras = ["trainer.max_steps=2"] + ([resume] if resume else [])
    experiment = reproduce.load_experiment("toy")
    assert reproduce.run_sweeps(experiment, tmp_path / "runs", extras, False, ["figure2"]) == 0
    assert finished.exists() == bool(resume)
    assert not reproduce.resuming(["trainer.resume=null"]) and reproduce.resuming(["+trainer.resume=auto"])


def test_a_key_that_does_not_change_training_stays_out_of_the_job_folders():
    from gradnorm.experiments import sweep_command

    command = sweep_command(load_experiment("multimnist"), "gradnorm", Path("runs"), [])
    assert "logger=none" in command  # the spec turns W&B off for its runs...
    [exclude] = [c for c in command if c.startswith("hydra.job.config.override_dirname.exclude_keys=")]
    assert "logger" in exclude.split("=", 1)[1].strip("[]").split(",")  # ...without naming every folder after it
