"""Persona-vector extraction: rollouts → judge → filter → difference of means, every layer.

Writes to the output folder:
- `inputs.json`: what the run was made from (model weights, trait spec, seed, sampling and plan,
  judge); a rerun with other inputs refuses instead of rebuilding old vectors;
- `rollouts.jsonl`: every sample with its scores and whether it was kept;
- `vectors.safetensors`: one [n_layers, d_model] tensor per reduction + metadata;
- `means.safetensors`: the pos/neg means behind them (for monitoring thresholds);
- `manifest.json`: versions, config, seeds, counts, timings, split-half stability.
Every stage resumes from what is on disk: generation appends per chunk, the judge caches. The
filter settings (thresholds, pairing, min_kept, reductions) are re-applied to the saved rollouts
on every run, so changing them reuses the generations.
"""

from __future__ import annotations

import platform
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

import torch
from pydantic import Field, field_validator
from safetensors.torch import save_file
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import REDUCTIONS, collect
from pvlens.core.config import SamplingConfig
from pvlens.core.fingerprint import json_hash, model_fingerprint
from pvlens.core.machine import cpu_facts
from pvlens.core.ray_bulk import BulkGenerator
from pvlens.errors import InputError, PvlensError
from pvlens.io.atomic import write_json_atomic, write_text_atomic
from pvlens.io.runs import INPUTS_FILE, StaleRunError, check_inputs, run_lock
from pvlens.judges.base import Judge
from pvlens.traits import TraitSpec, load_trait
from pvlens.vectors.directions import check_methods, method_tensors
from pvlens.vectors.directions_run import methods_record, pair_rows
from pvlens.vectors.persona import LAYER_CONVENTION, PersonaVectors
from pvlens.vectors.rollouts import Rollout, generate_rollouts, plan, write_rollouts

Polarity = Literal["pos", "neg"]
POLARITIES: tuple[Polarity, Polarity] = ("pos", "neg")
T = TypeVar("T")


class ExtractConfig(SamplingConfig):
    """How to extract a persona vector (defaults: the cpu preset)."""

    samples_per_pair: int = Field(6, ge=1)
    """Samples per question × instruction × polarity (paper: 10; 6 keeps evil's split-half ≥ 0.7 on the default model)."""
    n_questions: int | None = Field(None, ge=1)
    """Use the first N extraction questions (None: all)."""
    n_instructions: int | None = Field(None, ge=1)
    """Use the first N instruction pairs (None: all)."""
    batch_size: int | None = Field(None, ge=1)
    """Generation batch size (None: the device's best; replies do not depend on it)."""
    trait_threshold: float = 50.0
    """Keep pos if trait ≥ this and neg if trait < this."""
    coherence_threshold: float = 50.0
    """Keep samples with coherence ≥ this."""
    pairing: Literal["pair", "sample"] = "pair"
    """'pair': keep a pos/neg pair only if both pass (paper); 'sample': filter each alone."""
    min_kept: int = Field(20, ge=2)
    """Fewest kept samples per polarity before failing."""
    reductions: tuple[str, ...] = REDUCTIONS
    """Activation reductions to compute."""
    activation_batch_size: int = Field(32, ge=1)
    """Batch size of the activation pass."""
    methods: tuple[str, ...] = ("mean",)
    """Direction methods saved in the vectors file: mean (paper, the active default), pca, probe (pvlens.vectors.directions)."""

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        """Unknown methods fail before any generation, not after it."""
        return tuple(dict.fromkeys(check_methods(value)))

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> ExtractConfig:
        """'cpu' (≈15 min on the default model here, one thread), 'paper' (the paper's setting,
        GPU) or 'tiny' (a smoke test of the pipeline, about a minute: per-sample filtering at a
        lower threshold so that a weak model still keeps a few samples — its vector is not
        meant for use); `overrides` must name fields of this config."""
        presets: dict[str, dict[str, Any]] = {
            "cpu": {},
            "paper": {"samples_per_pair": 10, "max_new_tokens": 1000, "batch_size": 64},
            "tiny": {"samples_per_pair": 3, "n_questions": 4, "n_instructions": 2,
                     "max_new_tokens": 16, "min_kept": 2, "pairing": "sample",
                     "trait_threshold": 35.0},
        }
        if name not in presets:
            raise InputError(f"unknown preset {name!r}; choose from {sorted(presets)}")
        return cls(**{**presets[name], **overrides})

    def generation_fields(self) -> dict[str, Any]:
        """The fields that determine the rollouts (sampling and plan; not the batch size,
        which never changes a reply, nor the filter, which every run re-applies)."""
        return self.model_dump(include={"max_new_tokens", "temperature", "top_p", "seed",
                                        "samples_per_pair", "n_questions", "n_instructions"})


