"""Aggregate run directories into tables (no training).

    scripts/report.py multirun/2026-01-01_12-00-00   # any runs -> runs.csv + table.md in that folder
    scripts/report.py runs/toy --out /tmp/toy-tables
    scripts/report.py --all                           # every experiment whose runs exist, then results/REPORT.md

``runs.csv`` has one row per run (config, status, final metrics, final and mean weights);
``table.md`` one row per (experiment, data set, model, method, tasks) with mean ± std over seeds and
the number of runs behind each cell, followed by the failed and missing runs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradnorm import io  # noqa: E402
from gradnorm.experiments import ROOT, ExperimentError, available, load_experiment  # noqa: E402
from gradnorm.report.build import build_report, write_paper_report  # noqa: E402
from gradnorm.report.runs import load_runs, runs_frame  # noqa: E402
from gradnorm.report.tables import not_completed_section, runs_table  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("runs_dir", nargs="?", type=Path, help="a folder with run directories (any depth)")
    parser.add_argument("--out", type=Path, help="where runs.csv and table.md go (default: runs_dir)")
    parser.add_argument("--all", action="store_true",
                        help="report every experiment of experiments/ whose runs exist, then results/REPORT.md")
    args = parser.parse_args(argv)
    if args.all:
        return report_all()
    if args.runs_dir is None:
        parser.print_usage(sys.stderr)
        print("error: give a folder of runs, or --all", file=sys.stderr)
        return 2
    runs = load_runs(args.runs_dir)
    if not runs:
        print(f"error: no run directories (summary.json or .hydra/) under {args.runs_dir}", file=sys.stderr)
        return 2
    out = args.out or args.runs_dir
    frame = runs_frame(runs, args.runs_dir)
    io.save_csv(out / "runs.csv", frame)
    io.write_text(out / "table.md", f"# Runs under `{args.runs_dir}`\n\nFinal metrics, mean ± std over seeds "
                  "(n completed runs); `runs` = completed/all.\n\n" + runs_table(frame) + "\n"
                  + not_completed_section(frame))
    counts = frame["status"].value_counts().to_dict()
    print(f"{len(frame)} runs ({', '.join(f'{v} {k}' for k, v in counts.items())}) -> {out}/runs.csv, {out}/table.md")
    return 0


def report_all() -> int:
    done = 0
    for name in available():
        experiment = load_experiment(name)
        if not experiment.runs.is_dir():
            continue
        print(f"==> [{name}] report from {experiment.runs.relative_to(ROOT)}", flush=True)
        try:
            build_report(experiment, experiment.runs, experiment.results)
            done += 1
        except ExperimentError as err:
            print(f"    skipped: {err}", file=sys.stderr)
    path = write_paper_report(ROOT / "results")
    print(f"{done} experiment reports; wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
