"""Which unstated choices decide Figure 2's claims (docs/toy.md, "Sensitivity study").

The runs of ``experiments/toy_sensitivity.yaml`` carry ``setting`` in their config: a named set of
overrides of the toy's default set-up (one unstated choice changed, or a few together). For every
setting and T, Figure 2's five claims are checked exactly as ``figure2.check_claims`` checks them on
the default runs, once on all seeds together (the verdict) and once per seed (its robustness: a
verdict that some seeds do not share sits on a threshold). Settings that also ran the grid search
(the follow-up sweep, ``<setting>__grid``) get Figure 4's two verdicts too.

Written files (into the results folder):
  ``claims_map.md`` / ``claims_map.png``  rows = settings, columns = the claims at T=2 and T=10;
  ``gain.png``                            GradNorm's % gain over equal weights per setting (seeds paired);
  ``curves.png``                          test-loss curves of the settings whose T=2 verdict differs from
                                          the reference setting's (and the reference itself);
  ``decides.md``                          sentences computed from the numbers (also a REPORT.md section).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gradnorm import io
from gradnorm.report import claims as C
from gradnorm.report import figure2, figure4
from gradnorm.report.curves import plot_band, seed_frame
from gradnorm.report.runs import Run, method_of
from gradnorm.report.stats import pearson
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
    "fig2.lowest_test_loss": "% by which GradNorm's final loss is below the better baseline's",
    "fig2.weights_favour_small_sigma": "Spearman ρ(σ_i, E_t[w_i])",
    "fig2.weights_stable": "largest late drift of the weights (threshold 0.1)",
    "fig2.equal_swamped": "Spearman ρ(σ_i, q_i) under equal weights",
    "fig2.uncertainty_deteriorates": "% rise of uncertainty's final loss over its minimum",
    "fig4.no_random_beats_gradnorm": "grid points beating GradNorm (of 20)",
    "fig4.negative_correlation": "Pearson r",
}
#: how each key number is written
FORMATS = {"fig2.lowest_test_loss": "{:+.1f}%", "fig2.weights_favour_small_sigma": "{:.2f}", "fig2.weights_stable": "{:.3f}",
           "fig2.equal_swamped": "{:.2f}", "fig2.uncertainty_deteriorates": "{:+.1f}%",
           "fig4.no_random_beats_gradnorm": "{:.0f}", "fig4.negative_correlation": "{:.2f}"}
MARK = {C.REPRODUCED: "✓", C.PARTLY: "◐", C.NOT_REPRODUCED: "✗", C.NO_DATA: "–"}
VERDICT_COLORS = {C.REPRODUCED: "#7fc97f", C.PARTLY: "#fdd96a", C.NOT_REPRODUCED: "#f4a582", C.NO_DATA: "#eeeeee"}
#: a setting in which no method brings the task-normalised test loss below this fraction of its start
#: (T) has barely trained: its verdicts are about the start of training
BARELY_TRAINED = 0.9


@dataclass
class Cell:
    """One claim in one setting at one T: the verdict on all seeds and the verdicts of each seed."""

    result: C.ClaimResult
    seed_verdicts: list[str] = field(default_factory=list)

    @property
    def unanimous(self) -> bool:
        return all(v == self.result.verdict for v in self.seed_verdicts)

    def number(self) -> str:
        value = self.result.value
        return "" if value is None or not math.isfinite(value) else FORMATS.get(self.result.id, "{:.3g}").format(value)

    def text(self) -> str:
        number = f" {self.number()}" if self.number() else ""
        agree = sum(v == self.result.verdict for v in self.seed_verdicts)
        seeds = "" if self.unanimous or not self.seed_verdicts else f" ({agree}/{len(self.seed_verdicts)} seeds)"
        return f"{MARK[self.result.verdict]}{number}{seeds}"


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
    out: dict[int, dict[str, Cell]] = {}
    for T, by_method in figure2.group_by_t(runs).items():
        pooled = {r.id: Cell(r) for r in figure2.check_claims(T, by_method, "")}
        seeds = sorted({r.config.get("seed") for rs in by_method.values() for r in rs})
        for seed in seeds if len(seeds) > 1 else []:
            one = {m: [r for r in rs if r.config.get("seed") == seed] for m, rs in by_method.items()}
            if all(one.get(m) for m in figure2.COMPARED):
                for r in figure2.check_claims(T, one, ""):
                    pooled[r.id].seed_verdicts.append(r.verdict)
        out[T] = pooled
    return out


def figure4_cells(runs: list[Run]) -> dict[str, Cell]:
    """Figure 4's verdicts from a setting's grid runs against its T=2 GradNorm runs (empty without grid runs)."""
    grid_runs = [r for r in runs if method_of(r.config, r.choices)[0] == "grid"]
    gradnorm = [r for r in runs if method_of(r.config, r.choices)[0] == "gradnorm" and len(r.task_names) == 2]
    if not grid_runs:
        return {}
    pts = figure4.points(grid_runs, gradnorm, ["test_loss/*"])

    r = pearson([p["distance"] for p in pts], [p["gain"] for p in pts])
    cells = {res.id: Cell(res) for res in figure4.claims(pts, r, "toy T=2", "")}
    beating = sum(1 for p in pts if p["gain"] > 0)
    cells["fig4.no_random_beats_gradnorm"].result.value = float(beating)
    cells["fig4.negative_correlation"].result.value = r
    return cells


def paired_gains(runs: list[Run], T: int) -> list[float]:
    """Per seed: 100·(L_equal − L_GradNorm)/L_equal of the final task-normalised test loss."""
    by_method = figure2.group_by_t(runs).get(T, {})
    final = {m: {r.config.get("seed"): r.summary["metrics"].get("task_normalized_loss", math.nan)
                 for r in by_method.get(m, [])} for m in ("equal", "gradnorm")}
    return [100 * (final["equal"][s] - final["gradnorm"][s]) / final["equal"][s]
            for s in sorted(final["gradnorm"]) if s in final["equal"]]


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
    """Settings whose verdict on ``claim`` at ``T`` differs from the reference setting's."""
    ref = cells.get(reference, {}).get(T, {}).get(claim)
    if ref is None:
        return []
    return [s for s, by_t in cells.items() if s != reference and claim in by_t.get(T, {})
            and by_t[T][claim].result.verdict != ref.result.verdict]


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
            f"({legend}) computed on all seeds by the same check as `results/toy/` (docs/reporting.md), its key "
            "number, and, where the seeds taken one by one do not all give that verdict, how many do: such a "
            f"verdict sits on a threshold. **Bold**: differs from `{reference}`.\n\n"
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
            ax.add_patch(_rect(j, i, VERDICT_COLORS[verdict], hatch=None if not cell or cell.unanimous else "///"))
            label = MARK[verdict] + (f"\n{cell.number()}" if cell and cell.number() else "")
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
    handles.append(Patch(facecolor="white", hatch="///", edgecolor="#555555", label="seeds disagree"))
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False, fontsize=7)
    ax.set_title("Figure 2's claims under each set-up (verdict, key number)")
    fig.tight_layout()
    return save_figure(fig, base)


