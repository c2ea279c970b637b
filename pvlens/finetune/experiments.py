"""The paper's finetuning experiments (§5): mitigations of trait acquisition, and the shift.

**Mitigation** (`mitigation`): finetune on a trait-inducing dataset (e.g. Level II evil) and
compare, on the same evaluation, the base model, the finetuned model with no mitigation,
post-hoc steering (subtract α·v at inference from the unmitigated model), preventative steering
(add α·v during training only; one layer or several), CAFT (project the direction out during
training) and the L2 projection penalty. Each arm records the judge's trait score and
coherence on the trait's evaluation questions, built-in multiple-choice accuracy, held-out
perplexity and the finetuning shift at the steering layer.

**Shift** (`shift`): finetune once per dataset (every trait × severity found), and relate,
per trait, the finetuning shift and the screening ΔP of the dataset (`pvlens.trainsets.screen`, on the
base model) to the trait expression after finetuning (the paper's Figures 6 and 7).

Both are resumable: each arm / dataset writes its JSON when it finishes (and its training run
checkpoints), and a rerun skips what is done. A changed configuration is refused (the run
folder records it); use another folder.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import collect
from pvlens.core.generation import generate, to_chats
from pvlens.core.steering import Ablation, Steering
from pvlens.finetune.capability import builtin_mc, mc_accuracy, perplexity
from pvlens.finetune.lora import LoraConfig
from pvlens.finetune.penalty import ProjectionPenalty
from pvlens.finetune.train import FinetuneConfig, finetune
from pvlens.finetune.vectors import as_table, load_vectors, unit

Preset = Literal["quick", "full"]


# --- configuration -------------------------------------------------------------------------

class EvalConfig(BaseModel):
    """How one model (arm) is evaluated."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    n_questions: int | None = 20
    """First N evaluation questions of the trait (None: all)."""
    samples: int = Field(2, ge=1)
    """Sampled answers per question."""
    max_new_tokens: int = Field(64, ge=1)
    """Answer length cap."""
    temperature: float = Field(0.7, ge=0)
    """Sampling temperature (0: greedy)."""
    gen_batch_size: int = Field(20, ge=1)
    """Generation batch size."""
    mc_limit: int | None = None
    """First N built-in multiple-choice questions (None: all 254; 0: skip)."""
    perplexity: bool = True
    """Measure held-out perplexity."""
    positions: str = "response"
    """Positions steered at inference (post-hoc arms), as in the layer × α sweep."""
    seed: int = 0
    """Sampling seed (the same draws in every arm)."""


