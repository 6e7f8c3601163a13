"""`make bench`: what each loss balancer costs per training step, as a ratio to equal weights.

The step is the one of ``gradnorm/train.py``: forward, task losses, the loop's read of the weights
and of the loss values (one sync), ``balancer.backward``, ``optimizer.step``, ``balancer.step``;
balancers and the network's optimiser are built from the configs in ``conf/``. In each case every
balancer trains the same network on the same fixed batch, in one process, interleaved: each round
runs a short block of steps per balancer (the order reversing from round to round), and a round's
ratio is a balancer's mean step time in its block over that of equal weights in the same round.
Medians and quartiles are taken over rounds, so the drifts of a busy machine largely cancel.

Step peak memory is measured afterwards in a second process (the settings it needs would slow the
timed process down): the most memory in use during a few steps minus what was in use just before
them (network, optimiser state, batch, the previous step's gradients). On a GPU,
``torch.cuda.max_memory_allocated``; on a CPU, the peak resident set (Linux ``VmHWM``, reset through
``/proc/self/clear_refs``, with glibc told to return freed blocks of 64 KiB or more to the system at
once, so that the resident set follows the live tensors).

Usage::

    python scripts/bench.py                                   # every case -> results/bench/README.md
    python scripts/bench.py --quick --cases mlp_t2,convnet    # a short look
    python scripts/bench.py --threads 1 --clock cpu           # on a machine shared with others
"""

from __future__ import annotations

import argparse
import ctypes
import datetime
import functools
import json
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from gradnorm import io
from gradnorm.balancers import GradNorm
from gradnorm.balancers.gradnorm import parameter_list, per_task_norms
from gradnorm.checks import first_line
from gradnorm.cli import compose
from gradnorm.config import CONF_DIR
from gradnorm.models import MLP, MultiTaskModel
from gradnorm.tasks import Regression, Task
from gradnorm.train import autocast_dtype, build, params_for, seed_everything, train_step

ROOT = Path(__file__).resolve().parent.parent
EVERY = 4  # the `every=k` row; blocks hold a multiple of k steps so each has the same share of updates
TOY_MODELS = {"mlp", "multilenet"}  # conf/model choices that are not dense (NYUv2) image backbones
#: the goals for GradNorm's step time over equal weights' (medians; issue #6)
TARGETS = {"mlp_t10": 1.30, "mlp_t2": 1.15, "conv_cpu": 1.05, "segnet_gpu": 1.10,
           # networks that are not MultiTaskModels, GradNorm given only W (issue #14)
           "plain_mlp_t2": 1.25, "plain_mlp_t10": 1.35, "plain_convnet": 1.30}


# -- the balancers compared (rows) ---------------------------------------------------------------
class NaiveGradNorm(GradNorm):
    """Reference row only: one ``autograd.grad`` per task through the heads, then the usual backward.

    The straightforward way to get Algorithm 1's G_i (``retain_graph``, T extra backward passes
    through the heads and the last shared layer); the same update as :class:`GradNorm`.
    """

    def backward(self, losses, shared_params=(), features=None, *, backward_fn=None):
        losses = self._check_losses(losses)
        w = self.task_weights.detach().to(device=losses.device, dtype=losses.dtype)
        shared_params = parameter_list(shared_params)  # W as GradNorm reads it
        per_loss = [torch.autograd.grad(loss, shared_params, retain_graph=True) for loss in losses]
        (w * losses).sum().backward()
        grads = [self._global_mean(torch.stack(g)) for g in zip(*per_loss)]
        return self._prepare_update((self._global_mean(losses.detach()), w * per_task_norms(grads)), w, scaled=False)


@dataclass(frozen=True)
class Row:
    label: str
    group: str  # conf/balancer/<group>.yaml
    overrides: tuple[str, ...] = ()
    use_features: bool = True  # pass the model's per-task features to backward(), as train.py does
    naive: bool = False


