"""Which unstated choices decide Figure 2's claims (docs/toy.md, "Sensitivity study").

The runs of ``experiments/toy_sensitivity.yaml`` carry ``setting`` in their config: a named set of
overrides of the toy's default set-up (one unstated choice changed, or a few together). For every
setting and T, Figure 2's five claims are checked exactly as ``figure2.check_claims`` checks them on
the default runs (paired over seeds: a verdict the seeds do not support reads "inconclusive").
Settings that also ran the grid search (the follow-up sweep, ``<setting>__grid``) get Figure 4's two
verdicts too.

Written files (into the results folder):
  ``claims_map.md`` / ``claims_map.png``  rows = settings, columns = the claims at T=2 and T=10;
  ``gain.png``                            GradNorm's % gain over equal weights per setting (seeds paired);
  ``curves.png``                          test-loss curves of the settings whose T=2 verdict differs from
                                          the reference setting's (and the reference itself);
  ``decides.md``                          the per-factor table of GradNorm's paired gain over equal weights,
                                          sentences only where an outcome is not inconclusive (also a
                                          REPORT.md section).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from gradnorm import io
from gradnorm.report import claims as C
from gradnorm.report import figure2, figure4
from gradnorm.report.compare import compare_runs
from gradnorm.report.curves import late_mean, plot_band, seed_frame
from gradnorm.report.runs import Run, method_of
from gradnorm.report.stats import INCONCLUSIVE, MACHINE_DRIFT_PERCENT, MIN_SEEDS, NO_DATA, Outcome, pearson
from gradnorm.report.style import method_color, method_label, new_figure, save_figure
from gradnorm.report.tables import markdown

#: Figure 2's claims, in the map's column order, with a short column name
FIGURE2_CLAIMS = {
    "fig2.lowest_test_loss": "GradNorm lowest loss",
    "fig2.weights_favour_small_sigma": "w favours small σ",
    "fig2.weights_stable": "stable w",
    "fig2.equal_swamped": "equal swamped",
    "fig2.uncertainty_deteriorates": "uncert. deteriorates",
}
FIGURE4_CLAIMS = {"fig4.no_random_beats_gradnorm": "no random w beats GN", "fig4.negative_correlation": "r(dist, gain) < 0"}
#: what each claim's key number is (ClaimResult.value)
KEY_NUMBERS = {
    "fig2.lowest_test_loss": "GradNorm's mean paired % gain in the weaker of its two comparisons (vs equal, vs "
                             "uncertainty)",
    "fig2.weights_favour_small_sigma": "Spearman ρ(σ_i, E_t[w_i]), mean over seeds",
    "fig2.weights_stable": "largest late drift of the weights over seeds (threshold 0.1)",
    "fig2.equal_swamped": "R = u(smallest σ)/u(largest σ) under equal weights, mean over seeds (threshold 0.5)",
    "fig2.uncertainty_deteriorates": "% rise of uncertainty's late loss over its lowest window, mean over seeds "
                                     "(threshold 5%)",
    "fig4.no_random_beats_gradnorm": f"grid points beating GradNorm by more than {MACHINE_DRIFT_PERCENT:g}% (of 20)",
    "fig4.negative_correlation": "Pearson r",
}
#: how each key number is written
FORMATS = {"fig2.lowest_test_loss": "{:+.1f}%", "fig2.weights_favour_small_sigma": "{:.2f}", "fig2.weights_stable": "{:.3f}",
           "fig2.equal_swamped": "{:.2f}", "fig2.uncertainty_deteriorates": "{:+.1f}%",
           "fig4.no_random_beats_gradnorm": "{:.0f}", "fig4.negative_correlation": "{:.2f}"}
MARK = {C.REPRODUCED: "✓", C.PARTLY: "◐", C.NOT_REPRODUCED: "✗", C.INCONCLUSIVE: "?", C.NO_DATA: "–"}
VERDICT_COLORS = {C.REPRODUCED: "#7fc97f", C.PARTLY: "#fdd96a", C.NOT_REPRODUCED: "#f4a582",
                  C.INCONCLUSIVE: "#c6dbef", C.NO_DATA: "#eeeeee"}
#: a setting in which no method brings the task-normalised test loss below this fraction of its start
#: (T) has barely trained: its verdicts are about the start of training
BARELY_TRAINED = 0.9


@dataclass
class Cell:
    """One claim in one setting at one T: its verdict over all seeds (paired; the seeds' agreement is part of
    the rule, so a verdict the seeds do not support reads "inconclusive")."""

    result: C.ClaimResult

    def number(self) -> str:
        value = self.result.value
        return "" if value is None or not math.isfinite(value) else FORMATS.get(self.result.id, "{:.3g}").format(value)

    def text(self) -> str:
        number = f" {self.number()}" if self.number() else ""
        return f"{MARK.get(self.result.verdict, '?')}{number}"


def setting_of(run: Run) -> str:
    return str(run.config.get("setting") or "default")


def group(runs: list[Run], reference: str) -> dict[str, list[Run]]:
    """Completed runs by setting, the reference setting first, then in name order."""
    out: dict[str, list[Run]] = {}
    for run in runs:
        if run.status == "completed" and run.task_names:
            out.setdefault(setting_of(run), []).append(run)
    return dict(sorted(out.items(), key=lambda kv: (kv[0] != reference, kv[0])))


def figure2_cells(runs: list[Run]) -> dict[int, dict[str, Cell]]:
    """T -> claim id -> Cell, from one setting's runs."""
    return {T: {r.id: Cell(r) for r in figure2.check_claims(T, by_method, "")}
            for T, by_method in figure2.group_by_t(runs).items()}