class MitigationConfig(BaseModel):
    """The arms of the mitigation experiment and the shared training recipe."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    trait: str = "evil"
    """Trait judged and whose evaluation questions are asked."""
    layer: int = 15
    """Steering layer: single-layer arms, CAFT, the L2 penalty and the reported shift."""
    train: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig.cpu_demo(lr=1e-3, epochs=1))
    """Training recipe shared by every finetuned arm (CPU: rank 8, 1 epoch, lr 1e-3)."""
    posthoc_alphas: list[float] = [4.0, 8.0]
    """Post-hoc steering strengths (α·v subtracted at inference, raw-vector units)."""
    prevent_alphas: list[float] = [4.0, 8.0]
    """Preventative steering strengths at `layer` (added during training only)."""
    multi_layers: list[int] = [12, 15, 18]
    """Layers of the multi-layer preventative arms (empty: none)."""
    multi_alphas: list[float] = [3.0]
    """Per-layer strength of each multi-layer preventative arm."""
    caft: bool = True
    """Run the CAFT arm (direction projected out at `layer` during training)."""
    l2_weights: list[float] = [1.0]
    """Weights of the L2 projection-penalty arms (empty: none)."""
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig(n_questions=10, samples=2,
                                                                max_new_tokens=48, mc_limit=80))
    """Evaluation of every arm."""

    @classmethod
    def preset(cls, name: Preset, **overrides) -> MitigationConfig:
        """`quick`: minutes, for tests and the notebook; `full`: the documented run."""
        if name == "full":
            return cls(**overrides)
        if name != "quick":
            raise ValueError(f"preset must be 'quick' or 'full', got {name!r}")
        base = dict(
            train=FinetuneConfig.cpu_demo(lr=1e-3, max_steps=2, batch_size=4, eval_fraction=0.0,
                                          lora=LoraConfig(r=4, alpha=8)),
            posthoc_alphas=[4.0], prevent_alphas=[4.0], multi_layers=[12, 15], multi_alphas=[2.0],
            caft=True, l2_weights=[1.0],
            eval=EvalConfig(n_questions=3, samples=1, max_new_tokens=24, mc_limit=16,
                            perplexity=False),
        )
        return cls(**{**base, **overrides})


class Arm(BaseModel):
    """One condition of the mitigation experiment."""

    name: str
    """Unique label, also the file name of its result."""
    kind: Literal["base", "none", "posthoc", "prevent", "caft", "l2"]
    """What is done: nothing / finetune / finetune + inference steering / a training mitigation."""
    alpha: float = 0.0
    """Steering strength per layer (prevent: added in training; posthoc: subtracted at inference)."""
    layers: list[int] = []
    """Layers of the intervention."""
    weight: float = 0.0
    """L2 penalty weight."""

    @property
    def train_name(self) -> str | None:
        """The training run this arm uses (post-hoc arms share the unmitigated one)."""
        if self.kind == "base":
            return None
        return "none" if self.kind in ("none", "posthoc") else self.name


def mitigation_arms(cfg: MitigationConfig) -> list[Arm]:
    """The arms in run order (post-hoc right after `none`, reusing its adapter)."""
    L = cfg.layer
    arms = [Arm(name="base", kind="base"), Arm(name="none", kind="none")]
    arms += [Arm(name=f"posthoc_a{a:g}", kind="posthoc", alpha=a, layers=[L]) for a in cfg.posthoc_alphas]
    arms += [Arm(name=f"prevent_L{L}_a{a:g}", kind="prevent", alpha=a, layers=[L]) for a in cfg.prevent_alphas]
    if cfg.multi_layers:
        tag = "-".join(str(x) for x in cfg.multi_layers)
        arms += [Arm(name=f"prevent_L{tag}_a{a:g}", kind="prevent", alpha=a, layers=list(cfg.multi_layers))
                 for a in cfg.multi_alphas]
    if cfg.caft:
        arms.append(Arm(name=f"caft_L{L}", kind="caft", layers=[L]))
    arms += [Arm(name=f"l2_L{L}_w{w:g}", kind="l2", layers=[L], weight=w) for w in cfg.l2_weights]
    return arms


# --- evaluation ----------------------------------------------------------------------------

def mean_last_prompt(model: HookedTransformer, questions: Sequence[str], steer=None) -> Tensor:
    """Mean last-prompt-token activation per layer `[n_layers, d_model]` (fp64)."""
    acts = collect(model, to_chats(model, list(questions)), reductions=("last_prompt",),
                   dtype=torch.float32, steer=steer, progress=False)["last_prompt"]
    return acts.double().mean(0)


def evaluate_model(
    model: HookedTransformer, questions: Sequence[str], judge, units: Tensor, base_mean: Tensor | None,
    cfg: EvalConfig, steer=None,
) -> dict:
    """Trait score, coherence, MC accuracy, perplexity and per-layer shift vs `base_mean`."""
    t0 = time.perf_counter()
    prompts = [q for q in questions for _ in range(cfg.samples)]
    texts = generate(model, prompts, steer=steer, max_new_tokens=cfg.max_new_tokens,
                     temperature=cfg.temperature, seed=cfg.seed, batch_size=cfg.gen_batch_size,
                     progress=False).texts
    pairs = list(zip(prompts, texts, strict=True))
    traits, cohs = judge.score_many(pairs), judge.coherence_many(pairs)
    mc = mc_accuracy(model, builtin_mc()[: cfg.mc_limit], steer=steer, progress=False) \
        if cfg.mc_limit != 0 else None
    ppl = perplexity(model, steer=steer) if cfg.perplexity else None
    mean = mean_last_prompt(model, questions, steer)
    shift = ((mean - base_mean).float() * units).sum(-1) if base_mean is not None else torch.zeros(len(units))
    return {
        "trait": _mean(traits), "coherence": _mean(cohs),
        "mc_accuracy": mc.accuracy if mc else None, "mc_chance": mc.chance if mc else None,
        "mc_n": mc.n if mc else 0, "perplexity": ppl,
        "shift_by_layer": shift.tolist(),
        "projection_by_layer": (mean.float() * units).sum(-1).tolist(),
        "answers": [{"question": q, "answer": a, "trait": t, "coherence": c}
                    for (q, a), t, c in zip(pairs, traits, cohs, strict=True)],
        "eval_seconds": round(time.perf_counter() - t0, 1),
    }


def _mean(xs: Sequence[float | None]) -> float | None:
    vals = [x for x in xs if x is not None]
    return float(np.mean(vals)) if vals else None


def _check_config(out: Path, record: dict) -> None:
    """Refuse to mix results of different settings in one folder."""
    path = out / "config.json"
    if path.exists():
        old = json.loads(path.read_text())
        diff = sorted(k for k in old.keys() | record.keys() if old.get(k) != record.get(k))
        if diff:
            raise ValueError(f"{out} holds an experiment with other settings ({', '.join(diff)}); "
                             "use another --out folder (or delete it)")
    path.write_text(json.dumps(record, indent=2))


def _judge_for(trait: str, judge=None, judge_kind: str = "offline"):
    if judge is not None:
        return judge
    from pvlens.judges import load_judge

    return load_judge(judge_kind, trait=trait)


def _questions(trait: str, n: int | None, questions: Sequence[str] | None) -> list[str]:
    if questions is None:
        from pvlens.traits import load_trait

        questions = list(load_trait(trait).evaluation_questions)
    questions = list(questions)[:n] if n else list(questions)
    if not questions:
        raise ValueError(f"no evaluation questions for {trait!r}")
    return questions


def _table(vectors, model: HookedTransformer) -> Tensor:
    if isinstance(vectors, str | Path):
        return load_vectors(vectors, model.cfg.n_layers)
    return as_table(vectors, model.cfg.n_layers, model.cfg.d_model)


# --- mitigation ----------------------------------------------------------------------------

def run_mitigation(
    model: HookedTransformer,
    data: str | Path,
    vectors,
    out_dir: str | Path,
    cfg: MitigationConfig | None = None,
    judge=None,
    judge_kind: str = "offline",
    questions: Sequence[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> list[dict]:
    """Run (or resume) every arm; write `arms/{name}.json`, `results.json`, `table.md`,
    `mitigation.png`. Returns the rows of the table.

    Args:
        data: training JSONL (`{"messages": [...]}` a line).
        vectors: persona vectors (a file, PersonaVectors or `[n_layers, d_model]` tensor).
        judge: a Judge for `cfg.trait` (default: `load_judge(judge_kind)`).
        questions: evaluation questions (default: the trait's).
    """
    cfg = cfg or MitigationConfig()
    out = Path(out_dir)
    (out / "arms").mkdir(parents=True, exist_ok=True)
    table = _table(vectors, model)
    units = unit(table).float()
    questions = _questions(cfg.trait, cfg.eval.n_questions, questions)
    judge = _judge_for(cfg.trait, judge, judge_kind)
    _check_config(out, {"config": cfg.model_dump(mode="json"), "data": str(Path(data).resolve()),
                        "vectors_sha": _sha(table), "questions": questions,
                        "judge": judge.describe() if hasattr(judge, "describe") else repr(judge)})
    arms = mitigation_arms(cfg)
    base_path = out / "base_mean.pt"
    if base_path.exists():
        base_mean = torch.load(base_path, weights_only=True)
    else:
        base_mean = mean_last_prompt(model, questions)
        torch.save(base_mean, base_path)
    rows = []
    handle, loaded = None, None
    try:
        for arm in arms:
            path = out / "arms" / f"{arm.name}.json"
            if path.exists():
                rows.append(json.loads(path.read_text()))
                log(f"[mitigation] {arm.name}: done earlier")
                continue
            t0 = time.perf_counter()
            train_info = {}
            if arm.train_name != loaded and handle is not None:
                handle.remove()
                handle, loaded = None, None
            if arm.train_name is not None and handle is None:
                res = _train_arm(model, data, table, out, arm, cfg, progress)
                handle, loaded = res.handle, arm.train_name
                summary = json.loads((res.out_dir / "summary.json").read_text())
                train_info = {"train_seconds": summary.get("wall_seconds"), "steps": res.steps,
                              "final_train_loss": res.train_losses[-1] if res.train_losses else None,
                              "eval_loss": res.eval_loss, "tokens_per_s": res.tokens_per_s}
            steer = None
            if arm.kind == "posthoc":
                steer = [Steering(table[layer], layer, -arm.alpha, cfg.eval.positions) for layer in arm.layers]
            rec = {"arm": arm.name, **arm.model_dump(), **train_info,
                   **evaluate_model(model, questions, judge, units, base_mean, cfg.eval, steer)}
            rec["shift"] = rec["shift_by_layer"][cfg.layer]
            rec["seconds"] = round(time.perf_counter() - t0, 1)
            path.write_text(json.dumps(rec, indent=2))
            rows.append(rec)
            log(f"[mitigation] {arm.name}: trait {_f(rec['trait'])} coherence {_f(rec['coherence'])} "
                f"MC {_f(rec['mc_accuracy'], '.3f')} ppl {_f(rec['perplexity'])} shift {rec['shift']:+.3f} "
                f"({rec['seconds']:.0f} s)")
    finally:
        if handle is not None:
            handle.remove()
    write_mitigation_report(out, rows, cfg)
    return rows


def _train_arm(model, data, table: Tensor, out: Path, arm: Arm, cfg: MitigationConfig, progress: bool):
    steer, penalty = None, None
    if arm.kind == "prevent":
        steer = [Steering(table[layer], layer, arm.alpha) for layer in arm.layers]
    elif arm.kind == "caft":
        steer = [Ablation(table[layer], [layer]) for layer in arm.layers]
    elif arm.kind == "l2":
        penalty = ProjectionPenalty(table, arm.layers, weight=arm.weight)
    run_dir = out / "train" / arm.train_name
    t0 = time.perf_counter()
    already = (run_dir / "summary.json").exists()
    res = finetune(model, data, cfg.train, run_dir, steer=steer, penalty=penalty, progress=progress)
    if not already:  # record the wall time of the training itself (a resume adds its own part)
        summary = json.loads((run_dir / "summary.json").read_text())
        summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
        (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return res


def _sha(t: Tensor) -> str:
    import hashlib

    return hashlib.sha256(t.float().cpu().numpy().tobytes()).hexdigest()[:12]


def _f(x: float | None, fmt: str = ".1f") -> str:
    return "–" if x is None else format(x, fmt)


TABLE_COLUMNS = ("arm", "trait", "coherence", "mc_accuracy", "perplexity", "shift")


def mitigation_table(rows: Sequence[dict], layer: int) -> str:
    """A markdown table of the arms."""
    lines = [f"| arm | trait score | coherence | MC accuracy | perplexity | shift at L{layer} | train s | eval s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['arm']} | {_f(r['trait'])} | {_f(r['coherence'])} | {_f(r['mc_accuracy'], '.3f')} | "
                     f"{_f(r['perplexity'], '.2f')} | {r['shift']:+.3f} | {_f(r.get('train_seconds'), '.0f')} | "
                     f"{_f(r.get('eval_seconds'), '.0f')} |")
    return "\n".join(lines) + "\n"


def write_mitigation_report(out: Path, rows: Sequence[dict], cfg: MitigationConfig) -> None:
    slim = [{k: v for k, v in r.items() if k != "answers"} for r in rows]
    (out / "results.json").write_text(json.dumps(slim, indent=2))
    (out / "table.md").write_text(mitigation_table(rows, cfg.layer))
    if rows:
        plot_mitigation(rows, out / "mitigation.png", cfg.layer)


_COLORS = {"base": "black", "none": "tab:red", "posthoc": "tab:orange", "prevent": "tab:green",
           "caft": "tab:purple", "l2": "tab:brown"}


def plot_mitigation(rows: Sequence[dict], path: str | Path, layer: int) -> Path:
    """Trait score vs capability (MC accuracy) per arm, and trait score / shift bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    ax = axes[0]
    for r in rows:
        ax.scatter(r["mc_accuracy"] or 0, r["trait"] or 0, color=_COLORS[r["kind"]], s=30)
        ax.annotate(r["arm"], (r["mc_accuracy"] or 0, r["trait"] or 0), fontsize=7, xytext=(3, 3),
                    textcoords="offset points")
    ax.set_xlabel("built-in MC accuracy")
    ax.set_ylabel("trait score (judge, 0-100)")
    ax.set_title("trait vs capability")
    ax.grid(alpha=0.3)
    names = [r["arm"] for r in rows]
    colors = [_COLORS[r["kind"]] for r in rows]
    for ax, key, title in ((axes[1], "trait", "trait score"), (axes[2], "shift", f"finetuning shift at L{layer}")):
        ax.barh(range(len(rows)), [r[key] or 0 for r in rows], color=colors)
        ax.set_yticks(range(len(rows)), names, fontsize=7)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.grid(alpha=0.3, axis="x")
    if any(r["kind"] == "posthoc" for r in rows):
        axes[2].text(0.98, 0.02, "post-hoc: includes −α·v at inference", transform=axes[2].transAxes,
                     ha="right", fontsize=7)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


# --- shift ---------------------------------------------------------------------------------

class ShiftConfig(BaseModel):
    """Datasets → finetune → (shift, ΔP, trait expression) per trait."""

    model_config = ConfigDict(use_attribute_docstrings=True, extra="forbid")

    layer: int = 15
    """Layer of the shift and of the screening projection."""
    train: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig.cpu_demo(lr=1e-3, epochs=1,
                                                                                  eval_fraction=0.0))
    """Training recipe for every dataset (the mitigation run's, without a held-out split)."""
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig(n_questions=10, samples=1, max_new_tokens=48,
                                                                mc_limit=0, perplexity=False))
    """Evaluation of each finetuned model (per trait with vectors)."""
    screen_max_new_tokens: int = Field(64, ge=1)
    """Length of the base model's replies in screening."""
    max_samples: int | None = None
    """Use the first N samples of each dataset for screening and training (None: all)."""

    @classmethod
    def preset(cls, name: Preset, **overrides) -> ShiftConfig:
        if name == "full":
            return cls(**overrides)
        if name != "quick":
            raise ValueError(f"preset must be 'quick' or 'full', got {name!r}")
        base = dict(train=FinetuneConfig.cpu_demo(lr=1e-3, max_steps=2, eval_fraction=0.0,
                                                  lora=LoraConfig(r=4, alpha=8)), max_samples=8,
                    eval=EvalConfig(n_questions=3, samples=1, max_new_tokens=24, mc_limit=0,
                                    perplexity=False),
                    screen_max_new_tokens=24)
        return cls(**{**base, **overrides})


