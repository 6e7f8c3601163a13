"""Run one of the paper's experiments (experiments/NAME.yaml) end to end: its sweeps, then its report.

    scripts/reproduce.py toy                               # Figure 2 on the toy -> results/toy/
    scripts/reproduce.py toy trainer.max_steps=200 seed=0  # extra Hydra overrides go to every sweep
    scripts/reproduce.py table1 hydra/launcher=submitit_slurm   # NYUv2 sweeps on a cluster
    scripts/reproduce.py toy --report-only                 # tables and figures from existing runs
    scripts/reproduce.py toy_grid --sweeps static          # rerun one sweep (here: after its GradNorm runs)
    scripts/reproduce.py toy_sensitivity --sweeps followup # only the follow-up sweeps of a finished study
    scripts/reproduce.py --list

Each sweep is one ``python run.py -m ...`` (so a Hydra launcher plugin can take it elsewhere); its
runs go to ``runs/<experiment>/<sweep>/`` (replaced on a new run; kept and continued with
``trainer.resume=auto``), the report to the experiment's results folder, and ``REPORT.md`` next to
that folder is regenerated. docs/experiments.md has more.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import threading
import time
from pathlib import Path

from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from gradnorm.experiments import (  # noqa: E402
    ROOT,
    ExperimentError,
    add_existing_followups,
    available,
    clear_sweep_dir,
    expected_runs,
    load_experiment,
    sweep_command,
)
from gradnorm.report.build import build_report  # noqa: E402
from gradnorm.report.runs import load_runs  # noqa: E402
from gradnorm.report.sensitivity import differing_settings  # noqa: E402
from gradnorm.report.wandb_report import log_report  # noqa: E402

EXIT_CONFIG = 2


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    parser.add_argument("name", nargs="?", help=f"experiment: {', '.join(available())}")
    parser.add_argument("overrides", nargs="*", help="extra Hydra overrides for every sweep (key=value)")
    parser.add_argument("--out", type=Path, help="results folder (default: the experiment's `results`)")
    parser.add_argument("--runs-dir", type=Path, help="where the runs go / are read (default: runs/<name>)")
    parser.add_argument("--report-only", action="store_true", help="no training: report on existing runs")
    parser.add_argument("--dry-run", action="store_true", help="print the sweep commands, run nothing")
    parser.add_argument("--sweeps", help="comma-separated subset of the experiment's sweeps to run (default: all)")
    parser.add_argument("--list", action="store_true", help="list the experiments and exit")
    args = parser.parse_intermixed_args(argv)

    if args.list or not args.name:
        for name in available():
            spec = load_experiment(name)
            print(f"{name:14s} {spec.paper:28s} {spec.description}")
        return 0 if args.list else EXIT_CONFIG
    try:
        experiment = load_experiment(args.name)
        runs_dir = (args.runs_dir or experiment.runs).resolve()
        out_dir = (args.out or experiment.results).resolve()
        if not args.report_only:
            chosen = _chosen(experiment, args.sweeps)
            code = run_sweeps(experiment, runs_dir, args.overrides, args.dry_run, chosen)
            if not code and experiment.followup and not args.dry_run and (not args.sweeps or "followup" in _names(args.sweeps)):
                code = run_sweeps(experiment, runs_dir, args.overrides, False, followups(experiment, runs_dir))
            if code:
                return code
        if args.dry_run:
            return 0
        print(f"==> [{experiment.name}] report from {_short(runs_dir)} -> {_short(out_dir)}", flush=True)
        files = build_report(experiment, runs_dir, out_dir, args.overrides)
    except ExperimentError as err:
        print(f"error: {err}", file=sys.stderr)
        return EXIT_CONFIG
    for path in files:
        print(f"    wrote {_short(path)}")
    for path in files:  # the new numbers against the ones they replaced (docs/experiments.md)
        if path.name.endswith("comparison.md"):
            print("\n" + path.read_text())
    log_report(experiment.name, files, args.overrides)
    return 0


def run_sweeps(experiment, runs_dir: Path, extras: list[str], dry_run: bool, sweeps: list[str]) -> int:
    """Run the chosen sweeps in the experiment's order; a configuration error (exit 2) stops everything."""
    expected = expected_runs(experiment, extras)
    total = time.perf_counter()
    if experiment.env:
        print(f"==> [{experiment.name}] environment: " + " ".join(
            f"{k}={os.environ.get(k, v)}" for k, v in experiment.env.items()), flush=True)
    for sweep in sweeps:
        command = sweep_command(experiment, sweep, runs_dir, extras, python=sys.executable)
        count = expected[f"{experiment.name}/{sweep}"]
        print(f"==> [{experiment.name}] sweep {sweep!r}: {count} runs -> {_short(runs_dir / sweep)}", flush=True)
        print("    " + shlex.join([Path(command[0]).name, *[_short(Path(c)) if c == command[1] else c
                                                            for c in command[1:]]]), flush=True)
        if dry_run:
            continue
        if resuming(extras):
            print(f"    trainer.resume: keeping {_short(runs_dir / sweep)}'s finished runs", flush=True)
        else:
            clear_sweep_dir(runs_dir / sweep)
        start = time.perf_counter()
        code = run_with_bar(command, {**experiment.env, **os.environ}, runs_dir / sweep, count, sweep)
        print(f"==> [{experiment.name}] sweep {sweep!r} finished in {time.perf_counter() - start:.0f} s "
              f"(exit {code})", flush=True)
        _record_time(runs_dir, sweep, time.perf_counter() - start)
        if code == EXIT_CONFIG:
            print(f"error: sweep {sweep!r} was refused (configuration error above)", file=sys.stderr)
            return EXIT_CONFIG
    if not dry_run:
        print(f"==> [{experiment.name}] all sweeps done in {time.perf_counter() - total:.0f} s", flush=True)
    return 0


