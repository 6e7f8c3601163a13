"""GradNorm static (§5.2) reads a finished run's mean weights; grid points (§5.3) are fixed draws."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from gradnorm.balancers import GradNormStatic, GridWeights
from gradnorm.balancers.grid import grid_weights

ROOT = Path(__file__).resolve().parent.parent


def _finished_run(path: Path, status="completed", names=("task_0", "task_1"), mean_weights=(1.6, 0.4)):
    path.mkdir(parents=True, exist_ok=True)
    (path / "summary.json").write_text(json.dumps({
        "status": status, "task_names": list(names), "weights": [1.7, 0.3], "mean_weights": list(mean_weights),
        "metrics": {}, "steps": 10, "wall_time_s": 1.0, "config": {},
    }))
    return path


def test_static_uses_the_time_averaged_weights_of_the_run(tmp_path):
    run = _finished_run(tmp_path / "gn")
    balancer = GradNormStatic(2, from_run=str(run))
    assert balancer.weights.tolist() == pytest.approx([1.6, 0.4])
    assert balancer.source_task_names == ["task_0", "task_1"]
    # The network receives ∇ Σ w_i L_i with these fixed weights, and step() changes nothing.
    W = torch.tensor([1.0, 2.0], requires_grad=True)
    balancer.backward(torch.stack([(W**2).sum(), W.sum()]), [W])
    balancer.step()
    assert W.grad.tolist() == pytest.approx([1.6 * 2 + 0.4, 1.6 * 4 + 0.4])
    assert balancer.weights.tolist() == pytest.approx([1.6, 0.4])


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(status="failed"), "status is 'failed', need 'completed'"),
    (dict(names=("a", "b", "c"), mean_weights=(1.0, 1.0, 1.0)), "that run has 3 tasks"),
    (dict(mean_weights=(2.0, float("nan"))), "mean_weights must be positive"),
])
def test_static_refuses_unusable_runs(tmp_path, kwargs, message):
    run = _finished_run(tmp_path / "gn", **kwargs)
    with pytest.raises(ValueError, match=message):
        GradNormStatic(2, from_run=str(run))


def test_static_checks_task_names_and_missing_dirs(tmp_path):
    run = _finished_run(tmp_path / "gn")
    with pytest.raises(ValueError, match=r"that run's tasks are \['task_0', 'task_1'\]"):
        GradNormStatic(2, from_run=str(run), task_names=["depth", "seg"])
    with pytest.raises(ValueError, match="no summary.json"):
        GradNormStatic(2, from_run=str(tmp_path / "nowhere"))


def test_grid_weights_are_deterministic_per_index_and_sum_to_T():
    for T in (2, 3, 10):
        for index in range(5):
            w = grid_weights(T, index)
            assert w == grid_weights(T, index)
            assert sum(w) == pytest.approx(T)
            assert all(v > 0 for v in w)
    assert grid_weights(3, 0) != grid_weights(3, 1)
    assert grid_weights(3, 0) != grid_weights(3, 0, seed=1)
    assert GridWeights(3, index=4).weights.tolist() == pytest.approx(grid_weights(3, 4))


def test_grid_weights_are_the_renormalised_uniform_draws():
    # Same generator, same draw: w = T u / Σ u with u ~ U(low, high).
    u = 2.0 + 3.0 * torch.rand(4, generator=torch.Generator().manual_seed(7 * 1_000_003 + 2), dtype=torch.float64)
    assert grid_weights(4, 2, low=2.0, high=5.0, seed=7) == pytest.approx((4 * u / u.sum()).tolist())


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(index=-1), "balancer.index must be a non-negative integer, got -1"),
    (dict(index=0, low=1.0, high=0.5), "balancer.high must be a number > 1"),
    (dict(index=0, low=-1.0), "balancer.low must be a number >= 0"),
])
def test_grid_rejects_bad_values(kwargs, message):
    with pytest.raises(ValueError, match=message):
        grid_weights(2, **kwargs)


@pytest.mark.slow
def test_cli_reports_a_missing_from_run_in_one_line(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "run.py"), "balancer=gradnorm_static", "logger=none"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=900)
    assert list(tmp_path.iterdir()) == []  # a refused run leaves no run folder (and no outputs/ in the repository)
    assert result.returncode == 2
    assert result.stderr.strip() == "error: balancer: balancer.from_run is required but not set (e.g. balancer.from_run=...)"