def figure4_cells(runs: list[Run]) -> dict[str, Cell]:
    """Figure 4's verdicts from a setting's grid runs against its T=2 GradNorm runs (empty without grid runs)."""
    grid_runs = [r for r in runs if method_of(r.config, r.choices)[0] == "grid"]
    gradnorm = [r for r in runs if method_of(r.config, r.choices)[0] == "gradnorm" and len(r.task_names) == 2]
    if not grid_runs:
        return {}
    pts = figure4.points(grid_runs, gradnorm, ["test_loss/*"])

    r = pearson([p["distance"] for p in pts], [p["gain"] for p in pts])
    return {res.id: Cell(res) for res in figure4.claims(pts, r, "toy T=2", "")}


def paired_gain(runs: list[Run], T: int) -> Outcome:
    """GradNorm against equal weights at T, paired by seed on the late task-normalised test loss: per seed
    100·(L_equal − L_GradNorm)/L_equal, graded by ``stats.compare``."""
    by_method = figure2.group_by_t(runs).get(T, {})
    return compare_runs(by_method.get("gradnorm", []), by_method.get("equal", []))


def report(runs: list[Run], out: Path, footer: str = "", reference: str = "default",
           settings: dict | None = None, timing: dict | None = None) -> tuple[list[Path], list[C.ClaimResult]]:
    """Write the claims map, the gain and curve figures and ``decides.md``; return (files, verdicts).

    Args:
        settings: setting name -> its overrides (for the map's legend); the spec's ``settings``.
        timing: sweep name -> wall seconds (from the runs folder's ``sweep_times.json``), for the README.
    """
    groups = group(runs, reference)
    settings = settings or {}
    cells = {s: figure2_cells(rs) for s, rs in groups.items()}
    grids = {s: figure4_cells(rs) for s, rs in groups.items()}
    files = claims_map_figure(cells, grids, out / "claims_map")
    files += gain_figure(groups, out / "gain")
    differing = differing_settings_from(cells, reference)
    files += curves_figure(groups, [reference] + differing, out / "curves")
    files.append(io.write_text(out / "claims_map.md", claims_map_markdown(cells, grids, settings, reference)
                               + "\n" + footer))
    files.append(io.write_text(out / "decides.md", decides_markdown(groups, cells, grids, reference, timing, settings)))
    verdicts = [c.result for s, by_t in cells.items() for T, by_claim in by_t.items() for c in by_claim.values()]
    verdicts += [c.result for s, by_claim in grids.items() for c in by_claim.values()]
    named = [(s, c) for s, by_t in cells.items() for by_claim in by_t.values() for c in by_claim.values()]
    named += [(s, c) for s, by_claim in grids.items() for c in by_claim.values()]
    for s, c in named:  # the setting's name is part of each verdict's setting
        c.result.setting = f"{c.result.setting}, {s}"
        c.result.shown_in = "claims_map.md"
    return files, verdicts


