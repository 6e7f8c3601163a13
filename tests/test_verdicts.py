"""Verdicts that say no more than the numbers (docs/reporting.md): the paired statistics on hand-made
numbers and runs (a clear win, a clear loss, mixed signs, an effect inside the drift band, too few
seeds), compound claims, late values, the budget check on hand-made curves, the later methods'
comparisons, REPORT.md's counts and the archived runs."""

import json
import math

import numpy as np
import pytest
from test_report import STEPS, write_toy_run, write_toy_study

from gradnorm.report import claims as C
from gradnorm.report import stats
from gradnorm.report.build import REPORTS
from gradnorm.report.curves import late_mean
from gradnorm.report.figure2 import check_claims, group_by_t
from gradnorm.report.runs import load_runs, truncate


# -- the statistics ----------------------------------------------------------------------------------------
def test_a_clear_win_a_clear_loss_and_their_numbers():
    reference = {0: 2.0, 1: 2.2, 2: 1.8}
    win = stats.compare({0: 1.0, 1: 1.21, 2: 0.9}, reference)  # lower is better: 50%, 45%, 50% lower
    assert win.outcome == stats.BETTER and win.holds is True
    assert win.n == 3 and win.low == pytest.approx(45.0) and win.high == pytest.approx(50.0)
    assert win.mean == pytest.approx((50 + 45 + 50) / 3)
    assert win.text() == "better: +48.3% (seeds +45.0…+50.0%, n=3)"
    loss = stats.compare({0: 3.0, 1: 3.3, 2: 2.7}, reference)
    assert loss.outcome == stats.WORSE and loss.holds is False and loss.mean == pytest.approx(-50.0)
    # a higher-is-better metric (mIoU): the same numbers are a win the other way round
    assert stats.compare({0: 3.0, 1: 3.3, 2: 2.7}, reference, higher_is_better=True).outcome == stats.BETTER


def test_mixed_signs_are_inconclusive():
    # FAMO − GradNorm at T=10 in the numbers: −0.093 / +0.055 / −0.127 on a loss of ≈ 3.7
    gradnorm = {0: 3.70, 1: 3.65, 2: 3.78}
    famo = {s: gradnorm[s] + d for s, d in zip(gradnorm, (-0.093, 0.055, -0.127))}
    outcome = stats.compare(famo, gradnorm)
    assert outcome.outcome == stats.INCONCLUSIVE and outcome.holds is None
    assert outcome.low < 0 < outcome.high


def test_an_effect_inside_the_drift_band_is_inconclusive():
    # every seed 1–2.5% better: one sign, but within the 3% that runs move between machines
    outcome = stats.decide([1.0, 2.5, 2.0])
    assert outcome.outcome == stats.INCONCLUSIVE and outcome.band == stats.MACHINE_DRIFT_PERCENT == 3.0
    assert stats.decide([3.5, 4.0, 10.0]).outcome == stats.BETTER
    # one seed inside the band is enough to leave it undecided: the whole range must clear it
    assert stats.decide([3.5, 2.9, 10.0]).outcome == stats.INCONCLUSIVE
    assert stats.decide([-3.5, -4.0, -10.0]).outcome == stats.WORSE


def test_too_few_seeds_decide_nothing_and_pairs_need_both_runs():
    assert stats.decide([40.0, 50.0]).outcome == stats.INCONCLUSIVE  # 2 seeds agree by chance half the time
    assert stats.decide([]).outcome == stats.NO_DATA and math.isnan(stats.decide([]).mean)
    # seed 3 has no reference and seed 2 a NaN: 2 pairs
    paired = stats.relative_differences({0: 1.0, 1: 1.0, 2: math.nan, 3: 1.0}, {0: 2.0, 1: 4.0, 2: 2.0})
    assert paired == {0: pytest.approx(50.0), 1: pytest.approx(75.0)}