def _rect(x, y, color, hatch=None):
    from matplotlib.patches import Rectangle

    return Rectangle((x + 0.04, y + 0.06), 0.92, 0.88, facecolor=color, edgecolor="#555555" if hatch else "none",
                     hatch=hatch, lw=0.5)


# -- the gain and the curves ----------------------------------------------------------------------------
def gain_figure(groups: dict[str, list[Run]], base: Path) -> list[Path]:
    settings = list(groups)
    Ts = sorted({len(r.task_names) for rs in groups.values() for r in rs})
    fig, axes = new_figure(1, max(len(Ts), 1), width=4.2, height=0.32 * len(settings) + 1.4)
    for ax, T in zip(axes[0], Ts):
        for i, setting in enumerate(settings):
            gains = paired_gains(groups[setting], T)
            if not gains:
                continue
            mean = float(np.mean(gains))
            color = method_color("gradnorm") if mean > 0 else method_color("equal")
            ax.plot([min(gains), max(gains)], [i, i], color=color, lw=2, alpha=0.5)
            ax.scatter(gains, [i] * len(gains), s=9, color=color, zorder=3)
            ax.scatter([mean], [i], s=40, marker="D", color=color, zorder=4)
        ax.axvline(0, color="#333333", lw=0.8)
        ax.set_yticks(range(len(settings)), settings if ax is axes[0][0] else [""] * len(settings), fontsize=8)
        ax.set_ylim(len(settings) - 0.5, -0.5)
        ax.set_xlabel("GradNorm's gain over equal weights, %\n(> 0: GradNorm better)")
        ax.set_title(f"T={T}: mean (◆) and seeds (•, range)")
    fig.suptitle("Toy: GradNorm α=0.12 vs equal weights, final task-normalised test loss, per setting")
    fig.tight_layout()
    return save_figure(fig, base)


