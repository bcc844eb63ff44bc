"""Plotting helpers: figures are made by code and saved reproducibly into ``figures/``.

Every PNG in the repository's ``figures/`` folder is written by :func:`save_figure` from a notebook
or a benchmark, with fixed resolution and without the time-stamped metadata that would make each
rebuild differ byte for byte.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib.pyplot as plt

FIGURES_ENV = "MINIREFORMER_FIGURES"
DPI = 110


def figures_dir() -> Path:
    """``$MINIREFORMER_FIGURES`` if set, else the ``figures/`` folder at the repository root."""
    path = Path(os.environ.get(FIGURES_ENV, Path(__file__).resolve().parents[1] / "figures"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def save_figure(fig: plt.Figure, name: str) -> Path:
    """Save ``fig`` as ``figures/<name>.png`` with stable metadata and return the path."""
    if not name or "/" in name or name.endswith(".png"):
        raise ValueError(f"name: expected a bare file stem like '01_attention_time', got {name!r}")
    path = figures_dir() / f"{name}.png"
    fig.savefig(path, dpi=DPI, bbox_inches="tight", metadata={"Software": None})
    return path
