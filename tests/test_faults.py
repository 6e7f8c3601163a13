"""Faults: NaN/Inf losses and parameters, failing jobs inside sweeps (basic and submitit launchers),
and atomic result files."""

from __future__ import annotations

import json
import math
import os
import stat

import pytest
import torch
from cli_runs import TINY, error_lines, read_run, run_cli, tiny_config

from gradnorm import io
from gradnorm.checkpoint import CHECKPOINT, load_checkpoint
from gradnorm.data.base import step_indices
from gradnorm.data.toy import ToyRegression
from gradnorm.train import train

POISONED_STEP = 3
#: SGD with a step of 1e38 × the gradient: the first update sends parameters past float32's range.
EXPLODING = ["trainer.optimizer._target_=torch.optim.SGD", "trainer.optimizer.lr=1e38"]


class PoisonedToy(ToyRegression):
    """The tiny toy with one NaN target of task_1: the training batch holding that sample has a NaN loss."""

    def __init__(self, poison_index: int, **kwargs):
        super().__init__(**kwargs)
        self.train_targets["task_1"][poison_index, 0] = math.nan


def poisoned(*overrides: str):
    """TINY's toy whose batch at step 3 (and no other before step 8, the next epoch) has a NaN loss."""
    index = int(step_indices(64, 8, seed=0, step=POISONED_STEP)[0])
    return tiny_config(f"dataset._target_={__name__}.PoisonedToy", f"+dataset.poison_index={index}",
                       "trainer.max_steps=6", *overrides)


def test_nan_loss_fails_naming_task_and_step_and_keeps_the_last_good_checkpoint(tmp_path):
    summary = train(poisoned("trainer.checkpoint_every=2"), tmp_path)
    assert summary["status"] == "failed"
    assert summary["error"].startswith(f"non-finite loss (task_1=nan) at step {POISONED_STEP}; "
                                       f"the last good checkpoint (step 2) is kept in {tmp_path / CHECKPOINT}")
    assert "trainer.nan_policy=skip" in summary["error"]
    saved, history = read_run(tmp_path)
    assert saved["status"] == "failed" and saved["steps"] == POISONED_STEP
    checkpoint = load_checkpoint(tmp_path / CHECKPOINT)
    assert checkpoint["step"] == 2 and all(torch.isfinite(v).all() for v in checkpoint["model"].values())
    assert history["step"].tolist() == [0, 1, 2, 3] and math.isnan(history["train_loss/task_1"].iloc[-1])


def test_nan_policy_skip_skips_exactly_that_step(tmp_path):
    summary = train(poisoned("trainer.nan_policy=skip"), tmp_path)
    assert summary["status"] == "completed" and summary["steps"] == 6
    _, history = read_run(tmp_path)
    assert history["skipped"].fillna(0).tolist() == [0, 0, 0, 1, 0, 0, 0]
    weights = history["weight/task_0"].tolist()  # row t: the weights used at step t
    assert weights[4] == weights[3] and len(set(weights[:4])) == 4  # no update at step 3 only
    assert math.isfinite(summary["metrics"]["task_normalized_loss"])


@pytest.mark.parametrize("policy", ["fail", "skip"])
def test_non_finite_parameters_are_never_checkpointed(tmp_path, policy):
    cfg = tiny_config(*EXPLODING, "trainer.max_steps=4", "trainer.checkpoint_every=1",
                      f"trainer.nan_policy={policy}")
    summary = train(cfg, tmp_path)
    assert summary["status"] == "failed" and summary["steps"] == 1
    assert summary["error"].startswith("non-finite network parameters or task weights after step 1; "
                                       "no checkpoint was written yet")
    assert not (tmp_path / CHECKPOINT).exists()


def test_nan_policy_skip_does_not_skip_forever_when_the_network_is_broken(tmp_path):
    cfg = tiny_config(*EXPLODING, "trainer.max_steps=4", "trainer.nan_policy=skip")
    summary = train(cfg, tmp_path)
    assert summary["status"] == "failed"
    assert "at step 1 and non-finite parameters, which skipping cannot mend" in summary["error"]


