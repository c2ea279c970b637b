"""Figures of the finetuning experiments (written through `pvlens.io.viz`)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pvlens.finetune.experiments.tables import fmt, pearson, scored_records
from pvlens.io import viz

ARM_COLORS = {"base": "black", "none": "tab:red", "posthoc": "tab:orange", "prevent": "tab:green",
              "caft": "tab:purple", "l2": "tab:brown"}
"""Colour of each arm kind."""


def plot_mitigation(rows: Sequence[dict[str, Any]], path: str | Path, layer: int) -> Path:
    """Trait score vs capability (MC accuracy) per arm, and trait score / shift bars."""
    fig, axes = viz.plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for r in rows:
        ax.scatter(r["mc_accuracy"] or 0, r["trait"] or 0, color=ARM_COLORS[r["kind"]], s=30)
        ax.annotate(r["arm"], (r["mc_accuracy"] or 0, r["trait"] or 0), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("built-in MC accuracy")
    ax.set_ylabel("trait score (judge, 0-100)")
    ax.set_title("trait vs capability")
    ax.grid(alpha=0.3)
    names = [r["arm"] for r in rows]
    colors = [ARM_COLORS[r["kind"]] for r in rows]
    for ax, key, title in ((axes[1], "trait", "trait score"), (axes[2], "shift", f"finetuning shift at L{layer}")):
        ax.barh(range(len(rows)), [r[key] or 0 for r in rows], color=colors)
        ax.set_yticks(range(len(rows)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="x")
    if any(r["kind"] == "posthoc" for r in rows):
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
