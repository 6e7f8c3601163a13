"""Checkpoint and resume: a run stopped (at max_steps, by SIGINT or by SIGTERM) and resumed ends
with exactly the weights, history, metrics and parameters of a run that was never stopped."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import pandas as pd
import pytest
import torch
from cli_runs import RUN_PY, TINY, error_lines, read_run, tiny_config

from gradnorm.checkpoint import CHECKPOINT
from gradnorm.config import ConfigError
from gradnorm.train import train

SCHEDULER = "trainer.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true,step_size:3,gamma:0.5}"


def assert_same_run(expected_dir, got_dir) -> None:
    """Same history (bit for bit), summary (but wall time and config) and checkpointed state."""
    (expected, expected_history), (got, got_history) = read_run(expected_dir), read_run(got_dir)
    pd.testing.assert_frame_equal(got_history, expected_history, check_exact=True)
    for key in ("status", "weights", "mean_weights", "metrics", "metrics_step", "steps"):
        assert got[key] == expected[key], key
    expected_state = torch.load(expected_dir / CHECKPOINT, weights_only=True)
    got_state = torch.load(got_dir / CHECKPOINT, weights_only=True)
    for part in ("model", "balancer"):
        for name, value in expected_state[part].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(got_state[part][name], value), (part, name)
    assert got_state["optimizer"]["state"][0]["exp_avg"].equal(expected_state["optimizer"]["state"][0]["exp_avg"])
    assert got_state["scheduler"] == expected_state["scheduler"]
    assert str(got_state["balancer"]["_extra_state"]) == str(expected_state["balancer"]["_extra_state"])


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


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_signal_writes_checkpoint_and_summary_then_resume_continues_exactly(tmp_path, sig):
    run_dir = tmp_path / "run"
    overrides = [*TINY, "trainer.checkpoint_every=1"]
    process = subprocess.Popen(
        [sys.executable, str(RUN_PY), *overrides, "trainer.max_steps=1000000", f"hydra.run.dir={run_dir}"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while not (run_dir / CHECKPOINT).exists():  # the loop is running: its first checkpoint is there
            assert process.poll() is None and time.monotonic() < deadline, process.communicate()
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