def test_accuracies_are_compared_in_points_against_a_band_in_points():
    # MultiMNIST: accuracies in %, differences in points (not % of the reference), the band in points
    reference = {0: 89.0, 1: 90.0, 2: 89.0}
    paired = stats.absolute_differences({0: 91.0, 1: 92.5, 2: 90.2, 3: 95.0}, reference, higher_is_better=True)
    assert paired == {0: pytest.approx(2.0), 1: pytest.approx(2.5), 2: pytest.approx(1.2)}  # seed 3: no reference
    win = stats.decide(paired, band=1.0, unit=stats.POINTS)
    assert win.outcome == stats.BETTER and win.text() == "better: +1.9 points (seeds +1.2…+2.5 points, n=3)"
    assert stats.decide(paired, band=1.5, unit=stats.POINTS).outcome == stats.INCONCLUSIVE  # seed 2 inside
    # lower is better (an error in points): the same numbers the other way round
    assert stats.absolute_differences({0: 91.0}, {0: 89.0}) == {0: pytest.approx(-2.0)}
    assert stats.decide({0: -2.0, 1: -1.5, 2: -3.0}, band=1.0, unit=stats.POINTS).text() == (
        "worse: -2.2 points (seeds -3.0…-1.5 points, n=3)")


def test_a_threshold_in_every_seed():
    assert stats.beyond([0.02, 0.05, 0.08], 0.1, above=False).outcome == stats.BETTER
    assert stats.beyond([0.12, 0.2, 0.5], 0.1, above=False).outcome == stats.WORSE
    assert stats.beyond([0.02, 0.12, 0.05], 0.1, above=False).outcome == stats.INCONCLUSIVE  # seeds disagree
    assert stats.beyond([7.0, 9.0, 6.0], 5.0).holds is True
    assert stats.beyond([5.0, 9.0, 6.0], 5.0).holds is None  # equal is not above
    assert stats.budget_dependent({3000: "better", 10000: "worse"})
    assert not stats.budget_dependent({3000: "better", 10000: "better"})


def test_a_compound_claim_with_only_its_minor_half_is_not_reproduced():
    assert C.verdict([False], [True]) == C.NOT_REPRODUCED
    assert C.verdict([None], [True]) == C.INCONCLUSIVE
    assert C.verdict([True], [False]) == C.PARTLY
    assert C.verdict([True], [None]) == C.PARTLY
    assert C.verdict([True, True], [True]) == C.REPRODUCED
    assert C.every([True, True]) == C.REPRODUCED
    assert C.every([True, False]) == C.PARTLY and C.every([False, None]) == C.NOT_REPRODUCED
    assert C.every([True, None]) == C.INCONCLUSIVE and C.every([]) == C.NO_DATA


def test_uncertainty_that_is_fast_but_never_deteriorates_is_not_reproduced(tmp_path):
    steps = np.arange(STEPS + 1)
    never_worse = np.where(steps <= 10, 2 - 1.7 * steps / 10, 0.3 - 0.1 * (steps - 10) / 90)  # still falling
    for seed in range(3):
        write_toy_run(tmp_path / f"uncertainty{seed}", "uncertainty", seed, norm=never_worse + 0.01 * seed)
        for balancer in ("equal", "gradnorm"):
            write_toy_run(tmp_path / f"{balancer}{seed}", balancer, seed)
    claim = {v.id: v for v in check_claims(2, group_by_t(load_runs(tmp_path))[2], "")}["fig2.uncertainty_deteriorates"]
    assert "at first (up to step 10): vs Equal weights better" in claim.evidence  # the minor half holds
    assert "deteriorates: late value over its lowest window mean +0.0%" in claim.evidence
    assert claim.verdict == C.NOT_REPRODUCED  # (was "partly reproduced" for its minor half)


def test_the_small_sigma_task_must_learn_substantially_less_to_be_swamped(tmp_path):
    write_toy_study(tmp_path)
    for run in load_runs(tmp_path):  # equal weights: the σ=1 task learns as much as the σ=100 task
        if "Equal" in run.config["balancer"]["_target_"]:
            history = run.history
            history["test_loss/task_0"] = history["test_loss/task_1"] / 1e4
            history.to_csv(run.path / "history.csv", index=False)
    claim = {v.id: v for v in check_claims(2, group_by_t(load_runs(tmp_path))[2], "")}["fig2.equal_swamped"]
    assert claim.verdict == C.NOT_REPRODUCED and claim.value == pytest.approx(1.0)
    assert "ρ(σ, q)" in claim.evidence  # the ordering is reported, not graded


