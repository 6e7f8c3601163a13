"""One look for every figure: a colour and a label per method (from the table of methods,
``gradnorm.balancers.METHODS``), colours for tasks, and atomic PNG + PDF output."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from gradnorm import io  # noqa: E402
from gradnorm.balancers import METHODS  # noqa: E402

#: runs that train one task of a multitask data set (a row of Table 1, not a balancer)
SINGLE_TASK = "single_task"
SINGLE_TASK_LABEL, SINGLE_TASK_COLOR = "Single task", "#D55E00"
#: a method missing from the table of methods (gradnorm.balancers.METHODS)
UNKNOWN_COLOR = "#999999"


def method_color(method: str) -> str:
    """The method's colour (the ``color`` of its balancer class), the same in every figure."""
    if method == SINGLE_TASK:
        return SINGLE_TASK_COLOR
    return METHODS[method].color if method in METHODS else UNKNOWN_COLOR


def method_label(method: str, balancer_config: dict | None = None) -> str:
    """The method's label (its balancer class's ``label``), with the fields of one run's balancer config
    ("GradNorm α=0.12") or, without one, its plain name ("GradNorm")."""
    if method == SINGLE_TASK:
        return SINGLE_TASK_LABEL
    return METHODS[method].label_for(balancer_config) if method in METHODS else method


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


def finish_scatter(fig, ax, base: str | Path, xlabel: str, ylabel: str, title: str) -> list[Path]:
    """Axis labels, title and a small legend on a one-panel figure, then :func:`save_figure`."""
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(frameon=False, fontsize=7)
    fig.tight_layout()
    return save_figure(fig, base)


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
