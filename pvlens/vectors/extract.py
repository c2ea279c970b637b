"""Persona-vector extraction: rollouts → judge → filter → difference of means, every layer.

Writes to the output folder:
- `rollouts.jsonl`: every sample with its scores and whether it was kept;
- `vectors.safetensors`: one [n_layers, d_model] tensor per reduction + metadata;
- `means.safetensors`: the pos/neg means behind them (for monitoring thresholds);
- `manifest.json`: versions, config, seeds, counts, timings, split-half stability.
Every stage resumes from what is on disk: generation appends per chunk, the judge caches.
"""

from __future__ import annotations

import json
import platform
import random
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import torch
from pydantic import BaseModel, Field
from safetensors.torch import save_file
from transformer_lens import HookedTransformer

from pvlens.core.activations import REDUCTIONS, collect
from pvlens.traits import TraitSpec, load_trait
from pvlens.vectors import LAYER_CONVENTION, PersonaVectors
from pvlens.vectors.rollouts import Rollout, generate_rollouts, plan, read_rollouts, write_rollouts


class ExtractConfig(BaseModel):
    """How to extract a persona vector (defaults: the cpu preset)."""

    samples_per_pair: int = Field(6, ge=1, description="Samples per question × instruction × polarity (paper: 10; 6 keeps evil's split-half ≥ 0.7 on the default model).")
    n_questions: int | None = Field(None, description="Use the first N extraction questions (None: all).")
    n_instructions: int | None = Field(None, description="Use the first N instruction pairs (None: all).")
    max_new_tokens: int = Field(64, ge=1, description="Reply length cap (paper: long replies).")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (paper: 1.0).")
    top_p: float = Field(1.0, gt=0, le=1, description="Nucleus mass (paper: 1.0).")
    batch_size: int = Field(32, ge=1, description="Generation batch size.")
    seed: int = Field(0, description="Sampling seed (per-sample seeds derive from it).")
    trait_threshold: float = Field(50.0, description="Keep pos if trait ≥ this and neg if trait < this.")
    coherence_threshold: float = Field(50.0, description="Keep samples with coherence ≥ this.")
    pairing: Literal["pair", "sample"] = Field(
        "pair", description="'pair': keep a pos/neg pair only if both pass (paper); 'sample': filter each alone."
    )
    min_kept: int = Field(20, ge=2, description="Fewest kept samples per polarity before failing.")
    reductions: tuple[str, ...] = Field(REDUCTIONS, description="Activation reductions to compute.")
    activation_batch_size: int = Field(32, ge=1, description="Batch size of the activation pass.")

    @classmethod
    def preset(cls, name: str, **overrides) -> ExtractConfig:
        """'cpu' (≈15 min on the default model here, one thread) or 'paper' (the paper's setting, GPU)."""
        presets = {
            "cpu": {},
            "paper": {"samples_per_pair": 10, "max_new_tokens": 1000, "batch_size": 64},
            "tiny": {"samples_per_pair": 1, "n_questions": 4, "n_instructions": 2,
                     "max_new_tokens": 16, "min_kept": 2},
        }
        if name not in presets:
            raise ValueError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})


class ExtractionError(RuntimeError):
    """Extraction cannot produce a vector; the message says what to change."""


