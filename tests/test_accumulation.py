"""Gradient accumulation in the trainer (trainer.accumulate_steps=k): k micro-batches of batch_size per
update. For GradNorm, and every method whose statistics are linear in the samples or taken from the
summed per-task gradients, that is one step on the k× bigger batch; for FAMO and IMTL-G (at the
representation) each micro-batch takes its own weights (docs/library.md)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from cli_runs import read_run, tiny_config

from gradnorm.checkpoint import CHECKPOINT
from gradnorm.train import train

STEPS = ["trainer.max_steps=6", "trainer.eval_every=3", "trainer.checkpoint_every=6"]


@pytest.mark.parametrize("balancer", ["gradnorm", "uncertainty", "dwa", "pcgrad", "nash_mtl"])
def test_k_micro_batches_are_one_step_on_the_k_times_bigger_batch(tmp_path, balancer):
    extra = ["balancer.window=2"] if balancer == "dwa" else []
    train(tiny_config(*STEPS, f"balancer={balancer}", *extra, "trainer.batch_size=16"), tmp_path / "big")
    train(tiny_config(*STEPS, f"balancer={balancer}", *extra, "trainer.batch_size=8", "trainer.accumulate_steps=2"),
          tmp_path / "micro")
    (big, big_history), (micro, micro_history) = read_run(tmp_path / "big"), read_run(tmp_path / "micro")
    assert micro["status"] == "completed" and micro["steps"] == 6
    assert micro["weights"] == pytest.approx(big["weights"], rel=1e-5, abs=1e-7)
    assert micro["weights"] != pytest.approx([1.0, 1.0])  # the weights did move
    columns = [c for c in big_history.columns if c.startswith(("weight/", "train_loss/", "test_loss/"))]
    pd.testing.assert_frame_equal(micro_history[columns], big_history[columns], check_exact=False, rtol=1e-5,
                                  atol=1e-7)
    big_model = torch.load(tmp_path / "big" / CHECKPOINT, weights_only=True)["model"]
    micro_model = torch.load(tmp_path / "micro" / CHECKPOINT, weights_only=True)["model"]
    for name, value in big_model.items():
        torch.testing.assert_close(micro_model[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("balancer", ["famo", "imtl"])
def test_per_micro_batch_methods_record_the_mean_of_the_weights_they_applied(tmp_path, balancer):
    summary = train(tiny_config(*STEPS, f"balancer={balancer}", "trainer.batch_size=8", "trainer.accumulate_steps=2"),
                    tmp_path)
    history = read_run(tmp_path)[1]
    assert summary["status"] == "completed"
    weights = history[["weight/task_0", "weight/task_1"]].iloc[:-1]
    assert weights.notna().all().all() and (weights.sum(axis=1) - 1.0).abs().max() < 1e-5  # both sum to 1


def test_the_history_records_the_weights_applied_not_the_previous_ones(tmp_path):
    """FAMO computes its weights inside backward: at step 0 (ξ = 0, z uniform) it applies w_i ∝ 1/L_i(0),
    which the history must show (it showed the initial ones, [1, 1], one step late)."""
    train(tiny_config("balancer=famo", "trainer.max_steps=2", "trainer.eval_every=2"), tmp_path)
    first = read_run(tmp_path)[1].iloc[0]
    inverse = [1 / first["train_loss/task_0"], 1 / first["train_loss/task_1"]]
    expected = [v / sum(inverse) for v in inverse]
    assert [first["weight/task_0"], first["weight/task_1"]] == pytest.approx(expected, rel=1e-5)


def test_accumulate_steps_must_be_a_positive_integer(tmp_path):
    from gradnorm.checks import ConfigError

    with pytest.raises(ConfigError, match="trainer.accumulate_steps must be a positive integer, got 0"):
        train(tiny_config("trainer.accumulate_steps=0"), tmp_path)


def test_train_step_runs_k_micro_batches_and_one_update():
    from gradnorm.balancers import GradNorm
    from gradnorm.models import MLP
    from gradnorm.tasks import Regression
    from gradnorm.train import train_step

    torch.manual_seed(0)
    model = MLP(in_features=5, heads={"a": 3, "b": 3}, width=8, depth=2)
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[0]))
    balancer = GradNorm(2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    steps = []
    optimizer.register_step_post_hook(lambda *a: steps.append(1))
    x, targets = torch.randn(12, 5), {"a": torch.randn(12, 3), "b": torch.randn(12, 3)}
    row, bad = train_step(model, [Regression("a", 3), Regression("b", 3)], balancer, optimizer, x, targets,
                          model.last_shared_parameters(), accumulate_steps=3)
    assert not bad and seen == [4, 4, 4] and steps == [1] and int(balancer.num_updates) == 1
    assert row["train_loss/a"] > 0 and "gradnorm/grad_norm_0" in row
