"""The shift experiment (paper Figures 6 and 7): finetune once per dataset (every trait ×
severity found) and relate, per trait, the finetuning shift and the screening ΔP of the
dataset (`pvlens.trainsets.screen`, on the base model) to the trait expression after finetuning.

Resumable: each dataset writes `datasets/{trait}_{level}.json` when it finishes; the folder is
keyed by its inputs (model, dataset contents, vectors, questions, judges, settings).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from transformer_lens import HookedTransformer

from pvlens.core.device import resolved_dtype_name
from pvlens.core.fingerprint import file_hash, json_hash, model_fingerprint, tensor_hash
from pvlens.finetune.experiments.config import ShiftConfig
from pvlens.finetune.experiments.evaluation import (
    TraitProbe,
    cached_mean,
    evaluate_trait,
    load_questions,
    load_trait_judge,
)
from pvlens.finetune.experiments.plots import plot_shift
from pvlens.finetune.experiments.tables import fmt, shift_table, summarise_shift
from pvlens.finetune.train import finetune
from pvlens.finetune.vectors import as_table, unit_table
from pvlens.io.atomic import read_json_checked, write_json_atomic, write_text_atomic
from pvlens.io.runs import check_inputs, run_lock
from pvlens.judges.base import Judge
from pvlens.vectors.coerce import VectorsLike

Dataset = tuple[str, str, Path]
"""(trait, level, path) of one training set."""
LEVELS = ("normal", "level_i", "level_ii")
"""Severity levels, the file stems `find_datasets` picks up."""


def find_datasets(root: str | Path) -> list[Dataset]:
    """(trait, level, path) of every `{root}/{trait}/{level}.jsonl`."""
    return [(p.parent.name, p.stem, p) for p in sorted(Path(root).glob("*/*.jsonl"))
            if p.parent.name != "candidates" and p.stem in LEVELS]


def head_of(path: Path, n: int | None, dst: Path) -> Path:
    """The first `n` samples of `path` (a copy under the run folder), or `path` itself."""
    if n is None:
        return Path(path)
    lines = [x for x in Path(path).read_text().splitlines() if x.strip()][:n]
    text = "\n".join(lines) + "\n"
    if not dst.exists() or dst.read_text() != text:
        write_text_atomic(dst, text)
    return dst


class ShiftRun:
    """One shift experiment: the traits it scores and the folder it writes."""

    def __init__(self, model: HookedTransformer, out: Path, cfg: ShiftConfig,
                 probes: dict[str, TraitProbe], tables: dict[str, Any]) -> None:
        self.model, self.out, self.cfg, self.probes, self.tables = model, out, cfg, probes, tables

    def score(self) -> dict[str, dict[str, Any]]:
        """Per trait: score, coherence and shift of the model as it is now."""
        return {t: evaluate_trait(self.model, p, self.cfg.eval, self.cfg.layer) for t, p in self.probes.items()}

    def screen_config(self) -> Any:
        """The screening settings of ΔP (its dtype "auto" resolves per machine)."""
        from pvlens.trainsets.screen import ScreenConfig

        return ScreenConfig(layer=self.cfg.layer, max_new_tokens=self.cfg.screen_max_new_tokens, top_k=0)

    def delta_p(self, name: str, path: Path) -> dict[str, float]:
        """Screening ΔP of the dataset per trait, on the base model (before training)."""
        from pvlens.trainsets.screen import screen

        screen_cfg = self.screen_config()
        return {t: screen(self.model, path, tab, self.out / "screen" / f"{name}_{t}", screen_cfg,
                          cache_dir=self.out / "screen" / "base_cache", progress=False).delta_p
                for t, tab in self.tables.items()}

    def dataset(self, ds: Dataset, progress: bool, log: Callable[[str], None]) -> dict[str, Any]:
        """Screen, finetune and score one dataset (or read its record back)."""
        trait, level, path = ds
        name = f"{trait}_{level}"
        rec_path = self.out / "datasets" / f"{name}.json"
        if rec_path.exists():
            log(f"[shift] {trait}/{level}: done earlier")
            return read_json_checked(rec_path)
        t0 = time.perf_counter()
        path = head_of(path, self.cfg.max_samples, self.out / "data" / f"{name}.jsonl")
        dp = self.delta_p(name, path)
        res = finetune(self.model, path, self.cfg.train, self.out / "train" / name, progress=progress)
        try:
            scores = self.score()
        finally:
            res.handle.remove()
        rec = {"dataset": f"{trait}/{level}", "trait": trait, "level": level, "path": str(path),
               "n": sum(1 for line in Path(path).read_text().splitlines() if line.strip()),
               "delta_p": dp, "after": scores, "steps": res.steps,
               "final_train_loss": res.train_losses[-1] if res.train_losses else None,
               "seconds": round(time.perf_counter() - t0, 1)}
        write_json_atomic(rec_path, rec)
        log(f"[shift] {trait}/{level}: " + ", ".join(
            f"{t}: trait {fmt(s['trait_score'])} shift {s['shift']:+.3f} ΔP {dp[t]:+.3f}"
            for t, s in scores.items()) + f" ({rec['seconds']:.0f} s)")
        return rec

    def report(self, base: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
        """`results.json`, `table.md` and the scatter plots; the results."""
        traits = list(self.tables)
        summary = summarise_shift(records, base, traits)
        result = {"base": base, "datasets": records, "correlations": summary}
        write_json_atomic(self.out / "results.json", result)
        write_text_atomic(self.out / "table.md", shift_table(records, base, summary, traits, self.cfg.layer))
        for t in traits:
            plot_shift(records, base, t, self.out, self.cfg.layer)
        return result


def shift_inputs(model: HookedTransformer, sets: Sequence[Dataset], run: ShiftRun) -> dict[str, Any]:
    """Everything that determines the experiment's results (what its folder is keyed by)."""
    return {"model": model_fingerprint(model),
            "datasets": {f"{t}/{lvl}": file_hash(p) for t, lvl, p in sets},
            "vectors": {t: tensor_hash(v) for t, v in run.tables.items()},
            "questions": {t: json_hash(p.questions) for t, p in run.probes.items()},
            "judges": {t: p.judge.describe() for t, p in run.probes.items()},
            "config": run.cfg.model_dump(mode="json"),
            # a dataset's record holds its ΔP, so the screening pass's resolved dtype keys it too
            "screen_dtype": resolved_dtype_name(run.screen_config().dtype, model.W_E.device, model.cfg.dtype)}


