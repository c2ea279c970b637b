"""The mitigation experiment (paper §5): finetune on a trait-inducing dataset and compare the
base model, no mitigation, post-hoc steering, preventative steering (one layer, listed layers,
or the paper's all-layer incremental scheme), CAFT and the L2 projection penalty on one
evaluation, once per training seed.

Resumable: each (arm, seed) writes `arms/{name}_s{seed}.json` when it finishes (its training
run checkpoints);
a rerun skips finished arms. The folder is keyed by its inputs (model, data, vectors,
questions, judge, settings): other inputs are refused with a message naming them.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.fingerprint import file_hash, json_hash, model_fingerprint, tensor_hash
from pvlens.core.steering import Ablation, Intervention, Steering, incremental
from pvlens.finetune.experiments.config import MitigationConfig
from pvlens.finetune.experiments.evaluation import (
    TraitProbe,
    cached_mean,
    evaluate_model,
    load_questions,
    load_trait_judge,
)
from pvlens.finetune.experiments.plots import plot_mitigation
from pvlens.finetune.experiments.shift import head_of
from pvlens.finetune.experiments.summary import summarise_arms
from pvlens.finetune.experiments.tables import fmt, mitigation_table
from pvlens.finetune.lora import LoraHandle
from pvlens.finetune.penalty import ProjectionPenalty
from pvlens.finetune.train import FinetuneResult, finetune
from pvlens.finetune.vectors import as_table, unit_table
from pvlens.io.atomic import read_json_checked, write_json_atomic, write_text_atomic
from pvlens.io.runs import check_inputs, run_lock
from pvlens.judges.base import Judge
from pvlens.vectors.coerce import VectorsLike


class Arm(BaseModel):
    """One condition of the mitigation experiment."""

    name: str
    """Unique label, also the file name of its result."""
    kind: Literal["base", "none", "posthoc", "prevent", "prevent_incremental", "caft", "l2"]
    """What is done: nothing / finetune / finetune + inference steering / a training mitigation
    (prevent_incremental: the paper's all-layer incremental preventative steering)."""
    alpha: float = 0.0
    """Steering strength per layer (prevent: added in training; posthoc: subtracted at inference)."""
    layers: list[int] = []
    """Layers of the intervention (prevent_incremental: empty = every block)."""
    weight: float = 0.0
    """L2 penalty weight."""

    @property
    def train_name(self) -> str | None:
        """The training run this arm uses (post-hoc arms share the unmitigated one)."""
        if self.kind == "base":
            return None
        return "none" if self.kind in ("none", "posthoc") else self.name


def mitigation_arms(cfg: MitigationConfig) -> list[Arm]:
    """The arms in run order (post-hoc right after `none`, reusing its adapter).

    `cfg.layer` and `cfg.multi_layers` must be set: `cfg.resolved(model)` fills the defaults.
    """
    if cfg.layer is None or cfg.multi_layers is None:
        raise ValueError("the arms need concrete layers: pass cfg.resolved(model) (or set layer and multi_layers)")
    L, multi = cfg.layer, cfg.multi_layers
    arms = [Arm(name="base", kind="base"), Arm(name="none", kind="none")]
    arms += [Arm(name=f"posthoc_a{a:g}", kind="posthoc", alpha=a, layers=[L]) for a in cfg.posthoc_alphas]
    arms += [Arm(name=f"prevent_L{L}_a{a:g}", kind="prevent", alpha=a, layers=[L]) for a in cfg.prevent_alphas]
    if multi:
        tag = "-".join(str(x) for x in multi)
        arms += [Arm(name=f"prevent_L{tag}_a{a:g}", kind="prevent", alpha=a, layers=list(multi))
                 for a in cfg.multi_alphas]
    arms += [Arm(name=f"prevent_incr_a{a:g}", kind="prevent_incremental", alpha=a) for a in cfg.incremental_alphas]
    if cfg.caft:
        arms.append(Arm(name=f"caft_L{L}", kind="caft", layers=[L]))
    arms += [Arm(name=f"l2_L{L}_w{w:g}", kind="l2", layers=[L], weight=w) for w in cfg.l2_weights]
    return arms


def training_interventions(
    arm: Arm, table: Tensor,
) -> tuple[list[Intervention] | None, ProjectionPenalty | None]:
    """(steer, penalty) of an arm during training: preventative steering, CAFT or the L2 penalty."""
    if arm.kind == "prevent":
        return [Steering(table[layer], layer, arm.alpha) for layer in arm.layers], None
    if arm.kind == "prevent_incremental":  # every token, as the single-layer arm steers in training
        return list(incremental(table, arm.alpha, positions="all", layers=arm.layers or None)), None
    if arm.kind == "caft":
        return [Ablation(table[layer], [layer]) for layer in arm.layers], None
    if arm.kind == "l2":
        return None, ProjectionPenalty(table, arm.layers, weight=arm.weight)
    return None, None


def inference_steer(arm: Arm, table: Tensor, positions: Literal["all", "prompt", "response"]) -> list[Intervention] | None:
    """Post-hoc arms subtract α·v at inference; the others evaluate the model as it is."""
    if arm.kind != "posthoc":
        return None
    return [Steering(table[layer], layer, -arm.alpha, positions) for layer in arm.layers]


def run_key(name: str | None, seed: int) -> str:
    """File stem of one (arm or training run, seed): `{name}_s{seed}`."""
    return f"{name}_s{seed}"


class _Adapters:
    """The one training run loaded on the model; switching arms or seeds trains (or reloads) another."""

    def __init__(self, train: Callable[[Arm, int], FinetuneResult]) -> None:
        self.train = train
        self.handle: LoraHandle | None = None
        self.loaded: str | None = None

    def use(self, arm: Arm, seed: int) -> dict[str, Any]:
        """Put the arm's adapter (of `seed`) on the model; its training record when (re)loaded now."""
        key = None if arm.train_name is None else run_key(arm.train_name, seed)
        if key == self.loaded:
            return {}
        self.release()
        if key is None:
            return {}
        res = self.train(arm, seed)
        self.handle, self.loaded = res.handle, key
        summary = read_json_checked(res.out_dir / "summary.json")
        return {"train_seconds": summary.get("wall_seconds"), "steps": res.steps,
                "final_train_loss": res.train_losses[-1] if res.train_losses else None,
                "eval_loss": res.eval_loss, "tokens_per_s": res.tokens_per_s}

    def release(self) -> None:
        if self.handle is not None:
            self.handle.remove()
        self.handle, self.loaded = None, None


def train_arm(
    model: HookedTransformer, data: str | Path, table: Tensor, out: Path, arm: Arm,
    cfg: MitigationConfig, progress: bool,
) -> FinetuneResult:
    """Train (or resume, or reload) the adapter of `arm` with `cfg.train.seed` under
    `out/train/{arm.train_name}_s{seed}`."""
    steer, penalty = training_interventions(arm, table)
    run_dir = out / "train" / run_key(arm.train_name, cfg.train.seed)
    t0 = time.perf_counter()
    already = (run_dir / "summary.json").exists()
    res = finetune(model, data, cfg.train, run_dir, steer=steer, penalty=penalty, progress=progress)
    if not already:  # record the wall time of the training itself (a resume adds its own part)
        summary = read_json_checked(run_dir / "summary.json")
        summary["wall_seconds"] = round(time.perf_counter() - t0, 1)
        write_json_atomic(run_dir / "summary.json", summary)
    return res


def mitigation_inputs(
    model: HookedTransformer, data: str | Path, table: Tensor, probe: TraitProbe, cfg: MitigationConfig,
) -> dict[str, Any]:
    """Everything that determines the experiment's records (what its folder is keyed by). Not the
    seed list or the bootstrap size: each record is keyed by its own seed (`arms/{name}_s{seed}`)
    and the summary is recomputed on every call, so adding or dropping seeds resumes."""
    return {"model": model_fingerprint(model), "data": file_hash(data), "vectors": tensor_hash(table),
            "questions": json_hash(probe.questions), "judge": probe.judge.describe(),
            "config": cfg.model_dump(mode="json", exclude={"seeds", "bootstrap"})}


def run_mitigation(
    model: HookedTransformer,
    data: str | Path,
    vectors: VectorsLike,
    out_dir: str | Path,
    cfg: MitigationConfig | None = None,
    judge: Judge | None = None,
    judge_kind: str = "offline",
    questions: Sequence[str] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> list[dict[str, Any]]:
    """Run (or resume) every arm once per seed; write `arms/{name}_s{seed}.json`, `results.json`
    (per-arm summary with intervals, every per-seed record, config, model fingerprint),
    `table.md`, `mitigation.png`. Returns the per-(arm, seed) records, seed by seed.

    Args:
        data: training JSONL (`{"messages": [...]}` a line).
        vectors: persona vectors (a file, PersonaVectors or `[n_layers, d_model]` tensor).
        judge: a Judge for `cfg.trait` (default: `load_judge(judge_kind)`).
        questions: evaluation questions (default: the trait's).
        overwrite: discard results in `out_dir` made with other inputs (else they are refused).
    """
    cfg = (cfg or MitigationConfig()).resolved(model)
    out = Path(out_dir)
    table = as_table(vectors, model.cfg.n_layers, model.cfg.d_model)
    probe = TraitProbe(load_questions(cfg.trait, cfg.eval.n_questions, questions),
                       load_trait_judge(cfg.trait, judge, judge_kind),
                       unit_table(table, model.cfg.n_layers))
    t0 = time.perf_counter()
    with run_lock(out):
        inputs = mitigation_inputs(model, data, table, probe, cfg)
        check_inputs(out, inputs, overwrite=overwrite)
        train_data = head_of(Path(data), cfg.max_samples, out / "data" / "train.jsonl")
        probe.base_mean = cached_mean(out / "base_mean.safetensors", model, probe.questions)
        adapters = _Adapters(lambda arm, seed: train_arm(model, train_data, table, out, arm,
                                                         cfg.for_seed(seed), progress))
        all_done = all((out / "arms" / f"{run_key(arm.name, seed)}.json").exists()
                       for seed in cfg.seeds for arm in mitigation_arms(cfg))
        try:
            rows = [run_arm(model, arm, probe, table, out, cfg.for_seed(seed), adapters, log)
                    for seed in cfg.seeds for arm in mitigation_arms(cfg)]
        finally:
            adapters.release()
        if not (all_done and _report_covers(out, rows, cfg)):
            write_mitigation_report(out, rows, cfg, {"model": inputs["model"], "data": inputs["data"],
                                                     "wall_seconds_this_call": round(time.perf_counter() - t0, 1)})
    return rows


def _report_covers(out: Path, rows: Sequence[dict[str, Any]], cfg: MitigationConfig) -> bool:
    """True when `results.json` already reports exactly these runs under this config: a rerun
    that only read arms back leaves it (and its wall time, which the docs quote) as written."""
    path = out / "results.json"
    if not path.exists():
        return False
    old = read_json_checked(path)
    return (old.get("config") == cfg.model_dump(mode="json")
            and [(r["arm"], r["seed"]) for r in old.get("runs", [])] == [(r["arm"], r["seed"]) for r in rows])


def run_arm(
    model: HookedTransformer, arm: Arm, probe: TraitProbe, table: Tensor, out: Path,
    cfg: MitigationConfig, adapters: _Adapters, log: Callable[[str], None],
) -> dict[str, Any]:
    """One (arm, seed) record — the seed is `cfg.train.seed` (`cfg.for_seed`): read back if it
    finished earlier, else trained / evaluated and saved."""
    seed = cfg.train.seed
    path = out / "arms" / f"{run_key(arm.name, seed)}.json"
    if path.exists():
        log(f"[mitigation] {arm.name} seed {seed}: done earlier")
        return read_json_checked(path)
    t0 = time.perf_counter()
    train_info = adapters.use(arm, seed)
    steer = inference_steer(arm, table, cfg.eval.positions)
    rec = {"arm": arm.name, "seed": seed, "eval_seed": cfg.eval.seed, **arm.model_dump(), **train_info,
           **evaluate_model(model, probe, cfg.eval, steer)}
    rec["shift"] = rec["shift_by_layer"][cfg.layer]
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    write_json_atomic(path, rec)
    log(f"[mitigation] {arm.name} seed {seed}: trait {fmt(rec['trait'])} coherence {fmt(rec['coherence'])} "
        f"MC {fmt(rec['mc_accuracy'], '.3f')} ppl {fmt(rec['perplexity'])} shift {rec['shift']:+.3f} "
        f"({rec['seconds']:.0f} s)")
    return rec


def write_mitigation_report(
    out: Path, rows: Sequence[dict[str, Any]], cfg: MitigationConfig, meta: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """`results.json` (per-arm summary with 95 % intervals, every per-seed record without the
    answers, the config and `meta`), `table.md` and `mitigation.png`. Returns what results.json holds."""
    summary = summarise_arms(rows, cfg.bootstrap)
    slim = [{k: v for k, v in r.items() if k != "answers"} for r in rows]
    result = {"trait": cfg.trait, "layer": cfg.layer, "seeds": cfg.seeds, **(meta or {}),
              "config": cfg.model_dump(mode="json"), "summary": summary, "runs": slim}
    write_json_atomic(out / "results.json", result)
    write_text_atomic(out / "table.md", mitigation_table(result))
    if summary:
        plot_mitigation(summary, out / "mitigation.png", cfg.layer)
    return result
