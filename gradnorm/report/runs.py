"""Find run directories and load what training wrote there (docs/architecture.md, "Run outputs").

A run directory is any directory holding ``summary.json`` or Hydra's ``.hydra/config.yaml``. A
directory with ``.hydra/`` but no ``summary.json`` is a run that crashed or was killed: it is kept
with status ``"missing"`` so that reports list it instead of dropping it.
"""

from __future__ import annotations

import math
import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import yaml
from omegaconf import OmegaConf

from gradnorm import run_record
from gradnorm.balancers import METHODS
from gradnorm.balancers.gradnorm import variant_name
from gradnorm.report.style import SINGLE_TASK, method_label

#: status of a run directory without summary.json (crashed, killed, or still running)
MISSING = "missing"
#: the column every evaluation row of a history has (docs/architecture.md, "Run outputs")
EVALUATION_COLUMN = "task_normalized_loss"

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
    def overrides(self) -> str:
        """The command-line overrides Hydra recorded for this run (``.hydra/overrides.yaml``), shell-quoted:
        ``python run.py <overrides>`` re-creates it. Empty when not recorded. A resumed run's
        ``trainer.resume`` is left out: the recipe is that of a fresh run."""
        try:  # plain YAML: the overrides stay as typed, interpolations (${hydra:...}) unresolved
            recorded = yaml.safe_load((self.path / ".hydra" / "overrides.yaml").read_text()) or []
        except (OSError, yaml.YAMLError):  # absent or broken: nothing to re-run from
            return ""
        return shlex.join(str(o) for o in recorded if str(o).partition("=")[0].lstrip("+~") != "trainer.resume")

    @property
    def history(self) -> pd.DataFrame | None:
        """``history.csv`` as a DataFrame (None if absent or unreadable); read once."""
        if self._history is None:
            self._history = run_record.read_history(self.path)
        return self._history


def truncate(run: Run, steps: int) -> Run:
    """The run as it stood after ``steps`` training steps: its history up to that step, and a summary whose
    ``metrics`` are the last evaluation at or before it, ``weights`` the weights at it and ``mean_weights``
    the average over the steps before it. On the toy this is exactly a ``steps``-step run (no schedule;
    batches are a pure function of seed and step: docs/toy.md). A run that is not longer, or has no
    history, is returned as it is."""
    history, summary = run.history, run.summary
    if history is None or summary is None or "step" not in history or int(summary.get("steps") or 0) <= steps:
        return run
    kept = history[history["step"] <= steps]
    evaluated = kept[kept[EVALUATION_COLUMN].notna()] if EVALUATION_COLUMN in kept else kept.iloc[0:0]
    if evaluated.empty:
        return run
    last = evaluated.iloc[-1]
    names = run.task_names
    weight_columns = [f"weight/{n}" for n in names if f"weight/{n}" in kept]
    at = kept[kept["step"] == int(last["step"])]
    training = kept[kept["step"] < int(last["step"])]
    short = dict(summary)
    short["metrics"] = {k: float(last[k]) for k in (summary.get("metrics") or {}) if k in last and pd.notna(last[k])}
    short["metrics_step"] = int(last["step"])
    short["steps"] = int(last["step"])
    if len(weight_columns) == len(names) and names:
        short["weights"] = [float(at[c].iloc[-1]) for c in weight_columns] if len(at) else summary.get("weights")
        short["mean_weights"] = [float(training[c].mean()) for c in weight_columns]
    config = dict(run.config)
    config["trainer"] = {**(config.get("trainer") or {}), "max_steps": int(last["step"])}
    short["config"] = config
    return Run(path=run.path, summary=short, config=config, choices=run.choices, _history=kept)


def shorter_budgets(runs: list[Run], budgets) -> list[int]:
    """The budgets (steps) shorter than some completed run: the ones a truncation can judge."""
    longest = max((int((r.summary or {}).get("steps") or 0) for r in runs if r.status == "completed"), default=0)
    return sorted(int(b) for b in budgets if int(b) < longest)


