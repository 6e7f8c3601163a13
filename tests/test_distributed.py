"""Data parallelism on CPU (2 processes, Gloo): the task weights are identical on every rank at every
step and equal to those of one process on the same global batch; so are the network's parameters.

Two levels: the balancers (the paper's and the later methods) under DistributedDataParallel in a
hand-written loop (every variant, every step, every rank), and the real command line under
``torchrun`` against an in-process run."""

from __future__ import annotations

import functools
import os
import socket
import sys

import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp
from cli_runs import TIMING_COLUMNS, TINY, read_run, run_cli, tiny_config
from torch.nn.parallel import DistributedDataParallel

from gradnorm import distributed
from gradnorm.balancers import DWA, FAMO, MGDA, RLW, CAGrad, GradNorm, NashMTL, PCGrad, Uncertainty
from gradnorm.checkpoint import CHECKPOINT
from gradnorm.data import ToyRegression
from gradnorm.models import MLP
from gradnorm.tasks import Regression
from gradnorm.train import train, train_step

HEADS = {"a": 3, "b": 2, "c": 4}
SCALES = {"a": 1.0, "b": 10.0, "c": 0.3}
LOCAL_BATCH, STEPS = 8, 6
ADAM = functools.partial(torch.optim.Adam, lr=0.025)
SGD = functools.partial(torch.optim.SGD, lr=0.02)  # unlike Adam, SGD also sees a wrong scale of the norms
#: the paper's balancers: weights to 1e-5, parameters to 1e-6, different weights at every step
EXACT, EVERY_STEP = (0.0, 1e-5, 1e-6), STEPS
#: the later methods (float64 Gram matrices, solvers): to 1e-4 relative; weights that change at all
#: (DWA's first two steps are at equal weights)
LOOSE, CHANGED = (1e-4, 1e-5, 1e-5), 2
VARIANTS = {
    # name: (balancer factory, per-task features passed to backward?, (rtol, atol weights, atol params),
    #        how many distinct weight vectors the steps must show)
    "gradnorm-one-backward": (lambda: GradNorm(3, alpha=1.5, optimizer=ADAM), True, EXACT, EVERY_STEP),
    "gradnorm-one-backward-sgd": (lambda: GradNorm(3, alpha=1.5, optimizer=SGD), True, EXACT, EVERY_STEP),
    "gradnorm-batched-autograd-sgd": (lambda: GradNorm(3, alpha=1.5, optimizer=SGD), False, EXACT, EVERY_STEP),
    "gradnorm-norm-at-features-sgd": (lambda: GradNorm(3, alpha=0.5, optimizer=SGD, norm_at="features"), True,
                                      EXACT, EVERY_STEP),
    "uncertainty-sgd": (lambda: Uncertainty(3, optimizer=SGD), False, EXACT, EVERY_STEP),
    # the later methods (docs/methods.md): gradient-based ones at every shared parameter, MGDA-UB at z
    "pcgrad": (lambda: PCGrad(3, seed=1), True, LOOSE, CHANGED),
    "mgda": (lambda: MGDA(3), True, LOOSE, CHANGED),
    "mgda-ub": (lambda: MGDA(3, at="representation"), True, LOOSE, CHANGED),
    "cagrad": (lambda: CAGrad(3), True, LOOSE, CHANGED),
    "nash_mtl": (lambda: NashMTL(3), True, LOOSE, CHANGED),
    "famo": (lambda: FAMO(3, optimizer=SGD), True, LOOSE, CHANGED),
    "dwa": (lambda: DWA(3, window=1), True, LOOSE, CHANGED),
    "rlw": (lambda: RLW(3, seed=2), True, LOOSE, CHANGED),
    # gradient accumulation under DDP (train_step: 2 micro-batches per rank, the first under no_sync)
    # against one process on the whole global batch in one go
    "gradnorm-accumulate": (lambda: GradNorm(3, alpha=1.5, optimizer=SGD), True, EXACT, EVERY_STEP),
    "uncertainty-accumulate": (lambda: Uncertainty(3, optimizer=SGD), True, EXACT, EVERY_STEP),
    "pcgrad-accumulate": (lambda: PCGrad(3, seed=1), True, LOOSE, CHANGED),
}
TASKS = [Regression(name, size) for name, size in HEADS.items()]


def global_batches(world: int):
    generator = torch.Generator().manual_seed(0)
    batches = []
    for _ in range(STEPS):
        x = torch.randn(LOCAL_BATCH * world, 6, generator=generator)
        targets = {k: SCALES[k] * torch.tanh(x[:, :n] * (i + 1)) for i, (k, n) in enumerate(HEADS.items())}
        batches.append((x, targets))
    return batches


