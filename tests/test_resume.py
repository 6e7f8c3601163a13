"""Checkpoint and resume: a run stopped (at max_steps, by SIGINT or by SIGTERM) and resumed ends
with exactly the weights, history, metrics and parameters of a run that was never stopped."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from cli_runs import RUN_PY, TINY, assert_same_run, error_lines, read_run, run_cli, tiny_config

from gradnorm.checkpoint import CHECKPOINT
from gradnorm.config import ConfigError
from gradnorm.train import train

SCHEDULER = "trainer.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:3,gamma:0.5}"


@pytest.mark.parametrize("balancer", ["gradnorm", "uncertainty"])
def test_run_resumed_after_max_steps_equals_one_run(tmp_path, balancer):
    common = [f"balancer={balancer}", SCHEDULER, "trainer.checkpoint_every=2"]
    train(tiny_config(*common, "trainer.max_steps=9"), tmp_path / "whole")
    first = train(tiny_config(*common, "trainer.max_steps=5"), tmp_path / "parts")
    assert first["status"] == "completed" and first["steps"] == 5
    resumed = tiny_config(*common, "trainer.max_steps=9", f"trainer.resume={tmp_path / 'parts'}")
    train(resumed, tmp_path / "unused")
    assert not (tmp_path / "unused").exists()  # a resumed run writes into the run it continues
    assert_same_run(tmp_path / "whole", tmp_path / "parts")


def test_resume_auto_starts_afresh_then_continues_its_own_checkpoint(tmp_path):
    common = ["trainer.resume=auto", "trainer.checkpoint_every=3"]
    assert train(tiny_config(*common, "trainer.max_steps=4"), tmp_path / "job")["steps"] == 4
    train(tiny_config(*common, "trainer.max_steps=7"), tmp_path / "job")  # e.g. a requeued cluster job
    train(tiny_config(*common, "trainer.max_steps=7"), tmp_path / "whole")
    assert_same_run(tmp_path / "whole", tmp_path / "job")


def test_resume_on_another_number_of_processes_is_refused(tmp_path):
    train(tiny_config("trainer.max_steps=2", "trainer.checkpoint_every=2"), tmp_path / "run")
    state = torch.load(tmp_path / "run" / CHECKPOINT, weights_only=True)
    torch.save({**state, "world_size": 2}, tmp_path / "run" / CHECKPOINT)
    with pytest.raises(ConfigError, match=r"cannot resume a run of 2 process\(es\) on 1"):
        train(tiny_config("trainer.max_steps=4", f"trainer.resume={tmp_path / 'run'}"), tmp_path / "unused")


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_writes_checkpoint_and_summary_then_resume_continues_exactly(tmp_path, sig):
    run_dir = tmp_path / "run"
    overrides = [*TINY, "trainer.checkpoint_every=1"]
    process = subprocess.Popen(
        [sys.executable, str(RUN_PY), *overrides, "trainer.max_steps=1000000", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 300  # generous: a busy shared machine starts Python slowly
        while not (run_dir / CHECKPOINT).exists():  # the loop is running: its first checkpoint is there
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.02)
        process.send_signal(sig)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()

    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    summary, history = read_run(run_dir)
    k = summary["steps"]
    assert summary["status"] == "interrupted"
    assert error_lines(stderr) == [f"interrupted: stopped by {sig.name} at step {k}; "
                                   f"resume with trainer.resume={run_dir}"]
    assert torch.load(run_dir / CHECKPOINT, weights_only=True)["step"] == k
    assert history["step"].tolist() == list(range(k))

    train(tiny_config(*overrides, f"trainer.max_steps={k + 3}", f"trainer.resume={run_dir}"), tmp_path / "unused")
    train(tiny_config(*overrides, f"trainer.max_steps={k + 3}"), tmp_path / "whole")
    assert_same_run(tmp_path / "whole", run_dir)


@pytest.mark.slow
def test_resume_by_folder_alone_continues_the_run_with_its_own_config(tmp_path):
    """``python run.py trainer.resume=RUN_DIR trainer.max_steps=N``: nothing else on the command line,
    the run's own overrides (a T=10 toy, seed 3, uncertainty) come from its folder."""
    own = [*TINY, "experiment=toy_t10", "seed=3", "balancer=uncertainty", "trainer.checkpoint_every=2"]
    run_dir = tmp_path / "run"
    first = run_cli([*own, "trainer.max_steps=4", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    resumed = run_cli([f"trainer.resume={run_dir}", "trainer.max_steps=7"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # no new run folder
    train(tiny_config(*own, "trainer.max_steps=7"), tmp_path / "whole")
    assert_same_run(tmp_path / "whole", run_dir)
    assert read_run(run_dir)[0]["config"]["seed"] == 3
    # resumed again (its overrides.yaml now records the first resume): still its own config
    again = run_cli([f"trainer.resume={run_dir}", "trainer.max_steps=9"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert read_run(run_dir)[0]["steps"] == 9


@pytest.mark.slow
def test_resume_by_folder_with_a_contradicting_override_is_refused(tmp_path):
    run_dir = tmp_path / "run"
    assert run_cli([*TINY, "trainer.max_steps=2", "trainer.checkpoint_every=2", f"hydra.run.dir={run_dir}"],
                   cwd=tmp_path).returncode == 0
    before = (run_dir / "summary.json").read_bytes()
    result = run_cli([f"trainer.resume={run_dir}", "seed=5"], cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert error_lines(result.stderr) == [
        "error: cannot resume with a different config: seed: 0 -> 5; "
        "only trainer.max_steps and settings that do not change training may differ"]
    assert (run_dir / "summary.json").read_bytes() == before


@pytest.mark.slow
def test_sweep_rerun_with_resume_auto_finishes_only_what_is_missing(tmp_path):
    sweep = ["-m", *TINY, "seed=0,1", "trainer.max_steps=3"]
    assert run_cli(sweep, cwd=tmp_path).returncode == 0
    (folder,) = (tmp_path / "multirun").iterdir()
    done, missing = sorted(p for p in folder.iterdir() if p.is_dir() and p.name != ".hydra")
    kept = {name: (done / name).read_bytes() for name in ("summary.json", "history.csv")}
    whole = (missing / "summary.json").read_text()
    (missing / "summary.json").unlink()  # e.g. a job killed before it finished
    (missing / "history.csv").unlink()
    again = run_cli([*sweep, "trainer.resume=auto"], cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert f"continuing the sweep in {folder}" in again.stdout
    assert list((tmp_path / "multirun").iterdir()) == [folder]
    assert {name: (done / name).read_bytes() for name in kept} == kept  # not retrained
    redone = read_run(missing)[0]
    assert redone["status"] == "completed"
    assert redone["metrics"] == json.loads(whole)["metrics"]
