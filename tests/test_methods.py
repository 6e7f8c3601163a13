"""The later methods (docs/methods.md) in the training loop: each runs from the configs on the toy, a
run resumed from its checkpoint ends exactly like one never stopped, and under DistributedDataParallel
on 2 Gloo processes every rank has the same weights and parameters as one process on the global batch
(that last in tests/test_distributed.py, with the paper's balancers)."""

from __future__ import annotations

import pytest
from cli_runs import assert_same_run, read_run, tiny_config

from gradnorm.balancers import MGDA, PCGrad
from gradnorm.models import MLP
from gradnorm.train import train

LATER = ["dwa", "rlw", "famo", "pcgrad", "mgda", "cagrad", "imtl", "nash_mtl"]


@pytest.mark.parametrize("balancer", LATER)
def test_each_method_trains_from_its_config_and_resumes_exactly(tmp_path, balancer, one_thread):
    common = [f"balancer={balancer}", "dataset.sigmas=[1,10,100]", "dataset.num_tasks=3",
              "trainer.checkpoint_every=2", "balancer.window=2" if balancer == "dwa" else "seed=0"]
    whole = train(tiny_config(*common, "trainer.max_steps=7"), tmp_path / "whole")
    assert whole["status"] == "completed", whole.get("error")
    _, history = read_run(tmp_path / "whole")
    weights = history[[f"weight/task_{i}" for i in range(3)]].to_numpy()
    if balancer != "mgda":  # (MGDA's min-norm point may sit at a vertex on this tiny problem)
        assert len({tuple(w) for w in weights.round(6)}) > 1, "the weights never changed"
    train(tiny_config(*common, "trainer.max_steps=3"), tmp_path / "parts")
    train(tiny_config(*common, "trainer.max_steps=7", f"trainer.resume={tmp_path / 'parts'}"), tmp_path / "unused")
    assert_same_run(tmp_path / "whole", tmp_path / "parts")


def test_the_loop_passes_every_shared_parameter_to_the_balancers_that_need_them():
    net = MLP(4, {"a": 2, "b": 3}, width=5, depth=2)
    shared = net.shared_parameters()
    assert {id(p) for p in shared} | {id(p) for p in net.heads.parameters()} == {id(p) for p in net.parameters()}
    assert not {id(p) for p in shared} & {id(p) for p in net.heads.parameters()}
    assert PCGrad(2).needs == "shared" and MGDA(2, at="representation").needs == "last_shared"