class ExtractionError(PvlensError, RuntimeError):
    """Extraction cannot produce a vector; the message says what to change."""


def _passes(r: Rollout, cfg: ExtractConfig) -> bool:
    if r.trait_score is None or r.coherence is None:
        return False
    if r.coherence < cfg.coherence_threshold:
        return False
    if r.polarity == "pos":
        return r.trait_score >= cfg.trait_threshold
    return r.trait_score < cfg.trait_threshold


def _wrong_side(r: Rollout, cfg: ExtractConfig) -> bool:
    if r.trait_score is None:
        return False
    if r.polarity == "pos":
        return r.trait_score < cfg.trait_threshold
    return r.trait_score >= cfg.trait_threshold


def filter_counts(rollouts: Sequence[Rollout], cfg: ExtractConfig) -> dict[str, int]:
    """Counts total/kept/no score/incoherent/wrong side per polarity (after `kept` is set)."""
    counts: dict[str, int] = {}
    for pol in POLARITIES:
        rs = [r for r in rollouts if r.polarity == pol]
        counts[f"{pol}_total"] = len(rs)
        counts[f"{pol}_kept"] = sum(bool(r.kept) for r in rs)
        counts[f"{pol}_no_score"] = sum(r.trait_score is None or r.coherence is None for r in rs)
        counts[f"{pol}_incoherent"] = sum(
            r.coherence is not None and r.coherence < cfg.coherence_threshold for r in rs
        )
        counts[f"{pol}_wrong_side"] = sum(_wrong_side(r, cfg) for r in rs)
    return counts


def filter_rollouts(rollouts: Sequence[Rollout], cfg: ExtractConfig) -> dict[str, int]:
    """Set `kept` on every rollout; return counts kept/dropped per polarity and reason."""
    passed = {r.key: _passes(r, cfg) for r in rollouts}
    by_pair: dict[tuple[int, int, int], dict[str, Rollout]] = {}
    for r in rollouts:
        by_pair.setdefault(r.pair_key, {})[r.polarity] = r
    for r in rollouts:
        if cfg.pairing == "pair":
            pair = by_pair[r.pair_key]
            r.kept = len(pair) == 2 and all(passed[x.key] for x in pair.values())
        else:
            r.kept = passed[r.key]
    return filter_counts(rollouts, cfg)


def difference_of_means(pos: dict[str, Tensor], neg: dict[str, Tensor]) -> dict[str, Tensor]:
    """mean(pos) − mean(neg) per reduction, accumulated in float64."""
    return {k: (pos[k].double().mean(0) - neg[k].double().mean(0)).float() for k in pos}


def split_half_cosine(
    pos: Tensor, neg: Tensor, pos_groups: Sequence[int], neg_groups: Sequence[int],
    seed: int = 0,
) -> Tensor:
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


def extract_inputs(
    model: HookedTransformer, spec: TraitSpec, cfg: ExtractConfig, judge: Judge
) -> dict[str, Any]:
    """Everything an extraction folder's saved rollouts depend on (recorded in inputs.json)."""
    return {
        "model": model_fingerprint(model),
        "trait": json_hash(spec.model_dump(mode="json")),
        "seed": cfg.seed,
        "config": cfg.generation_fields(),
        "judge": judge.describe(),
    }


def _timed(timings: dict[str, float], name: str, step: Callable[[], T]) -> T:
    t0 = time.time()
    result = step()
    timings[name] = time.time() - t0
    return result


def _default_judge(spec: TraitSpec) -> Judge:
    from pvlens.judges import load_judge

    return load_judge("offline", trait=spec)


