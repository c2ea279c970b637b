"""A full validation run: every eval set, every shipped trait vector, a random null, per layer.

`run_validation` collects each set's activations once (all layers in one pass) and measures
every direction on them; `pvlens validate` writes one `LayerValidation` JSON per layer.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, Field
from transformer_lens import HookedTransformer

from pvlens.core.config import Config
from pvlens.core.fingerprint import file_hash, model_fingerprint, tensor_hash
from pvlens.vectors.coerce import VectorsLike, unit_direction, vector_table
from pvlens.vectors.elicited import ElicitedSet, elicited_groups
from pvlens.vectors.persona import PersonaVectors
from pvlens.vectors.validate import (
    EVAL_TRAITS,
    VALIDATION_REDUCTIONS,
    GroupedActivations,
    PairActivations,
    SetResult,
    eval_set_path,
    load_eval_set,
    measure_set,
    pair_activations,
    random_directions,
)

NO_PROMPT_CONTRAST = (
    "Both answers of a question share the same prompt, so the last prompt token carries no "
    "trait-vs-clean contrast in these sets; the monitoring-style measurement is replaced by the "
    "prompt + answer all-token average (all_avg) next to the answer-token average (response_avg)."
)


class ValidationConfig(Config):
    """Sizes and seed of a validation run."""

    n_null: int = Field(200, ge=1)
    """Random unit directions in the null distribution (same layer, seeded)."""
    n_bootstrap: int = Field(1000, ge=10)
    """Bootstrap resamples of questions for each AUROC's 95 % interval."""
    seed: int = 0
    """Seed of the random directions and of the bootstrap."""
    reductions: list[str] = Field(default_factory=lambda: list(VALIDATION_REDUCTIONS))
    """Token averages to project: response_avg (answer tokens), all_avg (prompt + answer)."""
    batch_size: int = Field(16, ge=1)
    """Conversations per activation batch."""


class LayerValidation(BaseModel):
    """Everything measured at one layer: per reduction, per eval set, every vector and the null."""

    layer: int
    model: str
    model_fingerprint: str
    seed: int
    n_bootstrap: int
    n_null: int
    data_hashes: dict[str, str]
    vectors: dict[str, str]
    """Hash of each validated vector table (name → tensor hash)."""
    note: str = NO_PROMPT_CONTRAST
    seconds_activations: float
    seconds_measure: float
    results: dict[str, dict[str, SetResult]]
    """{reduction: {hand-written set: result}}."""
    elicited: dict[str, dict[str, SetResult]] = Field(default_factory=dict)
    """{"answers" | "prompts": {trait: result}} on the prompt-elicited sets (empty: not run)."""
    elicited_pass_rates: dict[str, dict[str, float]] = Field(default_factory=dict)
    """{trait: {"pos": rate, "neg": rate}} of the judge filter on the prompt-elicited sets."""
    elicited_setup: dict[str, object] = Field(default_factory=dict)
    """How the prompt-elicited sets were made (config, judge)."""


def builtin_vectors(traits: Sequence[str] = EVAL_TRAITS) -> dict[str, PersonaVectors]:
    """The shipped vectors of each trait for the default model."""
    return {t: PersonaVectors.builtin(t) for t in traits}


def measure_layer(
    acts: Mapping[str, PairActivations], vectors: Mapping[str, VectorsLike], layer: int,
    cfg: ValidationConfig, d_model: int,
) -> dict[str, dict[str, SetResult]]:
    """{reduction: {set: SetResult}} at one layer from activations collected beforehand."""
    units = {name: unit_direction(v, layer) for name, v in vectors.items()}
    dirs = random_directions(cfg.n_null, d_model, seed=cfg.seed + layer)
    out: dict[str, dict[str, SetResult]] = {}
    for reduction in cfg.reductions:
        out[reduction] = {}
        for name, pair in acts.items():
            trait, clean = pair.at(reduction, layer)
            res = measure_set(name, trait, clean, units, dirs, cfg.n_bootstrap, cfg.seed)
            out[reduction][name] = res.model_copy(update={"length_auroc": pair.length_auroc()})
    return out


def measure_elicited_layer(
    groups: Mapping[str, Mapping[str, GroupedActivations]], vectors: Mapping[str, VectorsLike], layer: int,
    cfg: ValidationConfig, d_model: int,
) -> dict[str, dict[str, SetResult]]:
    """{"answers" | "prompts": {trait: SetResult}} at one layer (question-grouped bootstrap)."""
    units = {name: unit_direction(v, layer) for name, v in vectors.items()}
    dirs = random_directions(cfg.n_null, d_model, seed=cfg.seed + layer)
    out: dict[str, dict[str, SetResult]] = {}
    for trait, kinds in groups.items():
        for kind, g in kinds.items():
            pos, neg = g.at(layer)
            if pos.shape[0] == 0 or neg.shape[0] == 0:
                continue
            out.setdefault(kind, {})[trait] = measure_set(
                trait, pos, neg, units, dirs, cfg.n_bootstrap, cfg.seed, (g.pos_groups, g.neg_groups))
    return out


def run_validation(
    model: HookedTransformer, layers: Sequence[int], cfg: ValidationConfig | None = None,
    vectors: Mapping[str, VectorsLike] | None = None, sets: Mapping[str, str | Path] | None = None,
    model_name: str = "default", elicited: Mapping[str, ElicitedSet] | None = None,
    elicited_setup: Mapping[str, object] | None = None,
) -> list[LayerValidation]:
    """Validate `vectors` (default: the shipped ones) on `sets` ({name: JSONL path}; default: the
    hand-written sets) at each layer. A vector named like a set is that set's own vector."""
    cfg = cfg or ValidationConfig()
    vectors = dict(vectors) if vectors is not None else builtin_vectors()
    sets = dict(sets) if sets is not None else {t: eval_set_path(t) for t in EVAL_TRAITS}
    start = time.perf_counter()
    acts = {name: pair_activations(model, load_eval_set(Path(path)), layers, cfg.reductions, cfg.batch_size)
            for name, path in sets.items()}
    groups = {t: elicited_groups(model, e, layers, cfg.batch_size) for t, e in (elicited or {}).items()}
    t_acts = time.perf_counter() - start
    common = dict(
        model=model_name, model_fingerprint=model_fingerprint(model), seed=cfg.seed,
        n_bootstrap=cfg.n_bootstrap, n_null=cfg.n_null,
        data_hashes={name: file_hash(path) for name, path in sets.items()},
        vectors={name: tensor_hash(vector_table(v)) for name, v in vectors.items()}, seconds_activations=round(t_acts, 2),
        elicited_pass_rates={t: {"pos": e.pass_rate_pos, "neg": e.pass_rate_neg} for t, e in (elicited or {}).items()},
        elicited_setup=dict(elicited_setup or {}),
    )
    out = []
    for layer in layers:
        t0 = time.perf_counter()
        results = measure_layer(acts, vectors, layer, cfg, model.cfg.d_model)
        from_prompts = measure_elicited_layer(groups, vectors, layer, cfg, model.cfg.d_model)
        out.append(LayerValidation(layer=layer, results=results, elicited=from_prompts,
                                   seconds_measure=round(time.perf_counter() - t0, 2), **common))
    return out

