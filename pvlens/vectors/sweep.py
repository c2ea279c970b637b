"""Choose a layer and strength: a layer × α grid of steered answers, judged.

Each cell steers answers to the trait's evaluation questions and records the judge's mean
trait score and coherence. Answers are appended to `sweep.jsonl` as cells finish, so a
killed sweep resumes. The automatic choice is the cell with the highest trait score whose
coherence stays above a threshold.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from scipy.stats import spearmanr
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.generation import generate
from pvlens.core.steering import Steering
from pvlens.traits import TraitSpec, load_trait
from pvlens.vectors import PersonaVectors


class SweepConfig(BaseModel):
    """The grid and how each cell is evaluated."""

    layers: list[int] | None = Field(None, description="Block indices (None: every 3rd from 1/3 to 2/3 depth).")
    alphas: list[float] = Field([0.0, 1.0, 2.0, 4.0, 6.0, 8.0], description="Strengths, units of the raw vector.")
    n_questions: int | None = Field(10, description="First N evaluation questions (None: all).")
    samples: int = Field(2, ge=1, description="Sampled answers per question and cell.")
    max_new_tokens: int = Field(64, ge=1, description="Answer length cap.")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature (0 = greedy).")
    positions: str = Field("response", description="Steered positions: all | prompt | response.")
    coherence_min: float = Field(50.0, description="Coherence a cell needs to be chosen.")
    batch_size: int = Field(32, ge=1, description="Generation batch size.")
    seed: int = Field(0, description="Sampling seed (the same draws in every cell).")


class SweepResult(BaseModel):
    """Per-cell means and the automatic choice."""

    rows: list[dict] = Field(description="One dict per cell: layer, alpha, trait, coherence, n.")
    best_layer: int | None = Field(description="Chosen layer (None: no cell passed).")
    best_alpha: float | None = Field(description="Chosen strength.")
    spearman: dict[int, float] = Field(description="Per layer: Spearman ρ of trait score vs α.")

    def cell(self, layer: int, alpha: float) -> dict:
        return next(r for r in self.rows if r["layer"] == layer and r["alpha"] == alpha)

    def grid(self, key: str) -> tuple[list[int], list[float], np.ndarray]:
        layers = sorted({r["layer"] for r in self.rows})
        alphas = sorted({r["alpha"] for r in self.rows})
        g = np.full((len(layers), len(alphas)), np.nan)
        for r in self.rows:
            g[layers.index(r["layer"]), alphas.index(r["alpha"])] = r[key]
        return layers, alphas, g


def default_layers(n_layers: int) -> list[int]:
    lo, hi = n_layers // 3, (2 * n_layers) // 3
    return list(range(lo, hi + 1, 3))


def sweep(
    model: HookedTransformer,
    vectors: PersonaVectors,
    trait: str | TraitSpec,
    out_dir: str | Path,
    judge=None,
    cfg: SweepConfig | None = None,
) -> SweepResult:
    """Run (or resume) the grid; write sweep.jsonl, sweep.json and return the result."""
    spec = load_trait(trait)
    cfg = cfg or SweepConfig()
    if judge is None:
        from pvlens.judges import load_judge

        judge = load_judge("offline", trait=spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    layers = cfg.layers or default_layers(model.cfg.n_layers)
    questions = spec.evaluation_questions or spec.extraction_questions
    questions = questions[: cfg.n_questions] if cfg.n_questions else questions
    prompts = [q for q in questions for _ in range(cfg.samples)]
    log = out / "sweep.jsonl"
    done = _read_cells(log)
    cells = [(layer, float(a)) for layer in layers for a in cfg.alphas]
    for layer, alpha in tqdm(cells, desc="sweep"):
        if (layer, alpha) in done:
            continue
        if alpha == 0 and any(a == 0 for (_, a) in done):  # α=0 is the same at every layer
            base = next(v for (lay, a), v in done.items() if a == 0)
            done[(layer, alpha)] = base
            _append(log, layer, alpha, base)
            continue
        st = Steering(vectors[layer], layer, alpha, cfg.positions)
        texts = generate(model, prompts, steer=st, max_new_tokens=cfg.max_new_tokens,
                         temperature=cfg.temperature, seed=cfg.seed, batch_size=cfg.batch_size,
                         progress=False).texts
        pairs = list(zip(prompts, texts, strict=True))
        answers = [
            {"question": q, "answer": a, "trait": t, "coherence": c}
            for (q, a), t, c in zip(pairs, judge.score_many(pairs), judge.coherence_many(pairs), strict=True)
        ]
        done[(layer, alpha)] = answers
        _append(log, layer, alpha, answers)
    result = summarise({k: v for k, v in done.items() if k in set(cells)}, cfg.coherence_min)
    (out / "sweep.json").write_text(result.model_dump_json(indent=2))
    return result


def summarise(cells: dict[tuple[int, float], list[dict]], coherence_min: float) -> SweepResult:
    """Cell means, the automatic choice, and the per-layer dose-response ρ."""
    rows = []
    for (layer, alpha), answers in sorted(cells.items()):
        t = [a["trait"] for a in answers if a["trait"] is not None]
        c = [a["coherence"] for a in answers if a["coherence"] is not None]
        rows.append({"layer": layer, "alpha": alpha, "trait": float(np.mean(t)) if t else float("nan"),
                     "coherence": float(np.mean(c)) if c else float("nan"), "n": len(answers)})
    ok = [r for r in rows if r["alpha"] != 0 and r["coherence"] >= coherence_min]
    best = max(ok, key=lambda r: r["trait"]) if ok else None
    rho = {}
    for layer in sorted({r["layer"] for r in rows}):
        pts = [(r["alpha"], r["trait"]) for r in rows if r["layer"] == layer and r["alpha"] >= 0]
        if len(pts) >= 3:
            rho[layer] = float(spearmanr(*zip(*pts, strict=True)).statistic)
    return SweepResult(rows=rows, best_layer=best["layer"] if best else None,
                       best_alpha=best["alpha"] if best else None, spearman=rho)


def examples(log: Path, layer: int, alphas: Sequence[float], n: int = 2) -> dict[float, list[dict]]:
    """A few judged answers per α at one layer, from a sweep log."""
    cells = _read_cells(log)
    return {a: cells.get((layer, float(a)), [])[:n] for a in alphas}


def _read_cells(path: Path) -> dict[tuple[int, float], list[dict]]:
    cells = {}
    if path.exists():
        for line in path.read_text().splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut off by a kill
            cells[(int(rec["layer"]), float(rec["alpha"]))] = rec["answers"]
    return cells


def _append(path: Path, layer: int, alpha: float, answers: list[dict]) -> None:
    with path.open("a") as f:
        f.write(json.dumps({"layer": layer, "alpha": alpha, "answers": answers}, ensure_ascii=False) + "\n")
