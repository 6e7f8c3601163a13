"""The command line: ``run.py`` hands the composed config to :func:`main`.

Errors a user can fix become one line on stderr (``error: ...``) and a non-zero exit:
2 for bad configuration, 1 for a failed run (e.g. a NaN loss), 130 for an interrupted one.
Inside a multirun a failing job is recorded (``summary.json`` with status "failed") and the sweep
goes on; the report lists it.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf, open_dict

from gradnorm import io, progress, run_record
from gradnorm.checks import ConfigError, first_line
from gradnorm.config import CONF_DIR, NOT_TRAINING_KEYS, key_in

EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130
log = logging.getLogger(__name__)
#: conf/hydra/launcher options that need the ``slurm`` extra (hydra-submitit-launcher)
SUBMITIT_LAUNCHERS = ("slurm", "local", "submitit_slurm", "submitit_local")


def main(cfg: DictConfig):
    """The Hydra task function: train, then exit according to the run's status."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    # torch (with the training code) is imported here, where a run starts: `run.py --help`, a bad
    # override and the preflight answer without it (a second instead of three).
    from gradnorm import distributed
    from gradnorm.train import train

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    if _launch_rank() == 0:
        choices = " ".join(f"{k}={v}" for k, v in hydra_cfg.runtime.choices.items() if not k.startswith("hydra"))
        log.info("run %s: %s; overrides: %s", run_dir, choices, " ".join(hydra_cfg.overrides.task) or "none")
    try:
        # a sweep's jobs draw no bars (parallel jobs' bars would overwrite each other): a line each as they end
        summary = train(cfg, run_dir, progress_bar=False if multirun else None)
    except ConfigError as err:
        return _fail(err, run_dir, cfg, multirun, EXIT_CONFIG)
    except KeyboardInterrupt:  # a second Ctrl-C, or one before the loop started
        print("interrupted: stopped at once; the last periodic checkpoint (if any) is kept", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    except Exception as err:  # noqa: BLE001 - one failing job must not end a sweep
        if not multirun:
            raise
        return _fail(err, run_dir, cfg, multirun, EXIT_FAILED, traceback.format_exc())
    finally:
        distributed.cleanup()

    status = summary["status"]
    speak = _launch_rank() == 0  # the status is the same on every torchrun process
    if speak:
        line = progress.final_line(summary, _shown(run_dir))
        log.info(line)
        print(line, flush=True)
    if status == run_record.INTERRUPTED:
        resume = cfg.trainer.get("resume")
        resume_dir = resume if resume not in (None, "", "auto") else run_dir
        if speak:
            print(f"interrupted: {summary.get('error')}; resume with trainer.resume={resume_dir}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    if status == run_record.FAILED:
        if speak:
            print(f"error: {summary.get('error')}", file=sys.stderr)
        if not multirun:
            sys.exit(EXIT_FAILED)
    return summary["metrics"].get("task_normalized_loss")


def _shown(path: Path) -> Path:
    """``path`` relative to the current directory when it is below it (as the user would type it)."""
    try:
        return Path(path).resolve().relative_to(Path.cwd().resolve())
    except ValueError:
        return Path(path)


def _fail(err: Exception, run_dir: Path, cfg: DictConfig, multirun: bool, code: int, trace: str | None = None):
    from gradnorm import distributed

    message = first_line(err)
    if code != EXIT_CONFIG or _launch_rank() == 0:  # a config error is the same on every torchrun process
        print(f"error: {message}", file=sys.stderr)
    if not multirun:
        if code == EXIT_CONFIG and _launch_rank() == 0:
            remove_empty_run_dir(run_dir)
        sys.exit(code)
    if distributed.is_main_process() and not run_record.has_summary(run_dir):
        try:
            config = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # noqa: BLE001 - the config itself may be what is broken
            config = OmegaConf.to_container(cfg, resolve=False)
        run_record.write_summary(run_dir, run_record.failed_summary(message, config))
        if trace:
            io.write_text(run_dir / "error.log", trace)
    return None


def _key(arg: str) -> str:
    return arg.partition("=")[0].lstrip("+~")


def _last_value(argv: list[str], key: str) -> str | None:
    values = [a.partition("=")[2] for a in argv if "=" in a and _key(a) == key]
    return values[-1] if values else None


def _recorded_overrides(path: Path) -> list[str] | None:
    """The task overrides Hydra recorded (``.hydra/overrides.yaml``, or a sweep's ``multirun.yaml``)."""
    try:
        node = OmegaConf.load(path)
    except (OSError, ValueError, TypeError, AttributeError):
        return None
    recorded = node.hydra.overrides.task if path.name == "multirun.yaml" else node
    return [str(a) for a in recorded] if OmegaConf.is_list(recorded) else None


def _training_overrides(argv: list[str]) -> list[str]:
    """The overrides of ``argv`` that decide what is trained (not Hydra's, not NOT_TRAINING_KEYS)."""
    return sorted(a for a in argv if not a.startswith("-") and not _key(a).startswith("hydra")
                  and not key_in(_key(a), NOT_TRAINING_KEYS))


def resume_argv(argv: list[str], cwd: Path | None = None) -> list[str]:
    """The command line of a resumed run or sweep, before Hydra composes it.

    ``trainer.resume=RUN_DIR`` (one run): RUN_DIR's recorded overrides (``.hydra/overrides.yaml``) with
    the user's on top, and ``hydra.run.dir=RUN_DIR``, so that ``python run.py trainer.resume=RUN_DIR``
    continues the run with its own config in its own folder; an override that changes what is trained
    is still refused when the checkpoint is read (:func:`gradnorm.checkpoint.check_resume_config`).
    ``-m ... trainer.resume=auto`` without ``hydra.sweep.dir``: the latest ``multirun/`` folder
    launched with the same training overrides becomes the sweep folder, so that each job continues
    its own folder (completed jobs are kept, see :func:`gradnorm.train.train`).
    """
    resume = _last_value(argv, "trainer.resume")
    if resume in (None, "", "null"):
        return argv
    if any(a in ("-m", "--multirun") for a in argv):
        if resume != "auto" or _last_value(argv, "hydra.sweep.dir") is not None:
            return argv
        found = _same_sweep(argv, Path(cwd or Path.cwd()) / "multirun")
        if found is None:
            print("trainer.resume=auto: no earlier sweep under multirun/ with these overrides; starting one")
            return argv
        print(f"trainer.resume=auto: continuing the sweep in {found} (completed jobs are kept)")
        return [*argv, f"hydra.sweep.dir={found}"]
    if resume == "auto":
        return argv
    run_dir = Path(resume)
    recorded = _recorded_overrides(run_dir / ".hydra" / "overrides.yaml")
    if recorded is None:  # not a run.py run folder: the user's overrides alone (checked against the checkpoint)
        return argv
    merged = {_key(a): a for a in recorded if "=" in a and _key(a) != "trainer.resume"}
    flags = [a for a in argv if a.startswith("-") or "=" not in a]
    for arg in argv:
        if "=" in arg and not arg.startswith("-"):
            merged.pop(_key(arg), None)
            merged[_key(arg)] = arg
    if "hydra.run.dir" not in merged:
        merged["hydra.run.dir"] = f"hydra.run.dir={run_dir}"
    return [*flags, *merged.values()]


def _same_sweep(argv: list[str], multirun: Path) -> Path | None:
    """The latest sweep folder under ``multirun`` whose recorded overrides train the same runs."""
    wanted = _training_overrides(argv)
    for sweep in sorted((p.parent for p in multirun.glob("*/multirun.yaml")), reverse=True):
        recorded = _recorded_overrides(sweep / "multirun.yaml")
        if recorded is not None and _training_overrides(recorded) == wanted:
            return sweep
    return None


#: what Hydra puts into a run folder before the task function runs
HYDRA_FILES = {".hydra", "run.log"}


def remove_empty_run_dir(run_dir: Path, root: Path | None = None) -> bool:
    """Remove a run folder that holds nothing but Hydra's own files (a run refused before it trained),
    and the folders above it that it leaves empty, up to ``root`` (the current directory). A folder with
    anything else in it (a checkpoint, a summary: a run being resumed) is kept."""
    run_dir, root = Path(run_dir).resolve(), Path(root or Path.cwd()).resolve()
    if not run_dir.is_dir() or {p.name for p in run_dir.iterdir()} - HYDRA_FILES:
        return False
    logging.shutdown()  # run.log's handler lets go of the file
    shutil.rmtree(run_dir)
    for parent in run_dir.parents:
        if parent == root or root not in parent.parents:
            break
        try:
            parent.rmdir()  # only if empty
        except OSError:
            break
    return True


def preflight(argv: list[str], conf_dir: Path = CONF_DIR) -> None:
    """Check config-group choices on the command line before Hydra starts.

    Hydra's own message for an unknown option spans many lines; this gives one line that names
    the bad value and the allowed ones, and exits 2.
    """
    groups = {p.name for p in conf_dir.iterdir() if p.is_dir()}
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if key not in groups or "(" in value or value in ("", "null"):
            continue
        options = sorted(p.stem for p in (conf_dir / key).glob("*.yaml"))
        for choice in value.split(","):
            if choice.strip() not in options:
                print(f"error: unknown {key} {choice.strip()!r}; choose one of: {', '.join(options)}",
                      file=sys.stderr)
                sys.exit(EXIT_CONFIG)
    launcher = next((a.partition("=")[2] for a in argv if a.lstrip("+~").startswith("hydra/launcher=")), "")
    if launcher in SUBMITIT_LAUNCHERS:
        try:
            import hydra_plugins.hydra_submitit_launcher  # noqa: F401
        except ImportError:
            print(f"error: hydra/launcher={launcher} needs the slurm extra: pip install '.[slurm]'", file=sys.stderr)
            sys.exit(EXIT_CONFIG)
    multirun = any(a in ("-m", "--multirun") for a in argv)
    if multirun and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        if _launch_rank() == 0:
            print("error: under torchrun run.py trains one configuration, not a multirun (-m); for sweeps of "
                  "data-parallel runs use hydra/launcher=slurm with hydra.launcher.tasks_per_node=N", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    if multirun or any(a.startswith("-") for a in argv):
        return
    _compose_or_exit([a for a in argv if "=" in a and not a.lstrip("+~").startswith("hydra")], conf_dir)


def _one_line(err: Exception) -> str:
    """Hydra/OmegaConf messages span lines; keep the first and the one that says why."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    cause = err.__cause__
    if cause is not None:
        lines += [ln.strip() for ln in str(cause).splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    why = next((ln for ln in lines[1:] if ln.startswith(("Key ", "Could not", "mismatched", "Value "))), None)
    return f"{lines[0]} ({why})" if why and why != lines[0] else lines[0]


def torchrun_worker_argv(argv: list[str]) -> list[str]:
    """The command line of a ``torchrun`` process: unchanged on rank 0; ranks > 0 get overrides that
    keep Hydra from writing anything (rank 0 owns the run directory; ``train`` takes its path)."""
    if _launch_rank() == 0:
        return argv
    quiet = {"hydra.output_subdir": "null", "hydra/job_logging": "disabled", "hydra/hydra_logging": "disabled",
             "hydra.run.dir": ".", "hydra.sweep.dir": ".", "hydra.sweep.subdir": "."}
    kept = [a for a in argv if a.partition("=")[0].lstrip("+~") not in quiet]
    return kept + [f"{key}={value}" for key, value in quiet.items()]


def compose(overrides: list[str], conf_dir: Path = CONF_DIR) -> DictConfig:
    """The job config Hydra would build from ``overrides`` (without its ``hydra`` node), with the
    ``${hydra:...}`` interpolations resolvable, e.g. to call :func:`gradnorm.train.train` directly."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides, return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def _compose_or_exit(overrides: list[str], conf_dir: Path) -> None:
    """Compose once, as Hydra will, so that a bad key or interpolation fails with one line. (The values
    are checked once, by :func:`gradnorm.config.check_config` and the constructors, when training starts.)"""
    try:
        cfg = compose(overrides, conf_dir)
        OmegaConf.resolve(cfg)
    except Exception as err:  # noqa: BLE001 - Hydra raises several kinds; all are config errors
        message = _one_line(err)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)


def _launch_rank() -> int:
    """This process's rank as ``torchrun`` set it (0 outside torchrun), known before any process group."""
    return int(os.environ.get("RANK", "0"))