def differing_settings_from(cells: dict, reference: str, claim: str = "fig2.lowest_test_loss", T: int = 2) -> list[str]:
    """Settings whose verdict on ``claim`` at ``T`` is decided (not inconclusive) and differs from the reference
    setting's."""
    ref = cells.get(reference, {}).get(T, {}).get(claim)
    if ref is None:
        return []
    return [s for s, by_t in cells.items() if s != reference and claim in by_t.get(T, {})
            and by_t[T][claim].result.verdict not in (ref.result.verdict, C.INCONCLUSIVE)]


def differing_settings(runs: list[Run], reference: str, claim: str, where: str) -> list[str]:
    """For the follow-up sweeps: settings whose verdict on ``claim`` in ``where`` ("toy T=2") differs
    from the reference's, computed from finished runs."""
    T = int(where.rsplit("=", 1)[-1])
    return differing_settings_from({s: figure2_cells(rs) for s, rs in group(runs, reference).items()}, reference,
                                   claim, T)


# -- the map ----------------------------------------------------------------------------------------------
def _columns(cells: dict, grids: dict) -> list[tuple[int, str]]:
    Ts = sorted({T for by_t in cells.values() for T in by_t})
    columns = [(T, cid) for T in Ts for cid in FIGURE2_CLAIMS]
    if any(grids.values()):
        columns += [(2, cid) for cid in FIGURE4_CLAIMS]
    return columns


def _cell(cells, grids, setting, T, cid) -> Cell | None:
    if cid in FIGURE4_CLAIMS:
        return grids.get(setting, {}).get(cid)
    return cells.get(setting, {}).get(T, {}).get(cid)


def claims_map_markdown(cells: dict, grids: dict, settings: dict, reference: str) -> str:
    columns = _columns(cells, grids)
    names = {**FIGURE2_CLAIMS, **FIGURE4_CLAIMS}
    header = ["Setting"] + [f"T={T}: {names[cid]}" for T, cid in columns]
    rows = []
    for setting in cells:
        row = [f"`{setting}`"]
        for T, cid in columns:
            cell = _cell(cells, grids, setting, T, cid)
            ref = _cell(cells, grids, reference, T, cid)
            text = cell.text() if cell else "–"
            differs = cell and ref and setting != reference and cell.result.verdict != ref.result.verdict
            row.append(f"**{text}**" if differs else text)
        rows.append(row)
    legend = "; ".join(f"{m} {v}" for v, m in MARK.items())
    text = ("# Toy sensitivity study: Figure 2's claims under each set-up (claims map)\n\n"
            "Generated by `scripts/reproduce.py toy_sensitivity`; do not edit by hand. Each cell: the verdict "
            f"({legend}) computed by the same paired check as `results/toy/` (docs/reporting.md; with "
            f"{MIN_SEEDS} seeds every seed must agree beyond the drift band, else inconclusive) and its key number. "
            f"**Bold**: differs from `{reference}`.\n\n"
            + markdown(header, rows, "l" + "c" * len(columns)))
    text += "\nKey numbers:\n\n" + "\n".join(f"- {names[cid]}: {KEY_NUMBERS[cid]}" for cid in dict.fromkeys(
        c for _, c in columns)) + "\n"
    if settings:
        text += "\nSettings (overrides of the defaults; every run's exact command is in `runs.csv`, column `overrides`):\n\n"
        text += "\n".join(f"- `{name}`: " + (", ".join(f"`{k}={v}`" for k, v in overrides.items()) or "the defaults")
                          for name, overrides in settings.items() if name in cells) + "\n"
    return text


def claims_map_figure(cells: dict, grids: dict, base: Path) -> list[Path]:
    columns = _columns(cells, grids)
    names = {**FIGURE2_CLAIMS, **FIGURE4_CLAIMS}
    settings = list(cells)
    fig, axes = new_figure(1, 1, width=0.95 * len(columns) + 2.2, height=0.42 * len(settings) + 1.6)
    ax = axes[0][0]
    for i, setting in enumerate(settings):
        for j, (T, cid) in enumerate(columns):
            cell = _cell(cells, grids, setting, T, cid)
            verdict = cell.result.verdict if cell else C.NO_DATA
            ax.add_patch(_rect(j, i, VERDICT_COLORS.get(verdict, VERDICT_COLORS[C.INCONCLUSIVE])))
            label = MARK.get(verdict, "?") + (f"\n{cell.number()}" if cell and cell.number() else "")
            ax.text(j + 0.5, i + 0.5, label, ha="center", va="center", fontsize=7)
    ax.set_xlim(0, len(columns))
    ax.set_ylim(len(settings), 0)
    ax.set_xticks([j + 0.5 for j in range(len(columns))],
                  [f"T={T}\n{names[cid]}" for T, cid in columns], rotation=60, ha="right", fontsize=7)
    ax.set_yticks([i + 0.5 for i in range(len(settings))], settings, fontsize=8)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    from matplotlib.patches import Patch

    handles = [Patch(color=c, label=v) for v, c in VERDICT_COLORS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7)
    ax.set_title("Figure 2's claims under each set-up (verdict, key number)")
    fig.tight_layout()
    return save_figure(fig, base)


