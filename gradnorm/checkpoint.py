"""Loading checkpoints safely and refusing to resume a run under a different config."""

from __future__ import annotations

import pickle
import zipfile
from pathlib import Path

import torch
from omegaconf import DictConfig, OmegaConf

from gradnorm.config import NOT_TRAINING_KEYS, ConfigError

#: Keys that may differ between a run and its resumption: those that do not change the training, and the
#: run's length (a finished run may be continued for more steps).
RESUMABLE_CHANGES = (*NOT_TRAINING_KEYS, "trainer.max_steps")


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
        first_sentence = str(err).strip().splitlines()[0].split(". ")[0] if str(err).strip() else type(err).__name__
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
    changed = sorted(
        key for key in set(saved) | set(current)
        if saved.get(key) != current.get(key)
        and not any(key == k or key.startswith(k + ".") for k in RESUMABLE_CHANGES)
    )
    if changed:
        details = ", ".join(f"{k}: {saved.get(k)!r} -> {current.get(k)!r}" for k in changed[:4])
        more = f" (+{len(changed) - 4} more)" if len(changed) > 4 else ""
        raise ConfigError(f"cannot resume with a different config: {details}{more}; "
                          "only trainer.max_steps and settings that do not change training may differ")
    saved_world = checkpoint.get("world_size", 1)
    if saved_world != world_size:
        raise ConfigError(f"cannot resume a run of {saved_world} process(es) on {world_size}: the global batch "
                          f"would change; resume it with {saved_world} process(es)")


def _flatten(tree, prefix: str = "") -> dict:
    out = {}
    if isinstance(tree, dict):
        for key, value in tree.items():
            out.update(_flatten(value, f"{prefix}{key}."))
    else:
        out[prefix[:-1]] = tree
    return out