def extract(
    model: HookedTransformer,
    trait: str | Path | TraitSpec,
    out_dir: str | Path,
    judge: Judge | None = None,
    cfg: ExtractConfig | None = None,
    model_name: str | None = None,
    overwrite: bool = False,
    generator: BulkGenerator | None = None,
) -> PersonaVectors:
    """Run the whole pipeline for one trait; returns the vectors (also on disk).

    A rerun into `out_dir` with the same inputs resumes; with other inputs (model weights,
    trait spec, seed, sampling or plan, judge) it raises StaleRunError naming what changed,
    unless `overwrite`, which discards the folder's old results. `generator` (a `RayGenerator`)
    makes the rollouts' replies on a Ray pool: the same replies, so the same resume state.
    """
    spec = load_trait(trait)
    cfg = cfg or ExtractConfig()
    judge = judge or _default_judge(spec)
    out = Path(out_dir)
    with run_lock(out):
        _refuse_unrecorded(out, overwrite)
        check_inputs(out, extract_inputs(model, spec, cfg, judge), overwrite=overwrite)
        timings: dict[str, float] = {}
        rollouts = _timed(timings, "generate_s", lambda: run_rollouts(model, spec, out, cfg, generator))
        _timed(timings, "judge_s", lambda: judge_rollouts(rollouts, judge))
        kept, counts = keep_or_fail(rollouts, cfg, spec, out)
        acts = _timed(timings, "activations_s", lambda: kept_activations(model, kept, cfg))
        vecs = build_vectors(acts, kept, cfg, _metadata(model, spec, cfg, judge, counts, model_name))
        save_outputs(out, vecs, acts, spec, cfg, timings, model)
    return vecs


def _refuse_unrecorded(out: Path, overwrite: bool) -> None:
    """A folder with rollouts but no inputs record (an older pvlens) cannot be checked."""
    has_rollouts = any((out / n).exists() for n in ("rollouts.jsonl", "rollouts.partial.jsonl"))
    if has_rollouts and not (out / INPUTS_FILE).exists() and not overwrite:
        raise StaleRunError(
            f"{out} holds rollouts without a record of the inputs they were made from "
            f"({INPUTS_FILE}), so they cannot be checked against this run. Use a new output "
            "folder, or pass --overwrite (overwrite=True) to discard them."
        )


def run_rollouts(
    model: HookedTransformer, spec: TraitSpec, out: Path, cfg: ExtractConfig,
    generator: BulkGenerator | None = None,
) -> list[Rollout]:
    """Step 1: the planned rollouts, generating only those missing from the folder."""
    partial, final = out / "rollouts.partial.jsonl", out / "rollouts.jsonl"
    if final.exists() and not partial.exists():
        final.rename(partial)  # rerun over a finished folder: reuse its generations
    todo = plan(spec, cfg.n_questions, cfg.n_instructions, cfg.samples_per_pair)
    return generate_rollouts(model, spec, partial, todo, cfg, generator=generator)


def judge_rollouts(rollouts: Sequence[Rollout], judge: Judge) -> None:
    """Step 2: trait and coherence scores on every rollout (the judge's cache makes a rerun free)."""
    pairs = [(r.question, r.response) for r in rollouts]
    for r, t, c in zip(rollouts, judge.score_many(pairs), judge.coherence_many(pairs), strict=True):
        r.trait_score, r.coherence = t, c


def keep_or_fail(
    rollouts: Sequence[Rollout], cfg: ExtractConfig, spec: TraitSpec, out: Path
) -> tuple[dict[str, list[Rollout]], dict[str, int]]:
    """Step 3: filter, save the scored rollouts, and fail clearly when too few survive."""
    counts = filter_rollouts(rollouts, cfg)
    partial, final = out / "rollouts.partial.jsonl", out / "rollouts.jsonl"
    write_rollouts(partial, rollouts)
    partial.replace(final)
    kept: dict[str, list[Rollout]] = {
        pol: [r for r in rollouts if r.kept and r.polarity == pol] for pol in POLARITIES
    }
    short = {pol: len(rs) for pol, rs in kept.items() if len(rs) < cfg.min_kept}
    if short:
        raise ExtractionError(
            f"too few samples survived the filter for trait {spec.name!r}: {short} "
            f"(need ≥ {cfg.min_kept} per polarity). Counts: {counts}. Try: lower trait_threshold "
            f"(now {cfg.trait_threshold}) or coherence_threshold (now {cfg.coherence_threshold}), "
            "pairing='sample', more samples_per_pair, or a stronger judge. Rollouts and scores are "
            f"saved in {final}; rerunning with other thresholds reuses them."
        )
    return kept, counts


