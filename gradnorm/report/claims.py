"""The paper's claims and our verdicts on them.

The paper's claims are data, in ``paper_numbers.yaml`` (:func:`paper` reads it); its printed numbers
are in ``literature.yaml`` with every other published number (``gradnorm.report.literature``). Each
experiment's report writes its verdicts as ``claims_<experiment>.json`` next to its tables; they are
gathered into ``README.md`` (one results folder) and ``results/REPORT.md``.

A verdict is computed by code from the runs, with the check spelled out in ``check`` and the
numbers in ``evidence``. Seeds are never selected; every completed run of a group counts. A claim is
graded from its parts, each a paired comparison or a per-seed threshold (``gradnorm.report.stats``)
that holds (True), fails (False) or is inconclusive (None): :func:`verdict` for a claim with a core
and minor parts, :func:`every` for "on every task / every α" claims.
"""

from __future__ import annotations

import functools
import json
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import OmegaConf

from gradnorm import io
from gradnorm.report.tables import markdown

PAPER_NUMBERS = Path(__file__).with_name("paper_numbers.yaml")

REPRODUCED, PARTLY, NOT_REPRODUCED, NO_DATA = "reproduced", "partly reproduced", "not reproduced", "no data"
#: the numbers do not decide: the seeds disagree, or the effect is inside the machine-to-machine drift
INCONCLUSIVE = "inconclusive"
#: the order in which REPORT.md counts verdicts
VERDICTS = (REPRODUCED, PARTLY, NOT_REPRODUCED, INCONCLUSIVE, NO_DATA)


@functools.cache
def paper() -> dict:
    """``paper_numbers.yaml``: the paper's reference, its Table 1 layout and its testable claims (the
    printed numbers: ``literature.yaml``, ``gradnorm.report.literature``)."""
    return OmegaConf.to_container(OmegaConf.load(PAPER_NUMBERS), resolve=True)


@dataclass
class ClaimResult:
    """One verdict on one claim (``id`` from paper_numbers.yaml) in one setting (e.g. "toy T=2")."""

    id: str
    setting: str
    verdict: str
    evidence: str
    check: str
    shown_in: str = ""
    #: the key number behind the verdict (e.g. ρ, a drift, a % gain), for compact maps; None if none
    value: float | None = None
    #: the verdict at shorter training budgets (steps as a string -> verdict), for the toy's budget check
    budgets: dict | None = None

    @property
    def budget_dependent(self) -> bool:
        return any(v != self.verdict for v in (self.budgets or {}).values())

    def verdict_text(self) -> str:
        """``**not reproduced**``, with ``; budget-dependent: reproduced at 3,000 steps`` when it changes."""
        text = f"**{self.verdict}**"
        if self.budget_dependent:
            text += "; budget-dependent: " + ", ".join(f"{v} at {int(k):,} steps" for k, v in sorted(
                self.budgets.items(), key=lambda kv: int(kv[0])) if v != self.verdict)
        return text


def verdict(core: list[bool | None], minor: list[bool | None] = ()) -> str:
    """A claim from its parts (True holds, False fails, None inconclusive): a core part that fails -> not
    reproduced; else one that is inconclusive -> inconclusive; else every minor part holds -> reproduced,
    otherwise partly. A claim whose core fails is never "partly" for its minor half."""
    if not core:
        return NO_DATA
    if any(part is False for part in core):
        return NOT_REPRODUCED
    if any(part is None for part in core):
        return INCONCLUSIVE
    return REPRODUCED if all(part is True for part in minor) else PARTLY


def every(parts: list[bool | None]) -> str:
    """A claim over several equal parts ("on every task", "for every α"): all hold -> reproduced; some fail
    -> partly if some hold, else not reproduced; none fails but not all hold -> inconclusive."""
    if not parts:
        return NO_DATA
    if all(part is True for part in parts):
        return REPRODUCED
    if any(part is False for part in parts):
        return PARTLY if any(part is True for part in parts) else NOT_REPRODUCED
    return INCONCLUSIVE


def mark_budgets(results: list[ClaimResult], shorter: list[ClaimResult], steps: int) -> None:
    """Record on each result the verdict of the same claim and setting at a shorter budget ``steps``."""
    early = {(r.id, r.setting): r.verdict for r in shorter}
    for result in results:
        if (result.id, result.setting) in early:
            result.budgets = {**(result.budgets or {}), str(int(steps)): early[(result.id, result.setting)]}


def count(verdicts: list[str], order: tuple[str, ...] = VERDICTS) -> str:
    """``3 reproduced, 1 partly reproduced, 4 inconclusive``: the verdicts by kind, in ``order`` first."""
    counts = {v: verdicts.count(v) for v in dict.fromkeys([*order, *verdicts])}
    return ", ".join(f"{n} {v}" for v, n in counts.items() if n)


def write_claims(out_dir: str | Path, experiment: str, results: list[ClaimResult], context: str = "") -> Path:
    """``context``: one line on the runs behind the verdicts (how many, which settings)."""
    return io.write_json(Path(out_dir) / f"claims_{experiment}.json",
                         {"experiment": experiment, "context": context, "claims": [asdict(r) for r in results]})