def _rect(x, y, color):
    from matplotlib.patches import Rectangle

    return Rectangle((x + 0.04, y + 0.06), 0.92, 0.88, facecolor=color, edgecolor="none", lw=0.5)


# -- the gain and the curves ----------------------------------------------------------------------------
#: the colour of a setting's gain by its outcome (better: GradNorm's colour; worse: equal weights')
def _outcome_color(outcome: str) -> str:
    return {"better": method_color("gradnorm"), "worse": method_color("equal")}.get(outcome, "#9ecae1")


def gain_figure(groups: dict[str, list[Run]], base: Path) -> list[Path]:
    settings = list(groups)
    Ts = sorted({len(r.task_names) for rs in groups.values() for r in rs})
    fig, axes = new_figure(1, max(len(Ts), 1), width=4.2, height=0.32 * len(settings) + 1.4)
    for ax, T in zip(axes[0], Ts):
        ax.axvspan(-MACHINE_DRIFT_PERCENT, MACHINE_DRIFT_PERCENT, color="#dddddd", lw=0)
        for i, setting in enumerate(settings):
            outcome = paired_gain(groups[setting], T)
            if not outcome.n:
                continue
            gains = list(outcome.values.values())
            color = _outcome_color(outcome.outcome)
            ax.plot([outcome.low, outcome.high], [i, i], color=color, lw=2, alpha=0.5)
            ax.scatter(gains, [i] * len(gains), s=9, color=color, zorder=3)
            ax.scatter([outcome.mean], [i], s=40, marker="D", color=color, zorder=4)
        ax.axvline(0, color="#333333", lw=0.8)
        ax.set_yticks(range(len(settings)), settings if ax is axes[0][0] else [""] * len(settings), fontsize=8)
        ax.set_ylim(len(settings) - 0.5, -0.5)
        ax.set_xlabel("GradNorm's gain over equal weights, %\n(> 0: GradNorm better; grey: ±"
                      f"{MACHINE_DRIFT_PERCENT:g}% drift)")
        ax.set_title(f"T={T}: mean (◆) and seeds (•, range)\nblue: better, grey: worse, light: inconclusive",
                     fontsize=8)
    fig.suptitle("Toy: GradNorm α=0.12 vs equal weights, late task-normalised test loss, per setting")
    fig.tight_layout()
    return save_figure(fig, base)


def barely_trained(runs: list[Run]) -> dict[int, float]:
    """T -> the best final task-normalised test loss over methods (mean over seeds) divided by T, where
    that is above :data:`BARELY_TRAINED` (no method has trained much)."""
    out = {}
    for T, by_method in figure2.group_by_t(runs).items():
        finals = [np.mean([late_mean(r, "task_normalized_loss") for r in rs]) for rs in by_method.values() if rs]
        best = min(finals) / T if finals else math.nan
        if best > BARELY_TRAINED:
            out[T] = best
    return out


def curves_figure(groups: dict[str, list[Run]], shown: list[str], base: Path) -> list[Path]:
    shown = [s for s in shown if s in groups]
    columns = min(max(len(shown), 1), 4)
    rows = max(1, math.ceil(len(shown) / columns))
    fig, axes = new_figure(rows, columns, width=3.4, height=2.7)
    flat = [ax for row in axes for ax in row]
    for ax in flat[len(shown):]:
        ax.set_visible(False)
    for ax, setting in zip(flat, shown):
        by_method = figure2.group_by_t(groups[setting]).get(2, {})
        for method in figure2.COMPARED:
            frame = seed_frame(by_method.get(method, []), "task_normalized_loss")
            plot_band(ax, frame, method_color(method), f"{method_label(method)} (n={frame.shape[1]})")
        ax.set_title(f"T=2, {setting}")
        ax.set_xlabel("step")
        ax.set_ylim(bottom=0)
    for row in axes:
        row[0].set_ylabel("Σ_i L_i(t) / L_i(0)  (mean ± std)")
    axes[0][0].legend(frameon=False, fontsize=7)
    fig.suptitle("Task-normalised test loss where GradNorm's T=2 verdict differs from the reference (first panel)")
    fig.tight_layout()
    return save_figure(fig, base)


