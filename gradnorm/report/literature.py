"""The literature as data: published numbers, their sources and their protocols (``literature.yaml``).

:func:`load` reads ``literature.yaml`` and checks it (every row has a known source, method and setting,
every metric name is one the suite computes, every protocol has every tag), so that a report never
shows a number it cannot trace. Rows keep the metrics as printed (``Row.metrics``) and in the suite's
units (``Row.suite_metrics``: percentages become fractions), so that Δm is recomputed in each of the
suite's conventions (:func:`delta_m`, ``gradnorm.tasks.DELTA_M_CONVENTIONS``) from the same base for
published rows and ours. :func:`protocol_differences` names where a published protocol and ours differ.
"""

from __future__ import annotations

import functools
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from gradnorm.balancers import METHODS
from gradnorm.report.style import SINGLE_TASK
from gradnorm.tasks import delta_m_all, directions

LITERATURE = Path(__file__).with_name("literature.yaml")

#: the protocol tags every row carries (through its source's protocol)
PROTOCOL_KEYS = ("backbone", "resolution", "batch", "epochs", "augmentation", "epoch_choice", "metric_average",
                 "seeds")
UNSTATED = "unstated"
#: the tags with a fixed vocabulary
CHOICES = {
    "augmentation": ("mtan", "none", UNSTATED),
    "epoch_choice": ("final", "last10_mean", "best", UNSTATED),
    "metric_average": ("batches", "pixels", UNSTATED),
}
#: numeric tags (an integer, or "unstated"); ours and theirs differ when more than 2% apart
NUMERIC = ("batch", "epochs", "seeds")
#: metric name -> higher is better, for the NYUv2 tasks (seg, depth, normals: gradnorm.data.nyuv2)
METRIC_DIRECTIONS = {**directions.segmentation("seg"), **directions.depth("depth"), **directions.normals("normals")}
#: the overall scores a row may give as printed, and how each maps onto the suite's Δm conventions
SUMMARY_KEYS = ("delta_m_nash_mtl", "delta_m_task_weighted", "mean_rank")
_ROW_KEYS = {"source", "method", "label", "task", "metrics", "values", "printed", "settings", "note", "verified"}
_SOURCE_KEYS = {"cite", "table", "short", "setting", "protocol", "checked", "repository", "file", "commit"}


class LiteratureError(ValueError):
    """``literature.yaml`` does not hold what the reports need; the message is one line."""


@dataclass(frozen=True)
class Row:
    """One published result: ``metrics`` as printed; ``protocol`` the tags of its source's protocol."""

    source: str
    method: str
    setting: str
    label: str
    metrics: dict[str, float]
    suite_metrics: dict[str, float]
    protocol: dict
    printed: dict[str, float] = field(default_factory=dict)
    task: str | None = None
    settings: dict = field(default_factory=dict)
    verified: bool = True
    note: str = ""

    @property
    def alpha(self) -> float | None:
        value = self.settings.get("alpha")
        return None if value is None else float(value)


@dataclass(frozen=True)
class Literature:
    sources: dict[str, dict]
    protocols: dict[str, dict]
    settings: dict[str, str]
    rows: list[Row]
    percent: frozenset[str]
    values_order: tuple[str, ...]

    def select(self, setting: str | None = None, method: str | None = None, source: str | None = None,
               task: str | None = None) -> list[Row]:
        """The rows matching every argument given, in the file's order."""
        return [r for r in self.rows if (setting is None or r.setting == setting)
                and (method is None or r.method == method) and (source is None or r.source == source)
                and (task is None or r.task == task)]

    def baselines(self, setting: str, source: str) -> dict[str, float]:
        """The single-task metrics of ``source`` in ``setting`` (suite units): the base of Δm."""
        found: dict[str, float] = {}
        for row in self.select(setting=setting, method=SINGLE_TASK, source=source):
            found.update(row.suite_metrics)
        if not found:
            raise LiteratureError(f"literature: source {source!r} has no single-task row in setting {setting!r}; "
                                  f"sources with one: {', '.join(self.sources_with_baselines(setting)) or 'none'}")
        return found

    def sources_with_baselines(self, setting: str) -> list[str]:
        return sorted({r.source for r in self.select(setting=setting, method=SINGLE_TASK)})

    def short(self, source: str) -> str:
        """How tables name a source: its ``short`` name and table, e.g. "Nash-MTL Table 2"."""
        spec = self.sources[source]
        return f"{spec['short']} {spec['table'].split(' (')[0]}"

    def to_printed_units(self, name: str, value: float) -> float:
        """A suite value of metric ``name`` in the units the literature prints (fractions -> %)."""
        return 100.0 * value if name in self.percent else value


