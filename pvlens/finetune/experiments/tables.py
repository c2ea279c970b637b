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


def fmt_ci(cell: dict[str, float | None] | None, spec: str = ".1f") -> str:
    """`mean [lo, hi]` of a {"mean", "lo", "hi"} cell; `–` when missing."""
    if not cell or cell.get("mean") is None:
        return "–"
    return f"{fmt(cell['mean'], spec)} [{fmt(cell['lo'], spec)}, {fmt(cell['hi'], spec)}]"


def mitigation_table(result: dict[str, Any]) -> str:
    """The markdown table of a mitigation `results.json`: per arm, n answers, seeds, and each
    measure as mean [95 % interval]."""
    layer = result["layer"]
    lines = [f"| arm | n | seeds | trait score | coherence | MC accuracy | perplexity | shift at L{layer} |",
             "|---|---|---|---|---|---|---|---|"]
    for r in result["summary"]:
        lines.append(f"| {r['arm']} | {r['n']} | {r['n_seeds']} | {fmt_ci(r['trait'])} | {fmt_ci(r['coherence'])} | "
                     f"{fmt_ci(r['mc_accuracy'], '.3f')} | {fmt_ci(r['perplexity'], '.2f')} | "
                     f"{fmt_ci(r['shift'], '+.2f')} |")
    return "\n".join(lines) + "\n"


def mitigation_time_text(result: dict[str, Any]) -> str:
    """One sentence for the docs: the wall time of the call that wrote a mitigation `results.json`
    and the range of its training runs' and evaluations' times."""
    runs = result.get("runs", [])
    train = [r["train_seconds"] for r in runs if r.get("train_seconds") is not None]
    evals = [r["eval_seconds"] for r in runs if r.get("eval_seconds") is not None]
    wall = result.get("wall_seconds_this_call")
    parts = [f"{len(train)} training runs of {min(train):.0f}–{max(train):.0f} s" if train else "no training run",
             f"{len(evals)} evaluations of {min(evals):.0f}–{max(evals):.0f} s" if evals else "no evaluation"]
    head = f"**{wall:.0f} s ({wall / 60:.1f} min)** for the call that wrote the file" if wall is not None else \
        "no wall time recorded for the call that wrote the file"
    return f"{head} (model load included): {', '.join(parts)}.\n"


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
