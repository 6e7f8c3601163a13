"""The suite's config: where the Hydra config tree lives, the keys that do not change training, and the
checks of the trainer group and the top-level keys (:func:`check_config`).

The value checks themselves (:func:`as_float`, :func:`positive_int`, :class:`ConfigError`, ...) live in
:mod:`gradnorm.checks`, which the library core uses too; this module is the suite's (it reads
``conf/config.yaml``) and is imported by the command line, the training loop and the experiments only.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

# the checks' home is gradnorm.checks; their names stay importable from here, where they lived before
from gradnorm.checks import (  # noqa: F401
    ConfigError,
    as_float,
    boolean,
    choice,
    first_line,
    integer,
    positive_int,
)

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
    accumulate_steps: int = 1
    deterministic: bool = False
    tf32: bool = True

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
            accumulate_steps=positive_int(cfg.get("accumulate_steps", 1), "trainer.accumulate_steps"),
            deterministic=boolean(cfg.get("deterministic", False), "trainer.deterministic"),
            tf32=boolean(cfg.get("tf32", True), "trainer.tf32"),
        )


def check_config(cfg: DictConfig) -> None:
    """Checks of top-level keys; group objects check their own arguments when built."""
    if cfg.get("alpha") is not None:
        as_float(cfg.alpha, "alpha", minimum=0.0)
    integer(cfg.get("seed", 0), "seed")
    TrainerSettings.from_config(cfg.trainer)  # `tasks` is checked against the data set's tasks (train.choose_tasks)