def delta_m(suite_metrics: dict[str, float], baselines: dict[str, float]) -> dict[str, float]:
    """Δm (%) in each convention of ``gradnorm.tasks.DELTA_M_CONVENTIONS`` against ``baselines``
    (suite units), over the baseline metrics that ``suite_metrics`` has; {} when it has none."""
    measured = {k: v for k, v in baselines.items() if k in suite_metrics and math.isfinite(suite_metrics[k])}
    return delta_m_all(suite_metrics, measured, METRIC_DIRECTIONS) if measured else {}


def printed_as_suite(printed: dict[str, float]) -> dict[str, float]:
    """The printed Δm values under the suite's convention names (task-weighted Δm = −delta_m_libmtl)."""
    out = {}
    if "delta_m_nash_mtl" in printed:
        out["delta_m_nash_mtl"] = printed["delta_m_nash_mtl"]
    if "delta_m_task_weighted" in printed:
        out["delta_m_libmtl"] = -printed["delta_m_task_weighted"]
    return out


def protocol_differences(theirs: dict, ours: dict) -> list[str]:
    """Where a published protocol and ours differ, one short phrase per tag of :data:`PROTOCOL_KEYS`:
    ``"batch 2 (ours 24)"``; a tag the source leaves unstated reads ``"augmentation unstated"``."""
    out = []
    for key in PROTOCOL_KEYS:
        mine, other = ours.get(key, UNSTATED), theirs.get(key, UNSTATED)
        if other == UNSTATED:
            out.append(f"{key} unstated")
        elif not _same(key, other, mine):
            out.append(f"{key} {other} (ours {mine})")
    return out


#: dataset.scales and dataset.flip_prob of MTAN's augmentation (conf/dataset/nyuv2.yaml's defaults)
MTAN_AUGMENTATION = ([1.0, 1.2, 1.5], 0.5)


def run_protocol(config: dict, summary: dict, backbone: str, seeds: int, epoch_choice: str) -> dict:
    """Our runs' tags of :data:`PROTOCOL_KEYS`, from one run's resolved config and summary.json (its
    ``task_setup``: image size and training samples); ``unstated`` where the run does not record one.
    ``batch`` is the per-process batch (``trainer.batch_size``)."""
    trainer, dataset = config.get("trainer") or {}, config.get("dataset") or {}
    setup = summary.get("task_setup") or {}
    size, train, batch, steps = setup.get("image_size"), setup.get("train_samples"), trainer.get("batch_size"), \
        summary.get("steps")
    epochs = steps * batch / train if steps and batch and train else None
    if "augmentation" not in dataset:
        augmentation = UNSTATED
    elif not dataset["augmentation"]:
        augmentation = "none"
    else:
        scales = [float(s) for s in dataset.get("scales") or []]
        augmentation = "mtan" if (scales, float(dataset.get("flip_prob", 0.0))) == MTAN_AUGMENTATION else "other"
    return {"backbone": backbone, "resolution": f"{size[0]}x{size[1]}" if size else UNSTATED,
            "batch": batch or UNSTATED,
            "epochs": UNSTATED if epochs is None else _rounded(epochs),
            "augmentation": augmentation, "epoch_choice": epoch_choice,
            "metric_average": dataset.get("metric_average", "pixels"), "seeds": seeds}


