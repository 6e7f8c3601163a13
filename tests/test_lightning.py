"""examples/lightning_gradnorm.py with lightning.Trainer on CPU: a few steps in one process, 16-mixed
and bf16-mixed through Lightning's precision plugins, and 2-process DDP (gloo) with the same weights
on both ranks."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

pytest.importorskip("lightning")
ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "lightning_gradnorm.py"


@pytest.fixture(scope="module")
def example():
    spec = importlib.util.spec_from_file_location("lightning_gradnorm", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def run(example, *args):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Lightning's own notices (no GPU, no logger, ...)
        return example.main(["--epochs", "1", *args])


def test_gradnorm_trains_in_a_lightning_module(example):
    result = run(example)
    assert result["steps"] == 8 and result["weight_scale"] == "sum=T"
    assert sum(result["weights"]) == pytest.approx(2.0)
    assert result["weights"][0] > 1.05  # the task on the small scale is up-weighted (its gradients are smaller)


@pytest.mark.parametrize("precision", ["16-mixed", "bf16-mixed"])
def test_lightning_precision_plugins_apply_to_the_balancers_backward(example, precision):
    full, mixed = run(example), run(example, "--precision", precision)
    assert mixed["steps"] == full["steps"]
    # the plugin's loss scale (16-mixed) is divided out: the weights follow float32's closely
    assert mixed["weights"] == pytest.approx(full["weights"], rel=0.05)


@pytest.mark.parametrize("balancer", ["famo", "pcgrad", "imtl"])
def test_any_balancer_by_name(example, balancer):
    result = run(example, "--balancer", balancer)
    assert result["steps"] == 8 and all(w == w for w in result["weights"])  # finite, trained


@pytest.mark.slow
def test_two_process_ddp_keeps_the_weights_identical_on_both_ranks(tmp_path):
    out = tmp_path / "ranks"
    result = subprocess.run([sys.executable, str(EXAMPLE), "--devices", "2", "--strategy", "ddp", "--epochs", "1",
                             "--out", str(out)], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    ranks = [json.loads((out / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0]["weights"] == ranks[1]["weights"] and ranks[0]["weights"] != [1.0, 1.0]
    assert ranks[0]["steps"] == ranks[1]["steps"] == 4  # each process has half of the 8 batches
