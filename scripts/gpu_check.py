"""`make gpu-check`: the first run of the CUDA path, time-boxed (under 8 minutes on one H100/H200).

On a machine with CUDA, in order, each part with its own time limit:

1. the tests marked ``cuda`` (``pytest -m cuda``: bf16 autocast, channels_last, cudnn.benchmark,
   the per-layer formulas and the one-backward GradNorm on CUDA, a checkpoint round trip);
2. ``scripts/bench.py`` on every image backbone at 288×384, batch 8, bf16 autocast, channels-last
   and cuDNN autotuning (images/s, GradNorm's step over equal weights', step peak memory);
3. 200 training steps of ``experiment=nyuv2_segnet`` through the CLI (``run.py``) on generated data
   of NYUv2's full size (``scripts/make_fake_nyuv2.py``, 288×384);

then writes ``results/bench/gpu/README.md`` (and ``results/bench/gpu/bench/`` from step 2). Without
CUDA it prints one line saying so and exits 0.

    python scripts/gpu_check.py                     # what make gpu-check runs
    python scripts/gpu_check.py --allow-cpu --size 32x48 --batch 2 --train-steps 2 --train-batch 2 --backbones segnet
                                                    # the same logic on a CPU, tiny (tests/test_gpu_check.py)
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
BACKBONES = ("segnet", "resnet", "fcn")
#: the time box: each part's limit in seconds (the whole stays under 8 minutes)
LIMITS = {"tests": 120, "bench": 210, "data": 45, "train": 100}


def _run(command: list[str], limit: float, env: dict | None = None) -> dict:
    """Run a command with a time limit; returncode (None: ran past the limit), seconds, output tail."""
    start = time.perf_counter()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                              env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                                  filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])), **(env or {})))
        code, out = done.returncode, done.stdout + done.stderr
    except subprocess.TimeoutExpired as err:
        code = None
        out = (err.stdout or b"").decode(errors="replace") if isinstance(err.stdout, bytes) else (err.stdout or "")
    return {"command": " ".join(command), "returncode": code, "seconds": time.perf_counter() - start,
            "tail": "\n".join(out.strip().splitlines()[-15:])}


def _status(result: dict) -> str:
    if result["returncode"] is None:
        return f"stopped at its time limit ({result['seconds']:.0f} s)"
    return f"{'ok' if result['returncode'] == 0 else 'FAILED (exit ' + str(result['returncode']) + ')'}, " \
           f"{result['seconds']:.0f} s"


def run_tests(args) -> dict:
    return _run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", args.tests],
                LIMITS["tests"] * args.scale)


def run_bench(args, out: Path) -> tuple[dict, dict]:
    command = [sys.executable, "scripts/bench.py", "--cases", ",".join(args.backbones), "--size", args.size,
               "--batch", str(args.batch), "--rounds", str(args.rounds), "--balancers", args.bench_balancers,
               "--out", str(out / "bench")]
    if args.bench_warmup is not None:
        command += ["--warmup", str(args.bench_warmup)]
    if args.no_bench_memory:
        command += ["--no-memory"]
    if args.allow_cpu and not torch.cuda.is_available():
        command += ["--device", "cpu", "--threads", "1"]
    result = _run(command, LIMITS["bench"] * args.scale)
    report = out / "bench" / "bench.json"
    return result, (json.loads(report.read_text()) if result["returncode"] is not None and report.exists() else {})


def run_training(args, out: Path) -> dict:
    """Generate full-size data, then train experiment=nyuv2_segnet for --train-steps steps."""
    data, run_dir = out / "work" / "fake_nyuv2", out / "work" / "nyuv2_segnet"
    height, width = args.size.split("x")
    made = _run([sys.executable, "scripts/make_fake_nyuv2.py", str(data), "--n-train", str(args.train_images),
                 "--n-val", str(args.train_batch), "--height", height, "--width", width, "--overwrite"],
                LIMITS["data"] * args.scale)
    if made["returncode"] != 0:
        return {"data": made}
    cpu = args.allow_cpu and not torch.cuda.is_available()
    workers = 0 if cpu else min(8, os.cpu_count() or 1)
    overrides = [f"dataset.root={data}", f"trainer.max_steps={args.train_steps}",
                 f"trainer.batch_size={args.train_batch}", f"trainer.eval_every={args.train_steps}",
                 f"trainer.eval_batch_size={args.train_batch}", "trainer.checkpoint_every=0", "trainer.progress=false",
                 "logger=none", f"dataset.num_workers={workers}", f"hydra.run.dir={run_dir}"]
    if cpu:
        overrides.append("trainer.device=cpu")
    trained = _run([sys.executable, "run.py", "experiment=nyuv2_segnet", "balancer=gradnorm", *overrides],
                   LIMITS["train"] * args.scale, env={"WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "1"})
    summary_path = run_dir / "summary.json"
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    return {"data": made, "train": trained, "summary": summary}


def _machine() -> dict:
    cuda = torch.cuda.is_available()
    return {
        "date_utc": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M"),
        "platform": platform.platform(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (--allow-cpu: the logic only, not a GPU check)",
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if cuda else None,
        "bf16": bool(cuda and torch.cuda.is_bf16_supported()),
        "commit": subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                 text=True).stdout.strip(),
    }


def render(args, machine: dict, tests: dict, bench: tuple[dict, dict], training: dict, total: float) -> str:
    bench_result, report = bench
    rows = ["| backbone | images/s, equal | images/s, GradNorm | GradNorm / equal (p25–p75) | step peak MiB, equal "
            "| step peak MiB, GradNorm | target |", "|" + "---|" * 7]
    for name, case in report.get("cases", {}).items():
        if case.get("error"):
            rows.append(f"| {name} | failed: {case['error']} | | | | | |")
            continue
        equal, gradnorm = case["rows"]["equal"], case["rows"]["gradnorm"]
        q25, q75 = gradnorm["ratio_quartiles"]

        def peak(row):
            return "n/a" if row.get("step_peak_mib") is None else f"{row['step_peak_mib']:.0f}"

        target = "" if case.get("target") is None else \
            f"≤ {case['target']:.2f}: {'met' if gradnorm['ratio'] <= case['target'] else 'missed'}"
        rows.append(f"| {name} | {equal['images_per_s']:.1f} | {gradnorm['images_per_s']:.1f} | "
                    f"{gradnorm['ratio']:.3f} ({q25:.3f}–{q75:.3f}) | {peak(equal)} | {peak(gradnorm)} | {target} |")
    summary = training.get("summary", {})
    train = training.get("train")
    lines = [f"- data: {_status(training['data'])}"]
    if train:
        lines.append(f"- training: {_status(train)}; status `{summary.get('status', 'no summary.json')}`")
        seconds = summary.get("wall_time_s")
        if train["returncode"] == 0:
            per_step = (seconds or train["seconds"]) / args.train_steps
            hours = per_step * 20000 / 3600
            lines.append(f"- {per_step * 1e3:.0f} ms per step ({'the run' + chr(39) + 's wall time in summary.json' if seconds else 'the whole command'},"
                         f" data loading and the final evaluation included): one 20,000-step run (the paper's) takes "
                         f"about {hours:.1f} h on this GPU at batch {args.train_batch}; Table 1's SegNet column, 7 runs "
                         f"(3 single-task, equal, uncertainty, GradNorm, GradNorm static), about {7 * hours:.0f} h one "
                         "after the other (evaluations every 1,000 steps not counted)")
        metrics = summary.get("metrics", {})
        if metrics:
            lines.append("- final metrics: " + ", ".join(f"{k} {v:.4g}" for k, v in sorted(metrics.items())
                                                        if isinstance(v, (int, float)))[:600])
        if train["returncode"] != 0:
            lines.append(f"\n```text\n{train['tail']}\n```")
    test_tail = tests["tail"].splitlines()[-1] if tests["tail"] else ""
    return f"""# GPU check (`make gpu-check`)

