"""Markdown tables and the correlation summary of the finetuning experiments."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def fmt(x: float | None, spec: str = ".1f") -> str:
    """A number for a table or a log line; `–` for a missing value."""
    return "–" if x is None else format(x, spec)


def pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson r; None for fewer than 3 points or a constant series."""
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def mitigation_table(rows: Sequence[dict[str, Any]], layer: int) -> str:
    """A markdown table of the arms."""
    lines = [f"| arm | trait score | coherence | MC accuracy | perplexity | shift at L{layer} | train s | eval s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {fmt(r['trait'])} | {fmt(r['coherence'])} | {fmt(r['mc_accuracy'], '.3f')} | "
                     f"{fmt(r['perplexity'], '.2f')} | {r['shift']:+.3f} | {fmt(r.get('train_seconds'), '.0f')} | "
                     f"{fmt(r.get('eval_seconds'), '.0f')} |")
    return "\n".join(lines) + "\n"


def scored_records(records: Sequence[dict[str, Any]], trait: str) -> list[dict[str, Any]]:
    """The dataset records with a trait score for `trait` after finetuning."""
    return [r for r in records if r["after"].get(trait, {}).get("trait_score") is not None]


def summarise_shift(
    records: Sequence[dict[str, Any]], base: dict[str, Any], traits: Sequence[str],
) -> dict[str, dict[str, Any]]:
    """Per trait: Pearson r of (shift, trait score) and (ΔP, trait score) across datasets."""
    out = {}
    for t in traits:
        rows = scored_records(records, t)
        y = [r["after"][t]["trait_score"] for r in rows]
        out[t] = {"n_datasets": len(rows),
                  "r_shift": pearson([r["after"][t]["shift"] for r in rows], y),
                  "r_delta_p": pearson([r["delta_p"][t] for r in rows], y),
                  "base_trait_score": base[t]["trait_score"]}
    return out


def shift_table(
    records: Sequence[dict[str, Any]], base: dict[str, Any], summary: dict[str, dict[str, Any]],
    traits: Sequence[str], layer: int,
) -> str:
    """Per dataset: trait score / shift / ΔP per trait; then r per trait."""
    lines = ["| dataset | n | " + " | ".join(f"{t} score / shift L{layer} / ΔP" for t in traits) + " |",
             "|---|---|" + "---|" * len(traits)]
    lines.append("| base model | – | " + " | ".join(f"{fmt(base[t]['trait_score'])} / 0 / –" for t in traits) + " |")
    for r in records:
        cells = [f"{fmt(r['after'][t]['trait_score'])} / {r['after'][t]['shift']:+.3f} / {r['delta_p'][t]:+.3f}"
                 for t in traits]
        lines.append(f"| {r['dataset']} | {r['n']} | " + " | ".join(cells) + " |")
    lines += ["", "| trait | datasets | r(shift, trait score) | r(ΔP, trait score) |", "|---|---|---|---|"]
    for t, s in summary.items():
        lines.append(f"| {t} | {s['n_datasets']} | {fmt(s['r_shift'], '.2f')} | {fmt(s['r_delta_p'], '.2f')} |")
    return "\n".join(lines) + "\n"