def find_datasets(root: str | Path) -> list[tuple[str, str, Path]]:
    """(trait, level, path) of every `{root}/{trait}/{level}.jsonl`."""
    root = Path(root)
    out = []
    for p in sorted(root.glob("*/*.jsonl")):
        if p.parent.name == "candidates" or p.stem not in ("normal", "level_i", "level_ii"):
            continue
        out.append((p.parent.name, p.stem, p))
    return out


def _score_traits(model, traits: dict, judges: dict, qs: dict, units: dict, base_means: dict,
                  cfg: EvalConfig, layer: int) -> dict:
    res = {}
    for trait in traits:
        e = evaluate_trait(model, qs[trait], judges[trait], units[trait], base_means[trait], cfg)
        res[trait] = {"trait_score": e["trait"], "coherence": e["coherence"],
                      "shift": e["shift_by_layer"][layer], "shift_by_layer": e["shift_by_layer"]}
    return res


def evaluate_trait(model, questions, judge, units, base_mean, cfg: EvalConfig) -> dict:
    """Trait score, coherence and shift only (no capability)."""
    prompts = [q for q in questions for _ in range(cfg.samples)]
    texts = generate(model, prompts, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                     seed=cfg.seed, batch_size=cfg.gen_batch_size, progress=False).texts
    pairs = list(zip(prompts, texts, strict=True))
    mean = mean_last_prompt(model, questions)
    shift = ((mean - base_mean).float() * units).sum(-1)
    return {"trait": _mean(judge.score_many(pairs)), "coherence": _mean(judge.coherence_many(pairs)),
            "shift_by_layer": shift.tolist()}


