"""Does any guard setting separate eliciting from benign prompts? A ROC analysis without
rerunning the guard.

A guard's trigger depends only on the activations up to the trigger, and up to the trigger a
guarded reply equals the unguarded one (the intervention starts at the trigger). So one set of
unguarded greedy replies gives every setting's exact trigger decision: project the tokens the
guard monitors (the last prompt token and every reply token the model was fed, i.e. not the
final token of a reply cut at max_new_tokens) at each layer, take `window`-token means, and the
guard triggers on a reply iff some mean exceeds the threshold (`pvlens.core.guard.first_crossing`).

For each (layer, window, fpr) the threshold is calibrated as `calibrate.py` does (even rows of
the hand-written eval set, clean answers, teacher-forced); the trigger rates on eliciting
prompts (the same three conditions as `pvlens guard measure`) and held-out benign prompts carry
percentile-bootstrap intervals over prompts. Per (layer, window), the AUROC of the per-reply
maximum window mean (eliciting vs benign), its bootstrap interval, and a null of random unit
directions (`pvlens.vectors.validate.random_directions`) scored the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Any

import torch
from pydantic import Field
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.chat import EncodedChat
from pvlens.core.config import Config, default_layers
from pvlens.core.fingerprint import file_hash, model_fingerprint
from pvlens.core.generation import GenerationResult, generate
from pvlens.io.stats import bootstrap_ci
from pvlens.monitor.calibrate import (
    benign_conversations,
    heldout_questions,
    max_window,
    monitored_projections,
    shipped_vectors_file,
    threshold_at_fpr,
)
from pvlens.monitor.guard_measure import eliciting_prompts
from pvlens.vectors.validate import (
    auroc,
    bootstrap_auroc,
    null_summary,
    percentile_in,
    random_directions,
)

FLOOR = -1e9
"""Score of a reply shorter than one window (it cannot trigger); finite so ties count half."""


class GuardRocConfig(Config):
    """What `pvlens guard roc` runs (defaults fit ~10 minutes of one CPU core)."""

    trait: str = "evil"
    """Built-in trait; its shipped vectors and hand-written eval set are used."""
    layers: list[Annotated[int, Field(ge=0)]] | None = None
    """Monitored blocks (None: four evenly spaced blocks around the middle, the middle included)."""
    windows: list[Annotated[int, Field(ge=1)]] = Field(min_length=1, default_factory=lambda: [1, 4, 8, 16])
    """Window lengths (tokens) of the guard's mean projection."""
    fprs: list[Annotated[float, Field(ge=0, lt=1)]] = Field(min_length=1, default_factory=lambda: [0.01, 0.05, 0.1, 0.2])
    """Target per-reply false-positive rates the thresholds are calibrated for."""
    n_questions: int = Field(8, ge=1)
    """Evaluation questions per eliciting condition (3 conditions)."""
    n_benign: int = Field(24, ge=1)
    """Held-out benign questions."""
    max_new_tokens: int = Field(48, ge=1)
    """Tokens per (greedy) reply."""
    n_random: int = Field(200, ge=1)
    """Random unit directions in the AUROC null."""
    seed: int = 0
    """Seed of the random directions and the bootstraps."""


def fed_chat(result: GenerationResult, row: int) -> EncodedChat:
    """Prompt + the reply tokens the model was fed: a reply cut at max_new_tokens loses its last
    token (sampled, never fed back); a finished reply keeps all (its end-of-turn is excluded)."""
    chat = result.chats[row]
    if result.finished[row] or chat.response_len == 0:
        return chat
    return EncodedChat(ids=chat.ids[:-1], prompt_len=chat.prompt_len, text=chat.text, meta=chat.meta)


def collect_projections(model: HookedTransformer, cfg: GuardRocConfig) -> dict[str, Any]:
    """Unguarded greedy replies and their monitored projections (trait direction first, then
    `n_random` random directions) at every layer; calibration projections on the trait only."""
    from pvlens.vectors.coerce import unit_direction

    layers = default_layers(model, 4) if cfg.layers is None else list(cfg.layers)
    vfile = shipped_vectors_file(cfg.trait)
    rand = random_directions(cfg.n_random, model.cfg.d_model, cfg.seed).float()
    units = {layer: unit_direction(vfile, layer).float()[None] for layer in layers}
    dirs = {layer: torch.cat([u, rand]) for layer, u in units.items()}
    elic = eliciting_prompts(cfg.trait, cfg.n_questions)
    benign = heldout_questions(cfg.trait)[: cfg.n_benign]
    kw: dict[str, Any] = {"max_new_tokens": cfg.max_new_tokens, "temperature": 0.0, "seed": cfg.seed,
                          "progress": False}
    gen_e = generate(model, [m for _, m, _ in elic], **kw)
    gen_b = generate(model, benign, **kw)
    return {
        "layers": layers, "vectors": vfile, "conditions": [c for _, _, c in elic],
        "eliciting": [monitored_projections(model, fed_chat(gen_e, i), dirs) for i in range(len(elic))],
        "benign": [monitored_projections(model, fed_chat(gen_b, i), dirs) for i in range(len(benign))],
        "calibration": [monitored_projections(model, c, units)
                        for c in benign_conversations(cfg.trait, "calibration")],
        "reply_tokens": {"eliciting": [len(c.response_ids) for c in gen_e.chats],
                         "benign": [len(c.response_ids) for c in gen_b.chats]},
    }


def max_scores(projs: Sequence[dict[int, Tensor]], layer: int, window: int, k: int) -> Tensor:
    """[k, n] per-reply maximum `window`-mean of the first `k` directions (FLOOR if too short)."""
    vals = [[max(max_window(p[layer][j], window), FLOOR) for p in projs] for j in range(k)]
    return torch.tensor(vals, dtype=torch.float64)


