"""One look for every figure: a colour and a label per method (from the table of methods,
``gradnorm.balancers.METHODS``), colours for tasks, and atomic PNG + PDF output."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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


#: the part of viridis that task colours use (its lightest yellow is hard to see on white)
_TASK_CMAP_RANGE = (0.05, 0.9)


def _task_cmap():
    from matplotlib.colors import ListedColormap

    low, high = _TASK_CMAP_RANGE
    return ListedColormap(plt.get_cmap("viridis")(np.linspace(low, high, 256)))


def task_colors(sigmas: Sequence[float]) -> list:
    """Tasks coloured by log σ_i (dark = small σ), so a task keeps its colour across panels."""
    logs = np.log10(np.asarray(sigmas, dtype=float))
    low, high = float(logs.min()), float(logs.max())
    scale = (logs - low) / (high - low) if high > low else np.zeros_like(logs)
    return [_task_cmap()(s) for s in scale]


def sigma_colorbar(fig, ax, sigmas: Sequence[float]):
    """A colour bar beside ``ax`` that maps a line's colour (:func:`task_colors`) to its task's σ_i."""
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize

    low, high = float(min(sigmas)), float(max(sigmas))
    norm = LogNorm(low, high) if high > low else Normalize(low - 1, high + 1)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=_task_cmap()), ax=ax, pad=0.02, fraction=0.06)
    bar.set_label("task scale σ_i")
    plain_log_ticks(bar.ax, "y")
    return bar


def plain_log_ticks(ax, axis: str = "y") -> None:
    """Log-axis ticks as plain numbers (20, 50, 100), not 2×10¹; minor ticks labelled only when few
    decades are shown."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    which = ax.yaxis if axis == "y" else ax.xaxis
    low, high = sorted(ax.get_ylim() if axis == "y" else ax.get_xlim())
    plain = FuncFormatter(lambda v, _pos: f"{v:g}")
    which.set_major_locator(LogLocator(base=10))
    which.set_major_formatter(plain)
    if low > 0 and high / low < 100:  # under two decades: label 2, 5 between the powers of ten
        which.set_minor_locator(LogLocator(base=10, subs=(2.0, 5.0)))
        which.set_minor_formatter(plain)
    else:
        which.set_minor_formatter(NullFormatter())


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
