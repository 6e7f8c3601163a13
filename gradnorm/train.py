"""The training loop: one function, top to bottom.

Each step: forward -> task losses -> ``balancer.backward`` (fills the network's gradients with
∇ Σ w_i L_i) -> optimiser step -> ``balancer.step`` (updates the task weights) -> history row ->
evaluation and checkpoint when due. A run directory receives ``summary.json``, ``history.csv`` and
``checkpoints/last.pt``; those files are the interface to reporting (``gradnorm.report``).
"""

from __future__ import annotations

import contextlib
import math
import random
import signal
import time
from pathlib import Path

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from tqdm import tqdm

from gradnorm import distributed, io
from gradnorm.checkpoint import check_resume_config, load_checkpoint
from gradnorm.config import ConfigError, TrainerSettings, check_config
from gradnorm.tasks import WeightedMean

CHECKPOINT = Path("checkpoints") / "last.pt"


class NonFiniteLossError(RuntimeError):
    """A task loss, a network parameter or a task weight became NaN or Inf."""


def train(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Train one configured run and write its outputs into ``run_dir``; return the summary.

    With ``trainer.resume=RUN_DIR`` the run continues that directory's last checkpoint, in place;
    with ``trainer.resume=auto`` it continues ``run_dir``'s own checkpoint if there is one (a
    requeued cluster job), else starts afresh. Under ``torchrun`` only rank 0 writes files.
    """
    check_config(cfg)
    settings = TrainerSettings.from_config(cfg.trainer)
    device = distributed.setup(settings.device, settings.ddp_backend)
    rank, world = distributed.rank(), distributed.world_size()
    main_process = rank == 0
    run_dir = Path(distributed.broadcast_object(str(run_dir)))  # rank 0's Hydra directory on every rank
    checkpoint = None
    if settings.resume == "auto":
        checkpoint = load_checkpoint(run_dir / CHECKPOINT) if (run_dir / CHECKPOINT).exists() else None
    elif settings.resume:
        run_dir = Path(settings.resume)
        checkpoint = load_checkpoint(run_dir / CHECKPOINT)
    if checkpoint is not None:
        check_resume_config(checkpoint, cfg, world)
    seed_everything(cfg.seed)

    # -- what to train -------------------------------------------------------------------------
    data = build(cfg.dataset, "dataset")
    if cfg.get("tasks"):
        data.select_tasks(list(cfg.tasks))
    tasks = data.tasks
    task_names = [t.name for t in tasks]
    model = build(cfg.model, "model", heads={t.name: t.out_channels for t in tasks}, **data.model_kwargs())
    balancer = build(cfg.balancer, "balancer", num_tasks=len(tasks))
    optimizer = build(cfg.trainer.optimizer, "trainer.optimizer")(model.parameters())
    scheduler = build(cfg.trainer.scheduler, "trainer.scheduler")(optimizer) if cfg.trainer.get("scheduler") else None

    precision = _autocast_dtype(settings.precision, device)
    channels_last = (settings.channels_last == "auto" and device.type == "cuda") or settings.channels_last is True
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = settings.cudnn_benchmark
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    model.to(device, memory_format=torch.channels_last) if channels_last else model.to(device)
    balancer.to(device)
    net = model  # the module itself, also when wrapped for data parallelism
    if world > 1:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)
    shared_params = net.shared_parameters() if getattr(balancer, "needs", "last_shared") == "shared" \
        else net.last_shared_parameters()

    # -- state, fresh or resumed ---------------------------------------------------------------
    step, history, initial_test_losses, elapsed_before, checkpoint_step = 0, [], None, 0.0, None
    if checkpoint is not None:
        net.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(checkpoint["scheduler"])
        balancer.load_state_dict(checkpoint["balancer"])
        _set_rng_state(checkpoint["rng"])
        step, history = checkpoint["step"], checkpoint["history"]
        if history and history[-1]["step"] >= step:  # the final row of a finished run: redo it
            history = [r for r in history if r["step"] < step]
        initial_test_losses = checkpoint["initial_test_losses"]
        elapsed_before = checkpoint["wall_time_s"]
        checkpoint_step = step

    resolved = OmegaConf.to_container(cfg, resolve=True)
    logger = build(cfg.logger, "logger") if (main_process and cfg.get("logger")) else None
    if logger is not None:
        logger.start(resolved, run_dir, name=run_dir.name, resumable=True)

    def evaluate() -> dict[str, float]:
        nonlocal initial_test_losses
        metrics = _evaluate(net, data, tasks, settings.eval_batch_size, device, precision, channels_last)
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
        if not _all_finite(net, balancer):
            raise NonFiniteLossError(f"non-finite network parameters or task weights after step {step}; "
                                     f"{kept_checkpoint()}")
        if main_process:
            io.save_torch(run_dir / CHECKPOINT, {
                "model": net.state_dict(),
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "balancer": balancer.state_dict(),
                "rng": _get_rng_state(),
                "step": step,
                "history": history,
                "initial_test_losses": initial_test_losses,
                "wall_time_s": elapsed_before + time.perf_counter() - start,
                "config": OmegaConf.to_yaml(cfg),
                "world_size": world,
            })
            io.save_csv(run_dir / "history.csv", _frame(history))
        distributed.barrier()
        checkpoint_step = step

    def kept_checkpoint() -> str:
        if checkpoint_step is None:
            return "no checkpoint was written yet"
        return f"the last good checkpoint (step {checkpoint_step}) is kept in {run_dir / CHECKPOINT}"

    def finish(status: str, error: str | None = None) -> dict:
        summary = _summary(status, error, task_names, balancer, history, step, settings.max_steps,
                           elapsed_before + time.perf_counter() - start, resolved, net)
        if main_process:
            io.save_csv(run_dir / "history.csv", _frame(history))
            io.write_json(run_dir / "summary.json", summary)
            if logger is not None:
                logger.log_summary({k: v for k, v in summary.items() if k != "config"})
                logger.finish(exit_code=0 if status == "completed" else 1)
        return summary

    # -- the loop ------------------------------------------------------------------------------
    start = time.perf_counter()
    batches = data.train_batches(settings.batch_size, cfg.seed, start_step=step, rank=rank, world_size=world)
    progress = tqdm(total=settings.max_steps, initial=step, disable=not (main_process and settings.progress),
                    desc=run_dir.name, dynamic_ncols=True, mininterval=1.0)
    model.train()
    with _stop_on_signals() as stop:
        try:
            while True:
                row = {"step": step}
                if step % settings.eval_every == 0 or step == settings.max_steps:
                    row.update(evaluate())
                    distributed.check_same_on_all_ranks(balancer.weights.to(device), "task weights")
                    if logger is not None:
                        logger.log({k: v for k, v in row.items() if k != "step"}, step=step)
                if step >= settings.max_steps:
                    row.update(_weights_row(balancer, task_names))
                    history.append(row)
                    if settings.checkpoint_every:
                        save_checkpoint()
                    break

                inputs, targets = next(batches)
                inputs = inputs.to(device, non_blocking=True)
                if channels_last and inputs.dim() == 4:
                    inputs = inputs.contiguous(memory_format=torch.channels_last)
                targets = {k: v.to(device, non_blocking=True) for k, v in targets.items()}
                with torch.autocast(device.type, dtype=precision, enabled=precision is not None):
                    predictions, features = model(inputs)
                    losses = torch.stack([t.loss(predictions[t.name], targets[t.name]).float() for t in tasks])

                row.update(_weights_row(balancer, task_names))
                # The global batch's losses (the mean over processes): what one process would see, and
                # the same verdict on NaN/Inf everywhere, so that all processes fail or skip together.
                loss_values = distributed.all_reduce_mean(losses.detach()).tolist()
                row.update({f"train_loss/{n}": v for n, v in zip(task_names, loss_values)})
                bad = {n: v for n, v in zip(task_names, loss_values) if not math.isfinite(v)}
                optimizer.zero_grad(set_to_none=True)
                if bad and (settings.nan_policy == "fail" or not _all_finite(net, balancer)):
                    history.append(row)
                    cause = "" if settings.nan_policy == "fail" else " and non-finite parameters, which skipping cannot mend"
                    raise NonFiniteLossError(
                        f"non-finite loss ({', '.join(f'{n}={v}' for n, v in bad.items())}) at step {step}{cause}; "
                        f"{kept_checkpoint()}. Lower the learning rate, or set trainer.nan_policy=skip to skip such steps")
                if bad:
                    row["skipped"] = 1  # nan_policy=skip: no update at all on this batch
                else:
                    row.update(balancer.backward(losses, shared_params, features=features))
                    optimizer.step()
                    balancer.step()
                if scheduler is not None:
                    scheduler.step()
                history.append(row)
                if logger is not None and step % settings.log_every == 0:
                    logger.log({k: v for k, v in row.items() if k != "step"}, step=step)
                step += 1
                progress.update(1)
                if step % max(1, settings.max_steps // 100) == 0:
                    progress.set_postfix(_postfix(row, task_names), refresh=False)
                # Every process stops after the same step, also when a signal reached only some of them.
                stop_now = distributed.any_process(stop.requested, device)
                if stop_now or (settings.checkpoint_every and step % settings.checkpoint_every == 0):
                    save_checkpoint()
                if stop_now:
                    progress.close()
                    return finish("interrupted", f"stopped by {stop.signal_name or 'a signal'} at step {step}")
        except NonFiniteLossError as err:
            progress.close()
            return finish("failed", str(err))
    progress.close()
    return finish("completed")


# -- pieces of the loop ---------------------------------------------------------------------------
def build(node, name: str, **kwargs):
    """``hydra.utils.instantiate`` with constructor errors turned into one-line ConfigErrors."""
    from hydra.errors import InstantiationException
    from omegaconf.errors import MissingMandatoryValue

    try:
        return instantiate(node, **kwargs)
    except MissingMandatoryValue as err:
        key = getattr(err, "full_key", "") or "a value"
        raise ConfigError(f"{name}: {key} is required but not set (e.g. {key}=...)") from None
    except InstantiationException as err:
        cause = err.__cause__
        if isinstance(cause, ValueError | TypeError):
            raise ConfigError(f"{name}: {cause}") from None
        raise ConfigError(f"{name}: {str(err).splitlines()[0]}") from None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)
    try:
        import numpy as np

        np.random.seed(seed % 2**32)
    except ImportError:  # pragma: no cover
        pass


@torch.no_grad()
def _evaluate(net, data, tasks, batch_size, device, precision, channels_last) -> dict[str, float]:
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


def _all_finite(net, balancer) -> bool:
    """Whether the network's parameters and the task weights are all finite."""
    checks = [torch.isfinite(p.detach()).all() for p in net.parameters()]
    return bool(torch.stack(checks).all()) and bool(torch.isfinite(balancer.weights).all())


