"""The checkpoint of a run: what it holds, writing it, loading it safely, restoring a run from it, and
refusing to resume a run under a different config.

``<run_dir>/checkpoints/last.pt`` is one dict: the states of the network, its optimiser and scheduler,
the balancer and the random generators, the step, the history so far, the initial test losses (the
reference of the task-normalised loss), the wall time so far, the config and the number of processes.
"""

from __future__ import annotations

import pickle
import random
import zipfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gradnorm import io
from gradnorm.checks import ConfigError, first_line
from gradnorm.config import NOT_TRAINING_KEYS, key_in

#: where a run directory keeps its checkpoint
CHECKPOINT = Path("checkpoints") / "last.pt"

#: Keys that may differ between a run and its resumption: those that do not change the training, and the
#: run's length (a finished run may be continued for more steps).
RESUMABLE_CHANGES = (*NOT_TRAINING_KEYS, "trainer.max_steps")


def write_checkpoint(run_dir: str | Path, *, model, optimizer, scheduler, balancer, step: int, history: list[dict],
                     initial_test_losses, wall_time_s: float, config: DictConfig, world_size: int,
                     scaler=None) -> Path:
    """Write ``run_dir``/checkpoints/last.pt atomically (a kill leaves the previous one)."""
    return io.save_torch(Path(run_dir) / CHECKPOINT, {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "scheduler": scheduler.state_dict() if scheduler is not None else None,
        "balancer": balancer.state_dict(),
        "scaler": scaler.state_dict() if scaler is not None and scaler.is_enabled() else None,  # float16's loss scale
        "rng": rng_state(),
        "step": step,
        "history": history,
        "initial_test_losses": initial_test_losses,
        "wall_time_s": wall_time_s,
        "config": OmegaConf.to_yaml(config),
        "world_size": world_size,
    })


def restore(checkpoint: dict, *, model, optimizer, scheduler, balancer,
            scaler=None) -> tuple[int, list[dict], list | None, float]:
    """Load a checkpoint's states into the run's objects and the random generators; return the step, the
    history before it, the initial test losses and the wall time so far."""
    model.load_state_dict(checkpoint["model"])
    optimizer.load_state_dict(checkpoint["optimizer"])
    if scheduler is not None:
        scheduler.load_state_dict(checkpoint["scheduler"])
    balancer.load_state_dict(checkpoint["balancer"])
    if scaler is not None and scaler.is_enabled() and checkpoint.get("scaler"):
        scaler.load_state_dict(checkpoint["scaler"])
    set_rng_state(checkpoint["rng"])
    step, history = checkpoint["step"], checkpoint["history"]
    if history and history[-1]["step"] >= step:  # the final row of a finished run: redo it
        history = [r for r in history if r["step"] < step]
    return step, history, checkpoint["initial_test_losses"], checkpoint["wall_time_s"]


def rng_state() -> dict:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def load_checkpoint(path: str | Path) -> dict:
    """``torch.load(weights_only=True)``: tensors and plain containers only, no code."""
    path = Path(path)
    run_dir = path.parent.parent
    if not run_dir.is_dir():
        raise ConfigError(f"cannot resume: no run directory {run_dir}")
    if not path.is_file():
        raise ConfigError(f"cannot resume: no checkpoint at {path} (set trainer.checkpoint_every>0 in the run)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError:
        raise ConfigError(f"cannot resume: checkpoint {path} is unreadable (not a file of tensors and plain "
                          "containers, which is all a safe load accepts)") from None
    except (RuntimeError, EOFError, OSError, zipfile.BadZipFile, ValueError) as err:
        first_sentence = first_line(err).split(". ")[0]
        raise ConfigError(f"cannot resume: checkpoint {path} is unreadable, truncated or corrupt "
                          f"({first_sentence})") from None
    required = {"model", "optimizer", "balancer", "step", "history", "config"}
    if not isinstance(state, dict) or not required <= set(state):
        raise ConfigError(f"cannot resume: {path} is not a gradnorm-repro checkpoint")
    return state


def check_resume_config(checkpoint: dict, cfg: DictConfig, world_size: int = 1) -> None:
    """The resumed config must equal the saved one except for :data:`RESUMABLE_CHANGES`, and the
    number of processes must be the same (it sets the global batch, ``trainer.batch_size`` × processes)."""
    saved = _flatten(OmegaConf.to_container(OmegaConf.create(checkpoint["config"]), resolve=False))
    current = _flatten(OmegaConf.to_container(cfg, resolve=False))
    changed = changed_keys(saved, current)
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:4])
        more = f" (+{len(changed) - 4} more)" if len(changed) > 4 else ""
        raise ConfigError(f"cannot resume with a different config: {details}{more}; "
                          "only trainer.max_steps and settings that do not change training may differ")
    saved_world = checkpoint.get("world_size", 1)
    if saved_world != world_size:
        raise ConfigError(f"cannot resume a run of {saved_world} process(es) on {world_size}: the global batch "
                          f"would change; resume it with {saved_world} process(es)")


def changed_keys(saved: dict, current: dict, allowed=RESUMABLE_CHANGES) -> list[str]:
    """The keys (dotted) whose values differ between two config trees, less those under ``allowed``."""
    saved, current = _flatten(saved), _flatten(current)
    return sorted(key for key in set(saved) | set(current)
                  if saved.get(key) != current.get(key) and not key_in(key, allowed))


def _flatten(tree, prefix: str = "") -> dict:
    out = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = tree
    return out
