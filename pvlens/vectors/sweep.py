"""Choose a layer and strength: a layer × α grid of steered answers, judged.

Each cell steers answers to the trait's evaluation questions and records the judge's mean
trait score and coherence. Answers are appended to `sweep.jsonl` as cells finish, so a
killed sweep resumes. The automatic choice is the cell with the highest trait score whose
coherence stays above a threshold.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, Field
from scipy.stats import spearmanr
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core import config as core_config
from pvlens.core.config import SamplingConfig
from pvlens.core.fingerprint import json_hash, model_fingerprint, tensor_hash
from pvlens.core.steering import Steering, incremental
from pvlens.errors import InputError
from pvlens.io.atomic import write_text_atomic
from pvlens.io.jsonl import AppendLog
from pvlens.io.runs import check_inputs, run_lock
from pvlens.judges.base import Judge
from pvlens.traits import TraitSpec, load_trait
from pvlens.vectors.coerce import VectorsLike, as_persona_vectors
from pvlens.vectors.evaluate import JudgedAnswer, evaluate_steered, mean_score
from pvlens.vectors.persona import PersonaVectors

Layer = int | Literal["all"]
"""A block index, or "all": the paper's all-layer incremental steering (`pvlens.incremental`)."""

Cell = tuple[Layer, float]
"""(layer, α) of one grid cell."""


class SweepConfig(SamplingConfig):
    """The grid and how each cell is evaluated."""

    layers: list[int] | None = None
    """Block indices (None: five blocks around the middle, `default_layers(model, 5)`)."""
    alphas: list[float] = Field(default_factory=lambda: [0.0, 1.0, 2.0, 4.0, 6.0, 8.0])
    """Strengths, in units of the raw vector."""
    n_questions: int | None = Field(10, ge=1)
    """First N evaluation questions (None: all)."""
    samples: int = Field(2, ge=1)
    """Sampled answers per question and cell."""
    temperature: float = Field(0.7, ge=0.0)
    """Sampling temperature (0 = greedy)."""
    batch_size: int | None = Field(None, ge=1)
    """Generation batch size (None: the device's best; replies do not depend on it)."""
    positions: Literal["all", "prompt", "response"] = "response"
    """Steered positions: all | prompt | response."""
    coherence_min: float = 50.0
    """Coherence a cell needs to be chosen."""
    incremental: bool = False
    """Steer every block with the paper's incremental vectors (α·(v_ℓ − v_{ℓ−1}), top push α·v_L):
    cells are keyed by α alone and their layer is "all"; `layers` is ignored."""


class SweepResult(BaseModel):
    """Per-cell means and the automatic choice."""

    rows: list[dict[str, Any]] = Field(description="One dict per cell: layer, alpha, trait, coherence, n.")
    best_layer: Layer | None = Field(description='Chosen layer ("all": incremental; None: no cell passed).')
    best_alpha: float | None = Field(description="Chosen strength.")
    spearman: dict[Layer, float] = Field(description="Per layer: Spearman ρ of trait score vs α.")

    def cell(self, layer: Layer, alpha: float) -> dict[str, Any]:
        return next(r for r in self.rows if r["layer"] == layer and r["alpha"] == alpha)

    def grid(self, key: str) -> tuple[list[Layer], list[float], np.ndarray]:
        layers = sorted({r["layer"] for r in self.rows})
        alphas = sorted({r["alpha"] for r in self.rows})
        g = np.full((len(layers), len(alphas)), np.nan)
        for r in self.rows:
            g[layers.index(r["layer"]), alphas.index(r["alpha"])] = r[key]
        return layers, alphas, g


def default_layers(n_layers: int) -> list[int]:
    """The sweep's default layers: `pvlens.core.config.default_layers(n_layers, 5)`."""
    return core_config.default_layers(n_layers, 5)


def sweep_questions(spec: TraitSpec, cfg: SweepConfig) -> list[str]:
    """The trait's evaluation questions (extraction ones if it has none), first `n_questions`."""
    questions = spec.evaluation_questions or spec.extraction_questions
    return questions[: cfg.n_questions] if cfg.n_questions else list(questions)


def sweep_inputs(
    model: HookedTransformer, vectors: PersonaVectors, questions: Sequence[str], judge: Judge,
    cfg: SweepConfig,
) -> dict[str, Any]:
    """Everything a sweep folder's cells depend on (the grid itself and the choice rule do
    not: cells are keyed by (layer, α), so growing the grid resumes)."""
    return {
        "model": model_fingerprint(model),
        "vectors": tensor_hash(vectors.vectors),
        "questions": json_hash(list(questions)),
        "judge": judge.describe(),
        "samples": cfg.samples,
        "sampling": cfg.model_dump(include=set(SamplingConfig.model_fields) - {"batch_size"}),
        "positions": cfg.positions,
        **({"incremental": True} if cfg.incremental else {}),  # absent when off: older folders still resume
    }


def check_layers(layers: Sequence[int], n_layers: int) -> None:
    """Refuse layers outside 0..n_layers-1, naming them."""
    bad = [layer for layer in layers if not 0 <= layer < n_layers]
    if bad:
        raise InputError(f"layers {bad} are out of range: the model has blocks 0..{n_layers - 1}")