def kept_activations(
    model: HookedTransformer, kept: dict[str, list[Rollout]], cfg: ExtractConfig
) -> dict[str, dict[str, Tensor]]:
    """Step 4: per polarity and reduction, `[n_kept, n_layers, d_model]` activations."""
    tok = model.tokenizer
    if tok is None:
        raise InputError("the model has no tokenizer; load it with pvlens.load_model")
    return {
        pol: collect(model, [r.chat(tok) for r in rs], cfg.reductions,
                     batch_size=cfg.activation_batch_size)
        for pol, rs in kept.items()
    }


def _metadata(
    model: HookedTransformer, spec: TraitSpec, cfg: ExtractConfig, judge: Judge,
    counts: dict[str, int], model_name: str | None,
) -> dict[str, Any]:
    from pvlens import __version__

    return {
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
    }


def build_vectors(
    acts: dict[str, dict[str, Tensor]], kept: dict[str, list[Rollout]], cfg: ExtractConfig,
    meta: dict[str, Any],
) -> PersonaVectors:
    """Step 5: difference of means per reduction, with the split-half stability in the metadata."""
    key = "response_avg" if "response_avg" in cfg.reductions else cfg.reductions[0]
    stability = split_half_cosine(
        acts["pos"][key], acts["neg"][key],
        [r.question_index for r in kept["pos"]], [r.question_index for r in kept["neg"]], cfg.seed,
    )
    meta = {**meta, "split_half_cosine": [round(float(x), 4) for x in stability]}
    tensors = difference_of_means(acts["pos"], acts["neg"])
    extra = [m for m in check_methods(cfg.methods) if m != "mean"]
    if extra:
        tensors.update(method_tensors(acts["pos"], acts["neg"], extra, cfg.seed, pair_rows(kept["pos"], kept["neg"])))
        meta["methods"] = methods_record(extra, len(kept["pos"]), len(kept["neg"]), len(pair_rows(kept["pos"], kept["neg"])[0]))
    return PersonaVectors(tensors, meta)


def save_outputs(
    out: Path, vecs: PersonaVectors, acts: dict[str, dict[str, Tensor]], spec: TraitSpec,
    cfg: ExtractConfig, timings: dict[str, float], model: HookedTransformer,
) -> None:
    """Step 6: vectors, the means behind them, the manifest and the trait spec."""
    vecs.save(out / "vectors.safetensors")
    means = {f"{k}.{pol}": acts[pol][k].double().mean(0).float() for k in acts["pos"] for pol in acts}
    means.update({
        f"{k}.resid_norm": torch.cat([acts["pos"][k], acts["neg"][k]]).norm(dim=-1).mean(0)
        for k in acts["pos"]
    })
    save_file({k: v.contiguous() for k, v in means.items()}, str(out / "means.safetensors"),
              metadata={"trait": spec.name, "layer_convention": LAYER_CONVENTION})
    write_json_atomic(out / "manifest.json", _manifest(vecs.metadata, cfg, timings, model))
    write_text_atomic(out / "trait.json", spec.model_dump_json(indent=2))


def _manifest(
    meta: dict[str, Any], cfg: ExtractConfig, timings: dict[str, float], model: HookedTransformer
) -> dict[str, Any]:
    import sae_lens
    import transformer_lens
    import transformers

    return {
        **meta,
        "config": cfg.model_dump(),
        "timings": {k: round(v, 2) for k, v in timings.items()},
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "transformer_lens": getattr(transformer_lens, "__version__", "?"),
            "transformers": transformers.__version__,
            "sae_lens": sae_lens.__version__,
        },
        "device": str(model.W_E.device),
        "machine": cpu_facts(),  # dtype="auto" and kernels follow the CPU (bf16 with AMX); torch is in versions
        "files": ["rollouts.jsonl", "vectors.safetensors", "means.safetensors"],
    }
