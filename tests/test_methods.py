"""The later methods (docs/methods.md) in the training loop: each runs from the configs on the toy, a
run resumed from its checkpoint ends exactly like one never stopped, and under DistributedDataParallel
on 2 Gloo processes every rank has the same weights and parameters as one process on the global batch."""

from __future__ import annotations

import functools
import os

import pytest
import torch
import torch.multiprocessing as mp
from cli_runs import read_run, tiny_config
from test_distributed import HEADS, LOCAL_BATCH, free_port, global_batches
from torch.nn.parallel import DistributedDataParallel

from gradnorm import distributed
from gradnorm.balancers import DWA, FAMO, MGDA, RLW, CAGrad, NashMTL, PCGrad
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
    assert_same_state(tmp_path / "whole", tmp_path / "parts")


def assert_same_state(expected_dir, got_dir) -> None:
    """Same history (bit for bit), summary and balancer state (as tests/test_resume.py; not every
    balancer has an ``_extra_state``)."""
    import pandas as pd

    from gradnorm.train import CHECKPOINT

    (expected, expected_history), (got, got_history) = read_run(expected_dir), read_run(got_dir)
    pd.testing.assert_frame_equal(got_history, expected_history, check_exact=True)
    for key in ("status", "weights", "mean_weights", "metrics", "steps"):
        assert got[key] == expected[key], key
    expected_state = torch.load(expected_dir / CHECKPOINT, weights_only=True)
    got_state = torch.load(got_dir / CHECKPOINT, weights_only=True)
    for part in ("model", "balancer"):
        for name, value in expected_state[part].items():
            if isinstance(value, torch.Tensor):
                assert torch.equal(got_state[part][name], value), (part, name)
    assert str(got_state["balancer"].get("_extra_state")) == str(expected_state["balancer"].get("_extra_state"))


def test_the_loop_passes_every_shared_parameter_to_the_balancers_that_need_them():
    net = MLP(4, {"a": 2, "b": 3}, width=5, depth=2)
    shared = net.shared_parameters()
    assert {id(p) for p in shared} | {id(p) for p in net.heads.parameters()} == {id(p) for p in net.parameters()}
    assert not {id(p) for p in shared} & {id(p) for p in net.heads.parameters()}
    assert PCGrad(2).needs == "shared" and MGDA(2, at="representation").needs == "last_shared"


SGD = functools.partial(torch.optim.SGD, lr=0.02)
DDP_VARIANTS = {
    # name: balancer factory (3 tasks, as HEADS)
    "pcgrad": lambda: PCGrad(3, seed=1),
    "mgda": lambda: MGDA(3),
    "mgda-ub": lambda: MGDA(3, at="representation"),
    "cagrad": lambda: CAGrad(3),
    "nash_mtl": lambda: NashMTL(3),
    "famo": lambda: FAMO(3, optimizer=SGD),
    "dwa": lambda: DWA(3, window=1),
    "rlw": lambda: RLW(3, seed=2),
}


def ddp_steps(variant: str, batches, rank: int, world: int):
    torch.manual_seed(1)
    net = MLP(6, HEADS, width=8, depth=3)
    model = DistributedDataParallel(net) if world > 1 else net
    balancer = DDP_VARIANTS[variant]()
    shared = net.shared_parameters() if balancer.needs == "shared" else net.last_shared_parameters()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    weights = []
    for x, targets in batches:
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH) if world > 1 else slice(None)
        predictions, features = model(x[rows])
        losses = torch.stack([((predictions[k] - targets[k][rows]) ** 2).mean() for k in HEADS])
        optimizer.zero_grad()
        balancer.backward(losses, shared, features=features)
        optimizer.step()
        balancer.step()
        weights.append(balancer.weights)
    return torch.stack(weights), [p.detach().clone() for p in net.parameters()]


def _worker(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    distributed.setup("cpu")
    batches = global_batches(world)
    torch.save({v: ddp_steps(v, batches, rank, world) for v in DDP_VARIANTS}, os.path.join(out_dir, f"rank{rank}.pt"))
    distributed.cleanup()


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp_methods")
    mp.spawn(_worker, args=(2, free_port(), str(out_dir)), nprocs=2, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(2)]


@pytest.mark.parametrize("variant", list(DDP_VARIANTS))
def test_same_weights_on_every_process_and_as_one_process(two_processes, variant):
    (weights0, params0), (weights1, params1) = (r[variant] for r in two_processes)
    assert torch.equal(weights0, weights1), "weights differ across ranks"
    for p0, p1 in zip(params0, params1):
        assert torch.equal(p0, p1), "parameters differ across ranks"
    single_weights, single_params = ddp_steps(variant, global_batches(2), rank=0, world=1)
    assert torch.allclose(weights0, single_weights, rtol=1e-4, atol=1e-5), (weights0, single_weights)
    for p_ddp, p_single in zip(params0, single_params):
        assert torch.allclose(p_ddp, p_single, rtol=1e-4, atol=1e-5)
    assert len({tuple(w.tolist()) for w in weights0}) > 1  # the weights did change
