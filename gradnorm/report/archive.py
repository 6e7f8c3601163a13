"""Auditable runs: a compact copy of every run behind a results folder, so that the curves and training
losses behind every verdict can be re-plotted without re-running (docs/reporting.md, "Auditable runs").

``<results>/histories/<experiment>/<run_dir>/`` mirrors the runs folder: ``summary.json`` as written,
``history.csv.gz`` (``run_record.write_archived_history``) with every evaluation row and, of the other
steps, one in ``stride`` = max_steps // :data:`ARCHIVE_ROWS` (per-step columns: the weights, the training
losses, the balancer's scalars, the step times, sampled, not averaged), and ``.hydra/`` reduced to what
reports read (the overrides and the config-group choices). ``scripts/reproduce.py <experiment>
--report-only --runs-dir <results>/histories/<experiment> --out /tmp/x`` reports from it; verdicts that
read every step (the weights' stability) come out close to, not exactly as, from the full runs.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from gradnorm import io, run_record
from gradnorm.report.runs import EVALUATION_COLUMN, Run

#: the folder of a results folder that holds its runs' archives
ARCHIVE_DIR = "histories"
#: about how many rows of a history are kept besides its evaluations
ARCHIVE_ROWS = 250


def downsample(frame, rows: int = ARCHIVE_ROWS):
    """Every evaluation row, the first and last rows, and one in max_step // ``rows`` of the others."""
    if frame is None or frame.empty or "step" not in frame:
        return frame
    steps = frame["step"]
    stride = max(1, int(steps.max()) // rows)
    keep = (steps % stride == 0) | (steps == steps.max()) | (steps == steps.min())
    if EVALUATION_COLUMN in frame:
        keep |= frame[EVALUATION_COLUMN].notna()
    return frame[keep]


def archive_runs(runs: list[Run], runs_dir: Path, dest: Path) -> Path | None:
    """Replace ``dest`` by the archive of ``runs`` (run folders relative to ``runs_dir``); None (nothing
    written) when ``runs_dir`` is itself inside ``dest`` (a report made from an archive)."""
    runs_dir, dest = Path(runs_dir).resolve(), Path(dest).resolve()
    if runs_dir == dest or dest in runs_dir.parents:
        return None
    if dest.exists():
        shutil.rmtree(dest)
    for run in runs:
        try:
            relative = Path(run.path).resolve().relative_to(runs_dir)
        except ValueError:
            continue
        target = dest / relative
        summary = Path(run.path) / run_record.SUMMARY
        if summary.is_file():
            io.write_text(target / run_record.SUMMARY, summary.read_text())
        if run.history is not None:
            run_record.write_archived_history(target, downsample(run.history))
        overrides = Path(run.path) / ".hydra" / "overrides.yaml"
        if overrides.is_file():
            io.write_text(target / ".hydra" / "overrides.yaml", overrides.read_text())
        if run.choices or not summary.is_file():  # the choices reports read; a run without summary keeps its config
            io.write_text(target / ".hydra" / "hydra.yaml",
                          yaml.safe_dump({"hydra": {"runtime": {"choices": run.choices}}}, sort_keys=True))
            config = Path(run.path) / ".hydra" / "config.yaml"
            if not summary.is_file() and config.is_file():
                io.write_text(target / ".hydra" / "config.yaml", config.read_text())
    return dest
