"""Helpers for tests that run the real command line or the training loop on a tiny toy.

Not a test module: ``test_*`` files import it (pytest puts ``tests/`` on ``sys.path``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import torch

from gradnorm.checkpoint import CHECKPOINT
from gradnorm.cli import compose

ROOT = Path(__file__).resolve().parent.parent
RUN_PY = ROOT / "run.py"

#: A toy small enough that a step takes about a millisecond: 10 inputs, 4 outputs per task,
#: 64 training points (8 global batches of 8 per epoch), width-16 trunk.
TINY = [
    "logger=none", "trainer.progress=false", "experiment=toy_t2",
    "dataset.input_dim=10", "dataset.output_dim=4", "dataset.num_train=64", "dataset.num_test=32",
    "model.width=16", "trainer.batch_size=8", "trainer.eval_every=2", "trainer.eval_batch_size=16",
]


def tiny_config(*overrides: str):
    """The composed job config of ``run.py`` with :data:`TINY` and ``overrides``."""
    return compose([*TINY, *overrides])


def run_cli(args: list[str], cwd: Path, timeout: float = 900, env: dict | None = None,
            launcher: list[str] | None = None) -> subprocess.CompletedProcess:
    """``python run.py ARGS`` (or ``launcher + [run.py] + ARGS``) in ``cwd``; its output captured."""
    command = (launcher or [sys.executable]) + [str(RUN_PY), *args]
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", "HYDRA_FULL_ERROR": "0", **(env or {})}
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=full_env)


def read_run(run_dir: Path) -> tuple[dict, pd.DataFrame]:
    """(summary.json, history.csv) of a run directory."""
    summary = json.loads((run_dir / "summary.json").read_text())
    return summary, pd.read_csv(run_dir / "history.csv")


#: history columns that measure time, not training: they differ between any two runs
TIMING_COLUMNS = ["step_time_s"]


def assert_same_run(expected_dir: Path, got_dir: Path) -> None:
    """Two runs ended alike: the same history (bit for bit, but the step timer), summary (but wall time
    and config) and checkpointed state (model, balancer with its ``_extra_state`` if any, optimiser,
    scheduler)."""
    (expected, expected_history), (got, got_history) = read_run(expected_dir), read_run(got_dir)
    pd.testing.assert_frame_equal(got_history.drop(columns=TIMING_COLUMNS, errors="ignore"),
                                  expected_history.drop(columns=TIMING_COLUMNS, errors="ignore"), check_exact=True)
    for key in ("status", "weights", "mean_weights", "metrics", "metrics_step", "steps"):
        assert got.get(key) == expected.get(key), key
    expected_state = torch.load(expected_dir / CHECKPOINT, weights_only=True)
    got_state = torch.load(got_dir / CHECKPOINT, weights_only=True)
    for part in ("model", "balancer"):
        for name, value in expected_state[part].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(got_state[part][name], value), (part, name)
    assert str(got_state["balancer"].get("_extra_state")) == str(expected_state["balancer"].get("_extra_state"))
    for index, state in expected_state["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(torch.as_tensor(got_state["optimizer"]["state"][index][name]), torch.as_tensor(value)), \
                ("optimizer", index, name)
    assert got_state.get("scheduler") == expected_state.get("scheduler")


def error_lines(stderr: str) -> list[str]:
    """The lines of ``stderr`` that carry a message (warnings of third-party libraries excluded)."""
    return [ln for ln in stderr.splitlines() if ln.startswith(("error:", "interrupted:"))]