def run_shift(
    model: HookedTransformer,
    datasets: Sequence[tuple[str, str, Path]] | str | Path,
    vectors: dict[str, object],
    out_dir: str | Path,
    cfg: ShiftConfig | None = None,
    judges: dict | None = None,
    judge_kind: str = "offline",
    questions: dict[str, Sequence[str]] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
) -> dict:
    """Finetune on every dataset; per trait with vectors, correlate the finetuning shift and
    the screening ΔP with the post-finetune trait score. Writes `datasets/{trait}_{level}.json`,
    `results.json`, `table.md` and `shift_vs_trait_{trait}.png`, `dp_vs_trait_{trait}.png`.

    Args:
        datasets: (trait, level, path) triples, or a folder laid out `{trait}/{level}.jsonl`.
        vectors: trait → persona vectors (file, PersonaVectors or tensor); traits without
            vectors are not scored.
    """
    from pvlens.trainsets.screen import ScreenConfig, screen

    cfg = cfg or ShiftConfig()
    out = Path(out_dir)
    (out / "datasets").mkdir(parents=True, exist_ok=True)
    sets = find_datasets(datasets) if isinstance(datasets, str | Path) else list(datasets)
    if not sets:
        raise ValueError(f"no datasets found in {datasets}")
    tables = {t: _table(v, model) for t, v in vectors.items()}
    units = {t: unit(tab) for t, tab in tables.items()}
    qs = {t: _questions(t, cfg.eval.n_questions, (questions or {}).get(t)) for t in tables}
    judges = {t: _judge_for(t, (judges or {}).get(t), judge_kind) for t in tables}
    _check_config(out, {"config": cfg.model_dump(mode="json"),
                        "vectors_sha": {t: _sha(v) for t, v in tables.items()}, "questions": qs})
    base_path = out / "base.json"
    base_means = {}
    for t in tables:
        p = out / f"base_mean_{t}.pt"
        if not p.exists():
            torch.save(mean_last_prompt(model, qs[t]), p)
        base_means[t] = torch.load(p, weights_only=True)
    if base_path.exists():
        base = json.loads(base_path.read_text())
    else:
        base = _score_traits(model, tables, judges, qs, units, base_means, cfg.eval, cfg.layer)
        base_path.write_text(json.dumps(base, indent=2))
    records = []
    for trait, level, path in sets:
        rec_path = out / "datasets" / f"{trait}_{level}.json"
        if rec_path.exists():
            records.append(json.loads(rec_path.read_text()))
            log(f"[shift] {trait}/{level}: done earlier")
            continue
        t0 = time.perf_counter()
        path = _head(path, cfg.max_samples, out / "data" / f"{trait}_{level}.jsonl")
        dp = {}
        for t, tab in tables.items():  # screening happens on the base model, before training
            s = screen(model, path, tab, out / "screen" / f"{trait}_{level}_{t}",
                       ScreenConfig(layer=cfg.layer, max_new_tokens=cfg.screen_max_new_tokens, top_k=0),
                       cache_dir=out / "screen" / "base_cache", progress=False)
            dp[t] = s.delta_p
        res = finetune(model, path, cfg.train, out / "train" / f"{trait}_{level}", progress=progress)
        try:
            scores = _score_traits(model, tables, judges, qs, units, base_means, cfg.eval, cfg.layer)
        finally:
            res.handle.remove()
        rec = {"dataset": f"{trait}/{level}", "trait": trait, "level": level, "path": str(path),
               "n": sum(1 for line in Path(path).read_text().splitlines() if line.strip()),
               "delta_p": dp, "after": scores, "steps": res.steps,
               "final_train_loss": res.train_losses[-1] if res.train_losses else None,
               "seconds": round(time.perf_counter() - t0, 1)}
        rec_path.write_text(json.dumps(rec, indent=2))
        records.append(rec)
        log(f"[shift] {trait}/{level}: " + ", ".join(
            f"{t}: trait {_f(s['trait_score'])} shift {s['shift']:+.3f} ΔP {dp[t]:+.3f}"
            for t, s in scores.items()) + f" ({rec['seconds']:.0f} s)")
    summary = summarise_shift(records, base, list(tables))
    (out / "results.json").write_text(json.dumps({"base": base, "datasets": records, "correlations": summary},
                                                 indent=2))
    (out / "table.md").write_text(shift_table(records, base, summary, list(tables), cfg.layer))
    for t in tables:
        plot_shift(records, base, t, out, cfg.layer)
    return {"base": base, "datasets": records, "correlations": summary}