def barely_trained(runs: list[Run]) -> dict[int, float]:
    """T -> the best final task-normalised test loss over methods (mean over seeds) divided by T, where
    that is above :data:`BARELY_TRAINED` (no method has trained much)."""
    out = {}
    for T, by_method in figure2.group_by_t(runs).items():
        finals = [np.mean([r.summary["metrics"].get("task_normalized_loss", math.nan) for r in rs])
                  for rs in by_method.values() if rs]
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
def decides_markdown(groups: dict, cells: dict, grids: dict, reference: str, timing: dict | None,
                     settings: dict | None = None) -> str:
    """``decides.md``: which choices decide each claim, in sentences computed from the verdicts."""
    names = {**FIGURE2_CLAIMS, **FIGURE4_CLAIMS}
    n = len(cells)
    lines = ["Computed from `results/toy_sensitivity/` (`make reproduce-toy-sensitivity`): "
             f"{n} set-ups of the toy, each × {{equal, uncertainty, GradNorm α=0.12}} × T ∈ {{2, 10}} × "
             f"{_seed_count(groups)} seeds; the claims map is `toy_sensitivity/claims_map.md`.\n"]
    for T in sorted({T for by_t in cells.values() for T in by_t}):
        positive = [s for s in cells if np.mean(paired_gains(groups[s], T) or [math.nan]) > 0]
        lines.append(f"- **GradNorm's T={T} gain over equal weights** is positive in {len(positive)} of {n} settings"
                     + (f" ({', '.join(f'`{s}`' for s in positive)})" if positive and len(positive) < n else "") + "."
                     + deciding_sentence(settings or {}, positive, [s for s in cells if s not in positive]))
    for T in sorted({T for by_t in cells.values() for T in by_t}):
        for cid in FIGURE2_CLAIMS:
            ref = cells.get(reference, {}).get(T, {}).get(cid)
            if ref is None:
                continue
            changed = [(s, by_t[T][cid]) for s, by_t in cells.items()
                       if s != reference and cid in by_t.get(T, {}) and by_t[T][cid].result.verdict != ref.result.verdict]
            shaky = [s for s, by_t in cells.items() if cid in by_t.get(T, {}) and not by_t[T][cid].unanimous]
            sentence = (f"- T={T}, *{names[cid]}*: {ref.result.verdict} in `{reference}`; "
                        + (f"it changes in {len(changed)} of {n - 1} other settings: "
                           + ", ".join(f"`{s}` ({c.result.verdict})" for s, c in changed) if changed
                           else f"the same in all {n - 1} other settings"))
            if shaky:
                sentence += f". Seeds disagree in: {', '.join(f'`{s}`' for s in shaky)}"
            lines.append(sentence + ".")
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
    else:
        best = max(cells, key=lambda s: _count(cells[s], C.REPRODUCED))
        total = sum(len(b) for b in cells[best].values())
        lines.append(f"- No setting makes every Figure 2 claim hold; the most (found after the fact): `{best}`, "
                     f"{_count(cells[best], C.REPRODUCED)} of {total} reproduced.")
    slow = {s: b for s, rs in groups.items() if (b := barely_trained(rs))}
    if slow:
        lines.append("- **Barely trained**: in " + ", ".join(
            f"`{s}` (T={'/'.join(map(str, b))}: best final loss {'/'.join(f'{100 * v:.0f}%' for v in b.values())} of "
            "its start)" for s, b in slow.items())
            + f" no method brought the task-normalised test loss below {BARELY_TRAINED:.0%} of its start: their "
            "verdicts are about the first steps of training, not about a trained network.")
    length = length_check(cells, groups, reference, settings or {})
    if length:
        lines.append(length)
    if timing:
        total = sum(timing.values())
        lines.append(f"- The sweeps took {total / 60:.0f} min of wall time on the machine that ran them "
                     f"({len(timing)} sweeps).")
    return "\n".join(lines) + "\n"


def deciding_changes(settings: dict, yes: list[str], no: list[str]) -> list[str]:
    """The overrides (``key=value``) found in some ``yes`` setting and in no ``no`` setting."""
    seen_no = {f"{k}={v}" for s in no for k, v in settings.get(s, {}).items()}
    return sorted(dict.fromkeys(f"{k}={v}" for s in yes for k, v in settings.get(s, {}).items()
                                if f"{k}={v}" not in seen_no))


def deciding_sentence(settings: dict, yes: list[str], no: list[str]) -> str:
    """" It is positive exactly where a setting changes one of: ..." when that holds for every setting."""
    if not yes or not no or not settings:
        return ""
    changes = deciding_changes(settings, yes, no)
    covered = all(any(f"{k}={v}" in changes for k, v in settings.get(s, {}).items()) for s in yes)
    if not changes or not covered:
        return ""
    return (" It is positive exactly in the settings that change one of " + ", ".join(f"`{c}`" for c in changes)
            + " (each such setting has it positive; no setting without one of them does).")


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