def plan_shift(
    model: HookedTransformer, datasets: Sequence[Dataset] | str | Path, vectors: Mapping[str, VectorsLike],
    out_dir: str | Path, cfg: ShiftConfig | None = None, judges: Mapping[str, Judge] | None = None,
    judge_kind: str = "offline", questions: Mapping[str, Sequence[str]] | None = None,
) -> tuple[list[Dataset], ShiftRun]:
    """The datasets and the run `run_shift` makes of these arguments (nothing computed yet);
    `shift_inputs(model, *plan_shift(...))` is what its folder is keyed by."""
    cfg = (cfg or ShiftConfig()).resolved(model)
    sets = find_datasets(datasets) if isinstance(datasets, str | Path) else list(datasets)
    if not sets:
        raise ValueError(f"no datasets found in {datasets}")
    n_layers, d_model = model.cfg.n_layers, model.cfg.d_model
    tables = {t: as_table(v, n_layers, d_model) for t, v in vectors.items()}
    probes = {t: TraitProbe(load_questions(t, cfg.eval.n_questions, (questions or {}).get(t)),
                            load_trait_judge(t, (judges or {}).get(t), judge_kind), unit_table(tab, n_layers))
              for t, tab in tables.items()}
    return sets, ShiftRun(model, Path(out_dir), cfg, probes, tables)


def run_shift(
    model: HookedTransformer,
    datasets: Sequence[Dataset] | str | Path,
    vectors: Mapping[str, VectorsLike],
    out_dir: str | Path,
    cfg: ShiftConfig | None = None,
    judges: Mapping[str, Judge] | None = None,
    judge_kind: str = "offline",
    questions: Mapping[str, Sequence[str]] | None = None,
    progress: bool = True,
    log: Callable[[str], None] = print,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Finetune on every dataset; per trait with vectors, correlate the finetuning shift and
    the screening ΔP with the post-finetune trait score. Writes `datasets/{trait}_{level}.json`,
    `results.json`, `table.md` and `shift_vs_trait_{trait}.png`, `dp_vs_trait_{trait}.png`.

    Args:
        datasets: (trait, level, path) triples, or a folder laid out `{trait}/{level}.jsonl`.
        vectors: trait → persona vectors (file, PersonaVectors or tensor); traits without
            vectors are not scored.
        overwrite: discard results in `out_dir` made with other inputs (else they are refused).
    """
    sets, run = plan_shift(model, datasets, vectors, out_dir, cfg, judges, judge_kind, questions)
    out, probes = run.out, run.probes
    with run_lock(out):
        check_inputs(out, shift_inputs(model, sets, run), overwrite=overwrite)
        for t, p in probes.items():
            p.base_mean = cached_mean(out / f"base_mean_{t}.safetensors", model, p.questions)
        base_path = out / "base.json"
        if not base_path.exists():
            write_json_atomic(base_path, run.score())
        base = read_json_checked(base_path)
        records = [run.dataset(ds, progress, log) for ds in sets]
        return run.report(base, records)