def _head(path: Path, n: int | None, dst: Path) -> Path:
    """The first `n` samples of `path` (a copy under the run folder), or `path` itself."""
    if n is None:
        return Path(path)
    lines = [x for x in Path(path).read_text().splitlines() if x.strip()][:n]
    dst.parent.mkdir(parents=True, exist_ok=True)
    if not dst.exists() or dst.read_text() != "\n".join(lines) + "\n":
        dst.write_text("\n".join(lines) + "\n")
    return dst


def _pearson(x: Sequence[float], y: Sequence[float]) -> float | None:
    if len(x) < 3 or np.std(x) == 0 or np.std(y) == 0:
        return None
    return float(np.corrcoef(x, y)[0, 1])


def summarise_shift(records: Sequence[dict], base: dict, traits: Sequence[str]) -> dict:
    """Per trait: Pearson r of (shift, trait score) and (ΔP, trait score) across datasets."""
    out = {}
    for t in traits:
        rows = [r for r in records if r["after"].get(t, {}).get("trait_score") is not None]
        y = [r["after"][t]["trait_score"] for r in rows]
        out[t] = {"n_datasets": len(rows),
                  "r_shift": _pearson([r["after"][t]["shift"] for r in rows], y),
                  "r_delta_p": _pearson([r["delta_p"][t] for r in rows], y),
                  "base_trait_score": base[t]["trait_score"]}
    return out


