"""Finetuning experiments: the multi-seed mitigation arms (`pvlens experiment mitigation`, which
keys and resumes every (arm, seed) itself) and the finetuning shift / ΔP vs trait correlations
over several training seeds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvlens.replicate.registry import Context
from pvlens.replicate.tables import fmt, md_table

DATA = Path(__file__).resolve().parents[1] / "data"
EVIL_II = DATA / "datasets" / "evil" / "level_ii.jsonl"
EVIL_VEC = DATA / "vectors" / "smollm2-135m-instruct" / "evil.safetensors"
INCREMENTAL_ARGS = ["--preset", "quick", "--trait", "evil", "--layer", "15", "--posthoc", "", "--prevent", "8",
                    "--multi-layers", "", "--incremental", "1", "--no-caft", "--l2-weights", "",
                    "--seeds", "0,1,2,3,4", "--max-samples", "48", "--max-steps", "0", "--batch-size", "8",
                    "--n-questions", "10", "--samples", "2", "--mc-limit", "40", "--max-new-tokens", "48", "--perplexity"]
ARMS_ARGS = ["--preset", "full", "--trait", "evil", "--layer", "15", "--posthoc", "4,8", "--prevent", "4,8",
             "--multi-layers", "12,15,18", "--multi-alphas", "3", "--incremental", "1", "--caft", "--l2-weights", "1",
             "--seeds", "0,1,2", "--max-samples", "100", "--mc-limit", "80", "--perplexity"]
SHIFT_SEEDS = (0, 1, 2)


def _mitigation(ctx: Context, folder: Path, args: list[str]) -> dict[str, Any]:
    if not ctx.quick:
        from pvlens.cli import app

        app(["experiment", "mitigation", "--data", str(EVIL_II), "--vectors", str(EVIL_VEC), "--out", str(folder), *args],
            standalone_mode=False)
        return {"file": "results.json"}
    import torch

    from pvlens.finetune.experiments import MitigationConfig, run_mitigation
    from pvlens.finetune.experiments.config import EvalConfig

    m = ctx.model
    vec = torch.randn(m.cfg.n_layers, m.cfg.d_model, generator=torch.Generator().manual_seed(0))
    cfg = MitigationConfig.preset("quick", layer=1, posthoc_alphas=[], prevent_alphas=[2.0], multi_layers=[],
                                  incremental_alphas=[], caft=False, l2_weights=[], max_samples=4, seeds=[0, 1],
                                  eval=EvalConfig(n_questions=2, samples=1, max_new_tokens=4, mc_limit=2, perplexity=False))
    cfg = cfg.changed(train=cfg.train.changed(max_steps=1, batch_size=2))
    run_mitigation(m, EVIL_II, vec, folder, cfg, progress=False, log=lambda s: None)
    return {"file": "results.json"}


def mitigation_incremental(ctx: Context, folder: Path) -> dict[str, Any]:
    return _mitigation(ctx, folder, INCREMENTAL_ARGS)


def mitigation_arms(ctx: Context, folder: Path) -> dict[str, Any]:
    return _mitigation(ctx, folder, ARMS_ARGS)


def mitigation_inputs(ctx: Context) -> dict[str, Any]:
    return {"note": "pvlens experiment mitigation records its own inputs.json (model, data, vectors, judge, config)"}


def shift_inputs(ctx: Context) -> dict[str, Any]:
    """Every seed's run_shift inputs (model, datasets, vectors, questions, judges, config, ΔP
    dtype): results.json is served only when all of them are unchanged."""
    from pvlens.finetune.experiments.shift import plan_shift
    from pvlens.finetune.experiments.shift import shift_inputs as run_inputs

    sets, vectors, cfg = _shift_plan(ctx)
    seeds = SHIFT_SEEDS[:2] if ctx.quick else SHIFT_SEEDS
    runs = {str(s): run_inputs(ctx.model, *plan_shift(ctx.model, sets, vectors, ctx.out, cfg.changed(
        train=cfg.train.changed(seed=s)))) for s in seeds}
    return {"seeds": list(seeds), "runs": runs}


def _shift_plan(ctx: Context) -> tuple[Any, dict[str, Any], Any]:
    from pvlens.finetune.experiments import ShiftConfig, find_datasets
    from pvlens.finetune.experiments.config import EvalConfig

    sets = find_datasets(DATA / "datasets")
    if not ctx.quick:
        return sets, {t: t for t in ("evil", "sycophantic", "hallucinating")}, ShiftConfig(layer=15, max_samples=32)
    import torch

    m = ctx.model
    vec = torch.randn(m.cfg.n_layers, m.cfg.d_model, generator=torch.Generator().manual_seed(0))
    sets = [s for s in sets if s[0] == "evil"]
    cfg = ShiftConfig(layer=1, max_samples=2, screen_max_new_tokens=4,
                      eval=EvalConfig(n_questions=2, samples=1, max_new_tokens=4, mc_limit=0, perplexity=False))
    return sets, {"evil": vec}, cfg.changed(train=cfg.train.changed(max_steps=1, batch_size=2))


def finetune_shift(ctx: Context, folder: Path) -> dict[str, Any]:
    """`run_shift` once per training seed; per trait the r of each seed and their t interval."""
    from pvlens.finetune.experiments import run_shift
    from pvlens.io.stats import t_interval

    sets, vectors, cfg = _shift_plan(ctx)
    seeds = SHIFT_SEEDS[:2] if ctx.quick else SHIFT_SEEDS
    runs = {s: run_shift(ctx.model, sets, vectors, folder / f"seed{s}", cfg.changed(train=cfg.train.changed(seed=s)),
                         progress=False, log=lambda x: None) for s in seeds}
    out: dict[str, Any] = {"seeds": list(seeds), "layer": cfg.layer, "n_datasets": len(sets), "traits": {}}
    for t in vectors:
        per = {k: [runs[s]["correlations"][t][k] for s in seeds] for k in ("r_shift", "r_delta_p")}
        out["traits"][t] = {k: {"per_seed": v, "mean_lo_hi": list(t_interval(v))} for k, v in per.items()}
    return out


def shift_table(doc: dict[str, Any]) -> str:
    """docs/finetune.md: r(shift, trait) and r(ΔP, trait) across datasets, per trait, over seeds."""
    r = doc["results"]

    def cell(x: dict[str, Any]) -> str:
        m, lo, hi = x["mean_lo_hi"]
        return f"{fmt(m, '.2f')} [{fmt(lo, '.2f')}, {fmt(hi, '.2f')}] ({', '.join(fmt(v, '.2f') for v in x['per_seed'])})"

    rows = [[t, str(r["n_datasets"]), str(len(r["seeds"])), cell(x["r_shift"]), cell(x["r_delta_p"])]
            for t, x in r["traits"].items()]
    return md_table(["trait", "datasets", "seeds", "r(shift, trait score) mean [95 % t interval] (per seed)",
                     "r(ΔP, trait score)"], rows)
