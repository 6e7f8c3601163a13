"""NYUv2 presets end to end: config composition, short runs on generated data (the bad-root error:
tests/test_bad_input.py)."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from gradnorm.cli import CONF_DIR
from gradnorm.data.fake_nyuv2 import write_fake_nyuv2
from gradnorm.report.tables import fmt_mean_std
from gradnorm.train import train

REPO = Path(__file__).resolve().parent.parent
METRICS = ["seg/miou", "seg/pix_acc", "seg/err", "depth/rmse", "depth/abs_err", "depth/rel_err", "normals/err",
           "normals/mean_angle", "normals/median_angle", "normals/within_11.25", "normals/within_22.5",
           "normals/within_30"]

pytestmark = pytest.mark.usefixtures("one_thread")



def _compose(overrides):
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="config", overrides=overrides)


@pytest.mark.parametrize("backbone", ["segnet", "resnet", "fcn"])
def test_presets_carry_the_papers_training_setup(backbone):
    cfg = _compose([f"experiment=nyuv2_{backbone}"])
    assert cfg.dataset._target_ == "gradnorm.data.NYUv2"
    assert cfg.model._target_.startswith("gradnorm.models.") and cfg.model.pretrained is False
    assert cfg.alpha == 1.5 and cfg.balancer._target_ == "gradnorm.balancers.GradNorm"
    t = cfg.trainer
    assert (t.max_steps, t.batch_size, t.optimizer.lr) == (20000, 24, 2e-5)
    assert t.optimizer._target_ == "torch.optim.Adam"
    assert (t.scheduler._target_, t.scheduler.step_size, t.scheduler.gamma) == (
        "torch.optim.lr_scheduler.StepLR", 6000, 0.2)


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory):
    return write_fake_nyuv2(tmp_path_factory.mktemp("nyuv2"), n_train=4, n_val=3, height=32, width=48)


def _short_run(fake_root, run_dir, extra):
    cfg = _compose(["experiment=nyuv2_resnet", f"dataset.root={fake_root}", "dataset.num_workers=0",
                    "trainer.max_steps=2", "trainer.batch_size=2", "trainer.eval_every=2", "trainer.eval_batch_size=2",
                    "trainer.progress=false", "trainer.device=cpu", "logger=none", *extra])
    return train(cfg, run_dir)


def test_multitask_run_reports_every_metric_and_delta_m(fake_root, tmp_path):
    summary = _short_run(fake_root, tmp_path, [
        "+dataset.single_task_baselines={depth/rmse: 2.0, seg/err: 90.0, normals/err: 0.5}"])
    assert summary["status"] == "completed" and summary["task_names"] == ["seg", "depth", "normals"]
    metrics = summary["metrics"]
    assert set(METRICS) <= set(metrics)
    expected_delta = 100 / 3 * sum(-(metrics[k] - b) / b for k, b in
                                   (("depth/rmse", 2.0), ("seg/err", 90.0), ("normals/err", 0.5)))
    assert metrics["delta_m"] == pytest.approx(expected_delta)
    history = pd.read_csv(tmp_path / "history.csv")
    assert list(history["step"]) == [0, 1, 2] and history["delta_m"].notna().sum() == 2
    assert json.loads((tmp_path / "summary.json").read_text())["metrics"]["delta_m"] == pytest.approx(expected_delta)


def test_single_task_run(fake_root, tmp_path):
    summary = _short_run(fake_root, tmp_path, ["tasks=[depth]", "balancer=equal"])
    assert summary["status"] == "completed" and summary["task_names"] == ["depth"]
    assert {k.split("/")[0] for k in summary["metrics"]} == {"test_loss", "depth", "task_normalized_loss"}


def test_mtan_preset_carries_the_segnet_mtan_protocol():
    cfg = _compose(["experiment=nyuv2_mtan"])
    assert cfg.model._target_ == "gradnorm.models.MTAN" and cfg.alpha == 1.5
    d = cfg.dataset
    assert (d.augmentation, list(d.scales), d.flip_prob) == (True, [1.0, 1.2, 1.5], 0.5)
    assert (d.image_normalization, d.depth_loss, d.metric_average, d.single_task_baselines) == (
        "none", "l1", "batches", "nash_mtl")
    t = cfg.trainer
    assert (t.max_steps, t.batch_size, t.eval_every, t.eval_batch_size, t.optimizer.lr, str(t.precision)) == (
        200 * 397, 2, 397, 2, 1e-4, "32")
    assert (t.scheduler._target_, t.scheduler.step_size, t.scheduler.gamma) == (
        "torch.optim.lr_scheduler.StepLR", 100 * 397, 0.5)


@pytest.mark.slow
def test_table1_mtan_experiment_end_to_end_on_generated_data(tmp_path):
    """experiments/table1_mtan.yaml at a tiny size: MTAN runs in the SegNet-MTAN protocol, then the Table 1
    report with the published rows under ours and our values the mean of the last evaluations."""
    root = write_fake_nyuv2(tmp_path / "nyuv2", n_train=8, n_val=4, height=32, width=48)
    result = subprocess.run(
        [sys.executable, "scripts/reproduce.py", "table1_mtan", "--sweeps", "methods", "balancer=equal,gradnorm",
         "seed=0", f"dataset.root={root}", "dataset.num_workers=0", "trainer.device=cpu", "trainer.max_steps=4",
         "trainer.eval_every=2", "trainer.checkpoint_every=0", "trainer.progress=false", "logger=none",
         "--runs-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "results" / "nyuv2_mtan")],
        cwd=REPO, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    summaries = sorted((tmp_path / "runs").rglob("summary.json"))
    assert len(summaries) == 2
    equal_dir = next(p.parent for p in summaries if json.loads(p.read_text())["config"]["balancer"]["_target_"]
                     .endswith("EqualWeights"))
    summary = json.loads((equal_dir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["task_setup"] == {
        "image_size": [32, 48], "train_samples": 8, "test_samples": 4}
    assert {"delta_m", "delta_m_nash_mtl", "delta_m_libmtl"} <= set(summary["metrics"])
    history = pd.read_csv(equal_dir / "history.csv")
    miou = history.loc[history["step"] > 0, "seg/miou"].dropna()
    assert list(history.loc[history["seg/miou"].notna(), "step"]) == [0, 2, 4]

    table = (tmp_path / "results" / "nyuv2_mtan" / "table1.md").read_text()
    section = table.split("### Beside the published SegNet-MTAN numbers (mtan)")[1]
    equal = next(line for line in section.splitlines() if line.startswith("| **Equal weights** |"))
    assert equal.startswith(f"| **Equal weights** | ours (mean of the last 10 evaluations) | "
                            f"{fmt_mean_std(100 * miou.mean(), math.nan, 1, digits=4)} |")
    assert "| ↳ GradNorm | Aligned-MTL Table 2 | 20.09 |" in section
    assert ("- `segnet_mtan_code`: resolution 288x384 (ours 32x48); epochs 200 (ours 1); seeds 3 (ours 1)"
            in section)