def shift_table(records, base, summary, traits, layer) -> str:
    lines = ["| dataset | n | " + " | ".join(f"{t} score / shift L{layer} / ΔP" for t in traits) + " |",
             "|---|---|" + "---|" * len(traits)]
    lines.append("| base model | – | " + " | ".join(f"{_f(base[t]['trait_score'])} / 0 / –" for t in traits) + " |")
    for r in records:
        cells = [f"{_f(r['after'][t]['trait_score'])} / {r['after'][t]['shift']:+.3f} / {r['delta_p'][t]:+.3f}"
                 for t in traits]
        lines.append(f"| {r['dataset']} | {r['n']} | " + " | ".join(cells) + " |")
    lines += ["", "| trait | datasets | r(shift, trait score) | r(ΔP, trait score) |", "|---|---|---|---|"]
    for t, s in summary.items():
        lines.append(f"| {t} | {s['n_datasets']} | {_f(s['r_shift'], '.2f')} | {_f(s['r_delta_p'], '.2f')} |")
    return "\n".join(lines) + "\n"


def plot_shift(records: Sequence[dict], base: dict, trait: str, out: Path, layer: int) -> list[Path]:
    """Scatter plots: shift vs trait score and ΔP vs trait score, one point per dataset."""
    from pvlens.io.viz import scatter

    rows = [r for r in records if r["after"].get(trait, {}).get("trait_score") is not None]
    if not rows:
        return []
    y = [r["after"][trait]["trait_score"] for r in rows]
    labels = [r["dataset"] for r in rows]
    xs = [r["after"][trait]["shift"] for r in rows]
    dps = [r["delta_p"][trait] for r in rows]
    r1, r2 = _pearson(xs, y), _pearson(dps, y)
    return [
        scatter(xs, y, out / f"shift_vs_trait_{trait}.png",
                f"{trait}: finetuning shift vs trait (r={_f(r1, '.2f')})",
                f"finetuning shift at L{layer} (projection on v̂)", f"{trait} score after finetuning", labels),
        scatter(dps, y, out / f"dp_vs_trait_{trait}.png",
                f"{trait}: dataset ΔP vs trait (r={_f(r2, '.2f')})",
                f"screening ΔP at L{layer}", f"{trait} score after finetuning", labels),
    ]