def _rate(hits: Tensor, seed: int) -> dict[str, Any]:
    m, lo, hi = bootstrap_ci(hits.double().tolist(), seed=seed)
    return {"rate": [m, lo, hi], "k": int(hits.sum()), "n": int(hits.numel())}


def cell(data: dict[str, Any], layer: int, window: int, cfg: GuardRocConfig) -> dict[str, Any]:
    """AUROC (with random null) and per-fpr trigger rates for one (layer, window)."""
    k = 1 + cfg.n_random
    e, b = max_scores(data["eliciting"], layer, window, k), max_scores(data["benign"], layer, window, k)
    cal = max_scores(data["calibration"], layer, window, 1)[0]
    ne, nb = e.shape[1], b.shape[1]
    own = float(auroc(e[0], b[0]))
    null = auroc(e[1:], b[1:])
    ci = bootstrap_auroc(e[0], b[0], seed=cfg.seed, pos_groups=list(range(ne)),
                         neg_groups=list(range(ne, ne + nb)))
    conds = data["conditions"]
    fprs = []
    for fpr in cfg.fprs:
        thr = threshold_at_fpr(cal.tolist(), fpr)
        hit_e, hit_b = e[0] > thr, b[0] > thr
        by_cond = {c: _rate(hit_e[[i for i, x in enumerate(conds) if x == c]], cfg.seed)
                   for c in dict.fromkeys(conds)}
        fprs.append({"fpr": fpr, "threshold": thr, "calibration_fpr": float((cal > thr).double().mean()),
                     "eliciting": _rate(hit_e, cfg.seed), "benign": _rate(hit_b, cfg.seed),
                     "eliciting_by_condition": by_cond})
    return {"layer": layer, "window": window, "auroc": own, "auroc_ci95": list(ci),
            "null": null_summary(null).model_dump(exclude={"aurocs"}),
            "null_percentile": percentile_in(own, null), "fprs": fprs}


def recommend(cells: Sequence[dict[str, Any]]) -> dict[str, Any] | None:
    """The setting whose eliciting trigger rate exceeds its benign rate by the most, among those
    where the intervals do not overlap (eliciting lower bound > benign upper bound); None if none."""
    best = None
    for c in cells:
        for f in c["fprs"]:
            e, b = f["eliciting"]["rate"], f["benign"]["rate"]
            if e[1] > b[2] and (best is None or e[0] - b[0] > best["gap"]):
                best = {"layer": c["layer"], "window": c["window"], "fpr": f["fpr"],
                        "threshold": f["threshold"], "gap": e[0] - b[0],
                        "by_condition": {k: [v["k"], v["n"]] for k, v in f["eliciting_by_condition"].items()}}
    return best


def guard_roc(model: HookedTransformer, cfg: GuardRocConfig) -> dict[str, Any]:
    """Run the analysis; returns the JSON-able results (see module docstring)."""
    data = collect_projections(model, cfg)
    cells = [cell(data, layer, w, cfg) for layer in data["layers"] for w in cfg.windows]
    return {
        "config": cfg.model_dump(), "layers": data["layers"], "conditions": list(dict.fromkeys(data["conditions"])),
        "n": {"eliciting": len(data["eliciting"]), "benign": len(data["benign"]),
              "calibration": len(data["calibration"])},
        "reply_tokens": data["reply_tokens"],
        "inputs": {"model": model_fingerprint(model), "vectors": file_hash(data["vectors"])},
        "cells": cells, "recommended": recommend(cells),
    }


def _pct(ci: Sequence[float]) -> str:
    return f"{100 * ci[0]:.0f} [{100 * ci[1]:.0f}, {100 * ci[2]:.0f}]"


def guard_roc_table(data: dict[str, Any]) -> str:
    """Markdown table of `guard_roc`'s results (docs/guard.md)."""
    fprs = data["config"]["fprs"]
    head = " | ".join(f"fpr {100 * f:g} %: elic. / benign" for f in fprs)
    lines = [f"| layer | window | AUROC [95 % CI] | null p95 (pct.) | {head} |",
             "|---|---|---|---|" + "---|" * len(fprs)]
    for c in data["cells"]:
        rates = " | ".join(f"{_pct(f['eliciting']['rate'])} / {_pct(f['benign']['rate'])}" for f in c["fprs"])
        lines.append(f"| {c['layer']} | {c['window']} | {c['auroc']:.2f} [{c['auroc_ci95'][0]:.2f}, "
                     f"{c['auroc_ci95'][1]:.2f}] | {c['null']['p95']:.2f} ({c['null_percentile']:.0f}) | {rates} |")
    n, rec = data["n"], data["recommended"]
    verdict = ("no setting's eliciting trigger rate interval lies above its benign one" if rec is None else
               f"largest separated gap: layer {rec['layer']}, window {rec['window']}, fpr {rec['fpr']} "
               f"(threshold {rec['threshold']:.3f}, gap {100 * rec['gap']:.0f} points; eliciting triggers by "
               "condition: " + ", ".join(f"{k} {h}/{n}" for k, (h, n) in rec["by_condition"].items()) + ")")
    lines += ["", f"n = {n['eliciting']} eliciting prompts ({', '.join(data['conditions'])}), {n['benign']} "
              f"benign prompts, {n['calibration']} calibration answers; greedy, "
              f"{data['config']['max_new_tokens']} new tokens, seed {data['config']['seed']}. Trigger rates in % "
              "(95 % bootstrap intervals over prompts); AUROC of the per-reply maximum window mean, eliciting vs "
              f"benign; null: {data['config']['n_random']} random directions (95th percentile, and the trait "
              f"vector's percentile in it). Verdict: {verdict}.", ""]
    return "\n".join(lines)