def read_context(path: str | Path) -> str:
    try:
        return str(json.loads(Path(path).read_text()).get("context", ""))
    except (OSError, json.JSONDecodeError, AttributeError):
        return ""


def read_claims(root: str | Path) -> dict[str, list[ClaimResult]]:
    """Every ``claims_*.json`` under ``root``: experiment -> its results, with ``shown_in`` made
    relative to ``root`` (e.g. ``toy/figure2.png``)."""
    out = {}
    root = Path(root)
    for path in sorted(root.rglob("claims_*.json")):
        try:
            data = json.loads(path.read_text())
            results = [ClaimResult(**c) for c in data["claims"]]
        except (OSError, json.JSONDecodeError, KeyError, TypeError):
            continue
        folder = path.parent.relative_to(root).as_posix()
        for result in results:
            if result.shown_in and folder != ".":
                result.shown_in = f"{folder}/{result.shown_in}"
        out[data["experiment"]] = results
    return out


def claims_markdown(results: list[ClaimResult], with_checks: bool = True) -> str:
    """A table of verdicts, then (optionally) the precise check behind each."""
    by_id = {c["id"]: c for c in paper()["claims"]}
    rows = [[f"{by_id[r.id]['text']} ({by_id[r.id]['section']})" if r.id in by_id else f"`{r.id}`",
             r.setting, r.verdict_text(), r.evidence, r.shown_in] for r in results]
    text = markdown(["Claim (paper section)", "Setting", "Verdict", "Numbers", "Shown in"], rows, "lllll")
    if with_checks:
        checks = {}
        for r in results:
            checks.setdefault(r.id, r.check)
        text += "\nHow each verdict is computed:\n\n" + "\n".join(
            f"- `{cid}`: {check}" for cid, check in checks.items()) + "\n"
    return text


def paper_report(root: str | Path, gpu_experiments: set[str], commands: dict[str, str]) -> str:
    """``REPORT.md``: every claim of paper_numbers.yaml with the verdicts found under ``root``.

    Args:
        gpu_experiments: experiments that need NYUv2 on a GPU (their claims say so while not run).
        commands: experiment -> how to run it, for claims whose experiment has not run yet.
    """
    found = read_claims(root)
    rows, used = [], []
    for claim in paper()["claims"]:
        label = f"{claim['text']} ({claim['section']})"
        hits = [(exp, r) for exp in claim["experiments"] for r in found.get(exp, []) if r.id == claim["id"]]
        for exp, result in hits:
            rows.append([label, f"{result.setting} (`{exp}`)", result.verdict_text(), result.evidence,
                         result.shown_in])
            used.append(result)
        ran = {exp for exp, _ in hits}
        for exp in claim["experiments"]:
            if exp in ran:
                continue
            verdict = claim.get("otherwise", "needs NYUv2 on a GPU") if exp in gpu_experiments else "not run yet"
            rows.append([label, f"`{exp}`", verdict, f"run `{commands.get(exp, exp)}`", ""])
        if not claim["experiments"]:
            rows.append([label, "–", claim.get("otherwise", "not covered"), "", ""])
    checks = {}
    for r in used:
        checks.setdefault(r.id, r.check)
    text = ("# GradNorm reproduction: the paper's claims and our verdicts\n\n"
            f"Generated by `scripts/report.py` from the `claims_*.json` files under `{Path(root).name}/`; do not "
            "edit by hand. Paper: " + paper()["paper"] + ". Verdicts are computed by code from every "
            "completed run (no seed selection), from paired per-seed differences with a minimum effect beyond "
            "the machine-to-machine drift; *inconclusive* means the numbers do not decide. The checks are "
            "defined below and in docs/reporting.md.\n\n"
            f"Verdicts on the paper's claims: {count([r.verdict for r in used]) or 'none yet'}"
            + (f"; budget-dependent: {sum(r.budget_dependent for r in used)}" if any(r.budget_dependent for r in used)
               else "") + ".\n\n")
    text += markdown(["Claim (paper section)", "Setting (experiment)", "Verdict", "Numbers", "Shown in"], rows,
                     "lllll")
    if checks:
        text += "\nHow each verdict is computed:\n\n" + "\n".join(
            f"- `{cid}`: {check}" for cid, check in checks.items()) + "\n"
    for section in sorted(Path(root).glob("*/methods_verdicts.md")):  # written by the later-methods report
        text += (f"\n## Later methods on the toy ({section.parent.name}; not claims of the paper)\n\n"
                 + section.read_text())
    for decides in sorted(Path(root).glob("*/decides.md")):  # written by sensitivity studies
        text += (f"\n## What decides each claim ({decides.parent.name})\n\n" + decides.read_text())
    for section in sorted(Path(root).glob("*/multimnist_verdicts.md")):  # written by the MultiMNIST report
        text += "\n## GradNorm on real data (MultiMNIST)\n\n" + section.read_text()
    return text