def train_steps(variant: str, batches, rank: int, world: int):
    """The training loop's step (forward, balancer.backward, optimiser step, balancer.step) on this
    rank's slice of every global batch; returns the weights after each step and the parameters."""
    make_balancer, pass_features, _, _ = VARIANTS[variant]
    torch.manual_seed(1)
    net = MLP(6, HEADS, width=8, depth=3)
    model = DistributedDataParallel(net) if world > 1 else net
    balancer = make_balancer()
    shared = net.shared_parameters() if balancer.needs == "shared" else net.last_shared_parameters()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    weights = []
    for x, targets in batches:
        rows = slice(rank * LOCAL_BATCH, (rank + 1) * LOCAL_BATCH) if world > 1 else slice(None)
        if variant.endswith("-accumulate"):  # the suite's train_step, in micro-batches under DDP
            train_step(model, TASKS, balancer, optimizer, x[rows], {k: v[rows] for k, v in targets.items()}, shared,
                       accumulate_steps=2 if world > 1 else 1)
            weights.append(balancer.weights)
            continue
        predictions, features = model(x[rows])
        losses = torch.stack([((predictions[k] - targets[k][rows]) ** 2).mean() for k in HEADS])
        optimizer.zero_grad()
        balancer.backward(losses, shared, features=features if pass_features else None)
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
    results = {variant: train_steps(variant, batches, rank, world) for variant in VARIANTS}
    torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    distributed.cleanup()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def two_process_results(tmp_path_factory):
    out_dir = tmp_path_factory.mktemp("ddp")
    mp.spawn(_worker, args=(2, free_port(), str(out_dir)), nprocs=2, join=True)
    return [torch.load(out_dir / f"rank{r}.pt") for r in range(2)]


@pytest.mark.slow
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_balancer_under_ddp_matches_one_process_on_the_global_batch(two_process_results, variant):
    (weights0, params0), (weights1, params1) = (r[variant] for r in two_process_results)
    assert torch.equal(weights0, weights1), "task weights differ across ranks"
    for p0, p1 in zip(params0, params1):
        assert torch.equal(p0, p1), "parameters differ across ranks"

    single_weights, single_params = train_steps(variant, global_batches(2), rank=0, world=1)
    _, _, (rtol, atol_weights, atol_params), distinct = VARIANTS[variant]
    assert torch.allclose(weights0, single_weights, rtol=rtol, atol=atol_weights), (weights0, single_weights)
    for p_ddp, p_single in zip(params0, single_params):
        assert torch.allclose(p_ddp, p_single, rtol=rtol, atol=atol_params)
    # The weights did move (otherwise the comparison proves little).
    assert len({tuple(w.tolist()) for w in weights0}) >= distinct
    if distinct == STEPS:
        assert (weights0 - 1).abs().max() > 0.02


@pytest.mark.slow
def test_torchrun_matches_one_process_with_twice_the_batch(tmp_path):
    """``torchrun --nproc_per_node=2 run.py``: the history (weights at every step, global train
    losses, test metrics reduced over ranks) and the final parameters equal those of one process
    with batch 2×8, and only rank 0 wrote files (nothing else appears in the working directory)."""
    steps = ["trainer.max_steps=6", "trainer.checkpoint_every=6", "trainer.eval_every=3"]
    workdir = tmp_path / "work"
    workdir.mkdir()
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    result = run_cli([*TINY, *steps, "hydra.run.dir=ddp"], cwd=workdir, launcher=launcher)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(p.name for p in workdir.iterdir()) == ["ddp"]

    single_dir = tmp_path / "single"
    train(tiny_config(*steps, "trainer.batch_size=16"), single_dir)
    (ddp_summary, ddp_history), (single_summary, single_history) = read_run(workdir / "ddp"), read_run(single_dir)
    assert ddp_summary["status"] == "completed"
    assert ddp_summary["weights"] == pytest.approx(single_summary["weights"], abs=1e-6)
    assert ddp_summary["metrics"] == pytest.approx(single_summary["metrics"], rel=1e-5)
    assert list(ddp_history.columns) == list(single_history.columns)
    pd.testing.assert_frame_equal(ddp_history.drop(columns=TIMING_COLUMNS), single_history.drop(columns=TIMING_COLUMNS),
                                  check_exact=False, rtol=1e-4, atol=1e-6)
    assert ddp_history["weight/task_0"].iloc[-1] != 1.0
    ddp_params = torch.load(workdir / "ddp" / CHECKPOINT, weights_only=True)["model"]
    single_params = torch.load(single_dir / CHECKPOINT, weights_only=True)["model"]
    for name, value in single_params.items():
        assert torch.allclose(ddp_params[name], value, rtol=0, atol=1e-5), name


def test_each_process_evaluates_its_own_share_of_the_test_set():
    data = ToyRegression(input_dim=3, output_dim=2, num_train=8, num_test=10)
    shares = [[x for x, _ in data.test_batches(3, rank=r, world_size=3)] for r in range(3)]
    assert all(shares)  # every process has work, even with fewer samples than batch × processes
    assert torch.equal(torch.cat([x for share in shares for x in share]), data.test_inputs)
