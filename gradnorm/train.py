"""The training loop: one function, top to bottom.

Each step: forward -> task losses -> ``balancer.backward`` (fills the network's gradients with
∇ Σ w_i L_i; once per micro-batch with ``trainer.accumulate_steps`` > 1) -> optimiser step (through a
GradScaler under float16) -> ``balancer.step`` (updates the task weights) -> history row ->
evaluation and checkpoint when due. A run directory receives ``summary.json``, ``history.csv`` and
``checkpoints/last.pt``; those files are the interface to reporting (``gradnorm.report``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import logging
import math
import os
import random
import signal
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

import torch
from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import MissingMandatoryValue
from torch import Tensor

from gradnorm import distributed, io, run_record
from gradnorm import progress as show
from gradnorm.checkpoint import (
    CHECKPOINT,
    changed_keys,
    check_resume_config,
    load_checkpoint,
    restore,
    write_checkpoint,
)
from gradnorm.checks import ConfigError, first_line
from gradnorm.config import CONF_DIR, TrainerSettings, check_config
from gradnorm.tasks import Task, WeightedMean

log = logging.getLogger(__name__)


class NonFiniteLossError(RuntimeError):
    """A task loss, a network parameter or a task weight became NaN or Inf."""


# -- pieces of the loop ---------------------------------------------------------------------------
def build(node, name: str, **kwargs):
    """``hydra.utils.instantiate`` with constructor errors turned into one-line ConfigErrors."""
    try:
        return instantiate(node, **kwargs)
    except MissingMandatoryValue as err:
        key = getattr(err, "full_key", "") or "a value"
        raise ConfigError(f"{name}: {key} is required but not set (e.g. {key}=...)") from None
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ValueError | TypeError):
            raise ConfigError(f"{name}: {cause}") from None
        raise ConfigError(f"{name}: {first_line(err)}") from None


def call(factory, name: str, *args):
    """Call a built partial (an optimiser, a scheduler); its ValueError/TypeError becomes a ConfigError."""
    try:
        return factory(*args)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{name}: {first_line(err)}") from None


def choose_tasks(data, tasks) -> None:
    """Keep the ``tasks`` subset of the data set's tasks (all when null), or name the data set's tasks."""
    if tasks is None:
        return
    names = [t.name for t in data.tasks]
    known = ", ".join(names)
    if isinstance(tasks, str) or len(tasks) == 0:
        raise ConfigError(f"tasks must be a non-empty list of task names, e.g. tasks=[{names[0]}] (this data set's "
                          f"tasks: {known}); got {tasks!r}")
    unknown = [str(n) for n in tasks if n not in names]
    if unknown:
        raise ConfigError(f"tasks=[{','.join(map(str, tasks))}]: unknown task {unknown[0]!r}; this data set's tasks: "
                          f"{known}")
    data.select_tasks(list(tasks))


def _conf_name(group: str, target: str) -> str:
    """The conf/<group> option whose ``_target_`` is ``target`` (the target itself if none is)."""
    for path in sorted((CONF_DIR / group).glob("*.yaml")):
        if OmegaConf.load(path).get("_target_") == target:
            return path.stem
    return target


def check_model_fits(cfg: DictConfig, model_kwargs: dict) -> None:
    """The model must take the data set's inputs (``model_kwargs``: ``in_features`` of the toy's vectors,
    ``in_channels`` of NYUv2's images); otherwise name the models that do."""
    def takes(target: str) -> bool:
        try:
            parameters = inspect.signature(get_class(target)).parameters
        except Exception:  # noqa: BLE001 - an unknown target is reported when it is built
            return True
        return all(k in parameters for k in model_kwargs) or any(
            p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())

    target = cfg.model.get("_target_")
    if target is None or takes(target):
        return
    fitting = [p.stem for p in sorted((CONF_DIR / "model").glob("*.yaml"))
               if takes(OmegaConf.load(p).get("_target_", ""))]
    dataset = _conf_name("dataset", cfg.dataset.get("_target_"))
    raise ConfigError(f"model={_conf_name('model', target)} does not fit dataset={dataset} (it does not take the "
                      f"data set's {', '.join(model_kwargs)}); models for dataset={dataset}: {', '.join(fitting) or 'none'}")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


