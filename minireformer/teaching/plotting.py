"""Plotting helpers: figures are made by code and saved reproducibly into ``figures/``.

Every PNG in the repository's ``figures/`` folder is written by :func:`save_figure` from a notebook
or a benchmark, with fixed resolution and without the time-stamped metadata that would make each
rebuild differ byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.ticker import LogLocator, NullFormatter, StrMethodFormatter

FIGURES_ENV = "MINIREFORMER_FIGURES"
DPI = 110


def figures_dir() -> Path:
    """``$MINIREFORMER_FIGURES`` if set, else the ``figures/`` folder at the repository root."""
    path = Path(os.environ.get(FIGURES_ENV, Path(__file__).resolve().parents[2] / "figures"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig: plt.Figure, name: str) -> Path:
    """Save ``fig`` as ``figures/<name>.png`` with stable metadata and return the path."""
    if not name or "/" in name or name.endswith(".png"):
        raise ValueError(f"name: expected a bare file stem like '01_attention_time', got {name!r}")
    path = figures_dir() / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return path


def label_log_axis(axis) -> None:
    """Label a logarithmic axis at 1, 2 and 5 in every decade, as plain numbers (a decade-only
    log axis often shows just two labels); ``axis`` is e.g. ``ax.yaxis``."""
    axis.set_major_locator(LogLocator(base=10, subs=(1, 2, 5)))
    axis.set_major_formatter(StrMethodFormatter("{x:g}"))
    axis.set_minor_formatter(NullFormatter())


def accuracy_table(
    table: dict, rows, columns, *, title: str, ax=None, reference: dict | None = None
) -> plt.Figure:
    """Heatmap of ``table[row][column]`` (percent; None or a missing row drawn blank) with each
    cell written in, and ``reference[row][column]`` (the paper's) in brackets below when given.

    Used for the duplication task's Table 2: rows trained, columns evaluated. The colour is the
    error, 100 - accuracy, on a logarithmic scale from 0.1% to 100%, so that 99.9%, 99% and 90%
    differ as much as 90% and 0% do.
    """
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(5.2, 3.4))
    grid = np.array(
        [[np.nan if table.get(r, {}).get(c) is None else table[r][c] for c in columns]
         for r in rows],
        dtype=float,
    )  # fmt: skip
    error = np.clip(100.0 - grid, 0.1, 100.0)
    image = ax.imshow(error, norm=LogNorm(vmin=0.1, vmax=100), cmap="viridis_r")
    for i, j in np.ndindex(grid.shape):
        text = "-" if np.isnan(grid[i, j]) else f"{grid[i, j]:.1f}"
        if reference is not None:
            text += f"\n({reference[rows[i]][columns[j]]:g})"
        dark = not np.isnan(grid[i, j]) and error[i, j] > 3
        ax.text(j, i, text, ha="center", va="center", fontsize=8.5,
                color="white" if dark else "black")  # fmt: skip
    ax.set_xticks(range(len(columns)), [str(c) for c in columns])
    ax.set_yticks(range(len(rows)), [str(r) for r in rows])
    ax.set_xlabel("evaluated with")
    ax.set_ylabel("trained with")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, label="error, 100 - accuracy (%)", shrink=0.8)
    return fig


def validation_curves(curves: dict, *, ylabel: str, title: str, ax=None) -> plt.Figure:
    """Lines of ``curves[name] = (steps, values)`` against training step, one per name."""
    fig, ax = (ax.figure, ax) if ax is not None else plt.subplots(figsize=(6, 3.6))
    for name, (steps, values) in curves.items():
        ax.plot(steps, values, marker=".", label=name)
    ax.set_xlabel("training step")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig
