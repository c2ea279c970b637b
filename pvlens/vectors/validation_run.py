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
from pvlens.vectors.persona import PersonaVectors
from pvlens.vectors.validate import (
    EVAL_TRAITS,
    VALIDATION_REDUCTIONS,
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


def run_validation(
    model: HookedTransformer, layers: Sequence[int], cfg: ValidationConfig | None = None,
    vectors: Mapping[str, VectorsLike] | None = None, sets: Mapping[str, str | Path] | None = None,
    model_name: str = "default",
) -> list[LayerValidation]:
    """Validate `vectors` (default: the shipped ones) on `sets` ({name: JSONL path}; default: the
    hand-written sets) at each layer. A vector named like a set is that set's own vector."""
    cfg = cfg or ValidationConfig()
    vectors = dict(vectors) if vectors is not None else builtin_vectors()
    sets = dict(sets) if sets is not None else {t: eval_set_path(t) for t in EVAL_TRAITS}
    start = time.perf_counter()
    acts = {name: pair_activations(model, load_eval_set(Path(path)), layers, cfg.reductions, cfg.batch_size)
            for name, path in sets.items()}
    t_acts = time.perf_counter() - start
    common = dict(
        model=model_name, model_fingerprint=model_fingerprint(model), seed=cfg.seed,
        n_bootstrap=cfg.n_bootstrap, n_null=cfg.n_null,
        data_hashes={name: file_hash(path) for name, path in sets.items()},
        vectors={name: tensor_hash(vector_table(v)) for name, v in vectors.items()}, seconds_activations=round(t_acts, 2),
    )
    out = []
    for layer in layers:
        t0 = time.perf_counter()
        results = measure_layer(acts, vectors, layer, cfg, model.cfg.d_model)
        out.append(LayerValidation(layer=layer, results=results,
                                   seconds_measure=round(time.perf_counter() - t0, 2), **common))
    return out

