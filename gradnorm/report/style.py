"""One look for every figure: a colour per method (the same in all figures), colours for tasks
and α values, and atomic PNG + PDF output."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gradnorm import io  # noqa: E402

#: Okabe–Ito colours (colour-blind safe), one per method.
METHOD_COLORS = {
    "equal": "#555555",
    "uncertainty": "#E69F00",
    "gradnorm": "#0072B2",
    "gradnorm_static": "#009E73",
    "grid": "#CC79A7",
    "fixed": "#56B4E9",
    "single_task": "#D55E00",
    # the later methods (docs/methods.md): the classes' ``color``
    "dwa": "#A6D854", "rlw": "#1B1B7A", "famo": "#8DA0CB", "pcgrad": "tab:olive", "mgda": "tab:cyan",
    "cagrad": "#7B3294", "imtl": "gold", "nash_mtl": "tab:brown",
}
METHOD_LABELS = {
    "equal": "Equal weights",
    "uncertainty": "Uncertainty",
    "gradnorm": "GradNorm",
    "gradnorm_static": "GradNorm static",
    "grid": "Grid search",
    "fixed": "Fixed weights",
    "single_task": "Single task",
    "dwa": "DWA", "rlw": "RLW", "famo": "FAMO", "pcgrad": "PCGrad", "mgda": "MGDA", "cagrad": "CAGrad",
    "imtl": "IMTL-G", "nash_mtl": "Nash-MTL",
}


def method_color(method: str) -> str:
    return METHOD_COLORS.get(method, "#999999")


def task_colors(sigmas: Sequence[float]) -> list:
    """Tasks coloured by log σ_i (dark = small σ), so a task keeps its colour across panels."""
    import numpy as np

    logs = np.log10(np.asarray(sigmas, dtype=float))
    low, high = float(logs.min()), float(logs.max())
    scale = (logs - low) / (high - low) if high > low else np.zeros_like(logs)
    return [plt.get_cmap("viridis")(0.05 + 0.85 * s) for s in scale]


def new_figure(rows: int, cols: int, width: float = 4.0, height: float = 3.2):
    plt.rcParams.update({"font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt.subplots(rows, cols, figsize=(width * cols, height * rows), squeeze=False)


def save_figure(fig, base: str | Path) -> list[Path]:
    """Write ``base.png`` and ``base.pdf`` atomically; close the figure."""
    base = Path(base)
    paths = []
    for fmt in ("png", "pdf"):
        path = base.with_suffix(f".{fmt}")
        io.atomic_write(path, lambda tmp, fmt=fmt: fig.savefig(tmp, format=fmt, dpi=150, bbox_inches="tight",
                                                                metadata=_metadata(fmt)))
        paths.append(path)
    plt.close(fig)
    return paths


def _metadata(fmt: str) -> dict:
    # No creation date, so regenerated figures differ only when their content does.
    return {"CreationDate": None} if fmt == "pdf" else {"Software": None}
