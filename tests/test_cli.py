"""End-to-end runs of `python run.py` on tiny configs: the files a run writes (issue #2; a sweep of two
balancers: tests/test_progress.py)."""

import json

import pandas as pd
import pytest
from cli_runs import run_cli

TINY = ["logger=none", "trainer.max_steps=5", "trainer.eval_every=2", "dataset.num_train=200",
        "dataset.num_test=50", "trainer.batch_size=20"]


@pytest.mark.slow
def test_run_writes_summary_and_history(tmp_path):
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, "experiment=toy_t10", "balancer=gradnorm", "seed=3", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "5/5" in result.stderr  # the progress bar

    summary = json.loads((run_dir / "summary.json").read_text())
    names = [f"task_{i}" for i in range(10)]
    assert summary["status"] == "completed" and summary["task_names"] == names and summary["steps"] == 5
    assert len(summary["weights"]) == len(summary["mean_weights"]) == 10
    assert sum(summary["weights"]) == pytest.approx(10.0, rel=1e-5)
    assert {f"test_loss/{n}" for n in names} | {"task_normalized_loss"} <= set(summary["metrics"])
    assert summary["config"]["seed"] == 3 and summary["config"]["alpha"] == 0.12
    assert summary["wall_time_s"] > 0

    history = pd.read_csv(run_dir / "history.csv")
    assert history["step"].tolist() == [0, 1, 2, 3, 4, 5]
    for n in names:
        assert {f"weight/{n}", f"train_loss/{n}", f"test_loss/{n}"} <= set(history.columns)
    evaluated = history.dropna(subset=["task_normalized_loss"])["step"].tolist()
    assert evaluated == [0, 2, 4, 5]
    assert history.loc[0, "task_normalized_loss"] == pytest.approx(10.0)
    # The time average of the weights used for training (steps 0..4).
    means = history.loc[history.step < 5, [f"weight/{n}" for n in names]].mean()
    assert summary["mean_weights"] == pytest.approx(means.tolist(), rel=1e-6)
    assert summary["weights"] == pytest.approx(history.iloc[-1][[f"weight/{n}" for n in names]].tolist())


@pytest.mark.slow
def test_bad_group_option_is_one_line_without_traceback(tmp_path):
    result = run_cli(["balancer=gradnrom", f"hydra.run.dir={tmp_path / 'x'}"], cwd=tmp_path)
    assert result.returncode == 2
    lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, result.stderr
    assert "gradnrom" in lines[0] and "gradnorm" in lines[0] and "equal" in lines[0]
    assert not (tmp_path / "x").exists()


def test_wandb_offline_run_is_continued_by_a_resume(tmp_path, monkeypatch):
    """One W&B run per run folder: the first start saves its id, a resumed start reuses it."""
    import wandb

    from gradnorm.loggers import WANDB_ID_FILE, WandbLogger

    calls = []

    class FakeRun:
        def finish(self, exit_code=0):
            pass

    monkeypatch.setattr(wandb, "init", lambda **kwargs: calls.append(kwargs) or FakeRun())
    run_dir = tmp_path / "run"
    for _ in range(2):
        logger = WandbLogger(dir=str(tmp_path))
        logger.start({"seed": 0}, run_dir, name="run", resumable=True)
        logger.finish()
    saved = (run_dir / WANDB_ID_FILE).read_text().strip()
    assert [c["id"] for c in calls] == [saved, saved]
    assert [c["resume"] for c in calls] == [None, "allow"]
    assert calls[0]["mode"] == "offline"
    # Other runs (the report's) get a fresh W&B id and write nothing into their folder.
    WandbLogger(dir=str(tmp_path)).start({}, tmp_path / "report", name="report")
    assert calls[-1]["id"] is None and not (tmp_path / "report").exists()
