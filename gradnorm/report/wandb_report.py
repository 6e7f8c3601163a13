"""A small W&B run per reported experiment that holds its final figures and tables.

It follows the training runs' logger settings: skipped with ``logger=none`` among the overrides,
offline unless ``logger.mode=online`` is given (``wandb sync`` uploads it later; docs/reporting.md).
Its group is ``<experiment>/report``, next to the sweeps' groups ``<experiment>/<sweep>``.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from gradnorm.experiments import ROOT
from gradnorm.loggers import WandbLogger


def log_report(experiment: str, files: list[Path], overrides: list[str]) -> bool:
    """Log ``files`` (PNG as images, CSV as tables, everything as one artifact); False if skipped."""
    settings = dict(a.partition("=")[::2] for a in overrides if "=" in a)
    if settings.get("logger", "wandb") != "wandb" or settings.get("logger.mode") == "disabled":
        return False
    defaults = yaml.safe_load((ROOT / "conf" / "logger" / "wandb.yaml").read_text())
    logger = WandbLogger(project=settings.get("logger.project", defaults["project"]),
                         entity=settings.get("logger.entity") or defaults.get("entity"),
                         group=f"{experiment}/report", tags=["report", experiment], name=f"{experiment}-report",
                         mode=settings.get("logger.mode", defaults["mode"]), dir=settings.get("logger.dir", str(ROOT)))
    logger.start({"experiment": experiment, "files": [p.name for p in files]}, ROOT, name=f"{experiment}-report")
    try:
        logger.log_artifact_files({p.stem if p.suffix != ".pdf" else p.name: p for p in files})
    finally:
        logger.finish()
    return True