# -- the sentences ---------------------------------------------------------------------------------------
def factor_table(groups: dict, settings: dict, reference: str) -> str:
    """One row per setting: what it changes, GradNorm's paired gain over equal weights at each T (mean, range
    over seeds, n) and its outcome; settings that barely trained are flagged."""
    Ts = sorted({len(r.task_names) for rs in groups.values() for r in rs})
    rows = []
    for setting, runs in groups.items():
        slow = barely_trained(runs)
        changes = ", ".join(f"`{k}={v}`" for k, v in settings.get(setting, {}).items()) or (
            "the defaults" if setting == reference else "")
        cells = []
        for T in Ts:
            outcome = paired_gain(runs, T)
            cells.append(f"**{outcome.outcome}** {outcome.numbers()}" if outcome.n else "–")
        note = ("barely trained at T=" + "/".join(map(str, slow)) if slow else "")
        rows.append([f"`{setting}`", changes] + cells + [note])
    return markdown(["Setting", "Changes"] + [f"T={T}: GradNorm vs equal weights" for T in Ts] + ["Note"], rows,
                    "l" * (3 + len(Ts)))


def factor_sentences(groups: dict, settings: dict, reference: str) -> list[str]:
    """A sentence for each setting and T whose outcome is not inconclusive: the reference's, and every other
    that differs from it."""
    lines = []
    Ts = sorted({len(r.task_names) for rs in groups.values() for r in rs})
    for T in Ts:
        ref = paired_gain(groups.get(reference, []), T)
        if ref.outcome not in (INCONCLUSIVE, NO_DATA):
            lines.append(f"- T={T}, `{reference}`: GradNorm is **{ref.outcome}** than equal weights by "
                         f"{ref.numbers()}.")
        for setting, runs in groups.items():
            outcome = paired_gain(runs, T)
            if setting == reference or outcome.outcome in (INCONCLUSIVE, NO_DATA) or outcome.outcome == ref.outcome:
                continue
            changes = ", ".join(f"`{k}={v}`" for k, v in settings.get(setting, {}).items())
            slow = T in barely_trained(runs)
            lines.append(f"- T={T}, `{setting}`" + (f" ({changes})" if changes else "") + f": GradNorm is "
                         f"**{outcome.outcome}** than equal weights by {outcome.numbers()}, where `{reference}` is "
                         f"{ref.outcome}" + (" (barely trained: about the first steps of training)" if slow else "")
                         + ".")
    return lines


