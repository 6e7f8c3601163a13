"""Small statistics used by the checks of the paper's claims (no SciPy needed)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import pandas as pd


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