def sweep(
    model: HookedTransformer,
    vectors: VectorsLike,
    trait: str | Path | TraitSpec,
    out_dir: str | Path,
    judge: Judge | None = None,
    cfg: SweepConfig | None = None,
    overwrite: bool = False,
) -> SweepResult:
    """Run (or resume) the grid; write sweep.jsonl, sweep.json and return the result.

    A rerun into `out_dir` with other vectors, model, questions, judge, samples, sampling or
    positions raises StaleRunError naming what changed, unless `overwrite`.
    """
    spec = load_trait(trait)
    cfg = cfg or SweepConfig()
    judge = judge or _default_judge(spec)
    vecs = as_persona_vectors(vectors, n_layers=model.cfg.n_layers)
    layers: list[Layer] = ["all"] if cfg.incremental else list(cfg.layers or default_layers(model.cfg.n_layers))
    if not cfg.incremental:
        check_layers(layers, model.cfg.n_layers)  # type: ignore[arg-type]
    questions = sweep_questions(spec, cfg)
    out = Path(out_dir)
    with run_lock(out):
        check_inputs(out, sweep_inputs(model, vecs, questions, judge, cfg), overwrite=overwrite)
        log = AppendLog(out / "sweep.jsonl")
        cells = [(layer, float(a)) for layer in layers for a in cfg.alphas]
        done = run_cells(model, vecs, questions, judge, cfg, cells, log)
        result = summarise({k: v for k, v in done.items() if k in set(cells)}, cfg.coherence_min)
        write_text_atomic(out / "sweep.json", result.model_dump_json(indent=2))
    return result


def _default_judge(spec: TraitSpec) -> Judge:
    from pvlens.judges import load_judge

    return load_judge("offline", trait=spec)


def run_cells(
    model: HookedTransformer, vectors: PersonaVectors, questions: Sequence[str], judge: Judge,
    cfg: SweepConfig, cells: Sequence[Cell], log: AppendLog,
) -> dict[Cell, list[JudgedAnswer]]:
    """Evaluate the cells missing from `log`, appending each as it finishes; α=0 is the same
    at every layer, so it is generated once and reused."""
    done = read_cells(log)
    for layer, alpha in tqdm(cells, desc="sweep"):
        if (layer, alpha) in done:
            continue
        base = next((v for (_, a), v in done.items() if a == 0), None)
        if alpha == 0 and base is not None:
            answers = base
        else:
            steer = cell_steer(vectors, layer, alpha, cfg.positions)
            answers = evaluate_steered(model, questions, judge, steer=steer, sampling=cfg,
                                       samples=cfg.samples)
        done[(layer, alpha)] = answers
        log.append({"layer": layer, "alpha": alpha, "answers": answers})
    return done


def cell_steer(
    vectors: PersonaVectors, layer: Layer, alpha: float, positions: str,
) -> Steering | list[Steering]:
    """The steering of one cell: α·v at one block, or all-layer incremental for layer "all"."""
    if layer == "all":
        return incremental(vectors.vectors, alpha, positions)  # type: ignore[arg-type]
    return Steering(vectors[layer], layer, alpha, positions)  # type: ignore[arg-type]


def summarise(cells: dict[Cell, list[JudgedAnswer]], coherence_min: float) -> SweepResult:
    """Cell means, the automatic choice, and the per-layer dose-response ρ."""
    rows: list[dict[str, Any]] = []
    for (layer, alpha), answers in sorted(cells.items()):
        rows.append({"layer": layer, "alpha": alpha, "trait": mean_score(answers, "trait"),
                     "coherence": mean_score(answers, "coherence"), "n": len(answers)})
    ok = [r for r in rows if r["alpha"] != 0 and r["coherence"] >= coherence_min]
    best = max(ok, key=lambda r: r["trait"]) if ok else None
    rho: dict[Layer, float] = {}
    for layer in sorted({r["layer"] for r in rows}):
        pts = [(r["alpha"], r["trait"]) for r in rows if r["layer"] == layer and r["alpha"] >= 0]
        if len(pts) >= 3:
            rho[layer] = float(spearmanr(*zip(*pts, strict=True)).statistic)
    return SweepResult(rows=rows, best_layer=best["layer"] if best else None,
                       best_alpha=best["alpha"] if best else None, spearman=rho)


def examples(log: Path, layer: Layer, alphas: Sequence[float], n: int = 2) -> dict[float, list[JudgedAnswer]]:
    """A few judged answers per α at one layer, from a sweep log."""
    cells = read_cells(AppendLog(log))
    return {a: cells.get((layer, float(a)), [])[:n] for a in alphas}


def read_cells(log: AppendLog) -> dict[Cell, list[JudgedAnswer]]:
    """Every finished cell of a sweep log (a line cut off by a kill is skipped)."""
    return {(layer_key(rec["layer"]), float(rec["alpha"])): rec["answers"] for rec in log.read()}


def layer_key(value: int | str) -> Layer:
    """A logged layer: "all" (incremental) or a block index."""
    return "all" if value == "all" else int(value)
