"""The prompt-shift experiment (paper §4): system prompts that interpolate from
trait-suppressing to trait-eliciting, and many-shot prompts; the last prompt token's
projection before generation against the judged trait score of sampled answers (Pearson r).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, Field
from scipy.stats import pearsonr
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.activations import collect
from pvlens.core.chat import encode_messages
from pvlens.core.config import SamplingConfig
from pvlens.core.device import resolved_dtype_name
from pvlens.core.fingerprint import json_hash, model_fingerprint, tensor_hash
from pvlens.io.atomic import write_json_atomic
from pvlens.io.jsonl import AppendLog
from pvlens.io.runs import check_inputs, run_lock
from pvlens.judges.base import Judge
from pvlens.monitor.projection import project
from pvlens.traits import TraitSpec, load_trait
from pvlens.traits.prompts import Condition, many_shot, prompt_ladder
from pvlens.vectors.coerce import VectorsLike, unit_direction
from pvlens.vectors.evaluate import evaluate_steered

PROJECTION_DTYPE = "auto"
"""Compute dtype of the projections' activation pass ("auto": bf16 where the CPU is fast at it);
the dtype it resolves to is one of the run's recorded inputs."""


class PromptShiftConfig(SamplingConfig):
    """Size of the prompt-shift experiment (sampling fields from SamplingConfig)."""

    max_new_tokens: int = Field(48, ge=1)
    """Answer length cap."""
    n_questions: int | None = 10
    """First N evaluation questions (None: all)."""
    samples: int = Field(2, ge=1)
    """Sampled answers per question and condition."""
    shots: tuple[int, ...] = (0, 1, 2, 4, 8)
    """Many-shot counts ('()' to skip)."""
    ladder: bool = True
    """Run the system-prompt ladder."""
    cosine: bool = False
    """Cosine instead of projection."""


class PromptShiftResult(BaseModel):
    """Per-condition means, correlations and where the files are."""

    layer: int = Field(description="Block whose last-prompt-token output was projected.")
    conditions: list[dict] = Field(description="kind, level, label, projection, trait, coherence, n.")
    r: dict[str, float | None] = Field(
        description="Pearson r of projection vs trait over condition means ('ladder', 'shots', "
        "'all') and over (condition, question) means ('per_prompt')."
    )
    p: dict[str, float | None] = Field(description="Two-sided p-values of those r.")
    plot: str | None = Field(None, description="Scatter plot PNG.")


def _questions(spec: TraitSpec, cfg: PromptShiftConfig) -> list[str]:
    questions = spec.evaluation_questions or spec.extraction_questions
    return questions[: cfg.n_questions] if cfg.n_questions else list(questions)


def _conditions(spec: TraitSpec, cfg: PromptShiftConfig) -> list[Condition]:
    ladder = prompt_ladder(spec) if cfg.ladder else []
    return ladder + (many_shot(spec, cfg.shots) if cfg.shots else [])


def prompt_shift_inputs(
    model: HookedTransformer, spec: TraitSpec, u: Tensor, layer: int, judge: Judge,
    cfg: PromptShiftConfig,
) -> dict[str, Any]:
    """Everything that determines a prompt-shift run's results (recorded in inputs.json),
    including the dtype the projections' activation pass runs in ("auto" decides per machine)."""
    return {"model": model_fingerprint(model), "trait": json_hash(spec.model_dump()),
            "direction": tensor_hash(u), "layer": layer, "judge": judge.describe(),
            "config": cfg.model_dump(mode="json"),
            "compute_dtype": resolved_dtype_name(PROJECTION_DTYPE, model.W_E.device, model.cfg.dtype)}


def run_condition(
    model: HookedTransformer, cond: Condition, questions: Sequence[str], u: Tensor, layer: int,
    judge: Judge, cfg: PromptShiftConfig,
) -> dict[str, Any]:
    """One condition: last-prompt projections (no generation), then judged sampled answers."""
    chats = [encode_messages(model.tokenizer, cond.messages(q)) for q in questions]
    acts = collect(model, chats, ("last_prompt",), layers=[layer], dtype=PROJECTION_DTYPE,
                   progress=False)["last_prompt"]
    proj = project(acts[:, 0], u, cfg.cosine).tolist()
    answers = evaluate_steered(model, questions, judge, sampling=cfg, samples=cfg.samples,
                               prompts=chats)
    rec = {**{k: v for k, v in asdict(cond).items() if k != "history"}, "key": cond.key,
           "prompt_tokens": len(chats[0].ids), "questions": []}
    for i, q in enumerate(questions):
        mine = answers[i * cfg.samples : (i + 1) * cfg.samples]
        rec["questions"].append({"question": q, "projection": proj[i],
                                 "answers": [a["answer"] for a in mine],
                                 "trait": [a["trait"] for a in mine],
                                 "coherence": [a["coherence"] for a in mine]})
    return rec