def _rounded(epochs: float) -> int | float:
    """Whole epochs from 10 on, else 2 decimals (an integer when whole)."""
    value = round(epochs) if epochs >= 10 else round(epochs, 2)
    return int(value) if value == int(value) else value


def _same(key: str, theirs, ours) -> bool:
    if key in NUMERIC:
        try:
            a, b = float(theirs), float(ours)
        except (TypeError, ValueError):
            return str(theirs) == str(ours)
        return abs(a - b) <= 0.02 * max(abs(a), abs(b))
    return str(theirs) == str(ours)


# -- loading and checking ---------------------------------------------------------------------------
@functools.cache
def _load_default() -> Literature:
    return _parse(yaml.safe_load(LITERATURE.read_text()), LITERATURE.name)


def load(path: str | Path | None = None) -> Literature:
    """``literature.yaml`` (or ``path``), checked; raises :class:`LiteratureError` naming the first problem."""
    if path is None:
        return _load_default()
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as err:
        raise LiteratureError(f"{path}: cannot read it ({str(err).splitlines()[0]})") from None
    return _parse(data, path.name)


def _parse(data, name: str) -> Literature:
    if not isinstance(data, dict):
        raise LiteratureError(f"{name}: expected a mapping at the top, got {type(data).__name__}")
    for key in ("percent", "values_order", "settings", "protocols", "sources", "rows"):
        if key not in data:
            raise LiteratureError(f"{name}: the top-level key {key!r} is missing")
    percent = frozenset(_known_metrics(data["percent"], f"{name}: percent"))
    order = tuple(_known_metrics(data["values_order"], f"{name}: values_order"))
    settings = {str(k): str(v) for k, v in data["settings"].items()}
    protocols = {str(k): _protocol(v, f"{name}: protocol {k!r}") for k, v in data["protocols"].items()}
    sources = {str(k): _source(v, f"{name}: source {k!r}", settings, protocols) for k, v in data["sources"].items()}
    rows, seen = [], {}
    for i, raw in enumerate(data["rows"] or []):
        where = f"{name}: row {i + 1}"
        row = _row(raw, where, sources, protocols, percent, order)
        key = (row.source, row.method, row.task, row.alpha)
        if key in seen:
            raise LiteratureError(f"{where} ({row.source}, {row.method}): the same source, method and task as row {seen[key]}")
        seen[key] = i + 1
        rows.append(row)
    return Literature(sources, protocols, settings, rows, percent, order)


def _known_metrics(names, where: str) -> list[str]:
    unknown = [str(n) for n in names or [] if n not in METRIC_DIRECTIONS]
    if unknown:
        raise LiteratureError(f"{where}: unknown metric {unknown[0]!r}; known: {', '.join(METRIC_DIRECTIONS)}")
    return [str(n) for n in names]


def _protocol(spec, where: str) -> dict:
    if not isinstance(spec, dict):
        raise LiteratureError(f"{where}: expected a mapping of protocol tags")
    missing = [k for k in PROTOCOL_KEYS if k not in spec]
    if missing:
        raise LiteratureError(f"{where}: tag {missing[0]!r} is missing (every protocol has {', '.join(PROTOCOL_KEYS)})")
    for key, allowed in CHOICES.items():
        if spec[key] not in allowed:
            raise LiteratureError(f"{where}: {key}={spec[key]!r}; allowed: {', '.join(allowed)}")
    for key in NUMERIC:
        value = spec[key]
        if value != UNSTATED and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise LiteratureError(f"{where}: {key}={value!r}; allowed: a positive integer or {UNSTATED}")
    return dict(spec)