ROWS = (
    Row("equal", "equal"),
    Row("fixed", "fixed"),
    Row("uncertainty", "uncertainty"),
    Row("gradnorm", "gradnorm"),
    Row(f"gradnorm every={EVERY}", "gradnorm", (f"balancer.every={EVERY}",)),
    Row("gradnorm norm_at=features", "gradnorm", ("balancer.norm_at=features",)),
    Row("gradnorm, only W", "gradnorm", use_features=False),
    Row("gradnorm naive (reference)", "gradnorm", naive=True),
) + (
    # -- the later methods (docs/methods.md): one row each, in conf/balancer/<name>.yaml's defaults --
    tuple(Row(name, name) for name in ("dwa", "rlw", "famo", "pcgrad", "mgda", "cagrad", "imtl", "nash_mtl"))
)


def build_balancer(row: Row, num_tasks: int):
    """The balancer as training builds it: ``conf/balancer/<group>.yaml`` with the row's overrides."""
    overrides = [f"balancer={row.group}", *row.overrides]
    if row.group == "fixed":
        overrides += [f"balancer.weights=[{','.join(str(i + 1) for i in range(num_tasks))}]",
                      "balancer.normalize=true"]
    extra = {"_target_": f"{NaiveGradNorm.__module__}.NaiveGradNorm"} if row.naive else {}
    return build(balancer_config(tuple(overrides)), "balancer", num_tasks=num_tasks, **extra)


@functools.cache
def balancer_config(overrides: tuple[str, ...]):
    """The composed ``balancer`` node of ``overrides``, composed once (a Hydra compose takes ~0.3 s)."""
    return compose(list(overrides)).balancer


# -- the cases -----------------------------------------------------------------------------------
class Segmentation(Task):
    """Pixel-wise cross-entropy over NYUv2's 13 classes."""

    out_channels = 13

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return F.cross_entropy(pred, target)


class Normals(Task):
    """1 − cosine similarity of surface normals, averaged over pixels."""

    out_channels = 3

    def loss(self, pred: Tensor, target: Tensor) -> Tensor:
        return 1 - F.cosine_similarity(pred, target, dim=1).mean()


def random_target(task: Task, pred: Tensor) -> Tensor:
    if isinstance(task, Segmentation):
        return torch.randint(task.out_channels, (pred.shape[0], *pred.shape[2:]), device=pred.device)
    if isinstance(task, Normals):
        return F.normalize(torch.randn_like(pred, dtype=torch.float32), dim=1)
    return torch.randn_like(pred, dtype=torch.float32)


