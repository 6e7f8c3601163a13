"""Every config key a user sets, with a bad value: one ``error:`` line that names the key, the value
and what is allowed (exit 2), never a traceback; and a failure during training leaves summary.json
with status "failed".

The keys come from conf/ (config.yaml, trainer/, dataset/toy.yaml, model/, balancer/, logger/). Most
cases go through :func:`gradnorm.train.train` on the composed config, which is what ``run.py`` calls
after Hydra composes (the command line prints the ConfigError's message as ``error: <message>``,
exit 2: tests/test_bad_input.py); a handful run the real command line.
"""

from __future__ import annotations

import json

import pytest
from cli_runs import TINY, run_cli

from gradnorm.cli import compose
from gradnorm.config import ConfigError
from gradnorm.train import train

#: (override(s), fragments the one error line must contain)
BAD_VALUES = [
    # top level (conf/config.yaml)
    (["seed=abc"], ["seed must be an integer", "'abc'"]),
    (["seed=1.5"], ["seed must be an integer", "1.5"]),
    (["alpha=-1"], ["alpha must be a number >= 0", "-1"]),
    (["alpha=inf"], ["alpha must be a number >= 0", "inf"]),
    (["alpha=-0.5"], ["alpha must be a number >= 0, got -0.5"]),
    (["alpha=abc"], ["alpha must be a number >= 0, got 'abc'"]),
    (["tasks=[task_5]"], ["tasks", "'task_5'", "task_0, task_1"]),
    (["tasks=[]"], ["tasks must be a non-empty list of task names", "task_0"]),
    (["tasks=task_0"], ["tasks must be a non-empty list of task names", "'task_0'"]),
    # trainer (conf/trainer/default.yaml)
    (["trainer.max_steps=0"], ["trainer.max_steps must be a positive integer, got 0"]),
    (["trainer.max_steps=abc"], ["trainer.max_steps must be a positive integer, got 'abc'"]),
    (["trainer.batch_size=0"], ["trainer.batch_size must be a positive integer, got 0"]),
    (["trainer.eval_every=-5"], ["trainer.eval_every must be a positive integer, got -5"]),
    (["trainer.eval_batch_size=0"], ["trainer.eval_batch_size must be a positive integer, got 0"]),
    (["trainer.log_every=0"], ["trainer.log_every must be a positive integer, got 0"]),
    (["trainer.checkpoint_every=-1"], ["trainer.checkpoint_every must be a non-negative integer, got -1"]),
    (["trainer.device=tpu"], ["trainer.device must be one of auto, cpu, cuda", "'tpu'"]),
    (["trainer.precision=8"], ["trainer.precision must be one of auto, 32, bf16, 16", "'8'"]),
    (["trainer.nan_policy=ignore"], ["trainer.nan_policy must be one of fail, skip", "'ignore'"]),
    (["trainer.channels_last=maybe"], ["trainer.channels_last must be one of auto, true, false", "'maybe'"]),
    (["trainer.cudnn_benchmark=maybe"], ["trainer.cudnn_benchmark must be true or false", "'maybe'"]),
    (["trainer.progress=maybe"], ["trainer.progress must be true or false", "'maybe'"]),
    (["trainer.ddp_backend=smoke"], ["trainer.ddp_backend must be one of null, nccl, gloo, mpi", "'smoke'"]),
    (["trainer.optimizer.lr=-1"], ["trainer.optimizer", "learning rate", "-1"]),
    (["trainer.optimizer._target_=torch.optim.Nope"], ["trainer.optimizer", "torch.optim.Nope"]),
    (["trainer.scheduler={_target_:torch.optim.lr_scheduler.Nope,_partial_:true}"], ["trainer.scheduler", "Nope"]),
    (["trainer.scheduler={_target_:torch.optim.lr_scheduler.StepLR,_partial_:true}"],
     ["trainer.scheduler", "step_size"]),
    (["trainer.resume=/no/such/run"], ["cannot resume: no run directory /no/such/run"]),
    # the toy data set (conf/dataset/toy.yaml)
    (["dataset.num_tasks=0"], ["dataset.num_tasks must be a positive integer, got 0"]),
    (["dataset.sigmas=[1]"], ["dataset.sigmas must be a list of 2 positive numbers"]),
    (["dataset.sigmas=[1,-3]"], ["dataset.sigmas must be a number > 0, got -3"]),
    (["dataset.input_dim=0"], ["dataset.input_dim must be a positive integer, got 0"]),
    (["dataset.output_dim=abc"], ["dataset.output_dim must be a positive integer, got 'abc'"]),
    (["dataset.num_train=0"], ["dataset.num_train must be a positive integer, got 0"]),
    (["dataset.num_test=-1"], ["dataset.num_test must be a positive integer, got -1"]),
    (["dataset.b_std=-1"], ["dataset.b_std must be a number >= 0, got -1"]),
    (["dataset.eps_std=abc"], ["dataset.eps_std must be a number >= 0, got 'abc'"]),
    (["dataset.input_norm=0"], ["dataset.input_norm must be a number > 0, got 0"]),
    (["dataset.seed=abc"], ["dataset.seed must be an integer, got 'abc'"]),
    (["dataset.sigmas=null", "dataset.sigma_std=0"], ["dataset.sigma_std must be a number > 0, got 0"]),
    (["dataset.sigmas=null", "dataset.sigma_min=-1"], ["dataset.sigma_min must be a number >= 0, got -1"]),
    (["dataset.sigmas=null", "dataset.sigma_seed=abc"], ["dataset.sigma_seed must be an integer, got 'abc'"]),
    (["dataset.standardize_inputs=maybe"], ["dataset.standardize_inputs must be true or false", "'maybe'"]),
    # the model (conf/model/)
    (["model.width=0"], ["model.width must be a positive integer, got 0"]),
    (["model.depth=abc"], ["model.depth must be a positive integer, got 'abc'"]),
    (["model=segnet"], ["model=segnet does not fit dataset=toy", "mlp"]),
    (["model=resnet"], ["model=resnet does not fit dataset=toy", "mlp"]),
    # balancers (conf/balancer/)
    (["balancer.every=0"], ["every must be a positive integer, got 0"]),
    (["balancer.norm_at=grads"], ["norm_at must be one of weights, shared, features, features_batch_sum; got 'grads'"]),
    (["balancer.optimizer.lr=-1"], ["balancer", "learning rate", "-1"]),
    (["balancer.initial_losses=[1]"], ["initial_losses needs 2 values, got 1"]),
    (["balancer=uncertainty", "balancer.optimizer.lr=-1"], ["balancer", "learning rate", "-1"]),
    (["balancer=fixed"], ["balancer", "weights", "required"]),
    (["balancer=fixed", "balancer.weights=[1,0]"], ["weights must be a number > 0, got 0"]),
    (["balancer=fixed", "balancer.weights=[1,-2]"], ["weights must be a number > 0, got -2"]),
    (["balancer=fixed", "balancer.weights=[1,2,3]"], ["weights must be a list of 2 positive numbers", "got 3"]),
    (["balancer=grid", "balancer.index=-1"], ["balancer.index must be a non-negative integer, got -1"]),
    (["balancer=grid", "balancer.high=-1"], ["balancer.high must be a number > 0, got -1"]),
    (["balancer=gradnorm_static"], ["balancer", "from_run", "required"]),
    (["balancer=gradnorm_static", "balancer.from_run=/no/such/run"], ["/no/such/run"]),
    # the logger (conf/logger/)
    (["logger=wandb", "logger.mode=loud"], ["logger.mode must be offline, online or disabled, got 'loud'"]),
]


