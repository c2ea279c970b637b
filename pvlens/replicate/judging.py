"""How good the offline judge is (docs/judges.md): trait AUROC on the held-out labelled sets
(`pvlens/data/judge_eval/`), the AUROC of its two parts alone, coherence against synthetic
corruptions, and the LM-fluency factor on the corruptions the formula alone misses — what
`pvlens judge eval --coherence` prints, kept as JSON so the docs tables are generated."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from pvlens.replicate.registry import Context
from pvlens.replicate.tables import fmt, md_table

FLUENCY_CORRUPTIONS = ("word_salad_cased", "word_salad", "truncated_half")
"""The corruptions the coherence formula alone cannot catch: measured with and without the LM."""
FLUENCY_EVERY = 8
"""The LM check scores every 8th answer (one unbatched forward per answer)."""
QUICK_ITEMS = 8


def _traits(ctx: Context) -> list[str]:
    from pvlens.judges.evaluate import eval_traits

    return eval_traits()[:2] if ctx.quick else eval_traits()


def _items(ctx: Context, trait: str) -> list[Any]:
    from pvlens.judges.evaluate import load_eval_set

    items = load_eval_set(trait)
    if not ctx.quick:
        return items
    half = QUICK_ITEMS // 2  # both labels, so that the quick AUROCs exist
    return [it for it in items if it.label == 1][:half] + [it for it in items if it.label == 0][:half]


def inputs(ctx: Context) -> dict[str, Any]:
    from pvlens.core.fingerprint import file_hash
    from pvlens.judges import load_judge
    from pvlens.judges.evaluate import EVAL_DIR

    return {"sets": {t: file_hash(EVAL_DIR / f"{t}.jsonl") for t in _traits(ctx)},
            "judges": {t: load_judge("offline", trait=t).describe() for t in _traits(ctx)},
            "fluency_model": ctx.model_key(), "fluency_every": FLUENCY_EVERY,
            "items_per_set": QUICK_ITEMS if ctx.quick else "all"}


def _trait_row(trait: str, items: list[Any]) -> dict[str, Any]:
    """evaluate_trait's summary plus the AUROC of the embedding and TF-IDF parts alone."""
    from pvlens.judges import load_judge
    from pvlens.judges.evaluate import auroc, evaluate_trait

    judge = load_judge("offline", trait=trait)
    row = asdict(evaluate_trait(judge, items))
    labels = [it.label for it in items]
    details = [j.detail or {} for j in judge.judge_many([(it.question, it.answer) for it in items])]
    for part in ("embedding", "lexical"):
        row[f"auroc_{part}"] = auroc(labels, [d.get(f"p_{part}") for d in details])
    return row


def run(ctx: Context, folder: Path) -> dict[str, Any]:
    from pvlens.judges import load_judge
    from pvlens.judges.evaluate import evaluate_coherence

    traits = _traits(ctx)
    rows = [_trait_row(t, _items(ctx, t)) for t in traits]
    items = [it for t in traits for it in _items(ctx, t)]
    plain = load_judge("offline", trait=traits[0])
    coherence = [asdict(c) for c in evaluate_coherence(plain, items)]
    sub = items[::FLUENCY_EVERY]
    fluent = load_judge("offline", trait=traits[0], fluency_model=ctx.model)
    fluency = {"n": len(sub), "every": FLUENCY_EVERY,
               "without": [asdict(c) for c in evaluate_coherence(plain, sub, corruptions=list(FLUENCY_CORRUPTIONS))],
               "with": [asdict(c) for c in evaluate_coherence(fluent, sub, corruptions=list(FLUENCY_CORRUPTIONS))]}
    return {"judge": "offline", "traits": rows, "n_coherence": len(items), "coherence": coherence, "fluency": fluency}


def _mean(rows: list[dict[str, Any]], key: str) -> float | None:
    vals = [r[key] for r in rows if r.get(key) is not None]
    return sum(vals) / len(vals) if vals else None


def judge_eval_table(doc: dict[str, Any]) -> str:
    """docs/judges.md: per trait, AUROC, accuracy at 50, mean score of trait / clean answers, n; the mean."""
    rows = doc["results"]["traits"]
    out = [[r["trait"], fmt(r["auroc"], ".3f"), fmt(r["accuracy_at_50"], ".2f"), fmt(r["mean_pos"], ".1f"),
            fmt(r["mean_neg"], ".1f"), f"{r['n_pos']}/{r['n_neg']}", f"{r['n_scored']}/{r['n_pos'] + r['n_neg']}"]
           for r in rows]
    out.append(["**mean**", f"**{fmt(_mean(rows, 'auroc'), '.3f')}**", f"**{fmt(_mean(rows, 'accuracy_at_50'), '.2f')}**",
                "", "", "", ""])
    return md_table(["trait", "AUROC", "acc@50", "mean score pos", "mean score neg", "n pos/neg", "scored"], out)


def judge_parts_table(doc: dict[str, Any]) -> str:
    """docs/judges.md: AUROC of the embedding and TF-IDF classifiers alone and of their average."""
    rows = doc["results"]["traits"]
    out = [[r["trait"], fmt(r["auroc_embedding"], ".3f"), fmt(r["auroc_lexical"], ".3f"), fmt(r["auroc"], ".3f")]
           for r in rows]
    out.append(["**mean**", *[f"**{fmt(_mean(rows, k), '.3f')}**" for k in ("auroc_embedding", "auroc_lexical", "auroc")]])
    return md_table(["trait", "embedding LR", "TF-IDF LR", "average"], out)


def judge_coherence_table(doc: dict[str, Any]) -> str:
    """docs/judges.md: coherence AUROC (original above its corruption) per corruption."""
    from pvlens.judges.evaluate import MILD

    out = [[c["corruption"] + (" (mild)" if c["corruption"] in MILD else ""), str(c["n"]), fmt(c["auroc"], ".3f"),
            fmt(c["share_original_ge50"], ".2f"), fmt(c["share_corrupted_lt50"], ".2f")]
           for c in doc["results"]["coherence"]]
    return md_table(["corruption", "n", "AUROC", "originals ≥ 50", "corrupted < 50"], out)


def judge_fluency_table(doc: dict[str, Any]) -> str:
    """docs/judges.md: the same answers and corruptions scored without and with the LM fluency factor."""
    f = doc["results"]["fluency"]
    with_ = {c["corruption"]: c for c in f["with"]}
    out = []
    for c in f["without"]:
        w = with_[c["corruption"]]
        out.append([c["corruption"], str(c["n"]), fmt(c["auroc"], ".3f"), fmt(w["auroc"], ".3f"),
                    f"{fmt(c['share_corrupted_lt50'], '.2f')} / {fmt(w['share_corrupted_lt50'], '.2f')}",
                    f"{fmt(c['share_original_ge50'], '.2f')} / {fmt(w['share_original_ge50'], '.2f')}"])
    return md_table(["corruption", "n", "AUROC without LM", "AUROC with LM fluency",
                     "corrupted < 50 without / with", "originals ≥ 50 without / with"], out)