def _weights_row(balancer, task_names) -> dict[str, float]:
    return {f"weight/{n}": w for n, w in zip(task_names, balancer.weights.tolist())}


def _postfix(row: dict, task_names) -> dict[str, str]:
    out = {}
    for n in task_names[:4]:
        out[f"L[{n}]"] = f"{row.get(f'train_loss/{n}', float('nan')):.3g}"
        out[f"w[{n}]"] = f"{row.get(f'weight/{n}', float('nan')):.3g}"
    return out


def _frame(history: list[dict]):
    import pandas as pd

    frame = pd.DataFrame(history)
    first = ["step"] + sorted(c for c in frame.columns if c.startswith("weight/")) + sorted(
        c for c in frame.columns if c.startswith("train_loss/"))
    return frame[first + [c for c in frame.columns if c not in first]] if len(frame) else frame


def _summary(status, error, task_names, balancer, history, step, max_steps, wall_time, resolved, net) -> dict:
    train_rows = [r for r in history if r["step"] < max_steps and f"weight/{task_names[0]}" in r]
    mean_weights = [
        sum(r[f"weight/{n}"] for r in train_rows) / len(train_rows) if train_rows else float("nan")
        for n in task_names
    ]
    evaluated = [r for r in history if "task_normalized_loss" in r]
    metrics = {k: v for k, v in (evaluated[-1] if evaluated else {}).items()
               if k != "step" and not k.startswith(("weight/", "train_loss/", "gradnorm/", "uncertainty/",
                                                  getattr(balancer, "log_prefix", None) or "weight/"))}
    summary = {
        "status": status,
        "task_names": task_names,
        "weights": balancer.weights.tolist(),
        "mean_weights": mean_weights,
        "metrics": metrics,
        "metrics_step": evaluated[-1]["step"] if evaluated else None,
        "steps": step,
        "wall_time_s": round(wall_time, 3),
        "num_parameters": sum(p.numel() for p in net.parameters()),
        "config": resolved,
    }
    if error:
        summary["error"] = error
    return summary


def _autocast_dtype(precision: str, device: torch.device):
    if precision == "32" or (precision == "auto" and device.type != "cuda"):
        return None
    if precision == "16":
        return torch.float16
    if device.type == "cuda" and not torch.cuda.is_bf16_supported():
        return None if precision == "auto" else torch.float16
    return torch.bfloat16


def _get_rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


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
