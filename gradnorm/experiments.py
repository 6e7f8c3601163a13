"""The paper's experiments as data, and their sweeps: ``experiments/<name>.yaml`` names the sweeps
(Hydra multirun overrides) and the report that turns the finished run directories into tables and
figures (``gradnorm.report.build``). This module reads the specs and builds the sweeps' command lines;
``scripts/reproduce.py`` launches them.

A spec::

    description: one line
    paper: the figure or table it reproduces
    results: results/toy            # where the tables and figures go
    runs: runs/toy_grid             # optional; default runs/<name>; may name another experiment's runs
    gpu: true                       # optional; NYUv2 experiments (REPORT.md says "needs NYUv2 on a GPU")
    env: {OMP_NUM_THREADS: "1"}     # optional; environment of the sweeps (a variable already set wins)
    sweeps:                         # run in order, each as one `python run.py -m ...`
      <sweep>:
        <key>: <value>              # a Hydra override; "a,b,c" sweeps; "{runs}" = this experiment's runs dir
    base: {<key>: <value>}          # optional, with `settings`: the overrides every setting shares
    settings:                       # optional: one sweep per named setting = base + the setting's overrides;
      <setting>: {<key>: <value>}   #   its runs record `setting=<setting>` (a runs.csv column)
    followup:                       # optional, with `settings`: after the sweeps, one more sweep per setting
      claim: <claim id>             #   whose verdict on this claim (in `where`, e.g. "toy T=2") differs from
      where: <setting of a verdict> #   the `reference` setting's: the setting's overrides + `sweep`, in the
      reference: <setting>          #   sweep folder `<setting>__<name>`
      name: <name>
      sweep: {<key>: <value>}
    report:
      kind: figure2 | figure3 | figure4 | figure7 | table1    # gradnorm.report.build.REPORTS
      <parameters of that report>

Runs land in ``<runs>/<sweep>/<job>``; every run gets ``sweep_group=<name>/<sweep>`` (its W&B group).
"""

from __future__ import annotations

import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gradnorm.config import NOT_TRAINING_KEYS, key_in

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS_DIR = ROOT / "experiments"
RUN_PY = ROOT / "run.py"
#: override keys that never name a run directory of a sweep: long, containing "/", or the same in a whole
#: sweep. Besides them, an extra argument stays out when it does not vary (e.g. trainer.max_steps=4) or does
#: not change training (config.NOT_TRAINING_KEYS); the sweep's own keys name its directories.
SWEEP_KEYS = ("sweep_group", "setting", "balancer.from_run", "hydra.sweep.subdir")
#: separates a setting's name from its follow-up sweep's name (``<setting>__<name>``)
FOLLOWUP_SEP = "__"


class ExperimentError(ValueError):
    """A bad experiment name or spec; the message is one line."""


@dataclass
class Experiment:
    name: str
    description: str
    paper: str
    results: Path
    runs: Path
    sweeps: dict[str, dict[str, str]]
    report: dict = field(default_factory=dict)
    gpu: bool = False
    env: dict[str, str] = field(default_factory=dict)
    #: setting name -> its own overrides (experiments with ``settings``; each is also a sweep)
    settings: dict[str, dict[str, str]] = field(default_factory=dict)
    base: dict[str, str] = field(default_factory=dict)
    followup: dict = field(default_factory=dict)

    def add_followup(self, setting: str) -> str:
        """Add the follow-up sweep of ``setting`` (see ``followup`` in the spec); return its name."""
        name = f"{setting}{FOLLOWUP_SEP}{self.followup['name']}"
        self.sweeps[name] = {**self.base, **self.followup["sweep"], **self.settings[setting], "++setting": setting}
        return name


def available(directory: Path = EXPERIMENTS_DIR) -> list[str]:
    return sorted(p.stem for p in directory.glob("*.yaml"))


def load_experiment(name: str, directory: Path = EXPERIMENTS_DIR) -> Experiment:
    path = directory / f"{name}.yaml"
    if not path.is_file():
        raise ExperimentError(f"unknown experiment {name!r}; choose one of: {', '.join(available(directory))}")
    spec = yaml.safe_load(path.read_text()) or {}
    sweeps = {str(k): {str(key): _as_override_value(v) for key, v in (overrides or {}).items()}
              for k, overrides in (spec.get("sweeps") or {}).items()}
    report = dict(spec.get("report") or {})
    if "kind" not in report:
        raise ExperimentError(f"{path}: report.kind is missing")
    base = _overrides(spec.get("base"))
    settings = {str(k): _overrides(v) for k, v in (spec.get("settings") or {}).items()}
    for setting, overrides in settings.items():
        if setting in sweeps or FOLLOWUP_SEP in setting:
            raise ExperimentError(f"{path}: setting {setting!r} clashes with a sweep name or contains {FOLLOWUP_SEP!r}")
        sweeps[setting] = {**base, **overrides, "++setting": setting}
    followup = dict(spec.get("followup") or {})
    if followup:
        missing = [k for k in ("claim", "where", "reference", "name", "sweep") if k not in followup]
        if missing or followup.get("reference") not in settings:
            raise ExperimentError(f"{path}: followup needs claim, where, name, sweep and a reference setting; "
                                  f"missing {missing or ['reference']}")
        followup["sweep"] = _overrides(followup["sweep"])
    experiment = Experiment(name=name, description=str(spec.get("description", "")),
                            paper=str(spec.get("paper", "")), results=ROOT / spec.get("results", f"results/{name}"),
                            runs=ROOT / spec.get("runs", f"runs/{name}"), sweeps=sweeps, report=report,
                            gpu=bool(spec.get("gpu", False)),
                            env={str(k): str(v) for k, v in (spec.get("env") or {}).items()},
                            settings=settings, base=base, followup=followup)
    return experiment