def _source(spec, where: str, settings: dict, protocols: dict) -> dict:
    if not isinstance(spec, dict):
        raise LiteratureError(f"{where}: expected a mapping")
    unknown = sorted(set(spec) - _SOURCE_KEYS)
    if unknown:
        raise LiteratureError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_SOURCE_KEYS))}")
    for key in ("cite", "table", "short", "setting", "protocol", "checked"):
        if not spec.get(key):
            raise LiteratureError(f"{where}: {key!r} is missing")
    if spec["setting"] not in settings:
        raise LiteratureError(f"{where}: unknown setting {spec['setting']!r}; known: {', '.join(settings)}")
    if spec["protocol"] not in protocols:
        raise LiteratureError(f"{where}: unknown protocol {spec['protocol']!r}; known: {', '.join(protocols)}")
    if ("file" in spec) != ("commit" in spec) or ("file" in spec and "repository" not in spec):
        raise LiteratureError(f"{where}: a repository file needs repository, file and commit together")
    if "commit" in spec and not re.fullmatch(r"[0-9a-f]{40}", str(spec["commit"])):
        raise LiteratureError(f"{where}: commit must be a full 40-digit hash, got {spec['commit']!r}")
    return dict(spec)


def _row(raw, where: str, sources: dict, protocols: dict, percent: frozenset, order: tuple) -> Row:
    if not isinstance(raw, dict):
        raise LiteratureError(f"{where}: expected a mapping")
    unknown = sorted(set(raw) - _ROW_KEYS)
    if unknown:
        raise LiteratureError(f"{where}: unknown key {unknown[0]!r}; allowed: {', '.join(sorted(_ROW_KEYS))}")
    source = raw.get("source")
    if source not in sources:
        raise LiteratureError(f"{where}: unknown source {source!r}; known: {', '.join(sources)}")
    method = raw.get("method")
    if method != SINGLE_TASK and method not in METHODS:
        raise LiteratureError(f"{where}: unknown method {method!r}; known: {SINGLE_TASK}, {', '.join(sorted(METHODS))}")
    where = f"{where} ({source}, {method})"
    if ("metrics" in raw) == ("values" in raw):
        raise LiteratureError(f"{where}: give either metrics (name: value) or values (in the order of values_order)")
    if "values" in raw:
        values = list(raw["values"] or [])
        if len(values) != len(order):
            raise LiteratureError(f"{where}: {len(values)} values, values_order has {len(order)}")
        metrics = dict(zip(order, values))
    else:
        metrics = dict(raw["metrics"] or {})
        _known_metrics(metrics, where)
    if not metrics:
        raise LiteratureError(f"{where}: no metrics")
    for key, value in metrics.items():
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            raise LiteratureError(f"{where}: {key}={value!r} is not a number")
    printed = dict(raw.get("printed") or {})
    odd = [k for k in printed if k not in SUMMARY_KEYS]
    if odd:
        raise LiteratureError(f"{where}: unknown printed score {odd[0]!r}; allowed: {', '.join(SUMMARY_KEYS)}")
    task = raw.get("task")
    tasks = {name.split("/")[0] for name in METRIC_DIRECTIONS}
    if task is not None and (method != SINGLE_TASK or task not in tasks):
        raise LiteratureError(f"{where}: task={task!r} is for single-task rows, one of {', '.join(sorted(tasks))}")
    verified = raw.get("verified", True)
    if not isinstance(verified, bool) or (not verified and not raw.get("note")):
        raise LiteratureError(f"{where}: verified must be true or false, and false needs a note saying why")
    spec = sources[source]
    suite = {k: (v / 100.0 if k in percent else float(v)) for k, v in metrics.items()}
    return Row(source=source, method=method, setting=spec["setting"], label=str(raw.get("label", method)),
               metrics={k: float(v) for k, v in metrics.items()}, suite_metrics=suite,
               protocol=dict(protocols[spec["protocol"]]), printed={k: float(v) for k, v in printed.items()},
               task=task, settings=dict(raw.get("settings") or {}), verified=verified, note=str(raw.get("note", "")))