Written by `scripts/gpu_check.py`; the method is in docs/performance.md ("On a GPU").

| | |
|---|---|
| date (UTC) | {machine['date_utc']} |
| device | {machine['device']} |
| torch | {machine['torch']}, CUDA {machine['cuda']}, cuDNN {machine['cudnn']}, bf16 {'yes' if machine['bf16'] else 'no'} |
| platform | {machine['platform']} |
| commit | {machine['commit']} |
| whole check | {total:.0f} s |

## 1. Tests marked `cuda`

`{tests['command'].replace(sys.executable, 'python')}`: {_status(tests)}; {test_tail}

## 2. Step time per backbone ({args.size.replace('x', '×')}, batch {args.batch}, bf16 autocast, channels-last, cuDNN autotuning)

`{bench_result['command'].replace(sys.executable, 'python')}`: {_status(bench_result)}. Full table (the rows of
`--bench-balancers {args.bench_balancers}`): `results/bench/gpu/bench/README.md`.

{chr(10).join(rows)}

## 3. Training through the CLI: {args.train_steps} steps of `experiment=nyuv2_segnet balancer=gradnorm`

Generated data of NYUv2's size ({args.size.replace('x', '×')}, {args.train_images} training images), batch {args.train_batch} (the paper's), no checkpoints.