class ConvEncoderDecoder(MultiTaskModel):
    """A small SegNet, benched while conf/model has no image backbone (and on request).

    Three encoder stages (two 3×3 conv-BN-ReLU, then 2×2 max-pooling that keeps its indices),
    three decoder stages (max-unpooling with those indices, two 3×3 conv-BN-ReLU) and, per task, a
    3×3 conv-ReLU and a 1×1 conv. The last shared layer is the decoder's last conv, followed by
    BatchNorm and ReLU, as in SegNet (paper §5).
    """

    def __init__(self, in_channels: int, heads: dict[str, int], widths: tuple[int, ...] = (32, 64, 128)):
        super().__init__()

        def stage(cin, cmid, cout):
            return nn.Sequential(*(layer for a, b in ((cin, cmid), (cmid, cout)) for layer in (
                nn.Conv2d(a, b, 3, padding=1, bias=False), nn.BatchNorm2d(b), nn.ReLU(inplace=True))))

        self.encoder = nn.ModuleList(stage(cin, c, c) for cin, c in zip((in_channels, *widths[:-1]), widths))
        outs = (widths[0], *widths[:-1])
        self.decoder = nn.ModuleList(stage(c, c, cout) for c, cout in zip(widths[::-1], outs[::-1]))
        self.heads = nn.ModuleDict({name: nn.Sequential(
            nn.Conv2d(widths[0], widths[0], 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(widths[0], out, 1))
            for name, out in heads.items()})

    def shared(self, x: Tensor) -> Tensor:
        indices = []
        for stage in self.encoder:
            x, index = F.max_pool2d(stage(x), 2, return_indices=True)
            indices.append(index)
        for stage, index in zip(self.decoder, reversed(indices)):
            x = stage(F.max_unpool2d(x, index, 2))
        return x

    @property
    def last_shared_layer(self) -> nn.Module:
        return self.decoder[-1][-3]


@dataclass
class Case:
    name: str
    build_model: Callable[[], MultiTaskModel]
    tasks: list[Task]
    input_shape: tuple[int, ...]  # one example
    batch_size: int
    target: float | None  # the goal for GradNorm's ratio to equal weights
    steps: int  # per block; a multiple of EVERY
    rounds: int
    precision: torch.dtype | None = None
    images: bool = False
    plain: Callable[[nn.Module], object] | None = None  # a plain network: W from the module (see plain_case)
    rows: tuple[Row, ...] = ROWS
    results: dict = field(default_factory=dict)
    error: str | None = None


def image_backbones() -> list[str]:
    """Every image backbone of conf/model, or the bench's own small SegNet while there is none."""
    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml") if p.stem not in TOY_MODELS) or ["convnet"]


def make_case(name: str, device: torch.device, args) -> Case:
    quick, gpu = args.quick, device.type == "cuda"
    if name in PLAIN_CASES or name in OPTIONAL_CASES:
        return plain_case(name, args)
    if name in ("mlp_t2", "mlp_t10"):
        # The toy (docs/paper.md §4): 250 -> 4 ReLU layers of 100 -> one affine head of 100 per task.
        tasks = [Regression(f"task{i}", 100) for i in range(2 if name == "mlp_t2" else 10)]
        return Case(name, lambda: MLP(250, {t.name: 100 for t in tasks}), tasks, (250,), 100, TARGETS[name],
                    steps=2 * EVERY if quick else 5 * EVERY, rounds=args.rounds or (5 if quick else 40))
    tasks = [Segmentation("seg"), Regression("depth", 1), Normals("normal")]  # NYUv2's three tasks
    heads = {t.name: t.out_channels for t in tasks}
    if name == "convnet":
        builder = lambda: ConvEncoderDecoder(3, heads)  # noqa: E731
    else:
        builder = lambda: build(compose([f"model={name}"]).model, "model", in_channels=3, heads=heads)  # noqa: E731
    target = (TARGETS["segnet_gpu"] if name == "segnet" else None) if gpu else TARGETS["conv_cpu"]
    return Case(name, builder, tasks, (3, *args.size), args.batch, target,
                steps=EVERY if quick or not gpu else 2 * EVERY, rounds=args.rounds or (3 if quick else 10),
                precision=autocast_dtype("bf16", device) if gpu else None, images=True)


# -- plain networks, GradNorm given only W (issue #14) -------------------------------------------
PLAIN_ROWS = tuple(row for row in ROWS if row.label in ("equal", "gradnorm, only W", "gradnorm naive (reference)"))


class PlainMLP(nn.Module):
    """The toy's shape (250 -> 4 ReLU layers of 100 -> an affine head of 100 per task) as any
    ``nn.Module``: it returns the heads' outputs only, and W is its last trunk Linear."""

    def __init__(self, names: list[str]):
        super().__init__()
        sizes = (250, 100, 100, 100, 100)
        self.trunk = nn.Sequential(*(m for a, b in zip(sizes, sizes[1:]) for m in (nn.Linear(a, b), nn.ReLU())))
        self.heads = nn.ModuleDict({name: nn.Linear(100, 100) for name in names})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.trunk(x)
        return {name: head(z) for name, head in self.heads.items()}


class PlainConvEncoderDecoder(ConvEncoderDecoder):
    """The bench's small SegNet as any ``nn.Module``: the heads read z directly, no per-task views."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.shared(x)
        return {name: head(z) for name, head in self.heads.items()}


class PlainResNet18(nn.Module):
    """torchvision's ResNet-18 up to layer4 as a trunk, a 1×1 conv head per task, upsampled to the
    input; W is ``layer4[-1].conv2`` (followed by BatchNorm, the residual sum and ReLU)."""

    def __init__(self, heads: dict[str, int]):
        super().__init__()
        import torchvision

        net = torchvision.models.resnet18(weights=None)
        self.trunk = nn.Sequential(net.conv1, net.bn1, net.relu, net.maxpool, net.layer1, net.layer2,
                                   net.layer3, net.layer4)
        self.heads = nn.ModuleDict({name: nn.Conv2d(512, out, 1) for name, out in heads.items()})

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        z = self.trunk(x)
        return {name: F.interpolate(head(z), size=x.shape[2:], mode="bilinear", align_corners=False)
                for name, head in self.heads.items()}


PLAIN_CASES = ("plain_mlp_t2", "plain_mlp_t10", "plain_convnet", "plain_resnet18", "plain_resnet18_layer4")
#: on request only (--cases): the toy-shaped plain MLP under torch.compile (compiling takes ~30 s)
OPTIONAL_CASES = ("compiled_mlp_t2",)


def plain_case(name: str, args) -> Case:
    """A network that is not a MultiTaskModel; ``balancer.backward(losses, W)`` with W a module."""
    quick = args.quick
    if name == "compiled_mlp_t2":
        tasks = [Regression(f"task{i}", 100) for i in range(2)]
        return Case(name, lambda: torch.compile(PlainMLP([t.name for t in tasks])), tasks, (250,), 100, None,
                    steps=2 * EVERY if quick else 5 * EVERY, rounds=args.rounds or (5 if quick else 20),
                    plain=lambda m: m.trunk[-2], rows=PLAIN_ROWS)
    if name.startswith("plain_mlp"):
        tasks = [Regression(f"task{i}", 100) for i in range(2 if name == "plain_mlp_t2" else 10)]
        return Case(name, lambda: PlainMLP([t.name for t in tasks]), tasks, (250,), 100, TARGETS[name],
                    steps=2 * EVERY if quick else 5 * EVERY, rounds=args.rounds or (5 if quick else 40),
                    plain=lambda m: m.trunk[-2], rows=PLAIN_ROWS)
    if name == "plain_convnet":
        tasks = [Segmentation("seg"), Regression("depth", 1), Normals("normal")]
        return Case(name, lambda: PlainConvEncoderDecoder(3, {t.name: t.out_channels for t in tasks}), tasks,
                    (3, *args.size), args.batch, TARGETS[name], steps=EVERY, rounds=args.rounds or (3 if quick else 10),
                    images=True, plain=lambda m: m.last_shared_layer, rows=PLAIN_ROWS)
    tasks = [Segmentation("seg"), Regression("depth", 1)]
    get_w = (lambda m: m.trunk[7]) if name == "plain_resnet18_layer4" else (lambda m: m.trunk[7][-1].conv2)
    return Case(name, lambda: PlainResNet18({t.name: t.out_channels for t in tasks}), tasks, (3, *args.size),
                args.batch, None, steps=EVERY, rounds=args.rounds or (3 if quick else 10), images=True,
                plain=get_w, rows=PLAIN_ROWS)


# -- one training step: gradnorm/train.py's own --------------------------------------------
@dataclass
class Setup:
    model: MultiTaskModel
    optimizer: torch.optim.Optimizer
    inputs: Tensor
    targets: dict[str, Tensor]
    case: Case
    device: torch.device
    shared_params: object = None  # a plain network's W (a module), else None


def prepare(case: Case, device: torch.device) -> Setup:
    seed_everything(0)
    model = case.build_model()
    channels_last = case.images and device.type == "cuda"  # as trainer.channels_last=auto
    model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    model.train()
    optimizer = build(compose([]).trainer.optimizer, "trainer.optimizer")(model.parameters())
    inputs = torch.randn(case.batch_size, *case.input_shape, device=device)
    if channels_last:
        inputs = inputs.contiguous(memory_format=torch.channels_last)
    with torch.no_grad(), torch.autocast(device.type, dtype=case.precision, enabled=case.precision is not None):
        predictions = model(inputs) if case.plain else model(inputs)[0]
    targets = {t.name: random_target(t, predictions[t.name]) for t in case.tasks}
    shared = case.plain(model) if case.plain else None
    return Setup(model, optimizer, inputs, targets, case, device, shared)


def step(setup: Setup, balancer, use_features: bool) -> None:
    """One step of gradnorm/train.py (:func:`gradnorm.train.train_step`) on the case's fixed batch; a plain
    network (not a MultiTaskModel, as in a user's own loop) takes the same step with GradNorm given W only."""
    case = setup.case
    if not case.plain:
        train_step(setup.model, case.tasks, balancer, setup.optimizer, setup.inputs, setup.targets,
                   params_for(balancer, setup.model), precision=case.precision, use_features=use_features)
        return
    with torch.autocast(setup.device.type, dtype=case.precision, enabled=case.precision is not None):
        predictions = setup.model(setup.inputs)
        losses = torch.stack([t.loss(predictions[t.name], setup.targets[t.name]).float() for t in case.tasks])
    losses.detach().tolist()  # the loop reads the loss values for its history (a sync on a GPU)
    setup.optimizer.zero_grad(set_to_none=True)
    balancer.backward(losses, setup.shared_params)
    setup.optimizer.step()
    balancer.step()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure_time(case: Case, device: torch.device, warmup: int, clock: Callable[[], float]) -> None:
    """Fill ``case.results[label]`` with step times, ratios to equal weights and images/s."""
    setup = prepare(case, device)
    rows = case.rows
    balancers = [build_balancer(row, len(case.tasks)).to(device) for row in rows]

    def block(i: int, steps: int) -> float:
        _sync(device)
        start = clock()
        for _ in range(steps):
            step(setup, balancers[i], rows[i].use_features)
        _sync(device)
        return (clock() - start) / steps

    for i in range(len(rows) if warmup else 0):  # --warmup 0: none (a block of 0 steps has no time per step)
        block(i, warmup)
    times = np.zeros((case.rounds, len(rows)))
    for r in range(case.rounds):
        for i in (range(len(rows)) if r % 2 == 0 else reversed(range(len(rows)))):
            times[r, i] = block(i, case.steps)
    ratios = times / times[:, :1]
    for i, row in enumerate(rows):
        case.results[row.label] = {
            "step_ms": float(np.median(times[:, i]) * 1e3),
            "step_ms_quartiles": [float(q) * 1e3 for q in np.percentile(times[:, i], [25, 75])],
            "ratio": float(np.median(ratios[:, i])),
            "ratio_quartiles": [float(q) for q in np.percentile(ratios[:, i], [25, 75])],
            "images_per_s": float(case.batch_size / np.median(times[:, i])) if case.images else None,
        }


# -- step peak memory (in a second process) -------------------------------------------------------
def memory_method(device: torch.device) -> str | None:
    if device.type == "cuda":
        return "torch.cuda.max_memory_allocated"
    try:
        Path("/proc/self/clear_refs").write_text("5")
        _proc_status_bytes("VmHWM")
    except (OSError, KeyError):
        return None
    return "peak resident set (Linux VmHWM)"


def measure_memory(case: Case, device: torch.device) -> dict[str, float]:
    """MiB per row: the peak during EVERY steps minus the memory in use before them."""
    setup = prepare(case, device)
    peaks = {}
    for row in case.rows:
        balancer = build_balancer(row, len(case.tasks)).to(device)
        for _ in range(EVERY):  # optimiser state, caches
            step(setup, balancer, row.use_features)
        _sync(device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        else:
            Path("/proc/self/clear_refs").write_text("5")  # peak resident set := current
            before = _proc_status_bytes("VmRSS")
        for _ in range(EVERY):
            step(setup, balancer, row.use_features)
        _sync(device)
        peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else _proc_status_bytes("VmHWM")
        peaks[row.label] = max(0.0, (peak - before) / 2**20)
    return peaks


def _proc_status_bytes(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    raise KeyError(key)


def _return_freed_memory_at_once() -> None:
    """glibc: serve blocks of 64 KiB or more by mmap, so that freeing them shrinks the resident set."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 64 * 1024)  # M_MMAP_THRESHOLD (fixed: it no longer adapts upwards)
        libc.mallopt(-1, 128 * 1024)  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def memory_in_subprocess(names: list[str], args) -> tuple[dict, str | None]:
    """Run this script with --memory-only on the same cases; its JSON, or {} and why not."""
    command = [sys.executable, str(Path(__file__).resolve()), "--memory-only", "--cases", ",".join(names),
               "--device", args.device, "--size", "x".join(map(str, args.size)), "--batch", str(args.batch)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    if args.balancers:
        command += ["--balancers", ",".join(args.balancers)]
    # The same gradnorm as this process (the checkout's, not whichever one is installed).
    path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
    done = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=dict(os.environ, PYTHONPATH=path))
    if done.returncode != 0:
        lines = done.stderr.strip().splitlines()
        return {}, f"the memory process failed: {lines[-1] if lines else done.returncode}"
    return json.loads(done.stdout), None


# -- report --------------------------------------------------------------------------------------
def machine_info(device: torch.device) -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        "commit": _git("rev-parse", "--short", "HEAD"),
        "uncommitted_changes": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "load_before": os.getloadavg()[0],
    }


def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""


def render(cases: list[Case], info: dict, args, command: str) -> str:
    lines = ["| case | balancer | step ms (median) | × equal (median) | × equal p25–p75 | images/s "
             "| step peak MiB | target |", "|" + "---|" * 8]
    goals = []
    for case in cases:
        if case.error:
            lines.append(f"| {case.name} | failed: {case.error} | | | | | | |")
            continue
        for label, r in case.results.items():
            target = ""
            if label == ("gradnorm, only W" if case.plain else "gradnorm") and case.target is not None:
                target = f"≤ {case.target:.2f}: {'met' if r['ratio'] <= case.target else 'missed'}"
                goals.append(f"{case.name} {r['ratio']:.3f} ({target})")
            images = f"{r['images_per_s']:.1f}" if r["images_per_s"] is not None else ""
            peak = r.get("step_peak_mib")
            q25, q75 = r["ratio_quartiles"]
            lines.append(f"| {case.name} | {label} | {r['step_ms']:.2f} | {r['ratio']:.3f} | {q25:.3f}–{q75:.3f} "
                         f"| {images} | {'n/a' if peak is None else f'{peak:.1f}'} | {target} |")
    measured = [c for c in cases if not c.error]
    noise = ", ".join(f"{c.name} ±{50 * np.subtract(*c.results['equal']['step_ms_quartiles'][::-1]) / c.results['equal']['step_ms']:.1f}%"
                      for c in measured)
    setup = "; ".join(f"{c.name}: batch {c.batch_size} of {'×'.join(map(str, c.input_shape))}"
                      f"{', bf16 autocast' if c.precision is not None else ''}, {c.rounds} rounds × {c.steps} steps"
                      for c in cases)
    memory = info["memory_method"] or ("not measured (--no-memory)" if args.no_memory else "unavailable")
    if info.get("memory_error"):
        memory += f" ({info['memory_error']})"
    return f"""# Benchmark: the cost of loss balancing per training step

Written by `scripts/bench.py` (`make bench`); the method and the history are in docs/performance.md.

Command: `{command}`

| | |
|---|---|
| date (UTC) | {info['date_utc']} |
| machine | {info['platform']}; {info['cpu']}; {info['cpu_count']} logical CPUs; load average {info['load_before']:.2f} before, {info['load_after']:.2f} after |
| device | {info['device']} |
| torch | {info['torch']}, {info['threads']} intra-op threads; clock: {args.clock} |
| commit | {info['commit']}{' (with uncommitted changes)' if info['uncommitted_changes'] else ''} |
| setup | {setup}; {args.warmup} warm-up steps per balancer |
| step peak memory | {memory} |

A step is gradnorm/train.py's: forward, losses, balancer.backward, optimizer.step, balancer.step.
"× equal": per round, a balancer's mean step time over that of equal weights in the same round (the
balancers interleaved), then the median and quartiles over rounds. "step peak MiB": the most memory
in use during {EVERY} steps minus the memory in use just before them, measured in a second process.
Noise: the quartile half-range of equal weights' own step time across rounds was {noise or 'n/a'}.

GradNorm against its targets: {'; '.join(goals) or 'n/a'}.

{chr(10).join(lines)}
"""


# -- command line --------------------------------------------------------------------------------
def _parse_size(text: str) -> tuple[int, int]:
    try:
        height, width = (int(v) for v in text.lower().split("x"))
        if height < 8 or width < 8:
            raise ValueError
    except ValueError:
        raise SystemExit(f"error: --size must be HEIGHTxWIDTH, both at least 8 (e.g. 64x96), got {text!r}") from None
    return height, width


def _parse_args(argv: list[str] | None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--cases", default="all", help="comma-separated, or all (default): mlp_t2, mlp_t10, every\n"
                        "registered image backbone (convnet, the bench's small SegNet, while there is none)\n"
                        f"and the plain networks given only W ({', '.join(PLAIN_CASES)}); on request: {', '.join(OPTIONAL_CASES)}")
    parser.add_argument("--balancers", default="all", help="the rows of these balancers (conf/balancer names, comma-\n"
                        "separated, e.g. gradnorm,pcgrad), or all (default); equal weights, the reference of\n"
                        "every ratio, is always measured")
    parser.add_argument("--quick", action="store_true", help="a few rounds: a short look, not a measurement")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"))
    parser.add_argument("--size", default=None, help="image HEIGHTxWIDTH (default: 288x384 on a GPU, 64x96 on a CPU)")
    parser.add_argument("--batch", type=int, default=None, help="images per batch (default: 8 on a GPU, 2 on a CPU)")
    parser.add_argument("--rounds", type=int, default=None, help="rounds per case (default: 40 for the toy, 10 for images)")
    parser.add_argument("--warmup", type=int, default=None, help="warm-up steps per balancer (default 3, 1 with --quick)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's choice)")
    parser.add_argument("--clock", default="wall", choices=("wall", "cpu"),
                        help="wall: elapsed time (default); cpu: this process's CPU time, which leaves out the\n"
                             "time other processes hold the cores (CPU only; use it with --threads 1)")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench"), help="folder for README.md and bench.json")
    parser.add_argument("--no-memory", action="store_true",
                        help="no step peak memory (on a CPU its process, which frees memory at once, takes longest)")
    parser.add_argument("--memory-only", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)

    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA device is available; use --device cpu or auto")
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    gpu = args.device == "cuda"
    if gpu and args.clock == "cpu":
        raise SystemExit("error: --clock cpu cannot time GPU work; use --clock wall or --device cpu")
    args.size = _parse_size(args.size or ("288x384" if gpu else "64x96"))
    args.batch = args.batch if args.batch is not None else (8 if gpu else 2)
    args.warmup = args.warmup if args.warmup is not None else (1 if args.quick else 3)
    for name in ("batch", "rounds", "threads"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise SystemExit(f"error: --{name} must be at least 1, got {value}")
    if args.warmup < 0:
        raise SystemExit(f"error: --warmup must be at least 0, got {args.warmup}")
    default = ["mlp_t2", "mlp_t10", *image_backbones(), *PLAIN_CASES]
    available = default + ["convnet"] * ("convnet" not in default) + list(OPTIONAL_CASES)
    args.names = default if args.cases == "all" else [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [n for n in args.names if n not in available] or ([] if args.names else [args.cases])
    if unknown:
        raise SystemExit(f"error: unknown case {unknown[0]!r}; choose from {', '.join(available)} (comma-separated) or all")
    groups = list(dict.fromkeys(row.group for row in ROWS))
    given = args.balancers
    asked = [b.strip() for b in given.split(",") if b.strip()]
    args.balancers = None if given == "all" else list(dict.fromkeys(["equal", *asked]))
    unknown = [b for b in args.balancers or [] if b not in groups] or ([] if asked else [given])
    if unknown:
        raise SystemExit(f"error: unknown balancer {unknown[0]!r}; choose from {', '.join(groups)} (comma-separated) or all")
    return args


def make_selected_case(name: str, device: torch.device, args) -> Case:
    """:func:`make_case` with only the rows of the balancers asked for (``--balancers``)."""
    case = make_case(name, device, args)
    if args.balancers:
        case.rows = tuple(row for row in case.rows if row.group in args.balancers)
    return case


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    if device.type == "cuda":  # as conf/trainer/default.yaml
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True

    if args.memory_only:
        if device.type == "cpu":
            _return_freed_memory_at_once()
        if memory_method(device) is None:
            raise SystemExit("error: no way to measure peak memory here (needs /proc/self/clear_refs or a GPU)")
        print(json.dumps({name: measure_memory(make_selected_case(name, device, args), device) for name in args.names}))
        return 0

    info = machine_info(device)
    if device.type == "cpu" and torch.get_num_threads() > 1 and info["load_before"] >= (os.cpu_count() or 1) - 0.5:
        print(f"bench: the load average is {info['load_before']:.1f} on {os.cpu_count()} CPUs: other processes share "
              "the cores, and several threads per step then wait on each other; --threads 1 --clock cpu "
              "gives steadier figures", file=sys.stderr)
    clock = time.process_time if args.clock == "cpu" else time.perf_counter
    cases = []
    for name in args.names:
        case = make_selected_case(name, device, args)
        print(f"bench: {name} ({case.rounds} rounds)", file=sys.stderr, flush=True)
        try:
            measure_time(case, device, args.warmup, clock)
        except Exception as err:  # noqa: BLE001 - one backbone that fails must not lose the others
            case.error = f"{type(err).__name__}: {first_line(err, default='')}"
            print(f"error: case {name}: {case.error}", file=sys.stderr)
        cases.append(case)
    info["load_after"] = os.getloadavg()[0]
    info["memory_method"] = None if args.no_memory else memory_method(device)
    measured = [c.name for c in cases if not c.error]
    peaks, info["memory_error"] = memory_in_subprocess(measured, args) if measured and info["memory_method"] else ({}, None)
    for case in cases:
        for label, result in case.results.items():
            result["step_peak_mib"] = peaks.get(case.name, {}).get(label)

    command = "python scripts/bench.py " + " ".join(sys.argv[1:] if argv is None else argv)
    report = render(cases, info, args, command.strip())
    out = Path(args.out)
    io.write_text(out / "README.md", report)
    io.write_json(out / "bench.json", {
        "machine": info, "command": command.strip(), "clock": args.clock,
        "cases": {c.name: {"batch_size": c.batch_size, "input_shape": list(c.input_shape), "target": c.target,
                           "rounds": c.rounds, "steps_per_round": c.steps, "error": c.error, "rows": c.results}
                  for c in cases},
    })
    print(report[report.index("GradNorm against"):].strip())
    print(f"\nwritten: {out / 'README.md'}", file=sys.stderr)
    return 1 if any(c.error for c in cases) else 0


if __name__ == "__main__":
    sys.exit(main())