def filter_rollouts(rollouts: Sequence[Rollout], cfg: ExtractConfig) -> dict[str, int]:
    """Set `kept` on every rollout; return counts kept/dropped per polarity and reason."""

    def ok(r: Rollout) -> bool:
        if r.trait_score is None or r.coherence is None:
            return False
        if r.coherence < cfg.coherence_threshold:
            return False
        if r.polarity == "pos":
            return r.trait_score >= cfg.trait_threshold
        return r.trait_score < cfg.trait_threshold

    passed = {r.key: ok(r) for r in rollouts}
    by_pair: dict[tuple, dict[str, Rollout]] = {}
    for r in rollouts:
        by_pair.setdefault(r.pair_key, {})[r.polarity] = r
    for r in rollouts:
        if cfg.pairing == "pair":
            pair = by_pair[r.pair_key]
            r.kept = len(pair) == 2 and all(passed[x.key] for x in pair.values())
        else:
            r.kept = passed[r.key]
    counts: dict[str, int] = {}
    for pol in ("pos", "neg"):
        rs = [r for r in rollouts if r.polarity == pol]
        counts[f"{pol}_total"] = len(rs)
        counts[f"{pol}_kept"] = sum(bool(r.kept) for r in rs)
        counts[f"{pol}_no_score"] = sum(r.trait_score is None or r.coherence is None for r in rs)
        counts[f"{pol}_incoherent"] = sum(
            r.coherence is not None and r.coherence < cfg.coherence_threshold for r in rs
        )
        counts[f"{pol}_wrong_side"] = sum(
            r.trait_score is not None
            and ((r.trait_score < cfg.trait_threshold) if pol == "pos" else (r.trait_score >= cfg.trait_threshold))
            for r in rs
        )
    return counts