def autocast_dtype(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of ``trainer.precision`` on ``device`` (None: full precision). ``bf16`` on a GPU
    without bfloat16 is a ConfigError (it would silently be something else)."""
    if precision == "32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "16":
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        if precision == "auto":
            return None
        raise ConfigError(f"trainer.precision=bf16 but {torch.cuda.get_device_name(device)} does not support "
                          "bfloat16; use trainer.precision=16 (float16 with loss scaling) or 32")
    return torch.bfloat16


def precision_name(dtype: torch.dtype | None) -> str:
    """The name ``summary.json`` records for the autocast dtype a run used: float32, float16 or bfloat16."""
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


@contextlib.contextmanager
def numerics(settings: TrainerSettings, device: torch.device):
    """The run's numerical settings, restored afterwards (runs share a process in tests and benches):
    ``trainer.deterministic`` (PyTorch's deterministic algorithms, cuDNN benchmark off) and TF32 on CUDA
    (``trainer.tf32``, off when deterministic)."""
    saved = (torch.are_deterministic_algorithms_enabled(), torch.backends.cudnn.benchmark,
             torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32,
             os.environ.get("CUBLAS_WORKSPACE_CONFIG"))
    try:
        if settings.deterministic:
            os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for determinism
            torch.use_deterministic_algorithms(True)
            torch.backends.cudnn.deterministic = True
        if device.type == "cuda":
            torch.backends.cudnn.benchmark = settings.cudnn_benchmark and not settings.deterministic
            tf32 = settings.tf32 and not settings.deterministic
            torch.backends.cuda.matmul.allow_tf32 = tf32
            torch.backends.cudnn.allow_tf32 = tf32
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0])
        (torch.backends.cudnn.benchmark, torch.backends.cudnn.deterministic, torch.backends.cuda.matmul.allow_tf32,
         torch.backends.cudnn.allow_tf32) = saved[1:5]
        if saved[5] is None:
            os.environ.pop("CUBLAS_WORKSPACE_CONFIG", None)


def params_for(balancer, net) -> list[torch.nn.Parameter]:
    """The ``shared_params`` a balancer asks for (:attr:`Balancer.needs`): the last shared layer's
    weights W (GradNorm's) or every parameter of the shared trunk."""
    return net.shared_parameters() if balancer.needs == "shared" else net.last_shared_parameters()


def scaled_backward(scaler: torch.amp.GradScaler, loss: Tensor, **kwargs) -> None:
    """A balancer's ``backward_fn`` under float16: the backward pass of the loss times the scaler's scale."""
    scaler.scale(loss).backward(**kwargs)


def micro_batches(inputs: Tensor, targets: dict[str, Tensor], count: int) -> list[tuple[Tensor, dict[str, Tensor]]]:
    """The batch as ``count`` consecutive micro-batches (sizes differing by at most one)."""
    if count == 1:
        return [(inputs, targets)]
    parts = torch.tensor_split(inputs, count)
    target_parts = {k: torch.tensor_split(v, count) for k, v in targets.items()}
    return [(part, {k: v[i] for k, v in target_parts.items()}) for i, part in enumerate(parts) if len(part)]


def train_step(model, tasks: Sequence[Task], balancer, optimizer, inputs: Tensor, targets: dict[str, Tensor],
               shared_params: Sequence[Tensor], precision: torch.dtype | None = None,
               use_features: bool = True, *, accumulate_steps: int = 1,
               scaler: torch.amp.GradScaler | None = None) -> tuple[dict[str, float], dict[str, float]]:
    """One update: forward, task losses L_i, ``balancer.backward`` (∇ Σ_i w_i L_i into the network's
    ``.grad``), ``optimizer.step``, ``balancer.step`` (w(t) -> w(t+1)).

    With ``accumulate_steps`` = k the batch is split into k micro-batches, each forwarded and passed to
    ``balancer.backward`` with its losses divided by k (under DDP only the last one synchronises the
    gradients), then one optimiser step and one ``balancer.step``: one update on the whole batch. With a
    ``scaler`` (float16) the balancer's backward passes are scaled, the optimiser steps through the
    scaler, and an update whose gradients overflowed is skipped for the network and the balancer alike
    (``balancer.discard``; the row gets ``overflow`` = 1).

    Returns the step's history row (the weights the balancer applied, the training losses, the
    balancer's scalars) and the non-finite losses by task: when there are any, nothing is updated and
    the caller decides (fail or skip). ``use_features=False`` withholds the per-task features from the
    balancer (a benchmark row); the loop always passes them.
    """
    task_names = [t.name for t in tasks]
    optimizer.zero_grad(set_to_none=True)
    parts = micro_batches(inputs, targets, accumulate_steps)
    backward_fn = None if scaler is None or not scaler.is_enabled() else functools.partial(scaled_backward, scaler)
    loss_sum, info = None, {}
    for index, (x, y) in enumerate(parts):
        last = index == len(parts) - 1
        with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            with torch.autocast(x.device.type, dtype=precision, enabled=precision is not None):
                predictions, features = model(x)
                losses = torch.stack([t.loss(predictions[t.name], y[t.name]).float() for t in tasks])
            # The global batch's losses (the mean over processes): what one process would see, and the
            # same verdict on NaN/Inf everywhere, so that all processes fail or skip together.
            loss_values = distributed.all_reduce_mean(losses.detach())
            loss_sum = loss_values if loss_sum is None else loss_sum + loss_values
            bad = {n: v for n, v in zip(task_names, loss_values.tolist()) if not math.isfinite(v)}
            if bad:
                break
            # backward_fn only when there is one: a balancer written before it existed still runs in float32
            scaled = {} if backward_fn is None else {"backward_fn": backward_fn}
            info = balancer.backward(losses / len(parts) if len(parts) > 1 else losses, shared_params,
                                     features=features if use_features else None, **scaled)
    row = weights_row(balancer, task_names)  # after backward: the weights it applied
    row.update({f"train_loss/{n}": v for n, v in zip(task_names, (loss_sum / (index + 1)).tolist())})
    if bad:
        balancer.discard()
        optimizer.zero_grad(set_to_none=True)
        return row, bad
    row.update(info)
    if backward_fn is None:
        optimizer.step()
        balancer.step()
        return row, bad
    scale = scaler.get_scale()
    scaler.step(optimizer)
    scaler.update()
    if scaler.get_scale() < scale:  # the scaler found inf/NaN gradients and skipped the optimiser step
        balancer.discard()
        row["overflow"] = 1
    else:
        balancer.step()
    return row, bad


@torch.no_grad()
def evaluate_tasks(net, data, tasks, batch_size, device, precision, channels_last) -> dict[str, float]:
    """Test loss of every task and the tasks' metrics, accumulated over the whole test set."""
    was_training = net.training
    net.eval()
    test_losses = {t.name: WeightedMean().to(device) for t in tasks}
    task_metrics = {t.name: t.metrics().to(device) for t in tasks}
    rank, world = distributed.rank(), distributed.world_size()
    for inputs, targets in data.test_batches(batch_size, rank=rank, world_size=world):
        inputs = inputs.to(device, non_blocking=True)
        if channels_last and inputs.dim() == 4:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=precision, enabled=precision is not None):
            predictions, _ = net(inputs)
        for task in tasks:
            pred, target = predictions[task.name].float(), targets[task.name].to(device, non_blocking=True)
            test_losses[task.name].update(task.loss(pred, target), len(inputs))
            task_metrics[task.name].update(pred, target)
    out = {}
    for task in tasks:
        out[f"test_loss/{task.name}"] = float(test_losses[task.name].compute())
        out.update({k: float(v) for k, v in task_metrics[task.name].compute().items()})
    net.train(was_training)
    return out


def all_finite(net, balancer) -> bool:
    """Whether the network's parameters and the task weights are all finite."""
    checks = [torch.isfinite(p.detach()).all() for p in net.parameters()]
    return bool(torch.stack(checks).all()) and bool(torch.isfinite(balancer.weights).all())


def weights_row(balancer, task_names) -> dict[str, float]:
    """``weight/<task>`` of the history: the balancer's weights (after its backward: the ones it applied)."""
    return {f"weight/{n}": w for n, w in zip(task_names, balancer.weights.tolist())}


def completed_summary(run_dir: Path, cfg: DictConfig, max_steps: int) -> dict | None:
    """``run_dir``'s summary when it records a completed run of ``max_steps`` steps with this config
    (up to the keys that do not change training), else None."""
    try:
        summary = run_record.read_summary(run_dir)
    except (OSError, ValueError):
        return None
    if summary.get("status") != run_record.COMPLETED or summary.get("steps") != max_steps:
        return None
    current = OmegaConf.to_container(cfg, resolve=True)
    return summary if not changed_keys(summary.get("config") or {}, current) else None


class _SignalFlag:
    requested = False
    signal_name = ""


@contextlib.contextmanager
def _stop_on_signals():
    """SIGINT/SIGTERM ask the loop to stop after the current step (a second SIGINT stops at once)."""
    flag = _SignalFlag()
    previous = {}

    def handler(signum, _frame):
        if flag.requested and signum == signal.SIGINT:
            raise KeyboardInterrupt
        flag.requested = True
        flag.signal_name = signal.Signals(signum).name

    try:
        for sig in (signal.SIGINT, signal.SIGTERM):
            previous[sig] = signal.signal(sig, handler)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        yield flag
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


# -- the loop -------------------------------------------------------------------------------------
def train(cfg: DictConfig, run_dir: str | Path, *, progress_bar: bool | None = None) -> dict:
    """Train one configured run and write its outputs into ``run_dir``; return the summary.

    With ``trainer.resume=RUN_DIR`` the run continues that directory's last checkpoint, in place;
    with ``trainer.resume=auto`` it continues ``run_dir``'s own checkpoint if there is one (a
    requeued cluster job), else starts afresh; a completed run of the same config is kept as it is.
    Under ``torchrun`` only rank 0 writes files. ``progress_bar=False`` draws no bar (the jobs of a
    sweep: their final lines say how each ended); None follows ``trainer.progress``. The run's key
    events go to the ``gradnorm.train`` logger (Hydra writes them to the run folder's run.log).
    """
    check_config(cfg)
    settings = TrainerSettings.from_config(cfg.trainer)
    device = distributed.setup(settings.device, settings.ddp_backend)
    with numerics(settings, device):
        return _train(cfg, Path(run_dir), settings, device, progress_bar)


def _train(cfg: DictConfig, run_dir: Path, settings: TrainerSettings, device: torch.device,
           progress_bar: bool | None) -> dict:
    """:func:`train` once the device and the numerical settings are in place."""
    rank, world = distributed.rank(), distributed.world_size()
    main_process = rank == 0
    run_dir = Path(distributed.broadcast_object(str(run_dir)))  # rank 0's Hydra directory on every rank
    checkpoint = None
    if settings.resume == "auto" and (kept := completed_summary(run_dir, cfg, settings.max_steps)) is not None:
        return kept  # a sweep re-run with trainer.resume=auto: this job is done already
    if settings.resume == "auto":
        checkpoint = load_checkpoint(run_dir / CHECKPOINT) if (run_dir / CHECKPOINT).exists() else None
    elif settings.resume:
        run_dir = Path(settings.resume)
        checkpoint = load_checkpoint(run_dir / CHECKPOINT)
    if checkpoint is not None:
        check_resume_config(checkpoint, cfg, world)
    if settings.num_threads:
        torch.set_num_threads(settings.num_threads)
    seed_everything(cfg.seed)

    # -- what to train -------------------------------------------------------------------------
    data = build(cfg.dataset, "dataset")
    choose_tasks(data, cfg.get("tasks"))
    tasks = data.tasks
    task_names = [t.name for t in tasks]
    check_model_fits(cfg, data.model_kwargs())
    model = build(cfg.model, "model", heads={t.name: t.out_channels for t in tasks}, **data.model_kwargs())
    balancer = build(cfg.balancer, "balancer", num_tasks=len(tasks))
    optimizer = call(build(cfg.trainer.optimizer, "trainer.optimizer"), "trainer.optimizer", model.parameters())
    scheduler = (call(build(cfg.trainer.scheduler, "trainer.scheduler"), "trainer.scheduler", optimizer)
                 if cfg.trainer.get("scheduler") else None)

    precision = autocast_dtype(settings.precision, device)
    # float16 needs loss scaling (its range is narrow); bfloat16 and float32 do not
    scaler = torch.amp.GradScaler(device.type, enabled=precision == torch.float16)
    channels_last = (settings.channels_last == "auto" and device.type == "cuda") or settings.channels_last is True
    model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    balancer.to(device)
    net = model  # the module itself, also when wrapped for data parallelism
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    shared_params = params_for(balancer, net)

    # -- state, fresh or resumed ---------------------------------------------------------------
    step, history, initial_test_losses, elapsed_before, checkpoint_step = 0, [], None, 0.0, None
    if checkpoint is not None:
        step, history, initial_test_losses, elapsed_before = restore(
            checkpoint, model=net, optimizer=optimizer, scheduler=scheduler, balancer=balancer, scaler=scaler)
        checkpoint_step = step

    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = build(cfg.logger, "logger") if (main_process and cfg.get("logger")) else None
    if logger is not None:
        logger.start(resolved, run_dir, name=run_dir.name, resumable=True)

    def evaluate() -> dict[str, float]:
        nonlocal initial_test_losses
        metrics = evaluate_tasks(net, data, tasks, settings.eval_batch_size, device, precision, channels_last)
        losses = [metrics[f"test_loss/{n}"] for n in task_names]
        if initial_test_losses is None:
            initial_test_losses = losses  # L_i^test(0), the reference of the task-normalised loss (§4)
        metrics["task_normalized_loss"] = sum(loss / loss0 for loss, loss0 in zip(losses, initial_test_losses))
        metrics.update(data.extra_metrics(metrics))  # e.g. delta_m against single-task baselines
        return metrics

    def save_checkpoint() -> None:
        """Write ``checkpoints/last.pt`` atomically, unless the state went non-finite: then fail and
        keep the previous checkpoint, the last good one."""
        nonlocal checkpoint_step
        if not all_finite(net, balancer):
            raise NonFiniteLossError(f"non-finite network parameters or task weights after step {step}; "
                                     f"{kept_checkpoint()}")
        if main_process:
            write_checkpoint(run_dir, model=net, optimizer=optimizer, scheduler=scheduler, balancer=balancer,
                             scaler=scaler, step=step, history=history, initial_test_losses=initial_test_losses,
                             wall_time_s=elapsed_before + time.perf_counter() - start, config=cfg, world_size=world)
            run_record.write_history(run_dir, history)
            log.info("step %d: checkpoint %s", step, run_dir / CHECKPOINT)
        distributed.barrier()
        checkpoint_step = step

    def kept_checkpoint() -> str:
        if checkpoint_step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint (step {checkpoint_step}) is kept in {run_dir / CHECKPOINT}"

    def finish(status: str, error: str | None = None) -> dict:
        summary = run_record.summarize(
            status, error, task_names, balancer.weights.tolist(), history, step, settings.max_steps,
            elapsed_before + time.perf_counter() - start, resolved, net.num_parameters(), balancer.log_prefix,
            task_setup=data.task_setup(), precision=precision_name(precision), weight_scale=balancer.weight_scale)
        if main_process:
            run_record.write_history(run_dir, history)
            run_record.write_summary(run_dir, summary)
            if logger is not None:
                logger.log_summary({k: v for k, v in summary.items() if k != "config"})
                logger.finish(exit_code=0 if status == run_record.COMPLETED else 1)
        return summary

    # -- the loop ------------------------------------------------------------------------------
    start = time.perf_counter()
    # one update's samples: accumulate_steps micro-batches of batch_size (train_step splits them)
    batches = data.train_batches(settings.batch_size * settings.accumulate_steps, cfg.seed, start_step=step,
                                 rank=rank, world_size=world)
    draw = settings.progress if progress_bar is None else progress_bar
    label = show.run_label(getattr(balancer, "name", type(balancer).__name__), cfg.seed)
    progress = show.bar(settings.max_steps, step, label, enabled=main_process and draw)
    last_loss = None
    log.info("training %s for %d steps on %s (%s), from step %d; tasks %s; %d parameters",
             label, settings.max_steps, device, "resumed" if checkpoint is not None else "fresh",
             step, ", ".join(task_names), net.num_parameters())
    model.train()
    with _stop_on_signals() as stop:
        try:
            while True:
                row = {"step": step}
                if step % settings.eval_every == 0 or step == settings.max_steps:
                    row.update(evaluate())
                    last_loss = row["task_normalized_loss"]
                    log.info("step %d: task-normalised test loss %.4g; %s", step, last_loss,
                             show.short_weights(balancer.weights.tolist()))
                    distributed.check_same_on_all_ranks(balancer.weights.to(device), "task weights")
                    if logger is not None:
                        logger.log({k: v for k, v in row.items() if k != "step"}, step=step)
                if step >= settings.max_steps:
                    row.update(weights_row(balancer, task_names))
                    history.append(row)
                    if settings.checkpoint_every:
                        save_checkpoint()
                    break

                inputs, targets = next(batches)
                inputs = inputs.to(device, non_blocking=True)
                if channels_last and inputs.dim() == 4:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                targets = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
                started = time.perf_counter()
                step_row, bad = train_step(model, tasks, balancer, optimizer, inputs, targets, shared_params,
                                           precision=precision, accumulate_steps=settings.accumulate_steps,
                                           scaler=scaler)
                row.update(step_row)
                row["step_time_s"] = time.perf_counter() - started  # the update alone (no evaluation)
                if bad and (settings.nan_policy == "fail" or not all_finite(net, balancer)):
                    history.append(row)
                    cause = "" if settings.nan_policy == "fail" else " and non-finite parameters, which skipping cannot mend"
                    raise NonFiniteLossError(
                        f"non-finite loss ({', '.join(f'{n}={v}' for n, v in bad.items())}) at step {step}{cause}; "
                        f"{kept_checkpoint()}. Lower the learning rate, or set trainer.nan_policy=skip to skip such steps")
                if bad:
                    row["skipped"] = 1  # nan_policy=skip: no update at all on this batch
                if scheduler is not None:
                    scheduler.step()
                history.append(row)
                if logger is not None and step % settings.log_every == 0:
                    logger.log({k: v for k, v in row.items() if k != "step"}, step=step)
                step += 1
                progress.update(1)
                if not progress.disable and step % max(1, settings.max_steps // 100) == 0:
                    progress.set_postfix_str(show.postfix(last_loss, balancer.weights.tolist()), refresh=False)
                # Every process stops after the same step, also when a signal reached only some of them.
                stop_now = distributed.any_process(stop.requested, device)
                if stop_now or (settings.checkpoint_every and step % settings.checkpoint_every == 0):
                    save_checkpoint()
                if stop_now:
                    progress.close()
                    return finish(run_record.INTERRUPTED, f"stopped by {stop.signal_name or 'a signal'} at step {step}")
        except NonFiniteLossError as err:
            progress.close()
            return finish(run_record.FAILED, str(err))
        except Exception as err:  # noqa: BLE001 - any failure while training is recorded as "failed"
            progress.close()
            log.info("failed at step %d", step, exc_info=True)  # the traceback: run.log and error.log
            if main_process:
                io.write_text(run_dir / "error.log", traceback.format_exc())
            return finish(run_record.FAILED,
                          f"{type(err).__name__} at step {step}: {first_line(err, default='')}; {kept_checkpoint()}")
    progress.close()
    return finish(run_record.COMPLETED)
