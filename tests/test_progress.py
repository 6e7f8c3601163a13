"""What a run shows: the compact bar's pieces, the final line, and (through the real command line)
the final line, the run folder's name and run.log."""

from __future__ import annotations

import pytest
from cli_runs import TINY, read_run, run_cli
from omegaconf import OmegaConf

from gradnorm.loggers import WANDB_ID_FILE, WandbSweepHint
from gradnorm.progress import final_line, postfix, run_label, short_weights


def test_bar_pieces_are_short():
    assert run_label("gradnorm", 0) == "gradnorm s0"
    assert short_weights([1.944, 0.056]) == "w 1.94/0.06"
    assert short_weights([0.24, 2.71, 1.0, 1.0, 0.5]) == "w 0.2–2.7"  # more than four tasks: the range
    assert postfix(None, [1.0, 1.0]) == "w 1.00/1.00"  # before the first evaluation
    assert postfix(1.23456, [1.944, 0.056]) == "ΣL/L0 1.23 w 1.94/0.06"


def test_final_line_names_status_folder_loss_main_metrics_and_weights():
    toy = {"status": "completed", "steps": 100, "task_names": ["task_0", "task_1"], "weights": [1.9449, 0.0551],
           "metrics": {"test_loss/task_0": 0.1, "test_loss/task_1": 9.0, "task_normalized_loss": 1.23456}}
    assert final_line(toy, "outputs/x") == "completed: outputs/x | step 100 | ΣL/L0 1.235 | w 1.94 0.0551"
    nyuv2 = {"status": "failed", "steps": 7, "task_names": ["seg", "depth"], "weights": [1.0, 1.0],
             "metrics": {"test_loss/seg": 2.0, "seg/miou": 0.2134, "seg/pix_acc": 0.5, "test_loss/depth": 1.0,
                         "depth/rmse": 0.81, "depth/abs_err": 0.6, "task_normalized_loss": 1.9}}
    assert final_line(nyuv2, "r") == "failed: r | step 7 | ΣL/L0 1.9 | seg/miou 0.2134 depth/rmse 0.81 | w 1 1"


@pytest.mark.slow
def test_a_run_ends_with_one_line_names_its_folder_by_seed_and_logs_to_run_log(tmp_path):
    result = run_cli([*TINY, "seed=3", "trainer.max_steps=4"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    (run_dir,) = (tmp_path / "outputs" / "toy_t2" / "gradnorm").iterdir()
    assert run_dir.name.endswith("_seed3")
    summary, _ = read_run(run_dir)
    weights = " ".join(f"{w:.3g}" for w in summary["weights"])
    expected = (f"completed: {run_dir.relative_to(tmp_path)} | step 4 | "
                f"ΣL/L0 {summary['metrics']['task_normalized_loss']:.4g} | w {weights}")
    assert result.stdout.strip().splitlines() == [expected]
    log = (run_dir / "run.log").read_text()
    for event in ("experiment=toy_t2", "training gradnorm s3 for 4 steps on cpu (fresh)",
                  "step 0: task-normalised test loss 2;", "step 4: task-normalised test loss", expected):
        assert event in log, (event, log)


@pytest.mark.slow
def test_a_sweep_prints_one_line_per_finished_job_no_bars_and_the_wandb_hint_once(tmp_path):
    """A sweep of two balancers (each job trains its own). With the W&B logger (offline, into tmp_path/wandb:
    logger.mode wins over WANDB_MODE) the jobs say nothing of W&B; the sweep says once where its runs went."""
    shown = [a for a in TINY if a not in ("trainer.progress=false", "logger=none")]
    result = run_cli(["-m", *shown, "logger=wandb", "balancer=equal,uncertainty", "trainer.max_steps=2",
                      "hydra.sweep.dir=sweep"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    finished = [ln for ln in result.stdout.splitlines() if ln.startswith("completed: ")]
    assert len(finished) == 2 and "balancer=equal" in finished[0] and "balancer=uncertainty" in finished[1]
    targets = [read_run(p.parent)[0]["config"]["balancer"]["_target_"]
               for p in sorted((tmp_path / "sweep").glob("*/summary.json"))]
    assert targets == ["gradnorm.balancers.EqualWeights", "gradnorm.balancers.Uncertainty"]
    assert "it/s" not in result.stderr  # no per-job bars
    assert [ln for ln in result.stdout.splitlines() if ln.startswith("wandb:")] == [
        "wandb: 2 runs of this sweep logged offline to wandb/; upload them with `wandb sync --sync-all` "
        "(logger=none turns W&B off)"]
    assert "wandb" not in result.stderr
    assert len(list((tmp_path / "wandb").glob("offline-run-*"))) == 2


def test_the_sweep_hint_counts_each_wandb_folder_s_offline_runs(tmp_path, monkeypatch, capsys):
    """Jobs that logged online, or not to W&B, are not counted; runs under another logger.dir get
    their own line with the command to run there."""
    monkeypatch.chdir(tmp_path)
    elsewhere = tmp_path / "elsewhere"
    jobs = {"0": "mode: offline\n  dir: null", "1": "mode: offline\n  dir: null", "2": "mode: online\n  dir: null",
            "3": f"mode: offline\n  dir: {elsewhere}", "4": None}
    for job, logger in jobs.items():
        (tmp_path / "sweep" / job / ".hydra").mkdir(parents=True)
        if logger:
            (tmp_path / "sweep" / job / WANDB_ID_FILE).write_text("abc\n")
            (tmp_path / "sweep" / job / ".hydra" / "config.yaml").write_text(f"logger:\n  {logger}\n")
    WandbSweepHint().on_multirun_end(OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}}))
    assert sorted(capsys.readouterr().out.splitlines()) == sorted([
        "wandb: 2 runs of this sweep logged offline to wandb/; upload them with `wandb sync --sync-all` "
        "(logger=none turns W&B off)",
        f"wandb: 1 run of this sweep logged offline to {elsewhere}/wandb/; upload them with "
        f"`cd {elsewhere} && wandb sync --sync-all` (logger=none turns W&B off)"])