def find_run_dirs(root: str | Path) -> list[Path]:
    """Every run directory under ``root`` (``root`` itself included), sorted by path."""
    root = Path(root)
    found = []
    if not root.is_dir():
        return found
    stack = [root]
    while stack:
        directory = stack.pop()
        if run_record.has_summary(directory) or (directory / ".hydra" / "config.yaml").is_file():
            found.append(directory)
        stack.extend(p for p in directory.iterdir() if p.is_dir() and p.name not in _SKIP_DIRS)
    return sorted(found)


def load_run(path: str | Path) -> Run:
    """Read one run directory; an unreadable summary counts as missing."""
    path = Path(path)
    summary = None
    try:
        summary = run_record.read_summary(path)
    except (OSError, ValueError):  # absent or unreadable (json.JSONDecodeError is a ValueError)
        pass
    config = (summary or {}).get("config") or _hydra_config(path)
    return Run(path=path, summary=summary, config=config, choices=_hydra_choices(path))


def load_runs(root: str | Path) -> list[Run]:
    return [load_run(p) for p in find_run_dirs(root)]


def runs_frame(runs: list[Run], root: str | Path | None = None) -> pd.DataFrame:
    """One row per run: config columns, status, final metrics, final and mean weights.

    Columns: ``run_dir`` (relative to ``root``), ``status``, ``error``, ``experiment``, ``dataset``,
    ``model``, ``balancer``, ``method`` (balancer name, or ``single_task``), ``label`` (as shown in
    tables), ``alpha`` and ``variant`` (GradNorm only: the preset's ``variant``, ``paper``, or the choices that
    differ from the paper's, ``gradnorm.balancers.gradnorm.variant_name``), ``seed``, ``num_tasks``, ``tasks``, ``grid_index``,
    ``from_run``, ``sweep``, ``setting`` (the named set-up of a sensitivity study, else empty),
    ``max_steps``, ``steps``, ``wall_time_s``, ``overrides`` (re-run with ``python run.py <overrides>``),
    then every final metric under
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
                 "alpha", "variant", "seed", "num_tasks", "tasks", "grid_index", "from_run", "sweep", "setting", "max_steps",
                 "steps", "wall_time_s", "overrides"]


def balancer_name(config: dict, choices: dict) -> str:
    """The run's method in the table of methods (``gradnorm.balancers.METHODS``): the ``name`` of its
    balancer class, else Hydra's balancer choice, else the class name."""
    target = str(_get(config, "balancer._target_") or "").rsplit(".", 1)[-1]
    by_class = {cls.__name__: name for name, cls in METHODS.items()}
    return by_class.get(target) or choices.get("balancer") or target


def method_of(config: dict, choices: dict) -> tuple[str, str]:
    """(method, label): ``single_task`` when one task of a multitask data set is trained; else the
    balancer's name and its label with the run's balancer config ("GradNorm α=0.12")."""
    balancer = balancer_name(config, choices)
    tasks = config.get("tasks")
    if isinstance(tasks, list) and len(tasks) == 1:
        return SINGLE_TASK, f"{tasks[0]} only"
    return balancer, method_label(balancer, config.get("balancer") or {})


def group_by_t(runs: list[Run], methods: tuple[str, ...] | None = None) -> dict[int, dict[str, list[Run]]]:
    """Completed runs -> {T: {method: runs}}, T ascending; only ``methods`` when given."""
    out: dict[int, dict[str, list[Run]]] = {}
    for run in runs:
        if run.status != "completed" or not run.task_names:
            continue
        method, _ = method_of(run.config, run.choices)
        if methods is None or method in methods:
            out.setdefault(len(run.task_names), {}).setdefault(method, []).append(run)
    return dict(sorted(out.items()))


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
        "variant": variant_name(config.get("balancer")) if balancer == "gradnorm" else None,
        "seed": config.get("seed"),
        "num_tasks": len(names) or None,
        "tasks": "+".join(names) or None,
        "grid_index": _get(config, "balancer.index") if balancer == "grid" else None,
        "from_run": _get(config, "balancer.from_run"),
        "sweep": config.get("sweep_group"),
        "setting": config.get("setting"),
        "max_steps": _get(config, "trainer.max_steps"),
        "steps": summary.get("steps"),
        "wall_time_s": summary.get("wall_time_s"),
        "overrides": run.overrides,
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