@pytest.mark.slow
def test_cli_reports_a_nan_run_in_one_line_and_exits_1(tmp_path):
    result = run_cli([*TINY, "dataset.sigmas=[1,1e30]", "trainer.max_steps=3", "hydra.run.dir=run"], cwd=tmp_path)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert error_lines(result.stderr) == [
        "error: non-finite loss (task_1=inf) at step 0; no checkpoint was written yet. Lower the learning "
        "rate, or set trainer.nan_policy=skip to skip such steps"]
    assert read_run(tmp_path / "run")[0]["status"] == "failed"


#: job folders named by job number: TINY's overrides would make names too long for the file system
SHORT_NAMES = "hydra.sweep.subdir=${hydra:job.num}"


def sweep_summaries(sweep_dir) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep_dir.glob("*/summary.json"))]


@pytest.mark.slow
def test_a_failing_job_does_not_stop_the_sweep(tmp_path):
    # Job 0 cannot draw a batch of 8 from 4 samples: an error inside the loop, not a config error.
    result = run_cli(["-m", *TINY, "dataset.num_train=4,64", "trainer.max_steps=2", "hydra.sweep.dir=sweep",
                      SHORT_NAMES], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    failed, completed = sweep_summaries(tmp_path / "sweep")
    assert failed["status"] == "failed"
    assert "batch of 8 samples is larger than the 4 training samples" in failed["error"]
    assert completed["status"] == "completed" and completed["steps"] == 2
    assert error_lines(result.stderr) == [f"error: {failed['error']}"] and "Traceback" not in result.stderr
    error_log = tmp_path / "sweep" / "0" / "error.log"
    assert error_log.read_text().startswith("Traceback")  # the details, for whoever debugs it


@pytest.mark.slow
def test_submitit_local_launcher_runs_a_sweep_of_two_process_jobs_with_a_failing_one(tmp_path):
    """The path a SLURM sweep takes (pickled jobs in their own processes, results collected), on this
    machine: hydra/launcher=local is submitit_local, hydra/launcher=slurm its SLURM twin. Each job has
    two tasks, which form one data-parallel run (as hydra.launcher.tasks_per_node=4 on 4 GPUs would)."""
    result = run_cli(["-m", "hydra/launcher=local", "hydra.launcher.tasks_per_node=2", *TINY, "alpha=-1,0.12",
                      "trainer.max_steps=2", "trainer.checkpoint_every=2", "hydra.sweep.dir=sweep", SHORT_NAMES],
                     cwd=tmp_path, timeout=300)
    assert result.returncode == 0, result.stderr
    failed, completed = sweep_summaries(tmp_path / "sweep")
    assert failed["status"] == "failed" and failed["error"] == "alpha must be a number >= 0, got -1"
    assert completed["status"] == "completed" and completed["steps"] == 2
    assert completed["config"]["alpha"] == 0.12
    assert torch.load(tmp_path / "sweep" / "1" / CHECKPOINT, weights_only=True)["world_size"] == 2
    assert len(list((tmp_path / "sweep" / ".submitit").glob("*/*_result.pkl"))) == 4  # 2 jobs × 2 tasks


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path):
    path = io.write_json(tmp_path / "summary.json", {"status": "completed"})
    mode = stat.S_IMODE(os.stat(path).st_mode)
    umask = os.umask(0)
    os.umask(umask)
    assert mode == 0o666 & ~umask  # readable by others as any file, not mkstemp's 0600

    def half_write(tmp):
        tmp.write_text('{"status": "compl')
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        io.atomic_write(path, half_write)
    assert json.loads(path.read_text()) == {"status": "completed"}
    assert [p.name for p in tmp_path.iterdir()] == ["summary.json"]  # no temp file left behind
