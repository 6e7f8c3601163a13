"""Config composition: the keys users and scripts rely on (issue #2), built with hydra.compose."""

import pandas as pd
import pytest
import torch
from hydra.utils import instantiate
from omegaconf import OmegaConf

from gradnorm.balancers import EqualWeights, FixedWeights, GradNorm, Uncertainty
from gradnorm.config import ConfigError, check_config
from gradnorm.train import build, train
from tests.conftest import compose_config, tiny_toy


def test_default_is_the_toy_t2_with_gradnorm_at_the_papers_alpha():
    cfg = compose_config()
    assert cfg.dataset.num_tasks == 2 and list(cfg.dataset.sigmas) == [1.0, 100.0]
    assert cfg.alpha == 0.12 and cfg.balancer.alpha == 0.12
    balancer = instantiate(cfg.balancer, num_tasks=2)
    assert isinstance(balancer, GradNorm) and balancer.alpha == 0.12
    assert isinstance(balancer.optimizer, torch.optim.Adam)
    assert balancer.optimizer.defaults["lr"] == 0.025
    assert cfg.logger.mode == "offline"


def test_toy_t10_with_equal_weights_and_a_seed():
    cfg = compose_config("experiment=toy_t10", "balancer=equal", "seed=3")
    assert cfg.dataset.num_tasks == 10 and cfg.dataset.sigmas is None and cfg.seed == 3
    assert cfg.dataset.seed == 3
    assert isinstance(instantiate(cfg.balancer, num_tasks=10), EqualWeights)


@pytest.mark.parametrize("override, cls", [
    ("balancer=equal", EqualWeights), ("balancer=uncertainty", Uncertainty), ("balancer=gradnorm", GradNorm),
])
def test_every_balancer_builds_from_its_yaml(override, cls):
    assert isinstance(instantiate(compose_config(override).balancer, num_tasks=2), cls)


def test_top_level_alpha_and_fixed_weights_reach_the_balancers():
    assert instantiate(compose_config("alpha=1.5").balancer, num_tasks=2).alpha == 1.5
    fixed = instantiate(compose_config("balancer=fixed", "balancer.weights=[1,3]").balancer, num_tasks=2)
    assert isinstance(fixed, FixedWeights) and fixed.weights.tolist() == [1.0, 3.0]


def test_sigmas_trainer_and_logger_keys():
    cfg = compose_config("dataset.sigmas=[2,5]", "trainer.max_steps=7", "trainer.eval_every=2",
                         "trainer.device=cpu", "logger=none")
    assert list(cfg.dataset.sigmas) == [2, 5] and cfg.trainer.max_steps == 7
    assert cfg.logger._target_ == "gradnorm.loggers.Logger"


@pytest.mark.parametrize("overrides, message", [
    (["alpha=-1"], "alpha must be a number >= 0, got -1"),
    (["alpha=abc"], "alpha must be a number >= 0, got 'abc'"),
    (["trainer.max_steps=ten"], "trainer.max_steps must be a positive integer, got 'ten'"),
    (["trainer.batch_size=0"], "trainer.batch_size must be a positive integer, got 0"),
    (["trainer.device=tpu"], "trainer.device must be one of auto, cpu, cuda"),
    (["trainer.nan_policy=ignore"], "trainer.nan_policy must be one of fail, skip"),
    (["seed=abc"], "seed must be an integer"),
])
def test_check_config_names_the_bad_value(overrides, message):
    with pytest.raises(ConfigError, match=message):
        check_config(compose_config(*overrides))


@pytest.mark.parametrize("overrides, message", [
    (["balancer=fixed", "balancer.weights=[1,2,3]"], "balancer: weights must be a list of 2 positive numbers"),
    (["balancer=fixed", "balancer.weights=[1,-2]"], "balancer: weights must be a number > 0, got -2"),
    (["balancer=fixed"], "balancer"),
    (["dataset.sigmas=[1]"], "dataset: dataset.sigmas must be a list of 2 positive numbers"),
])
def test_constructor_errors_become_config_errors(overrides, message, tmp_path):
    with pytest.raises(ConfigError, match=message):
        train(tiny_toy(*overrides), tmp_path)


def test_build_wraps_instantiation_errors():
    with pytest.raises(ConfigError, match="balancer: alpha must be a number >= 0"):
        build(OmegaConf.create({"_target_": "gradnorm.balancers.GradNorm", "alpha": -2}), "balancer", num_tasks=2)


def test_every_balancer_sees_the_same_initial_network_and_data(tmp_path):
    """Paper §4: all compared models share initialisation and data seed."""
    def initial_test_losses(run_dir):  # the evaluation at step 0, before any update
        row = pd.read_csv(run_dir / "history.csv").iloc[0]
        return {k: row[k] for k in row.index if k.startswith("test_loss/")}

    initial = {}
    for name in ("equal", "uncertainty", "gradnorm"):
        train(tiny_toy(f"balancer={name}", "seed=4", "trainer.max_steps=1"), tmp_path / name)
        initial[name] = initial_test_losses(tmp_path / name)
    assert initial["equal"] == initial["uncertainty"] == initial["gradnorm"]
    train(tiny_toy("seed=5", "trainer.max_steps=1"), tmp_path / "other")
    assert initial_test_losses(tmp_path / "other") != initial["gradnorm"]


@pytest.mark.parametrize("optimiser", [[], ["trainer.optimizer._target_=torch.optim.SGD", "+trainer.optimizer.momentum=0.9"]],
                         ids=["adam", "sgd_momentum"])
def test_the_toys_multi_tensor_optimiser_step_changes_no_number(optimiser, tmp_path):
    """The toy experiments set ``trainer.optimizer.foreach`` for speed: every number of the history (losses,
    task weights) must be exactly those of the one-tensor-at-a-time update."""
    assert compose_config("experiment=toy_t2").trainer.optimizer.foreach is True
    assert compose_config("experiment=toy_t10").trainer.optimizer.foreach is True
    histories = {}
    for foreach in (True, False):
        cfg = tiny_toy("experiment=toy_t10", "balancer=gradnorm", "trainer.max_steps=25", "trainer.eval_every=5",
                       *optimiser, f"trainer.optimizer.foreach={foreach}")
        train(cfg, tmp_path / str(foreach))
        histories[foreach] = pd.read_csv(tmp_path / str(foreach) / "history.csv").drop(columns=["step_time_s"])
    assert histories[True].shape[0] == 26
    pd.testing.assert_frame_equal(histories[True], histories[False], check_exact=True)