def prompt_shift(
    model: HookedTransformer,
    trait: str | TraitSpec,
    vectors: VectorsLike,
    layer: int,
    out_dir: str | Path,
    judge: Judge | None = None,
    cfg: PromptShiftConfig | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> PromptShiftResult:
    """Projection before generation vs judged trait expression across prompt conditions.

    For every condition × question: the last prompt token's projection at `layer` (one
    forward pass, no generation), then `samples` sampled answers scored by the judge.
    Each finished condition is appended to `prompt_shift.jsonl`, so a rerun with the same
    inputs resumes; other inputs (model, vectors, layer, trait, judge, config) are refused
    unless `overwrite`. Writes `prompt_shift.json` and `prompt_shift.png`.
    """
    spec, cfg, out = load_trait(trait), cfg or PromptShiftConfig(), Path(out_dir)
    if judge is None:
        from pvlens.judges import load_judge

        judge = load_judge("offline", trait=spec)
    u = unit_direction(vectors, layer)
    questions, conditions = _questions(spec, cfg), _conditions(spec, cfg)
    log = AppendLog(out / "prompt_shift.jsonl")
    with run_lock(out):
        if not check_inputs(out, prompt_shift_inputs(model, spec, u, layer, judge, cfg), overwrite=overwrite):
            log.clear()  # results without a record of their inputs are not trusted
        done = {rec["key"]: rec for rec in log.read()}
        for cond in tqdm(conditions, desc="prompt shift", disable=not progress):
            if cond.key not in done:
                done[cond.key] = run_condition(model, cond, questions, u, layer, judge, cfg)
                log.append(done[cond.key])
        result = summarise_prompt_shift([done[c.key] for c in conditions], layer)
        result.plot = str(plot_prompt_shift(result, out / "prompt_shift.png", spec.name))
        write_json_atomic(out / "prompt_shift.json", result.model_dump(mode="json"))
    return result


def _finite_mean(xs: Sequence[float | None]) -> float:
    vals = [x for x in xs if x is not None]
    return float(np.mean(vals)) if vals else float("nan")


def pearson(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None]:
    """(r, p) over the finite pairs; (None, None) with fewer than 3 points or no spread."""
    pts = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if len(pts) < 3 or len({a for a, _ in pts}) < 2 or len({b for _, b in pts}) < 2:
        return None, None
    res = pearsonr(*zip(*pts, strict=True))
    return float(res.statistic), float(res.pvalue)


def _condition_row(rec: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    """Means of one condition record, and the per-question trait means."""
    qs = rec["questions"]
    t = [_finite_mean(q["trait"]) for q in qs]
    row = {"kind": rec["kind"], "level": rec["level"], "label": rec["label"],
           "projection": float(np.mean([q["projection"] for q in qs])),
           "trait": _finite_mean(t), "coherence": _finite_mean([c for q in qs for c in q["coherence"]]),
           "n": sum(len(q["answers"]) for q in qs)}
    return row, t


def summarise_prompt_shift(records: Sequence[dict], layer: int) -> PromptShiftResult:
    """Condition means and Pearson r (per kind, all conditions, and per prompt)."""
    rows, per_prompt = [], []
    for rec in records:
        row, t = _condition_row(rec)
        rows.append(row)
        per_prompt += [(q["projection"], ti) for q, ti in zip(rec["questions"], t, strict=True)]
    r, p = {}, {}
    for name, sel in (("ladder", [x for x in rows if x["kind"] == "ladder"]),
                      ("shots", [x for x in rows if x["kind"] == "shots"]), ("all", rows)):
        r[name], p[name] = pearson([x["projection"] for x in sel], [x["trait"] for x in sel])
    r["per_prompt"], p["per_prompt"] = pearson([a for a, _ in per_prompt], [b for _, b in per_prompt])
    return PromptShiftResult(layer=layer, conditions=rows, r=r, p=p)


def plot_prompt_shift(result: PromptShiftResult, path: str | Path, trait: str) -> Path:
    """Condition means: last-prompt projection (x) vs judged trait score (y), by kind."""
    from pvlens.io.viz import plt, save_figure

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for kind, marker in (("ladder", "o"), ("shots", "s")):
        sel = [x for x in result.conditions if x["kind"] == kind]
        if not sel:
            continue
        r = result.r.get(kind)
        lab = f"{'system-prompt ladder' if kind == 'ladder' else 'many-shot'}"
        lab += f" (r = {r:.2f})" if r is not None else ""
        ax.scatter([x["projection"] for x in sel], [x["trait"] for x in sel], marker=marker, label=lab)
        for x in sel:
            ax.annotate(x["label"], (x["projection"], x["trait"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel(f"last-prompt-token projection (layer {result.layer})")
    ax.set_ylabel(f"{trait} score of sampled answers (judge, 0–100)")
    r_all = result.r.get("all")
    ax.set_title(f"prompt shift: {trait}" + (f", all r = {r_all:.2f}" if r_all is not None else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, path)
