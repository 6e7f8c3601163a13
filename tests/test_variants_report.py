"""The report of GradNorm's variants (gradnorm/report/variants.py; experiments/gradnorm_variants*.yaml): the report
on hand-made runs with known outcomes (the paired statistics themselves: tests/test_verdicts.py), REPORT.md's section, every
setting of both experiments building its balancer, and both experiments end to end at a tiny size (the NYUv2 one
on generated data)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from gradnorm.cli import compose
from gradnorm.data.fake_nyuv2 import write_fake_nyuv2
from gradnorm.experiments import load_experiment
from gradnorm.report import variants as V
from gradnorm.report.build import REPORTS
from gradnorm.report.runs import load_runs
from gradnorm.report.stats import BETTER, INCONCLUSIVE, WORSE
from gradnorm.train import build

ROOT = Path(__file__).resolve().parent.parent


# -- the report on hand-made runs ------------------------------------------------------------------------------
BALANCERS = {"equal": "gradnorm.balancers.EqualWeights", "gradnorm": "gradnorm.balancers.GradNorm"}


def write_run(path: Path, setting: str, seed: int, T: int, loss: float, balancer: dict | None = None) -> None:
    path.mkdir(parents=True)
    balancer = balancer or {"_target_": BALANCERS["gradnorm"], "alpha": 0.12}
    names = [f"task_{i}" for i in range(T)]
    pd.DataFrame({"step": [0, 10], "task_normalized_loss": [float(T), loss]}).to_csv(path / "history.csv", index=False)
    (path / "summary.json").write_text(json.dumps({
        "status": "completed", "task_names": names, "weights": [1.0] * T, "mean_weights": [1.0] * T,
        "metrics": {"task_normalized_loss": loss}, "steps": 10, "wall_time_s": 1.0,
        "config": {"seed": seed, "setting": setting, "balancer": balancer, "tasks": None,
                   "dataset": {"_target_": "gradnorm.data.ToyRegression", "num_tasks": T}}}))


#: final losses by setting at T=2 (5 seeds): equal beats the paper's GradNorm; `softmax` beats equal (moves the
#: verdict), `l1` is the paper's within 1%, `libmtl` mixed
LOSSES_T2 = {"equal": [1.00, 1.01, 0.99, 1.02, 1.00], "paper": [1.20, 1.22, 1.19, 1.21, 1.20],
             "softmax": [0.90, 0.91, 0.89, 0.92, 0.90], "l1": [1.20, 1.21, 1.20, 1.22, 1.19],
             "libmtl": [0.90, 1.30, 1.00, 1.25, 0.95]}


@pytest.fixture
def variant_runs(tmp_path):
    root = tmp_path / "runs"
    for setting, losses in LOSSES_T2.items():
        balancer = {"_target_": BALANCERS["equal"]} if setting == "equal" else {
            "_target_": BALANCERS["gradnorm"], "alpha": 0.12,
            **({"parametrization": setting} if setting in ("softmax", "l1") else {}),
            **({"variant": "libmtl", "parametrization": "softmax"} if setting == "libmtl" else {})}
        for seed, loss in enumerate(losses):
            write_run(root / setting / f"t2_seed{seed}", setting, seed, 2, loss, balancer)
            # T=10: every variant within 1% of the paper's GradNorm, which beats equal weights by ~10%
            t10 = 4.0 if setting == "equal" else 3.6 * (1 + 0.002 * seed)
            write_run(root / setting / f"t10_seed{seed}", setting, seed, 10, t10, balancer)
    return root


def test_the_report_pairs_every_variant_with_the_papers_gradnorm_and_equal_weights(variant_runs, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    settings = {"paper": {}, "equal": {"balancer": "equal"}, "softmax": {"balancer.parametrization": "softmax"},
                "l1": {"balancer.parametrization": "l1"}, "libmtl": {"balancer": "gradnorm_libmtl"}}
    files, verdicts = REPORTS["variants"](load_runs(variant_runs), out, settings=settings, timing={"paper": 120.0})
    assert {p.name for p in files} >= {"variants.md", "variants.png", "variants.pdf", "disagree.md"}
    groups = {g.name: g for g in V.compare_groups(load_runs(variant_runs), "paper", "equal", "task_normalized_loss",
                                                  "final", "relative", 3.0, False, settings)}
    t2 = groups["toy T=2"]
    assert t2.paper_vs_equal.outcome == WORSE
    by = {c.setting: c for c in t2.variants}
    assert [c.setting for c in t2.variants] == ["softmax", "l1", "libmtl"]  # the spec's order
    assert by["softmax"].against_paper.outcome == BETTER and by["softmax"].against_equal.outcome == BETTER
    assert by["softmax"].moved(t2.paper_vs_equal.outcome) is True
    assert by["l1"].against_paper.outcome == INCONCLUSIVE and by["l1"].moved(WORSE) is False
    assert by["libmtl"].against_equal.outcome == INCONCLUSIVE and by["libmtl"].label == "GradNorm α=0.12 [libmtl]"
    assert by["softmax"].against_paper.values[0] == pytest.approx(100 * (1.20 - 0.90) / 1.20)

    claims = {v.setting: v for v in verdicts}
    assert claims["toy T=2"].id == "variants.verdict_unchanged"
    assert claims["toy T=2"].verdict == "partly reproduced" and claims["toy T=2"].value == 2.0
    assert "moved by: softmax (better" in claims["toy T=2"].evidence
    assert claims["toy T=10"].verdict == "reproduced"  # every variant keeps "better than equal weights"

    table = (out / "variants.md").read_text()
    assert "| softmax | GradNorm α=0.12 [parametrization=softmax] | parametrization=softmax |" in table
    assert "The sweeps took 2 min of wall time" in table
    disagree = (out / "disagree.md").read_text()
    assert "**toy T=2**: the paper's GradNorm against equal weights is **worse**" in disagree
    assert "2 of 3 variants move that verdict: `softmax` → better" in disagree
    assert "**toy T=10**" in disagree and "None of the 3 variants moves it." in disagree


def test_a_variant_that_diverges_reads_worse_with_its_stopped_seeds_named(variant_runs, tmp_path):
    """Runs that stopped on non-finite values stay in the pairing (their late value before they stopped), so a
    diverging variant is worse in every seed instead of inconclusive on the seeds that happened to finish."""
    huge = [4e16, 3e14, 2e18, 5e18, 1e20]
    for seed, loss in enumerate(huge):
        path = variant_runs / "lucidrains" / f"t2_seed{seed}"
        write_run(path, "lucidrains", seed, 2, loss)
        if seed >= 2:  # three of the five stopped on non-finite gradient norms
            summary = json.loads((path / "summary.json").read_text())
            summary.update(status="failed", error=f"ValueError at step {900 + seed}: GradNorm: non-finite gradient "
                                                  "norms at W [1e+19, inf] with finite losses [3e+18, 4e+18]")
            (path / "summary.json").write_text(json.dumps(summary))
    (variant_runs / "broken" / "t2_seed0").mkdir(parents=True)  # a run that failed otherwise stays out
    write_run(variant_runs / "crashed" / "t2_seed0", "crashed", 0, 2, 0.5)
    crashed = variant_runs / "crashed" / "t2_seed0" / "summary.json"
    crashed.write_text(crashed.read_text().replace('"completed"', '"failed"'))
    settings = {"paper": {}, "equal": {"balancer": "equal"}, "lucidrains": {"balancer": "gradnorm_lucidrains"}}
    runs = load_runs(variant_runs)
    t2 = {g.name: g for g in V.compare_groups(runs, "paper", "equal", "task_normalized_loss", "final", "relative",
                                              3.0, False, settings)}["toy T=2"]
    by = {c.setting: c for c in t2.variants}
    assert "crashed" not in by
    lucid = by["lucidrains"]
    assert lucid.diverged == (2, 3, 4) and lucid.against_paper.n == 5
    assert lucid.against_paper.outcome == WORSE and lucid.against_equal.outcome == WORSE
    expected = sum(100 * (p - x) / p for p, x in zip(LOSSES_T2["paper"], huge)) / 5
    assert lucid.against_paper.mean == pytest.approx(expected)
    assert lucid.against_paper.numbers().startswith(f"{expected:+.1e}%")  # -1.8e+21%: scientific notation

    out = tmp_path / "out"
    out.mkdir()
    REPORTS["variants"](runs, out, settings=settings)
    assert "(diverged in 3 of 5 seeds)" in (out / "variants.md").read_text()
    disagree = (out / "disagree.md").read_text()
    assert "`lucidrains` diverged in 3 of its 5 seeds" in disagree
    assert "The largest mean change among the variants that did not diverge: `softmax`" in disagree


def test_reports_section_names_the_published_rows_and_what_is_not_run(tmp_path):
    section = V.report_section(tmp_path)
    assert section.startswith("\n## Why published GradNorm numbers disagree\n")
    assert "Aligned-MTL Table 2 prints GradNorm at mIoU 20.09" in section and "mIoU 40.12" in section
    assert "**On the toy**: not run yet; run `scripts/reproduce.py gradnorm_variants`" in section
    assert "**On NYUv2 (SegNet-MTAN protocol)**: needs NYUv2 on a GPU" in section
    assert "**What only NYUv2 can settle.**" in section
    (tmp_path / "toy_variants").mkdir()
    (tmp_path / "toy_variants" / "disagree.md").write_text("- **toy T=2**: hand-made.\n")
    assert "- **toy T=2**: hand-made." in V.report_section(tmp_path)


@pytest.mark.parametrize("name", ["gradnorm_variants", "gradnorm_variants_nyuv2"])
def test_every_setting_builds_its_balancer(name):
    spec = load_experiment(name)
    assert {"paper", "equal", "libmtl", "lucidrains", "lucasbotang", "brianlan", "aligned_mtl"} <= set(spec.settings)
    for setting, overrides in spec.settings.items():
        merged = {**spec.base, **overrides}
        fixed = [f"{k}={v.split(',')[0]}" for k, v in merged.items() if not k.startswith("hydra")]
        balancer = build(compose(fixed).balancer, "balancer", num_tasks=2)
        assert type(balancer).__name__ == ("EqualWeights" if setting == "equal" else "GradNorm"), setting


# -- end to end ------------------------------------------------------------------------------------------------
TINY = ["trainer.max_steps=4", "trainer.eval_every=2", "trainer.progress=false", "logger=none"]


@pytest.mark.slow
def test_toy_variants_experiment_end_to_end(tmp_path):
    result = subprocess.run(
        [sys.executable, "scripts/reproduce.py", "gradnorm_variants", "--sweeps",
         "paper,equal,libmtl", "experiment=toy_t2", "seed=0,1,2", "hydra/launcher=basic", "dataset.num_train=200",
         "dataset.num_test=100", "trainer.batch_size=20", *TINY, "--runs-dir", str(tmp_path / "runs"),
         "--out", str(tmp_path / "results" / "toy_variants")],
        cwd=ROOT, capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "results" / "toy_variants" / "runs.csv")
    assert len(runs) == 9 and set(runs["status"]) == {"completed"}
    assert sorted(set(runs["variant"].dropna())) == ["libmtl", "paper"]
    table = (tmp_path / "results" / "toy_variants" / "variants.md").read_text()
    assert "| libmtl | GradNorm α=0.12 [libmtl] |" in table
    report = (tmp_path / "results" / "REPORT.md").read_text()
    assert "## Why published GradNorm numbers disagree" in report and "**On the toy** (" in report


@pytest.mark.slow
def test_nyuv2_variants_experiment_end_to_end_on_generated_data(tmp_path):
    root = write_fake_nyuv2(tmp_path / "nyuv2", n_train=8, n_val=4, height=32, width=48)
    result = subprocess.run(
        [sys.executable, "scripts/reproduce.py", "gradnorm_variants_nyuv2", "seed=0", f"dataset.root={root}",
         # three of the nine settings (the reference, the baseline, a preset at its own α: every setting builds,
         # test_every_setting_builds_its_balancer), 2 steps, no checkpoint: each MTAN run costs seconds on a CPU
         "--sweeps", "paper,equal,aligned_mtl_alpha2", "dataset.num_workers=0", "trainer.device=cpu", *TINY,
         "trainer.max_steps=2", "trainer.checkpoint_every=0", "--runs-dir", str(tmp_path / "runs"),
         "--out", str(tmp_path / "results" / "nyuv2_variants")],
        cwd=ROOT, capture_output=True, text=True, timeout=900, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    runs = pd.read_csv(tmp_path / "results" / "nyuv2_variants" / "runs.csv")
    assert len(runs) == 3 and set(runs["status"]) == {"completed"}, runs[["setting", "status", "error"]]
    assert set(runs["setting"]) == {"paper", "equal", "aligned_mtl_alpha2"}
    assert set(runs["setting"]) <= set(load_experiment("gradnorm_variants_nyuv2").settings)
    assert runs["delta_m_nash_mtl"].notna().all()
    table = (tmp_path / "results" / "nyuv2_variants" / "variants.md").read_text()
    assert "## nyuv2 T=3" in table and "| aligned_mtl_alpha2 | GradNorm α=2 [aligned_mtl] |" in table
    claims = json.loads((tmp_path / "results" / "nyuv2_variants" / "claims_gradnorm_variants_nyuv2.json").read_text())
    assert [c["setting"] for c in claims["claims"]] == ["nyuv2 T=3"]
