"""Prompt-induced shift (the paper's monitoring result): last-prompt-token projection vs the
judged trait score across a system-prompt ladder and many-shot prompts, with Pearson r."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from pvlens.replicate.registry import Context
from pvlens.replicate.tables import fmt, md_table

TRAIT, LAYER = "evil", 15


def _cfg(ctx: Context) -> Any:
    from pvlens.monitor import PromptShiftConfig

    if ctx.quick:
        return PromptShiftConfig(n_questions=2, samples=1, max_new_tokens=6, shots=(0, 2))
    return PromptShiftConfig(samples=2)


def _vectors(ctx: Context) -> Any:
    if not ctx.quick:
        return TRAIT
    import torch

    return torch.randn(ctx.model.cfg.n_layers, ctx.model.cfg.d_model, generator=torch.Generator().manual_seed(0))


def inputs(ctx: Context) -> dict[str, Any]:
    """The inputs prompt_shift keys run/ by (model, trait spec, direction, layer, judge, config,
    resolved compute dtype): the registry serves results.json only when all of them match."""
    from pvlens.judges import load_judge
    from pvlens.monitor.prompt_shift import prompt_shift_inputs
    from pvlens.traits import load_trait
    from pvlens.vectors.coerce import unit_direction

    layer, spec = 1 if ctx.quick else LAYER, load_trait(TRAIT)
    run = prompt_shift_inputs(ctx.model, spec, unit_direction(_vectors(ctx), layer), layer,
                              load_judge("offline", trait=spec), _cfg(ctx))
    return {"model": ctx.model_key(), "trait": TRAIT, "layer": layer, "config": _cfg(ctx).model_dump(mode="json"),
            "run": run}


def run(ctx: Context, folder: Path) -> dict[str, Any]:
    from pvlens.monitor import prompt_shift

    layer = 1 if ctx.quick else LAYER
    res = prompt_shift(ctx.model, TRAIT, _vectors(ctx), layer, folder / "run", cfg=_cfg(ctx), progress=False)
    return {"trait": TRAIT, "vector": "shipped evil (--preset cpu)" if not ctx.quick else "random", "layer": layer,
            "n_questions": _cfg(ctx).n_questions, "samples": _cfg(ctx).samples, "conditions": res.conditions,
            "r": res.r, "p": res.p, "n_points": {"ladder": sum(c["kind"] == "ladder" for c in res.conditions),
                                                 "shots": sum(c["kind"] == "shots" for c in res.conditions),
                                                 "all": len(res.conditions)}}


def monitor_table(doc: dict[str, Any]) -> str:
    """docs/monitor.md: per condition, the last-prompt projection and the judged scores."""
    r = doc["results"]
    rows = [[f"ladder {c['level']} {c['label']}" if c["kind"] == "ladder" else c["label"],
             fmt(c["projection"], "+.2f"), fmt(c["trait"], ".1f"), fmt(c["coherence"], ".1f"), str(c["n"])]
            for c in r["conditions"]]
    return md_table(["condition", "last-prompt projection", f"{r['trait']} score (judge)", "coherence", "answers"], rows)


def monitor_r_table(doc: dict[str, Any]) -> str:
    """docs/monitor.md: Pearson r between projection and judged score, per group."""
    r = doc["results"]
    pts = dict(r["n_points"], per_prompt=r["n_questions"] * r["n_points"]["all"])
    rows = [[k, str(pts[k]), fmt(r["r"].get(k), ".2f"), fisher_ci(r["r"].get(k), pts[k]), fmt(r["p"].get(k), ".1e")]
            for k in ("ladder", "shots", "all", "per_prompt")]
    return md_table(["points", "n", "Pearson r", "95 % CI (Fisher z)", "p"], rows)


def fisher_ci(r: float | None, n: int) -> str:
    """95 % interval of a Pearson r over n points (Fisher z; treats the points as independent,
    which the per-prompt points are not: they share conditions)."""
    if r is None or n <= 3 or abs(r) >= 1:
        return "–"
    z, half = math.atanh(r), 1.959964 / math.sqrt(n - 3)
    return f"[{fmt(math.tanh(z - half), '.2f')}, {fmt(math.tanh(z + half), '.2f')}]"
