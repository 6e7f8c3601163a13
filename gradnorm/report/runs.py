"""Find run directories and load what training wrote there (docs/architecture.md, "Run outputs").

A run directory is any directory holding ``summary.json`` or Hydra's ``.hydra/config.yaml``. A
directory with ``.hydra/`` but no ``summary.json`` is a run that crashed or was killed: it is kept
with status ``"missing"`` so that reports list it instead of dropping it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
from omegaconf import OmegaConf

#: status of a run directory without summary.json (crashed, killed, or still running)
MISSING = "missing"

#: balancer class -> the name used in tables, figures and colours (``conf/balancer/<name>.yaml``)
BALANCER_NAMES = {
    "EqualWeights": "equal",
    "GradNorm": "gradnorm",
    "Uncertainty": "uncertainty",
    "FixedWeights": "fixed",
    "GradNormStatic": "gradnorm_static",
    "GridWeights": "grid",
    # the later methods (docs/methods.md); the class attribute ``name`` is the same
    "DWA": "dwa", "RLW": "rlw", "FAMO": "famo", "PCGrad": "pcgrad", "MGDA": "mgda", "CAGrad": "cagrad",
    "IMTL": "imtl", "NashMTL": "nash_mtl",
}
#: labels of the later methods (the classes' ``label``)
METHOD_LABELS_LATER = {"dwa": "DWA", "rlw": "RLW", "famo": "FAMO", "pcgrad": "PCGrad", "mgda": "MGDA",
                       "cagrad": "CAGrad", "imtl": "IMTL-G", "nash_mtl": "Nash-MTL"}
_SKIP_DIRS = {".hydra", "checkpoints", "wandb", "__pycache__"}


@dataclass
class Run:
    """One run directory: its summary (None when missing), config and Hydra's group choices."""

    path: Path
    summary: dict | None
    config: dict
    choices: dict = field(default_factory=dict)
    _history: pd.DataFrame | None = field(default=None, repr=False)

    @property
    def status(self) -> str:
        return MISSING if self.summary is None else str(self.summary.get("status", MISSING))

    @property
    def task_names(self) -> list[str]:
        names = (self.summary or {}).get("task_names") or []
        if names:
            return list(names)
        tasks = self.config.get("tasks")
        if isinstance(tasks, list):
            return [str(t) for t in tasks]
        num = _get(self.config, "dataset.num_tasks")
        return [f"task_{i}" for i in range(num)] if isinstance(num, int) else []

    @property
    def history(self) -> pd.DataFrame | None:
        """``history.csv`` as a DataFrame (None if absent or unreadable); read once."""
        if self._history is None:
            path = self.path / "history.csv"
            try:
                self._history = pd.read_csv(path)
            except (OSError, pd.errors.ParserError, pd.errors.EmptyDataError):
                return None
        return self._history


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every run directory under ``root`` (``root`` itself included), sorted by path."""
    root = Path(root)
    found = []
    if not root.is_dir():
        return found
    stack = [root]
    while stack:
        directory = stack.pop()
        if (directory / "summary.json").is_file() or (directory / ".hydra" / "config.yaml").is_file():
            found.append(directory)
        stack.extend(p for p in directory.iterdir() if p.is_dir() and p.name not in _SKIP_DIRS)
    return sorted(found)


def load_run(path: str | Path) -> Run:
    """Read one run directory; an unreadable summary counts as missing."""
    path = Path(path)
    summary = None
    try:
        summary = json.loads((path / "summary.json").read_text())
    except (OSError, json.JSONDecodeError):
        pass
    config = (summary or {}).get("config") or _hydra_config(path)
    return Run(path=path, summary=summary, config=config, choices=_hydra_choices(path))


def load_runs(root: str | Path) -> list[Run]:
    return [load_run(p) for p in find_run_dirs(root)]


def runs_frame(runs: list[Run], root: str | Path | None = None) -> pd.DataFrame:
    """One row per run: config columns, status, final metrics, final and mean weights.

    Columns: ``run_dir`` (relative to ``root``), ``status``, ``error``, ``experiment``, ``dataset``,
    ``model``, ``balancer``, ``method`` (balancer name, or ``single_task``), ``label`` (as shown in
    tables), ``alpha`` (GradNorm only), ``seed``, ``num_tasks``, ``tasks``, ``grid_index``,
    ``from_run``, ``sweep``, ``max_steps``, ``steps``, ``wall_time_s``, then every final metric under
    its own name (``task_normalized_loss``, ``test_loss/<task>``, ``seg/miou``...), ``weight/<task>``
    (final) and ``mean_weight/<task>`` (time average).
    """
    rows = [_row(run, root) for run in runs]
    frame = pd.DataFrame(rows)
    if frame.empty:
        return pd.DataFrame(columns=_BASE_COLUMNS)
    first = [c for c in _BASE_COLUMNS if c in frame.columns]
    metrics = sorted(c for c in frame.columns if c not in first and not c.startswith(("weight/", "mean_weight/")))
    weights = [c for c in frame.columns if c.startswith("weight/")] + [
        c for c in frame.columns if c.startswith("mean_weight/")]
    return frame[first + metrics + weights]


_BASE_COLUMNS = ["run_dir", "status", "error", "experiment", "dataset", "model", "balancer", "method", "label",
                 "alpha", "seed", "num_tasks", "tasks", "grid_index", "from_run", "sweep", "max_steps", "steps",
                 "wall_time_s"]


def balancer_name(config: dict, choices: dict) -> str:
    target = str(_get(config, "balancer._target_") or "")
    return BALANCER_NAMES.get(target.rsplit(".", 1)[-1]) or choices.get("balancer") or target.rsplit(".", 1)[-1]


def method_of(config: dict, choices: dict) -> tuple[str, str]:
    """(method, label): ``single_task`` when one task of a multitask data set is trained."""
    balancer = balancer_name(config, choices)
    tasks = config.get("tasks")
    if isinstance(tasks, list) and len(tasks) == 1:
        return "single_task", f"{tasks[0]} only"
    alpha = _get(config, "balancer.alpha")
    labels = {
        "equal": "Equal weights",
        "uncertainty": "Uncertainty",
        "gradnorm": f"GradNorm α={_number(alpha)}",
        "gradnorm_static": "GradNorm static",
        "grid": f"Grid #{_get(config, 'balancer.index')}",
        "fixed": f"Fixed {_get(config, 'balancer.weights')}",
        **METHOD_LABELS_LATER,
    }
    if balancer == "mgda" and _get(config, "balancer.at") == "representation":
        return balancer, "MGDA-UB"
    return balancer, labels.get(balancer, balancer)


def _row(run: Run, root) -> dict:
    summary = run.summary or {}
    config, choices = run.config, run.choices
    names = run.task_names
    method, label = method_of(config, choices)
    balancer = balancer_name(config, choices)
    row = {
        "run_dir": _relative(run.path, root),
        "status": run.status,
        "error": summary.get("error") if run.summary is not None else "no summary.json (crashed or killed)",
        "experiment": choices.get("experiment"),
        "dataset": choices.get("dataset") or _class_name(config, "dataset"),
        "model": choices.get("model") or _class_name(config, "model"),
        "balancer": balancer,
        "method": method,
        "label": label,
        "alpha": _get(config, "balancer.alpha") if balancer == "gradnorm" else None,
        "seed": config.get("seed"),
        "num_tasks": len(names) or None,
        "tasks": "+".join(names) or None,
        "grid_index": _get(config, "balancer.index") if balancer == "grid" else None,
        "from_run": _get(config, "balancer.from_run"),
        "sweep": config.get("sweep_group"),
        "max_steps": _get(config, "trainer.max_steps"),
        "steps": summary.get("steps"),
        "wall_time_s": summary.get("wall_time_s"),
    }
    for key, value in (summary.get("metrics") or {}).items():
        row[key] = _float(value)
    for prefix, values in (("weight", summary.get("weights")), ("mean_weight", summary.get("mean_weights"))):
        for name, value in zip(names, values or []):
            row[f"{prefix}/{name}"] = _float(value)
    return row


def _hydra_config(path: Path) -> dict:
    """The config of a run without summary, from Hydra's copy; what cannot be resolved stays raw."""
    file = path / ".hydra" / "config.yaml"
    if not file.is_file():
        return {}
    try:
        cfg = OmegaConf.load(file)
    except Exception:  # noqa: BLE001 - a broken file must not stop a report
        return {}
    out = {}
    for key in cfg:
        try:
            out[key] = OmegaConf.to_container(cfg[key], resolve=True) if OmegaConf.is_config(cfg[key]) else cfg[key]
        except Exception:  # noqa: BLE001 - e.g. ${hydra:...} outside a Hydra app
            out[key] = OmegaConf.to_container(cfg[key], resolve=False) if OmegaConf.is_config(cfg[key]) else None
    return out


def _hydra_choices(path: Path) -> dict:
    """Hydra's config-group choices of the run (experiment, dataset, model, balancer...)."""
    file = path / ".hydra" / "hydra.yaml"
    if not file.is_file():
        return {}
    try:
        choices = OmegaConf.load(file).hydra.runtime.choices
        return {str(k): v for k, v in OmegaConf.to_container(choices, resolve=False).items()
                if not str(k).startswith("hydra/")}
    except Exception:  # noqa: BLE001
        return {}


def _get(config: dict, dotted: str):
    node = config
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


def _class_name(config: dict, group: str):
    target = _get(config, f"{group}._target_")
    return str(target).rsplit(".", 1)[-1] if target else None


def _relative(path: Path, root) -> str:
    if root is None:
        return str(path)
    try:
        return str(path.relative_to(root)) or "."
    except ValueError:
        return str(path)


def _float(value):
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out


def _number(value) -> str:
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)
