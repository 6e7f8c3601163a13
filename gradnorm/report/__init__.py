"""Reporting: run directories in, tables, figures and verdicts on the paper's claims out.

``summary.json`` and ``history.csv`` of each run are the only input (docs/architecture.md).
``REPORTS`` maps an experiment's ``report.kind`` (experiments/*.yaml) to the function that writes
its files; each returns (files written, verdicts on the paper's claims).
"""

from gradnorm.report import alpha, figure2, grid, methods, table1
from gradnorm.report.runs import MISSING, Run, find_run_dirs, load_run, load_runs, runs_frame

REPORTS = {
    "figure2": figure2.report,
    "grid": grid.report,
    "alpha": alpha.report,
    "table1": table1.report,
    "figure3": table1.figure3_report,
    "methods": methods.report,
}

__all__ = ["MISSING", "REPORTS", "Run", "find_run_dirs", "load_run", "load_runs", "runs_frame"]
