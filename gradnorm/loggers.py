"""Experiment loggers: W&B (offline by default) or none. Only the main process logs.

An offline W&B run says where it went and how to upload it: a single run at its start, a sweep once at
its end (:class:`WandbSweepHint`, a Hydra callback in conf/config.yaml), not once per job.
"""

from __future__ import annotations

import os
import sys
import uuid
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf


class Logger:
    """Does nothing; ``logger=none``."""

    def start(self, config: dict, run_dir: Path, name: str | None = None, resumable: bool = False) -> None:
        """``resumable``: a training run, which a later ``trainer.resume`` of ``run_dir`` continues."""

    def log(self, scalars: dict[str, float], step: int) -> None:
        pass

    def log_summary(self, summary: dict) -> None:
        pass

    def log_artifact_files(self, files: dict[str, Path]) -> None:
        """Log finished figures or tables (name -> file)."""

    def finish(self, exit_code: int = 0) -> None:
        pass


class WandbLogger(Logger):
    """Weights & Biases. ``mode=offline`` (default) writes runs under ``dir``/wandb for ``wandb sync``.

    Args:
        project, entity, group, tags, name: W&B run metadata. Runs of one sweep share ``group``.
        mode: ``offline`` (default), ``online`` (only when the user asks) or ``disabled``.
        dir: where the ``wandb/`` folder goes (default: the current directory).
    """

    def __init__(self, project: str = "gradnorm-repro", entity: str | None = None, group: str | None = None,
                 tags=(), name: str | None = None, mode: str = "offline", dir: str | None = None):
        if mode not in ("offline", "online", "disabled"):
            raise ValueError(f"logger.mode must be offline, online or disabled, got {mode!r}")
        self.kwargs = dict(project=project, entity=entity, group=group, tags=[str(t) for t in tags or []],
                           name=name, mode=mode)
        self.dir = dir
        self.run = None

    def start(self, config, run_dir, name=None, resumable=False):
        import wandb

        os.environ.setdefault("WANDB_SILENT", "true")
        kwargs = dict(self.kwargs)
        kwargs["name"] = kwargs["name"] or name
        directory = Path(self.dir) if self.dir else Path.cwd()
        directory.mkdir(parents=True, exist_ok=True)
        # One W&B run per training run folder: a resumed run (trainer.resume, in place) continues it.
        run_id, resuming = _run_id(Path(run_dir)) if resumable else (None, False)
        self.run = wandb.init(config=config, dir=str(directory), reinit="finish_previous", id=run_id,
                              resume="allow" if resuming else None, settings=wandb.Settings(console="off"),
                              **kwargs)
        if kwargs["mode"] == "offline" and resumable and not in_sweep():  # where the run went, how to upload it
            where = getattr(self.run, "dir", None)
            folder = Path(where).parent if where else directory / "wandb"
            print(f"wandb: offline run in {folder}; upload with `wandb sync {folder}` (logger=none turns W&B off)",
                  file=sys.stderr, flush=True)

    def log(self, scalars, step):
        if self.run is not None:
            self.run.log(scalars, step=step)

    def log_summary(self, summary):
        if self.run is not None:
            for key, value in summary.items():
                self.run.summary[key] = value

    def log_artifact_files(self, files):
        """PNGs as images, CSVs as tables (dashboard panels), and all files as one "results" artifact."""
        if self.run is None:
            return
        import pandas as pd
        import wandb

        images = {k: wandb.Image(str(v)) for k, v in files.items() if str(v).endswith(".png")}
        tables = {k: wandb.Table(dataframe=pd.read_csv(v)) for k, v in files.items() if str(v).endswith(".csv")}
        if images or tables:
            self.run.log({**images, **tables})
        artifact = wandb.Artifact(name=f"{self.run.name or 'results'}-files".replace("/", "-"), type="results")
        for path in files.values():
            artifact.add_file(str(path))
        self.run.log_artifact(artifact)

    def finish(self, exit_code=0):
        if self.run is not None:
            self.run.finish(exit_code=exit_code)
            self.run = None


#: file in a run folder holding the id of its W&B run
WANDB_ID_FILE = "wandb_run_id.txt"


def in_sweep() -> bool:
    """Whether this process runs a job of a Hydra sweep (``run.py -m``), which the sweep speaks for."""
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


class WandbSweepHint(Callback):
    """At the end of a sweep whose runs logged to W&B offline, one line: how many, where, how to upload.

    The runs are the sweep's job folders that hold a W&B id (:data:`WANDB_ID_FILE`) and whose own config
    (``.hydra/config.yaml``) logged offline; ``wandb sync --sync-all`` uploads every run of a ``wandb/``
    folder not uploaded yet, from the folder above it.
    """

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        runs: dict[Path, int] = {}
        for id_file in Path(str(config.hydra.sweep.dir)).rglob(WANDB_ID_FILE):
            try:
                logger = OmegaConf.load(id_file.parent / ".hydra" / "config.yaml").logger
                if logger.get("mode", "offline") == "offline":
                    directory = Path(logger.get("dir") or Path.cwd()).resolve()
                    runs[directory] = runs.get(directory, 0) + 1
            except Exception:  # noqa: BLE001 - a folder without its config is not counted
                continue
        for directory, count in runs.items():
            print(sync_hint(directory, count), flush=True)


def sync_hint(directory: Path, runs: int) -> str:
    """``wandb: 18 runs of this sweep logged offline to wandb/; upload them with `wandb sync --sync-all` ...``"""
    here = Path.cwd().resolve()
    directory = directory.resolve()
    command = "wandb sync --sync-all" if directory == here else f"cd {directory} && wandb sync --sync-all"
    folder = "wandb/" if directory == here else f"{directory / 'wandb'}/"
    return (f"wandb: {runs} run{'s' if runs != 1 else ''} of this sweep logged offline to {folder}; upload them with "
            f"`{command}` (logger=none turns W&B off)")


def _run_id(run_dir: Path) -> tuple[str, bool]:
    """The W&B run id of ``run_dir``: the saved one (True: a resumed run) or a new one, saved."""
    path = run_dir / WANDB_ID_FILE
    saved = path.read_text().strip() if path.is_file() else ""
    if saved:
        return saved, True
    run_id = uuid.uuid4().hex[:12]
    run_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(run_id + "\n")
    return run_id, False
