"""The command line: ``run.py`` hands the composed config to :func:`main`.

Errors a user can fix become one line on stderr (``error: ...``) and a non-zero exit:
2 for bad configuration, 1 for a failed run (e.g. a NaN loss), 130 for an interrupted one.
Inside a multirun a failing job is recorded (``summary.json`` with status "failed") and the sweep
goes on; the report lists it.
"""

from __future__ import annotations

import sys
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from gradnorm import distributed, io
from gradnorm.config import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
EXIT_CONFIG, EXIT_FAILED, EXIT_INTERRUPTED = 2, 1, 130


def main(cfg: DictConfig):
    """The Hydra task function: train, then exit according to the run's status."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    multirun = hydra_cfg.mode == RunMode.MULTIRUN
    from gradnorm.train import train

    try:
        summary = train(cfg, run_dir)
    except ConfigError as err:
        return _fail(err, run_dir, cfg, multirun, EXIT_CONFIG)
    except Exception as err:  # noqa: BLE001 - one failing job must not end a sweep
        if not multirun:
            raise
        return _fail(err, run_dir, cfg, multirun, EXIT_FAILED, traceback.format_exc())
    finally:
        distributed.cleanup()

    status = summary["status"]
    if status == "interrupted":
        print(f"interrupted: {summary.get('error')}; resume with trainer.resume={run_dir}", file=sys.stderr)
        sys.exit(EXIT_INTERRUPTED)
    if status == "failed":
        print(f"error: {summary.get('error')}", file=sys.stderr)
        if not multirun:
            sys.exit(EXIT_FAILED)
    return summary["metrics"].get("task_normalized_loss")


def _fail(err: Exception, run_dir: Path, cfg: DictConfig, multirun: bool, code: int, trace: str | None = None):
    message = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    print(f"error: {message}", file=sys.stderr)
    if not multirun:
        sys.exit(code)
    if distributed.is_main_process() and not (run_dir / "summary.json").exists():
        try:
            config = OmegaConf.to_container(cfg, resolve=True)
        except Exception:  # noqa: BLE001 - the config itself may be what is broken
            config = OmegaConf.to_container(cfg, resolve=False)
        io.write_json(run_dir / "summary.json", {
            "status": "failed", "error": message, "task_names": [], "weights": [], "mean_weights": [],
            "metrics": {}, "steps": 0, "wall_time_s": 0.0, "config": config,
        })
        if trace:
            io.write_text(run_dir / "error.log", trace)
    return None


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
    multirun = any(a in ("-m", "--multirun") for a in argv)
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


def _compose_or_exit(overrides: list[str], conf_dir: Path) -> None:
    """Compose once, as Hydra will, so that a bad key or value fails with one line."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    try:
        with initialize_config_dir(config_dir=str(conf_dir), version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        OmegaConf.resolve(cfg)
    except Exception as err:  # noqa: BLE001 - Hydra raises several kinds; all are config errors
        message = _one_line(err)
        print(f"error: {message}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    finally:
        GlobalHydra.instance().clear()
    try:
        from gradnorm.config import check_config

        check_config(cfg)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