def resuming(extras: list[str]) -> bool:
    """Whether the sweeps continue their folders (``trainer.resume=auto``: finished runs are kept, unfinished
    ones continue their checkpoints) instead of starting afresh in emptied folders."""
    return any(e.split("=", 1)[0].lstrip("+") == "trainer.resume" and e.split("=", 1)[1] not in ("", "null")
               for e in extras if "=" in e)


def run_with_bar(command: list[str], env: dict, sweep_dir: Path, count: int, label: str) -> int:
    """Run one sweep's ``run.py -m`` under one bar of finished runs (its jobs' summary.json files) with
    an ETA; the jobs' own lines (one per finished run) are printed above the bar. Returns the exit code."""
    process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True, bufsize=1)
    with tqdm(total=count, desc=label, unit="run", dynamic_ncols=True,
              bar_format="{desc} {n_fmt}/{total_fmt} runs |{bar}| {elapsed}<{remaining}") as progress:
        def forward():
            for line in process.stdout:
                progress.write(line.rstrip("\n"))

        reader = threading.Thread(target=forward, daemon=True)
        reader.start()
        while process.poll() is None:
            progress.update(_finished(sweep_dir) - progress.n)
            time.sleep(1.0)
        reader.join(timeout=5)
        progress.update(_finished(sweep_dir) - progress.n)
    return process.returncode


def _finished(sweep_dir: Path) -> int:
    """How many of a sweep's jobs have ended (a job writes summary.json when it ends, in any status)."""
    return sum(1 for _ in sweep_dir.glob("*/summary.json"))


def followups(experiment, runs_dir: Path) -> list[str]:
    """The follow-up sweeps (``followup`` in the spec): the reference setting's, and those of the settings
    whose verdict on the spec's claim differs from the reference's in the finished runs."""
    spec = experiment.followup
    add_existing_followups(experiment, runs_dir)  # not re-run below: their folders are replaced, as any sweep's
    differing = differing_settings(load_runs(runs_dir), spec["reference"], spec["claim"], spec["where"])
    print(f"==> [{experiment.name}] follow-up {spec['name']!r} for {spec['reference']!r} and the settings whose "
          f"{spec['claim']} verdict ({spec['where']}) differs: {', '.join(differing) or 'none'}", flush=True)
    return [experiment.add_followup(s) for s in [spec["reference"], *differing]]


def _record_time(runs_dir: Path, sweep: str, seconds: float) -> None:
    """``<runs>/sweep_times.json``: sweep -> wall seconds of its last run (reports quote the total)."""
    path = runs_dir / "sweep_times.json"
    try:
        times = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError):
        times = {}
    times[sweep] = round(seconds, 1)
    runs_dir.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(times, indent=1) + "\n")


def _names(names: str) -> list[str]:
    """``--sweeps a,b`` -> ["a", "b"]."""
    return [n.strip() for n in names.split(",") if n.strip()]


def _chosen(experiment, names: str | None) -> list[str]:
    if not names:
        return list(experiment.sweeps)
    wanted = [n for n in _names(names) if n != "followup"]
    unknown = [n for n in wanted if n not in experiment.sweeps]
    if unknown:
        raise ExperimentError(f"unknown sweep {unknown[0]!r} of {experiment.name}; choose from: "
                              f"{', '.join(experiment.sweeps)}")
    return [n for n in experiment.sweeps if n in wanted]


def _short(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(ROOT))
    except ValueError:
        return str(path)


if __name__ == "__main__":
    sys.exit(main())