def difference_of_means(
    pos: dict[str, torch.Tensor], neg: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """mean(pos) − mean(neg) per reduction, accumulated in float64."""
    return {k: (pos[k].double().mean(0) - neg[k].double().mean(0)).float() for k in pos}


def split_half_cosine(
    pos: torch.Tensor, neg: torch.Tensor, pos_groups: Sequence[int], neg_groups: Sequence[int],
    seed: int = 0,
) -> torch.Tensor:
    """Per-layer cosine between vectors built from two disjoint halves of the kept samples.

    Halves split by *question* (group ids), so the two vectors share no prompt: a stricter
    test of stability than a random split of samples.
    """
    groups = sorted(set(pos_groups) | set(neg_groups))
    rng = random.Random(seed)
    rng.shuffle(groups)
    first = set(groups[: len(groups) // 2])
    pa = torch.tensor([g in first for g in pos_groups])
    na = torch.tensor([g in first for g in neg_groups])
    if min(pa.sum(), (~pa).sum(), na.sum(), (~na).sum()) == 0:
        return torch.full((pos.shape[1],), float("nan"))
    v1 = pos[pa].double().mean(0) - neg[na].double().mean(0)
    v2 = pos[~pa].double().mean(0) - neg[~na].double().mean(0)
    return torch.nn.functional.cosine_similarity(v1, v2, dim=-1).float()


def extract(
    model: HookedTransformer,
    trait: str | Path | TraitSpec,
    out_dir: str | Path,
    judge=None,
    cfg: ExtractConfig | None = None,
    model_name: str | None = None,
) -> PersonaVectors:
    """Run the whole pipeline for one trait; resumable; returns the vectors (also on disk)."""
    spec = load_trait(trait)
    cfg = cfg or ExtractConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if judge is None:
        from pvlens.judges import load_judge

        judge = load_judge("offline", trait=spec)
    timings: dict[str, float] = {}

    # 1. rollouts (appended chunk by chunk; a rerun skips what exists)
    t0 = time.time()
    partial = out / "rollouts.partial.jsonl"
    final = out / "rollouts.jsonl"
    if final.exists() and not partial.exists():
        final.rename(partial)  # rerun over a finished folder: reuse its generations
    todo = plan(spec, cfg.n_questions, cfg.n_instructions, cfg.samples_per_pair)
    rollouts = generate_rollouts(
        model, spec, partial, todo, cfg.max_new_tokens, cfg.temperature, cfg.top_p,
        cfg.seed, cfg.batch_size,
    )
    timings["generate_s"] = time.time() - t0

    # 2. judge (the judge's disk cache makes a rerun free)
    t0 = time.time()
    pairs = [(r.question, r.response) for r in rollouts]
    for r, t, c in zip(rollouts, judge.score_many(pairs), judge.coherence_many(pairs), strict=True):
        r.trait_score, r.coherence = t, c
    timings["judge_s"] = time.time() - t0

    # 3. filter
    counts = filter_rollouts(rollouts, cfg)
    write_rollouts(partial, rollouts)
    partial.replace(final)
    kept = {pol: [r for r in rollouts if r.kept and r.polarity == pol] for pol in ("pos", "neg")}
    short = {pol: len(rs) for pol, rs in kept.items() if len(rs) < cfg.min_kept}
    if short:
        raise ExtractionError(
            f"too few samples survived the filter for trait {spec.name!r}: {short} "
            f"(need ≥ {cfg.min_kept} per polarity). Counts: {counts}. Try: lower trait_threshold "
            f"(now {cfg.trait_threshold}) or coherence_threshold (now {cfg.coherence_threshold}), "
            "pairing='sample', more samples_per_pair, or a stronger judge. Rollouts and scores are "
            f"saved in {final}; rerunning reuses them."
        )

    # 4. activations → vectors
    t0 = time.time()
    tok = model.tokenizer
    acts = {
        pol: collect(model, [r.chat(tok) for r in rs], cfg.reductions,
                     batch_size=cfg.activation_batch_size)
        for pol, rs in kept.items()
    }
    timings["activations_s"] = time.time() - t0
    vectors = difference_of_means(acts["pos"], acts["neg"])
    stability = split_half_cosine(
        acts["pos"]["response_avg" if "response_avg" in acts["pos"] else cfg.reductions[0]],
        acts["neg"]["response_avg" if "response_avg" in acts["neg"] else cfg.reductions[0]],
        [r.question_index for r in kept["pos"]], [r.question_index for r in kept["neg"]], cfg.seed,
    )
    resid_norm = {
        k: torch.cat([acts["pos"][k], acts["neg"][k]]).norm(dim=-1).mean(0) for k in vectors
    }
    from pvlens import __version__

    meta = {
        "trait": spec.name,
        "description": spec.description,
        "model": model_name or model.cfg.model_name,
        "n_layers": model.cfg.n_layers,
        "d_model": model.cfg.d_model,
        "counts": counts,
        "thresholds": {"trait": cfg.trait_threshold, "coherence": cfg.coherence_threshold,
                       "pairing": cfg.pairing},
        "judge": judge.describe(),
        "seed": cfg.seed,
        "pvlens_version": __version__,
        "split_half_cosine": [round(float(x), 4) for x in stability],
    }
    vecs = PersonaVectors(vectors, meta)
    vecs.save(out / "vectors.safetensors")
    means = {f"{k}.{pol}": acts[pol][k].double().mean(0).float() for k in vectors for pol in acts}
    means.update({f"{k}.resid_norm": v for k, v in resid_norm.items()})
    save_file({k: v.contiguous() for k, v in means.items()}, str(out / "means.safetensors"),
              metadata={"trait": spec.name, "layer_convention": LAYER_CONVENTION})
    _write_manifest(out, spec, cfg, meta, timings, model)
    return vecs


def _write_manifest(out: Path, spec: TraitSpec, cfg: ExtractConfig, meta: dict,
                    timings: dict, model: HookedTransformer) -> None:
    import sae_lens
    import transformer_lens
    import transformers

    manifest = {
        **meta,
        "config": cfg.model_dump(),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformer_lens": transformer_lens.__version__ if hasattr(transformer_lens, "__version__") else "?",
            "transformers": transformers.__version__,
            "sae_lens": sae_lens.__version__,
        },
        "device": str(model.W_E.device),
        "files": ["rollouts.jsonl", "vectors.safetensors", "means.safetensors"],
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    (out / "trait.json").write_text(spec.model_dump_json(indent=2))


def load_rollouts(out_dir: str | Path) -> list[Rollout]:
    """The rollouts of a finished extraction folder."""
    return read_rollouts(Path(out_dir) / "rollouts.jsonl")
