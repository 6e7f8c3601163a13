"""The statistics behind every verdict (no SciPy needed): correlations, % gains, and the paired
comparison of a method with a reference over seeds (docs/reporting.md, "Paired comparisons").

Paired comparison of method X with reference R. Runs of X and R with the same seed share their data
and initial network, so the evidence is the per-seed difference, not the two means. For a
lower-is-better metric m (a loss, an error) the relative difference of seed s is

    d_s = 100 · (m_R,s − m_X,s) / |m_R,s|        (higher-is-better: 100 · (m_X,s − m_R,s) / |m_R,s|)

in %, positive when X is better. With n seeds and a band δ (the minimum effect, by default the
machine-to-machine drift :data:`MACHINE_DRIFT_PERCENT`):

    better        n ≥ min_n and every d_s > +δ
    worse         n ≥ min_n and every d_s < −δ
    inconclusive  otherwise (too few seeds, mixed signs, or some seed inside the band)

so the whole range [min_s d_s, max_s d_s] must clear the band on one side: the minimum effect is
tied both to the drift (no single run can flip the sign by moving as much as runs move between
machines) and to the spread of the paired differences (a wide spread needs a larger mean).
:func:`compare` does this for per-seed values; :func:`decide` for differences already computed
(e.g. a % gain averaged over tasks, or :func:`absolute_differences` of accuracies in points, graded
against a band in points); :func:`beyond` grades a per-seed quantity against a stated
threshold (e.g. "the weights drift by at most 10%") with the same three outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

#: How much a toy run's final numbers moved between two CPU makes (same seeds, same torch): up to ~3%,
#: about the seed-to-seed spread (docs/experiments.md, "Machine to machine"; results/*/comparison.md).
#: The default minimum effect of a paired comparison, in %.
MACHINE_DRIFT_PERCENT = 3.0
#: Fewest paired seeds for "better" or "worse": all of 2 seeds agree by chance half the time.
MIN_SEEDS = 3

BETTER, WORSE, INCONCLUSIVE, NO_DATA = "better", "worse", "inconclusive", "no data"
#: the unit of differences between percentages (accuracies in %): ``+1.2 points``
POINTS = " points"
#: units whose numbers are written with their sign (differences)
SIGNED_UNITS = ("%", POINTS)
#: numbers at least this large (a diverged run's % difference) are written in scientific notation
LARGEST_FIXED = 1e5


@dataclass(frozen=True)
class Outcome:
    """One comparison over seeds and the numbers behind it.

    ``values`` are the per-seed numbers that were graded (paired differences for :func:`compare` and
    :func:`decide`, the quantity itself for :func:`beyond`), keyed by seed; ``mean``, ``low`` and
    ``high`` their mean, minimum and maximum; ``band`` the minimum effect (or threshold) used.
    """

    outcome: str
    values: dict
    band: float
    unit: str = "%"

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(list(self.values.values()))) if self.values else math.nan

    @property
    def low(self) -> float:
        return float(min(self.values.values())) if self.values else math.nan

    @property
    def high(self) -> float:
        return float(max(self.values.values())) if self.values else math.nan

    @property
    def holds(self) -> bool | None:
        """True for better, False for worse, None when inconclusive or without data (a claim's part)."""
        return {BETTER: True, WORSE: False}.get(self.outcome)

    def numbers(self, digits: int = 1) -> str:
        """``+6.5% (seeds +4.1…+9.0%, n=5)``: the mean, the range over seeds, n."""
        if not self.values:
            return "no paired seeds"
        sign = "+" if self.unit in SIGNED_UNITS else ""
        huge = max(abs(self.mean), abs(self.low), abs(self.high)) >= LARGEST_FIXED
        f = f"{{:{sign}.{digits}e}}" if huge else f"{{:{sign}.{digits}f}}"  # a diverged run: -3.2e+17%
        spread = (f" (seeds {f.format(self.low)}…{f.format(self.high)}{self.unit}, n={self.n})" if self.n > 1
                  else " (n=1)")
        return f"{f.format(self.mean)}{self.unit}{spread}"

    def text(self, digits: int = 1) -> str:
        """``better: +6.5% (seeds +4.1…+9.0%, n=5)``."""
        return f"{self.outcome}: {self.numbers(digits)}"


def _finite(values: Mapping | Sequence) -> dict:
    items = values.items() if isinstance(values, Mapping) else enumerate(values)
    out = {}
    for key, value in items:
        try:
            value = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(value):
            out[key] = value
    return out


def relative_differences(values: Mapping[Hashable, float], reference: Mapping[Hashable, float], *,
                         higher_is_better: bool = False) -> dict:
    """Per seed present in both: d_s = 100·(r_s − x_s)/|r_s| (lower is better) or 100·(x_s − r_s)/|r_s|
    (higher is better), in %, positive when ``values`` is better. Seeds with a non-finite value or a
    zero reference are left out."""
    x, r = _finite(values), _finite(reference)
    sign = 1.0 if higher_is_better else -1.0
    return {s: 100.0 * sign * (x[s] - r[s]) / abs(r[s]) for s in x if s in r and r[s] != 0}


def absolute_differences(values: Mapping[Hashable, float], reference: Mapping[Hashable, float], *,
                         higher_is_better: bool = False) -> dict:
    """Per seed present in both: d_s = r_s − x_s (lower is better) or x_s − r_s (higher is better), in the
    metric's own unit (e.g. accuracy points), positive when ``values`` is better. Non-finite values are
    left out."""
    x, r = _finite(values), _finite(reference)
    sign = 1.0 if higher_is_better else -1.0
    return {s: sign * (x[s] - r[s]) for s in x if s in r}


def decide(differences: Mapping | Sequence[float], *, band: float = MACHINE_DRIFT_PERCENT, min_n: int = MIN_SEEDS,
           unit: str = "%") -> Outcome:
    """Grade paired differences (positive = better): every one > +band: better; every one < −band:
    worse; fewer than ``min_n`` or any inside [−band, band] or mixed signs: inconclusive."""
    d = _finite(differences)
    if not d:
        return Outcome(NO_DATA, d, band, unit)
    if len(d) < min_n:
        outcome = INCONCLUSIVE
    elif all(v > band for v in d.values()):
        outcome = BETTER
    elif all(v < -band for v in d.values()):
        outcome = WORSE
    else:
        outcome = INCONCLUSIVE
    return Outcome(outcome, d, band, unit)


def compare(values: Mapping[Hashable, float], reference: Mapping[Hashable, float], *, higher_is_better: bool = False,
            band: float = MACHINE_DRIFT_PERCENT, min_n: int = MIN_SEEDS) -> Outcome:
    """Method X (``values``, seed -> metric) against reference R (``reference``, seed -> metric), paired by
    seed: :func:`relative_differences`, graded by :func:`decide`."""
    return decide(relative_differences(values, reference, higher_is_better=higher_is_better), band=band, min_n=min_n)


def beyond(values: Mapping | Sequence[float], threshold: float, *, above: bool = True, min_n: int = MIN_SEEDS,
           unit: str = "") -> Outcome:
    """A per-seed quantity against a stated threshold: better (the claimed side) when every seed is above it
    (``above``; below it otherwise), worse when every seed is on the other side (equal counts as the other
    side), inconclusive when the seeds disagree or are fewer than ``min_n``."""
    v = _finite(values)
    if not v:
        return Outcome(NO_DATA, v, threshold, unit)
    claimed = [(x > threshold) if above else (x < threshold) for x in v.values()]
    if len(v) < min_n:
        outcome = INCONCLUSIVE
    elif all(claimed):
        outcome = BETTER
    elif not any(claimed):
        outcome = WORSE
    else:
        outcome = INCONCLUSIVE
    return Outcome(outcome, v, threshold, unit)


def budget_dependent(outcomes: Mapping[int, str]) -> bool:
    """Budget (training steps) -> outcome or verdict: True when they are not all the same."""
    return len(set(outcomes.values())) > 1


def pearson(x: Sequence[float], y: Sequence[float]) -> float:
    """Pearson correlation of the pairs where both are finite; NaN with < 3 pairs or no spread."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or x.std() == 0 or y.std() == 0:
        return math.nan
    return float(np.corrcoef(x, y)[0, 1])


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (Pearson of average ranks; ties share their mean rank).

    Defined from 2 pairs on (then ±1), unlike :func:`pearson`, because the toy's T=2 row asks
    for the sign of a two-task relation.
    """
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    keep = np.isfinite(x) & np.isfinite(y)
    rx = pd.Series(x[keep]).rank().to_numpy()
    ry = pd.Series(y[keep]).rank().to_numpy()
    if rx.size < 2 or rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def percent_gain(errors: Sequence[float], reference: Sequence[float]) -> float:
    """Average % improvement over tasks: mean_i 100·(ref_i − err_i)/ref_i (positive = better).

    ``errors`` and ``reference`` are lower-is-better metrics, one per task (paper Figure 4's
    "% change in test performance" and Figure 7's "% gain over equal weights").
    """
    err, ref = np.asarray(errors, dtype=float), np.asarray(reference, dtype=float)
    if err.size == 0 or err.shape != ref.shape or not np.all(np.isfinite(err)) or not np.all(np.isfinite(ref)):
        return math.nan
    return float(np.mean(100.0 * (ref - err) / ref))