def _tiny(overrides) -> list[str]:
    """TINY, less its MLP keys when the case picks another model (those keys are the MLP's)."""
    other_model = any(o.startswith("model=") for o in overrides)
    return [a for a in TINY if not (other_model and a.startswith("model."))]


def _id(case) -> str:
    return " ".join(case[0])


@pytest.mark.parametrize(("overrides", "fragments"), BAD_VALUES, ids=[_id(c) for c in BAD_VALUES])
def test_bad_value_is_one_config_error(tmp_path, one_thread, overrides, fragments):
    with pytest.raises(ConfigError) as caught:
        train(compose([*_tiny(overrides), "trainer.max_steps=2", *overrides]), tmp_path / "run")
    message = str(caught.value)
    assert "\n" not in message, message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert not (tmp_path / "run" / "summary.json").exists()


#: the real command line (exit 2, one line, no run folder left): one case for each way a bad value is
#: found, the ConfigErrors of train() (the rest of them above, at compose level: the command line
#: prints any ConfigError the same way) and the model check made before training
CLI_CASES = [
    (["tasks=[task_5]"], "tasks=[task_5]: unknown task 'task_5'"),
    (["model=segnet"], "model=segnet does not fit dataset=toy"),
]


@pytest.mark.slow
@pytest.mark.parametrize(("args", "fragment"), CLI_CASES, ids=[" ".join(c[0]) for c in CLI_CASES])
def test_bad_value_on_the_command_line(tmp_path, args, fragment):
    result = run_cli([*_tiny(args), *args], cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and fragment in lines[0], result.stderr
    assert list(tmp_path.iterdir()) == []  # no empty run folder left behind


@pytest.mark.slow
def test_a_failure_during_training_leaves_a_failed_summary(tmp_path):
    """alpha=1e9 overflows the weights' update a few steps in: status "failed", one error line, exit 1."""
    run_dir = tmp_path / "run"
    result = run_cli([*TINY, "alpha=1e9", "trainer.max_steps=20", f"hydra.run.dir={run_dir}"], cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "step" in lines[0], result.stderr
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["status"] == "failed"
    assert summary["error"] in lines[0]
    assert 0 < summary["steps"] < 20
