"""NYUv2 presets end to end: config composition, short runs on generated data (the bad-root error:
tests/test_bad_input.py)."""

import json
from pathlib import Path

import pandas as pd
import pytest
from hydra import compose, initialize_config_dir

from gradnorm.cli import CONF_DIR
from gradnorm.data.fake_nyuv2 import write_fake_nyuv2
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
