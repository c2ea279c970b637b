"""Plots written as PNG files (matplotlib, headless)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402


def save_figure(fig: Figure, path: str | Path) -> Path:
    """Write `fig` as a PNG at `path` (folders created), then close it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def layer_profile(series: dict[str, Sequence[float]], path: str | Path, title: str, ylabel: str) -> Path:
    """One line per named series over layers."""
    fig, ax = plt.subplots(figsize=(6.5, 3.5))
    for name, ys in series.items():
        ax.plot(range(len(ys)), ys, marker="o", ms=3, label=name)
    ax.set_xlabel("layer (blocks.L.hook_resid_post)")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    if len(series) > 1:
        ax.legend()
    return save_figure(fig, path)


def heatmaps(
    grids: dict[str, np.ndarray], rows: Sequence, cols: Sequence, path: str | Path,
    row_label: str = "layer", col_label: str = "alpha", vmin: float = 0, vmax: float = 100,
) -> Path:
    """Side-by-side annotated heatmaps sharing axes (e.g. trait score and coherence)."""
    fig, axes = plt.subplots(1, len(grids), figsize=(4.2 * len(grids), 0.45 * len(rows) + 1.8))
    axes = np.atleast_1d(axes)
    for ax, (title, g) in zip(axes, grids.items(), strict=True):
        im = ax.imshow(g, cmap="viridis", vmin=vmin, vmax=vmax, aspect="auto")
        ax.set_xticks(range(len(cols)), [f"{c:g}" for c in cols])
        ax.set_yticks(range(len(rows)), [str(r) for r in rows])
        ax.set_xlabel(col_label)
        ax.set_ylabel(row_label)
        ax.set_title(title)
        for i in range(g.shape[0]):
            for j in range(g.shape[1]):
                if np.isfinite(g[i, j]):
                    ax.text(j, i, f"{g[i, j]:.0f}", ha="center", va="center", fontsize=7, color="w")
        fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def matrix(m: np.ndarray, labels: Sequence[str], path: str | Path, title: str) -> Path:
    """An annotated square matrix (cosines in [-1, 1])."""
    fig, ax = plt.subplots(figsize=(1.0 * len(labels) + 2, 0.9 * len(labels) + 1.5))
    im = ax.imshow(m, cmap="RdBu_r", vmin=-1, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for i in range(len(labels)):
        for j in range(len(labels)):
            ax.text(j, i, f"{m[i, j]:.2f}", ha="center", va="center", fontsize=8)
    ax.set_title(title)
    fig.colorbar(im, ax=ax, fraction=0.046)
    return save_figure(fig, path)


def scatter(
    x: Sequence[float], y: Sequence[float], path: str | Path, title: str, xlabel: str, ylabel: str,
    labels: Sequence[str] | None = None,
) -> Path:
    """A labelled scatter plot."""
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.scatter(x, y, s=25)
    for i, lab in enumerate(labels or []):
        ax.annotate(lab, (x[i], y[i]), fontsize=8, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def null_histograms(
    panels: Mapping[str, tuple[Sequence[float], Mapping[str, float]]], path: str | Path, xlabel: str,
    title: str = "", ncols: int = 3,
) -> Path:
    """One histogram per panel (a null distribution) with each named real value as a vertical
    line, `ncols` panels a row."""
    ncols = min(ncols, len(panels))
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.2 * ncols, 3.4 * nrows), squeeze=False)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (name, (null, marks)) in zip(axes.flat, panels.items(), strict=False):
        ax.hist(list(null), bins=30, color="0.75", label=f"random (n={len(null)})")
        ax.axvline(float(np.percentile(list(null), 95)), color="0.3", ls="--", lw=1, label="random p95")
        for i, (label, value) in enumerate(marks.items()):
            ax.axvline(value, color=colors[(i + 1) % len(colors)], lw=2, label=f"{label} {value:.2f}")
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.legend(fontsize=7)
    if title:
        fig.suptitle(title)
    return save_figure(fig, path)