def decides_markdown(groups: dict, cells: dict, grids: dict, reference: str, timing: dict | None,
                     settings: dict | None = None) -> str:
    """``decides.md``: the per-factor table of GradNorm's gain over equal weights, sentences where an outcome
    is not inconclusive, and how each claim's verdict changes with the set-up."""
    names = {**FIGURE2_CLAIMS, **FIGURE4_CLAIMS}
    settings = settings or {}
    n = len(cells)
    lines = ["Computed from `results/toy_sensitivity/` (`make reproduce-toy-sensitivity`): "
             f"{n} set-ups of the toy, each × {{equal, uncertainty, GradNorm α=0.12}} × T ∈ {{2, 10}} × "
             f"{_seed_count(groups)} seeds; the claims map is `toy_sensitivity/claims_map.md`.\n",
             "GradNorm's gain over equal weights per set-up: % = 100·(L_equal − L_GradNorm)/L_equal of the late "
             "task-normalised test loss, paired by seed (mean, range over seeds, n); better / worse: every seed "
             f"beyond ±{MACHINE_DRIFT_PERCENT:g}% on one side with ≥ {MIN_SEEDS} seeds, else inconclusive "
             "(docs/reporting.md). The set-ups change one unstated choice each (or a few together), so a row is "
             "that change's effect, not a cause among several.\n", factor_table(groups, settings, reference)]
    sentences = factor_sentences(groups, settings, reference)
    lines.append("Outcomes that are not inconclusive (the reference's, and those that differ from it):\n"
                 if sentences else "Every outcome is inconclusive or the same as the reference's.\n")
    lines += sentences
    lines.append("\nHow each claim's verdict changes with the set-up:\n")
    for T in sorted({T for by_t in cells.values() for T in by_t}):
        for cid in FIGURE2_CLAIMS:
            ref = cells.get(reference, {}).get(T, {}).get(cid)
            if ref is None:
                continue
            others = [(s, by_t[T][cid]) for s, by_t in cells.items() if s != reference and cid in by_t.get(T, {})]
            changed = [(s, c) for s, c in others if c.result.verdict not in (ref.result.verdict, C.INCONCLUSIVE)]
            undecided = sum(c.result.verdict == C.INCONCLUSIVE for _, c in others)
            lines.append(f"- T={T}, *{names[cid]}*: {ref.result.verdict} in `{reference}`; "
                         + (f"a different decided verdict in {len(changed)} of {len(others)} other settings: "
                            + ", ".join(f"`{s}` ({c.result.verdict})" for s, c in changed) if changed
                            else f"no other decided verdict in the {len(others)} other settings")
                         + (f"; inconclusive in {undecided}" if undecided else "") + ".")
    for cid in FIGURE4_CLAIMS:
        have = {s: g[cid] for s, g in grids.items() if cid in g}
        if have:
            lines.append(f"- T=2, *{names[cid]}* (grid search, re-run where GradNorm's T=2 verdict differs): "
                         + ", ".join(f"`{s}` {c.result.verdict} ({c.number()})" for s, c in have.items())
                         + ".")
    all_hold = [s for s, by_t in cells.items()
                if by_t and all(c.result.verdict == C.REPRODUCED for by_claim in by_t.values() for c in by_claim.values())]
    if all_hold:
        lines.append(f"- Every Figure 2 claim holds at both T in: {', '.join(f'`{s}`' for s in all_hold)}. Found "
                     "after the fact among the settings tried; the documented default set-up is unchanged.")
    elif cells:
        best = max(cells, key=lambda s: _count(cells[s], C.REPRODUCED))
        total = sum(len(b) for b in cells[best].values())
        lines.append(f"- No setting makes every Figure 2 claim hold; the most (found after the fact): `{best}`, "
                     f"{_count(cells[best], C.REPRODUCED)} of {total} reproduced.")
    slow = {s: b for s, rs in groups.items() if (b := barely_trained(rs))}
    if slow:
        lines.append("- **Barely trained**: in " + ", ".join(
            f"`{s}` (T={'/'.join(map(str, b))}: best late loss {'/'.join(f'{100 * v:.0f}%' for v in b.values())} of "
            "its start)" for s, b in slow.items())
            + f" no method brought the task-normalised test loss below {BARELY_TRAINED:.0%} of its start: their "
            "verdicts are about the first steps of training, not about a trained network.")
    length = length_check(cells, groups, reference, settings)
    if length:
        lines.append(length)
    if timing:
        total = sum(timing.values())
        lines.append(f"- The sweeps took {total / 60:.0f} min of wall time on the machine that ran them "
                     f"({len(timing)} sweeps).")
    return "\n".join(lines) + "\n"


def _count(by_t: dict, verdict: str) -> int:
    return sum(c.result.verdict == verdict for by_claim in by_t.values() for c in by_claim.values())


def _seed_count(groups: dict) -> int:
    return max((len({r.config.get("seed") for r in rs}) for rs in groups.values()), default=0)


LENGTH_KEYS = {"trainer.max_steps", "trainer.eval_every"}


def length_check(cells: dict, groups: dict, reference: str, settings: dict) -> str:
    """The reference setting against the settings that only train it longer or shorter (the check behind
    the study's training length)."""
    steps = {s: sorted({r.config.get("trainer", {}).get("max_steps") for r in rs}) for s, rs in groups.items()}
    longer = [s for s in cells if s != reference and settings.get(s) and set(settings[s]) <= LENGTH_KEYS]
    out = []
    for s in longer:
        pairs = [(cell.result.verdict, cells[s].get(T, {}).get(cid)) for T, by_claim in cells.get(reference, {}).items()
                 for cid, cell in by_claim.items()]
        same = sum(other is not None and other.result.verdict == verdict for verdict, other in pairs)
        total = sum(other is not None for _, other in pairs)
        out.append(f"`{reference}` ({'/'.join(map(str, steps.get(reference, [])))} steps) and `{s}` "
                   f"({'/'.join(map(str, steps[s]))} steps) agree on {same} of {total} verdicts")
    return ("- Training length: " + "; ".join(out) + ".") if out else ""
