"""Checks of config values: a bad value becomes one clear error line, never a traceback.

The value checks (:func:`as_float`, :func:`positive_int`, :func:`choice`) are used by every
constructor that takes a config value (balancers, data sets) and by :func:`check_config` for the
top-level keys; :class:`ConfigError` is what the command line prints as ``error: ...`` (exit 2).
This module imports nothing of the project, so every other module may import it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

#: conf/: the Hydra config tree (conf/<group>/*.yaml mirrors gradnorm/<package>/)
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"

#: Keys that do not change what a run trains: they stay out of sweep folder names and may differ when a
#: run is resumed. The one list is ``hydra.job.config.override_dirname.exclude_keys`` in conf/config.yaml
#: (Hydra reads it there); a key names its sub-keys too (``logger`` covers ``logger.mode``).
NOT_TRAINING_KEYS: tuple[str, ...] = tuple(
    OmegaConf.load(CONF_DIR / "config.yaml").hydra.job.config.override_dirname.exclude_keys)


def key_in(key: str, keys) -> bool:
    """Whether ``key`` is one of ``keys`` or below one of them (``logger.mode`` is below ``logger``)."""
    return any(key == k or key.startswith(k + ".") for k in keys)


class ConfigError(ValueError):
    """A config value is not allowed. The message names the key, the value and what is allowed."""


def first_line(err: BaseException, default: str | None = None) -> str:
    """The first line of an error's message, for a one-line report; ``default`` (the error's type
    name unless given) when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else (type(err).__name__ if default is None else default)


def as_float(value, name: str, *, minimum: float | None = None, strict: bool = False) -> float:
    """Convert a config value to a finite float (``> minimum`` when ``strict``, else ``>=``), or raise
    a :class:`ConfigError` that names the key, the value and what is allowed."""
    allowed = "a number" if minimum is None else f"a number {'>' if strict else '>='} {minimum:g}"
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}") from None
    if out != out or out in (float("inf"), float("-inf")):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    if minimum is not None and (out < minimum or (strict and out == minimum)):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    return out


def positive_int(value, name: str, *, allow_zero: bool = False) -> int:
    allowed = "a non-negative integer" if allow_zero else "a positive integer"
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise ConfigError(f"{name} must be {allowed}, got {value!r}") from None
    if not isinstance(value, int) or value < (0 if allow_zero else 1):
        raise ConfigError(f"{name} must be {allowed}, got {value!r}")
    return value


def integer(value, name: str) -> int:
    """An integer config value (a seed), or a ConfigError naming the key and the value."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    return value


def boolean(value, name: str) -> bool:
    """A true/false config value, or a ConfigError naming the key and the value."""
    if not isinstance(value, bool):
        raise ConfigError(f"{name} must be true or false, got {value!r}")
    return value


def choice(value, name: str, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(f"{name} must be one of {', '.join(allowed)}; got {value!r}")
    return value


@dataclass(frozen=True)
class TrainerSettings:
    """The trainer group, validated (conf/trainer/default.yaml documents each key)."""

    max_steps: int
    batch_size: int
    eval_every: int
    eval_batch_size: int
    log_every: int
    checkpoint_every: int
    device: str
    precision: str
    channels_last: bool | str
    cudnn_benchmark: bool
    nan_policy: str
    progress: bool
    resume: str | None
    ddp_backend: str | None = None
    num_threads: int | None = None

    @classmethod
    def from_config(cls, cfg: DictConfig) -> TrainerSettings:
        device = str(cfg.get("device", "auto"))
        if device not in ("auto", "cpu", "cuda") and not device.startswith("cuda:"):
            raise ConfigError(f"trainer.device must be one of auto, cpu, cuda (or cuda:N); got {device!r}")
        resume = cfg.get("resume")
        channels_last = cfg.get("channels_last", "auto")
        if channels_last not in ("auto", True, False):
            raise ConfigError(f"trainer.channels_last must be one of auto, true, false; got {channels_last!r}")
        backend = cfg.get("ddp_backend")
        if backend is not None:  # the one check of the backend (distributed.setup takes it as given)
            backend = None if choice(backend, "trainer.ddp_backend", ("null", "nccl", "gloo", "mpi")) == "null" else backend
        return cls(
            max_steps=positive_int(cfg.max_steps, "trainer.max_steps"),
            batch_size=positive_int(cfg.batch_size, "trainer.batch_size"),
            eval_every=positive_int(cfg.eval_every, "trainer.eval_every"),
            eval_batch_size=positive_int(cfg.get("eval_batch_size", cfg.batch_size), "trainer.eval_batch_size"),
            log_every=positive_int(cfg.get("log_every", 1), "trainer.log_every"),
            checkpoint_every=positive_int(cfg.get("checkpoint_every", 0), "trainer.checkpoint_every", allow_zero=True),
            device=device,
            precision=choice(str(cfg.get("precision", "auto")), "trainer.precision", ("auto", "32", "bf16", "16")),
            channels_last=channels_last,
            cudnn_benchmark=boolean(cfg.get("cudnn_benchmark", True), "trainer.cudnn_benchmark"),
            nan_policy=choice(str(cfg.get("nan_policy", "fail")), "trainer.nan_policy", ("fail", "skip")),
            progress=boolean(cfg.get("progress", True), "trainer.progress"),
            resume=None if resume in (None, "") else str(resume),
            ddp_backend=backend,
            num_threads=None if cfg.get("num_threads") is None else positive_int(cfg.num_threads, "trainer.num_threads"),
        )


def check_config(cfg: DictConfig) -> None:
    """Checks of top-level keys; group objects check their own arguments when built."""
    if cfg.get("alpha") is not None:
        as_float(cfg.alpha, "alpha", minimum=0.0)
    integer(cfg.get("seed", 0), "seed")
    TrainerSettings.from_config(cfg.trainer)  # `tasks` is checked against the data set's tasks (train.choose_tasks)
