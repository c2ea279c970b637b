"""Figures of the finetuning experiments (written through `pvlens.io.viz`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pvlens.finetune.experiments.tables import fmt, pearson, scored_records
from pvlens.io import viz

ARM_COLORS = {"base": "black", "none": "tab:red", "posthoc": "tab:orange", "prevent": "tab:green",
              "prevent_incremental": "tab:blue", "caft": "tab:purple", "l2": "tab:brown"}
"""Colour of each arm kind."""


def _mean(cell: dict[str, Any]) -> float:
    return cell["mean"] if cell and cell.get("mean") is not None else 0.0


def _err(cells: Sequence[dict[str, Any]]) -> list[list[float]]:
    """Matplotlib's [[below], [above]] error bars of {"mean", "lo", "hi"} cells."""
    lo = [_mean(c) - (c["lo"] if c and c.get("lo") is not None else _mean(c)) for c in cells]
    hi = [(c["hi"] if c and c.get("hi") is not None else _mean(c)) - _mean(c) for c in cells]
    return [lo, hi]


def plot_mitigation(summary: Sequence[dict[str, Any]], path: str | Path, layer: int) -> Path:
    """Per arm (the summary of `summarise_arms`): trait score vs MC accuracy, and trait score /
    shift bars, each with its 95 % interval."""
    fig, axes = viz.plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for r in summary:
        x, y = _mean(r["mc_accuracy"]), _mean(r["trait"])
        ax.errorbar([x], [y], xerr=_err([r["mc_accuracy"]]), yerr=_err([r["trait"]]), fmt="o",
                    color=ARM_COLORS[r["kind"]], ms=5, capsize=3)
        ax.annotate(r["arm"], (x, y), fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.set_xlabel("built-in MC accuracy (mean, 95 % CI over seeds)")
    ax.set_ylabel("trait score (judge, 0-100; 95 % bootstrap CI)")
    ax.set_title("trait vs capability")
    ax.grid(alpha=0.3)
    names = [f"{r['arm']} (n={r['n']}, {r['n_seeds']} seeds)" for r in summary]
    colors = [ARM_COLORS[r["kind"]] for r in summary]
    for ax, key, title in ((axes[1], "trait", "trait score"), (axes[2], "shift", f"finetuning shift at L{layer}")):
        cells = [r[key] for r in summary]
        ax.barh(range(len(summary)), [_mean(c) for c in cells], xerr=_err(cells), color=colors, capsize=3)
        ax.set_yticks(range(len(summary)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="x")
    if any(r["kind"] == "posthoc" for r in summary):
        axes[2].text(0.98, 0.02, "post-hoc: includes −α·v at inference", transform=axes[2].transAxes,
                     ha="right", fontsize=7)
    return viz.save_figure(fig, path)


def plot_shift(records: Sequence[dict[str, Any]], base: dict[str, Any], trait: str, out: Path,
               layer: int) -> list[Path]:
    """Scatter plots: shift vs trait score and ΔP vs trait score, one point per dataset."""
    rows = scored_records(records, trait)
    if not rows:
        return []
    y = [r["after"][trait]["trait_score"] for r in rows]
    labels = [r["dataset"] for r in rows]
    xs = [r["after"][trait]["shift"] for r in rows]
    dps = [r["delta_p"][trait] for r in rows]
    r1, r2 = pearson(xs, y), pearson(dps, y)
    return [
        viz.scatter(xs, y, out / f"shift_vs_trait_{trait}.png",
                    f"{trait}: finetuning shift vs trait (r={fmt(r1, '.2f')})",
                    f"finetuning shift at L{layer} (projection on v̂)", f"{trait} score after finetuning", labels),
        viz.scatter(dps, y, out / f"dp_vs_trait_{trait}.png",
                    f"{trait}: dataset ΔP vs trait (r={fmt(r2, '.2f')})",
                    f"screening ΔP at L{layer}", f"{trait} score after finetuning", labels),
    ]
