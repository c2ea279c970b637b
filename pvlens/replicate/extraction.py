"""Extraction stability and dose-response: `extract evil --preset cpu` (split-half cosine per
layer, kept counts) then the layer × α sweep (Spearman ρ of trait score vs α per layer) — what
`make demo` runs and README.md / docs/extract.md quote."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvlens.replicate.registry import Context
from pvlens.replicate.tables import fmt, md_table

TRAIT = "evil"
EXTRACT_DTYPE = "auto"
"""What `extract`'s activation pass runs in (`collect`'s default: bf16 where the CPU is fast at it)."""


class TextHashJudge:
    """Quick runs only: a stand-in judge whose trait score is a hash of the answer text (no trait
    meaning at all), so that the random tiny model's rollouts split into kept pos / neg samples and
    the whole pipeline (filter, vectors, split-half, sweep) runs. Never used for a docs number."""

    def score_many(self, pairs: list[tuple[str, str]]) -> list[float]:
        import hashlib

        return [float(int(hashlib.md5(a.encode()).hexdigest(), 16) % 100) for _, a in pairs]

    def coherence_many(self, pairs: list[tuple[str, str]]) -> list[float]:
        return [80.0] * len(pairs)

    def describe(self) -> dict[str, str]:
        return {"kind": "text-hash (quick pipeline check)"}


def _configs(ctx: Context) -> tuple[Any, Any]:
    from pvlens.vectors.extract import ExtractConfig
    from pvlens.vectors.sweep import SweepConfig

    if not ctx.quick:
        return ExtractConfig.preset("cpu"), SweepConfig()
    # a pipeline check on the random tiny model (with TextHashJudge)
    return (ExtractConfig.preset("tiny", n_questions=2, max_new_tokens=4, trait_threshold=50.0, min_kept=2),
            SweepConfig(layers=[0, 1], alphas=[0.0, 2.0], n_questions=2, samples=1, max_new_tokens=4))


def _judge(ctx: Context) -> Any:
    if ctx.quick:
        return TextHashJudge()
    from pvlens.judges import load_judge

    return load_judge("offline", trait=TRAIT)


def inputs(ctx: Context) -> dict[str, Any]:
    """Model, trait spec, judge, configs and the resolved dtype of extraction's activation pass
    (the split-half cosines and the vectors the sweep steers with come from it)."""
    from pvlens.core.device import resolved_dtype_name
    from pvlens.core.fingerprint import json_hash
    from pvlens.traits import load_trait

    ecfg, scfg = _configs(ctx)
    return {"model": ctx.model_key(), "trait": TRAIT, "judge": _judge(ctx).describe(), "extract": ecfg.model_dump(mode="json"),
            "sweep": scfg.model_dump(mode="json"), "trait_spec": json_hash(load_trait(TRAIT).model_dump(mode="json")),
            "compute_dtype": resolved_dtype_name(EXTRACT_DTYPE, ctx.model.W_E.device, ctx.model.cfg.dtype)}


def run(ctx: Context, folder: Path) -> dict[str, Any]:
    from pvlens.vectors.extract import extract
    from pvlens.vectors.sweep import sweep

    ecfg, scfg = _configs(ctx)
    judge = _judge(ctx)
    vecs = extract(ctx.model, TRAIT, folder / "run", judge=judge, cfg=ecfg)
    res = sweep(ctx.model, vecs, TRAIT, folder / "run" / "sweep", judge=judge, cfg=scfg)
    meta = vecs.metadata
    return {"trait": TRAIT, "split_half_cosine": meta.get("split_half_cosine"), "counts": meta.get("counts"),
            "sweep": {"rows": res.rows, "spearman": {str(k): v for k, v in res.spearman.items()},
                      "best_layer": res.best_layer, "best_alpha": res.best_alpha}}


def extraction_table(doc: dict[str, Any]) -> str:
    """Per swept layer: split-half cosine, trait score at each α, Spearman ρ."""
    r = doc["results"]
    sh, rows = r["split_half_cosine"] or [], r["sweep"]["rows"]
    alphas = sorted({x["alpha"] for x in rows})
    out = []
    for layer in sorted({str(x["layer"]) for x in rows}, key=lambda x: (not x.isdigit(), int(x) if x.isdigit() else 0)):
        rho = r["sweep"]["spearman"].get(layer)
        cells = {x["alpha"]: x["trait"] for x in rows if str(x["layer"]) == layer}
        cos = sh[int(layer)] if layer.isdigit() and int(layer) < len(sh) else None
        out.append([layer, fmt(cos, ".2f"), *[fmt(cells.get(a), ".1f") for a in alphas], fmt(rho, ".2f")])
    ns = sorted({int(x["n"]) for x in rows if x.get("n")})
    per_cell = f" (mean of {'/'.join(map(str, ns))} answers)" if ns else ""
    return (md_table(["layer", "split-half cosine", *[f"trait at α={a:g}" for a in alphas], "Spearman ρ"], out)
            + f"\nTrait score per cell{per_cell}, one sampled answer per evaluation question, one seed; "
              "the per-answer scores are in `run/sweep/sweep.jsonl` next to this file.\n")


def _layers(rows: list[dict[str, Any]]) -> list[int]:
    return sorted({int(x["layer"]) for x in rows if str(x["layer"]).isdigit()})


def _quick_note(doc: dict[str, Any]) -> str:
    return "(Quick run on the tiny random model: these numbers mean nothing.) " if doc.get("quick") else ""


def extraction_summary(doc: dict[str, Any]) -> str:
    """README.md: one sentence on the `make demo` pipeline's committed run (time, kept counts,
    split-half cosine and the dose-response at the sweep's chosen layer)."""
    r, c = doc["results"], doc["results"]["counts"] or {}
    sh, sweep = r["split_half_cosine"] or [], r["sweep"]
    best = sweep["best_layer"]
    cells = sorted((x["alpha"], x["trait"]) for x in sweep["rows"] if str(x["layer"]) == str(best))
    layers, alphas = _layers(sweep["rows"]), sorted({x["alpha"] for x in sweep["rows"]})
    cos = sh[best] if isinstance(best, int) and best < len(sh) else None
    return (f"{_quick_note(doc)}Its committed run (`{doc['command']}`, the same extraction and sweep) took "
            f"{doc['seconds'] / 60:.1f} min on the development machine (2-core CPU, shared): "
            f"{c.get('pos_total', 0) + c.get('neg_total', 0)} {r['trait']} rollouts, {c.get('pos_kept')} eliciting / "
            f"{c.get('neg_kept')} suppressing kept, split-half cosine {fmt(cos, '.2f')} at layer {best}; in the "
            f"{len(layers)}-layer × {len(alphas)}-α sweep the trait score at layer {best} goes "
            f"{fmt(cells[0][1] if cells else None, '.1f')} → {fmt(cells[-1][1] if cells else None, '.1f')} over "
            f"α {f'{cells[0][0]:g} → {cells[-1][0]:g}' if cells else '–'} "
            f"(Spearman ρ = {fmt(sweep['spearman'].get(str(best)), '.2f')}).\n")


def extraction_stability(doc: dict[str, Any]) -> str:
    """docs/extract.md: kept counts and the split-half cosine at the swept layers and the last layer."""
    r, c = doc["results"], doc["results"]["counts"] or {}
    sh = r["split_half_cosine"] or []
    layers = [x for x in _layers(r["sweep"]["rows"]) if x < len(sh)] + ([len(sh) - 1] if sh else [])
    cos = ", ".join(f"{fmt(sh[x], '.2f')} at L{x}" for x in dict.fromkeys(layers))
    return (f"{_quick_note(doc)}Measured for {r['trait']} on the default model (`{doc['command']}`: the cpu "
            f"preset, offline judge): {c.get('pos_kept')} of {c.get('pos_total')} eliciting and {c.get('neg_kept')} "
            f"of {c.get('neg_total')} suppressing rollouts kept; split-half cosine {cos}.\n")