def _overrides(node) -> dict[str, str]:
    return {str(key): _as_override_value(v) for key, v in (node or {}).items()}


def add_existing_followups(experiment: Experiment, runs_dir: Path) -> list[str]:
    """Register the follow-up sweeps already on disk under ``runs_dir`` (for reports on finished runs)."""
    names = []
    if not experiment.followup or not runs_dir.is_dir():
        return names
    for folder in sorted(runs_dir.iterdir()):
        setting, sep, rest = folder.name.partition(FOLLOWUP_SEP)
        if sep and rest == experiment.followup["name"] and setting in experiment.settings:
            names.append(experiment.add_followup(setting))
    return names


def merged_overrides(experiment: Experiment, sweep: str, extras: list[str]) -> dict[str, str]:
    """The sweep's overrides with the user's extra ``key=value`` arguments on top.

    An extra whose key some sweep of the experiment sets replaces it in those sweeps only (e.g.
    ``balancer.index=range(0,5)`` shrinks the grid sweep); any other extra goes to every sweep
    (e.g. ``trainer.max_steps=100``, ``hydra/launcher=submitit_slurm``).
    """
    merged = dict(experiment.sweeps[sweep])
    spec_keys = {k for overrides in experiment.sweeps.values() for k in overrides}
    for arg in extras:
        key, sep, value = arg.partition("=")
        if not sep:
            raise ExperimentError(f"extra argument {arg!r} is not a Hydra override key=value")
        bare = key.lstrip("+~")
        if bare in spec_keys and bare not in merged:
            continue
        merged.pop(bare, None)
        merged[key] = value
    return merged


def sweep_command(experiment: Experiment, sweep: str, runs_dir: Path, extras: list[str],
                  python: str = "python") -> list[str]:
    """``python run.py -m <overrides> hydra.sweep.dir=<runs>/<sweep> ...`` for one sweep."""
    overrides = merged_overrides(experiment, sweep, extras)
    # Job directories are named by the keys that vary; fixed extras (e.g. trainer.max_steps=4) stay out.
    own = experiment.settings.get(sweep.partition(FOLLOWUP_SEP)[0], {})  # a setting's own keys: in the sweep's name
    # Keys that do not change training (logger, ...) stay out too, even where the spec sets them.
    excluded = []
    for k, v in overrides.items():
        key, single = k.lstrip("+~"), count_values(v) == 1
        not_training, fixed_here = key_in(key, NOT_TRAINING_KEYS), k not in experiment.sweeps[sweep]
        if key in SWEEP_KEYS or k in own or (fixed_here and (single or not_training)) or (single and not_training):
            excluded.append(key)
    args = [f"{k}={v.replace('{runs}', str(runs_dir))}" for k, v in overrides.items()]
    hydra_args = [f"hydra.sweep.dir={runs_dir / sweep}",
                  f"hydra.job.config.override_dirname.exclude_keys=[{','.join(['sweep_group'] + excluded)}]",
                  f"++sweep_group={experiment.name}/{sweep}"]
    if not any(k == "hydra.sweep.subdir" for k in overrides):
        hydra_args.append("hydra.sweep.subdir=${hydra:job.override_dirname}")
    return [python, str(RUN_PY), "-m", *args, *hydra_args]


def expected_runs(experiment: Experiment, extras: list[str], runs_dir: Path | None = None) -> dict[str, int]:
    """sweep group -> number of jobs its multirun launches (or launched: read from the sweep's
    ``multirun.yaml`` under ``runs_dir`` when it exists, so a report on old runs counts what ran)."""
    out = {}
    for sweep in experiment.sweeps:
        launched = _launched_overrides(runs_dir / sweep) if runs_dir else None
        values = launched if launched is not None else merged_overrides(experiment, sweep, extras)
        out[f"{experiment.name}/{sweep}"] = math.prod(
            count_values(v) for k, v in values.items() if not k.startswith("hydra"))
    return out


def _launched_overrides(sweep_dir: Path) -> dict[str, str] | None:
    try:
        task = yaml.safe_load((sweep_dir / "multirun.yaml").read_text())["hydra"]["overrides"]["task"]
    except (OSError, yaml.YAMLError, KeyError, TypeError):
        return None
    return dict(str(o).partition("=")[::2] for o in task)


def count_values(value: str) -> int:
    """How many jobs a Hydra override value sweeps: ``a,b,c`` -> 3, ``range(0,10)`` -> 10, ``[a,b]`` -> 1."""
    value = value.strip()
    match = re.fullmatch(r"range\((-?\d+)\s*,\s*(-?\d+)(?:\s*,\s*(-?\d+))?\)", value)
    if match:
        start, stop, step = int(match[1]), int(match[2]), int(match[3] or 1)
        return len(range(start, stop, step))
    match = re.fullmatch(r"range\((\d+)\)", value)
    if match:
        return int(match[1])
    depth, quote, parts = 0, None, 1
    for char in value:
        if quote:
            quote = None if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char in "[({":
            depth += 1
        elif char in "])}":
            depth -= 1
        elif char == "," and depth == 0:
            parts += 1
    return parts


def clear_sweep_dir(path: Path) -> None:
    """Remove a previous sweep's run directories (runs/ is scratch); refuse anything else."""
    if not path.exists():
        return
    if not ((path / "multirun.yaml").is_file() or any(path.rglob("summary.json")) or any(path.rglob(".hydra"))):
        if any(path.iterdir()):
            raise ExperimentError(f"{path} exists and does not look like a sweep directory; move it away first")
    shutil.rmtree(path)


def _as_override_value(value) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(_as_override_value(v) for v in value)
    return str(value)