{chr(10).join(lines)}
"""


def _parse_args(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    parser.add_argument("--allow-cpu", action="store_true", help="without CUDA, run the same logic on the CPU")
    parser.add_argument("--size", default="288x384", help="HEIGHTxWIDTH of images and generated data")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5, help="bench rounds per backbone")
    parser.add_argument("--backbones", default=",".join(BACKBONES))
    parser.add_argument("--bench-balancers", default="gradnorm",
                        help="bench rows (scripts/bench.py --balancers): GradNorm's variants and equal weights\n"
                             "(default), or all to add every other balancer (longer than the 8-minute budget)")
    parser.add_argument("--tests", default="tests", help="where step 1 looks for the tests marked cuda (default: tests)")
    parser.add_argument("--bench-warmup", type=int, default=None,
                        help="bench warm-up steps per row (default: scripts/bench.py's, 3)")
    parser.add_argument("--no-bench-memory", action="store_true", help="bench without step peak memory")
    parser.add_argument("--train-steps", type=int, default=200)
    parser.add_argument("--train-images", type=int, default=96)
    parser.add_argument("--train-batch", type=int, default=24, help="training batch (default: the paper's 24)")
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every time limit (slow machines)")
    parser.add_argument("--out", default=str(ROOT / "results" / "bench" / "gpu"))
    args = parser.parse_args(argv)
    args.backbones = [b.strip() for b in args.backbones.split(",") if b.strip()]
    unknown = [b for b in args.backbones if b not in BACKBONES]
    if unknown or not args.backbones:
        parser.error(f"--backbones: choose from {', '.join(BACKBONES)}, got {unknown or args.backbones}")
    for name in ("batch", "rounds", "train_steps", "train_images", "train_batch"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.bench_warmup is not None and args.bench_warmup < 0:
        parser.error("--bench-warmup must be at least 0")
    return args


def main(argv: list[str] | None = None) -> int:
    args = _parse_args(argv)
    if not torch.cuda.is_available() and not args.allow_cpu:
        print("gpu-check: no CUDA device on this machine; nothing checked (run it where a GPU is at hand)")
        return 0
    start = time.perf_counter()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("gpu-check: 1/3 tests marked cuda", file=sys.stderr, flush=True)
    tests = run_tests(args)
    print(f"gpu-check: tests {_status(tests)}; 2/3 bench", file=sys.stderr, flush=True)
    bench = run_bench(args, out)
    print(f"gpu-check: bench {_status(bench[0])}; 3/3 training", file=sys.stderr, flush=True)
    training = run_training(args, out)
    report = render(args, _machine(), tests, bench, training, time.perf_counter() - start)
    (out / "README.md").write_text(report)
    print(report)
    print(f"written: {out / 'README.md'}", file=sys.stderr)
    parts = [tests, bench[0], training["data"], training.get("train", {"returncode": 1})]
    return 0 if all(p["returncode"] == 0 for p in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