# -- late values and the budget check -------------------------------------------------------------------
def test_the_late_value_is_the_mean_of_the_last_evaluations(tmp_path):
    steps = np.arange(STEPS + 1)
    jumping = np.where((steps // 10) % 2 == 0, 1.0, 10.0)  # RLW-like: 10× jumps between evaluations
    write_toy_run(tmp_path / "run", "equal", 0, norm=jumping)
    [run] = load_runs(tmp_path)
    assert run.summary["metrics"]["task_normalized_loss"] == 1.0  # the final evaluation alone
    # evaluations at 60, 70, 80, 90, 100: 1, 10, 1, 10, 1
    assert late_mean(run, "task_normalized_loss") == pytest.approx(23 / 5)
    # up to step 40: the evaluations at 10, 20, 30, 40 (step 0, the untrained network, is no late value)
    assert late_mean(run, "task_normalized_loss", until=40) == pytest.approx((10 + 1 + 10 + 1) / 4)
    # a per-step column: the mean over the steps of that window (training loss q0 = 1 − 0.1 t/100)
    assert late_mean(run, "train_loss/task_0") == pytest.approx(1 - 0.1 * 80 / 100)


def test_a_run_cut_at_a_budget_is_the_run_as_it_stood_then(tmp_path):
    write_toy_run(tmp_path / "run", "gradnorm", 0)
    [run] = load_runs(tmp_path)
    short = truncate(run, 40)
    assert short.summary["steps"] == 40 and short.config["trainer"]["max_steps"] == 40
    assert short.summary["metrics"]["task_normalized_loss"] == pytest.approx(2 - 1.5 * 0.4)
    assert short.summary["mean_weights"][0] == pytest.approx(np.minimum(1 + 0.9 * np.arange(40) / 20, 1.9).mean())
    assert short.history["step"].max() == 40 and truncate(run, 500) is run


def crossing(steps, early_winner: bool):
    """GradNorm fast then flat at 0.5; equal weights slow but lower at the end (2 − 1.95 t/100)."""
    return 2 - 1.5 * np.minimum(steps / 40, 1) if early_winner else 2 - 1.95 * steps / STEPS


def test_a_verdict_that_changes_with_the_budget_is_marked(tmp_path):
    steps = np.arange(STEPS + 1)
    for seed in range(3):
        write_toy_run(tmp_path / f"gradnorm{seed}", "gradnorm", seed, norm=crossing(steps, True) + 0.01 * seed)
        write_toy_run(tmp_path / f"equal{seed}", "equal", seed, norm=crossing(steps, False) + 0.01 * seed)
    files, verdicts = REPORTS["figure2"](load_runs(tmp_path), tmp_path / "out", budgets=[50])
    lowest = {v.id: v for v in verdicts}["fig2.lowest_test_loss"]
    # at 100 steps: GradNorm 0.5 against equal's late 0.44: worse; at 50: 0.95 against 1.43: better
    assert lowest.verdict == C.NOT_REPRODUCED and lowest.budgets == {"50": C.REPRODUCED}
    assert lowest.budget_dependent and lowest.verdict_text() == (
        "**not reproduced**; budget-dependent: reproduced at 50 steps")
    assert not {v.id: v for v in verdicts}["fig2.weights_favour_small_sigma"].budget_dependent
    table = (tmp_path / "out" / "table.md").read_text()
    assert "| `fig2.lowest_test_loss` | toy T=2 | not reproduced | reproduced | **budget-dependent** |" in table
    assert "| T=2 | 50 steps | GradNorm vs Equal weights | **better** |" in table


# -- the later methods -----------------------------------------------------------------------------------
def _methods_runs(root):
    """T=2 runs: GradNorm and equal as in test_report; FAMO 50% below GradNorm in every seed; RLW around
    GradNorm (±2%: inside the drift band)."""
    steps = np.arange(STEPS + 1)
    write_toy_study(root, seeds=(0, 1, 2))
    for seed in range(3):
        gradnorm = 2 - 1.5 * steps / STEPS + 0.01 * seed
        for method, norm in (("famo", 0.5 * gradnorm), ("rlw", gradnorm * (1 + 0.02 * (seed - 1)))):
            write_toy_run(root / f"{method}{seed}", "equal", seed, norm=norm)
            summary = json.loads((root / f"{method}{seed}" / "summary.json").read_text())
            summary["config"]["balancer"]["_target_"] = {"famo": "gradnorm.balancers.FAMO",
                                                         "rlw": "gradnorm.balancers.RLW"}[method]
            (root / f"{method}{seed}" / "summary.json").write_text(json.dumps(summary))


def test_later_methods_are_compared_with_gradnorm_and_equal_weights_in_their_own_table(tmp_path):
    _methods_runs(tmp_path / "runs")
    out = tmp_path / "toy_methods"
    files, verdicts = REPORTS["methods"](load_runs(tmp_path / "runs"), out, bench=tmp_path / "none.json")
    assert {p.name for p in files} >= {"methods_table.md", "methods_verdicts.md", "methods_curves.png"}
    by_key = {(v.id, v.setting): v for v in verdicts}
    famo = by_key[("toy_methods.famo_vs_gradnorm", "toy T=2")]
    assert famo.verdict == "better" and famo.evidence.startswith("FAMO against GradNorm: +50.0% (seeds +50.0…+50.0%")
    assert by_key[("toy_methods.rlw_vs_gradnorm", "toy T=2")].verdict == "inconclusive"
    assert by_key[("toy_methods.rlw_vs_equal", "toy T=2")].verdict == "better"
    assert by_key[("toy_methods.dwa_vs_gradnorm", "toy T=2")].verdict == C.NO_DATA
    section = (out / "methods_verdicts.md").read_text()
    assert "Outcomes: 3 better, 1 inconclusive, 12 no data." in section  # DWA and the others did not run
    assert "| FAMO | **better** +50.0% (seeds +50.0…+50.0%, n=3) |" in section
    # REPORT.md: the later methods in their own section, not in the table of the paper's claims
    (tmp_path / "toy").mkdir()
    C.write_claims(tmp_path / "toy", "toy", [C.ClaimResult("fig2.lowest_test_loss", "toy T=2", C.INCONCLUSIVE, "",
                                                           "")])
    C.write_claims(out, "toy_methods", verdicts)
    report = C.paper_report(tmp_path, set(), {})
    table, later = report.split("## Later methods on the toy")
    assert "FAMO" not in table and "| FAMO | **better**" in later
    assert "Verdicts on the paper's claims: 1 inconclusive." in table


# -- auditable runs --------------------------------------------------------------------------------------
def test_the_archived_runs_give_the_same_verdicts(tmp_path):
    from gradnorm.report.archive import archive_runs

    runs_dir = write_toy_study(tmp_path / "runs")
    runs = load_runs(runs_dir)
    archive = archive_runs(runs, runs_dir, tmp_path / "results" / "histories" / "toy")
    assert sorted(p.name for p in (archive / "gradnorm_seed0").iterdir()) == ["history.csv.gz", "summary.json"]
    again = load_runs(archive)
    assert [r.path.name for r in again] == [r.path.name for r in runs]
    assert again[0].history is not None and "test_loss/task_0" in again[0].history
    before = {(v.id, v.verdict, v.evidence) for v in check_claims(2, group_by_t(runs)[2], "")}
    after = {(v.id, v.verdict, v.evidence) for v in check_claims(2, group_by_t(again)[2], "")}
    assert after == before
    # a report made from the archive does not archive into itself
    assert archive_runs(again, archive, archive) is None


def test_numbers_of_a_diverged_comparison_are_written_in_scientific_notation():
    out = stats.decide({0: -3.2e17, 1: -2.6e16, 2: -6.1e17})
    assert out.outcome == stats.WORSE
    assert out.numbers() == "-3.2e+17% (seeds -6.1e+17…-2.6e+16%, n=3)"
    assert stats.decide({0: 5.0, 1: 6.0, 2: 7.0}).numbers() == "+6.0% (seeds +5.0…+7.0%, n=3)"
