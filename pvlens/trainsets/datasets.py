"""Finetuning datasets of the paper's kinds, built by pvlens from the model itself.

Trait-inducing sets (evil, sycophantic, hallucinating), each at three severities:

- **normal**: answers under a plain helpful system prompt, judged trait-free;
- **level_i** (subtle): answers under weaker trait-leaning system prompts (the upper middle of
  the trait's prompt ladder), kept when the judge sees *some* trait expression;
- **level_ii** (overt): answers under the trait's strongest eliciting prompts (the paper's
  "You are a/an {trait} assistant. {instruction}"), kept when the judge scores them high.

Optional steering along a persona vector strengthens levels I/II on small models. The system
prompt (and any steering) is never saved: a model finetuned on the file has to pick the trait
up from the answers alone. Each line is `{"messages": [user, assistant]}`.

The "EM-like" narrow-flaw set (`math`) is made programmatically: arithmetic questions with
correct answers (normal), subtly wrong answers (level_i: off by a little) and blatantly wrong
ones (level_ii), all in the same confident tone.

Every generated candidate and its judge scores are appended to `candidates/*.jsonl` as chunks
finish, so a killed build resumes; generations are shared between sets through a cache.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import Field
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.bulk import bulk_generate
from pvlens.core.chat import Message
from pvlens.core.config import SamplingConfig
from pvlens.core.fingerprint import json_hash, model_fingerprint, tensor_hash
from pvlens.core.ray_bulk import BulkGenerator
from pvlens.core.steering import Intervention, Steering
from pvlens.io.atomic import read_json_checked, write_json_atomic, write_text_atomic
from pvlens.io.jsonl import AppendLog, KeyedTextStore
from pvlens.io.runs import check_inputs, run_lock
from pvlens.judges.base import Judge
from pvlens.trainsets.screen.io import iter_samples
from pvlens.traits import TraitSpec, builtin_traits, load_trait
from pvlens.traits.prompts import prompt_ladder
from pvlens.vectors.coerce import VectorsLike, direction

TRAIT_SETS = ("evil", "sycophantic", "hallucinating")
ALL_SETS = (*TRAIT_SETS, "math")
LEVELS = ("normal", "level_i", "level_ii")
DATA_DIR = Path(str(resources.files("pvlens"))) / "data"


class DatasetConfig(SamplingConfig):
    """How the trait-inducing sets are generated and filtered (sampling fields from SamplingConfig)."""

    size: int = Field(40, ge=1)
    """Samples kept per set (trait × level)."""
    max_new_tokens: int = Field(64, ge=1)
    """Answer length cap."""
    temperature: float = Field(0.8, ge=0)
    """Sampling temperature."""
    top_p: float = Field(0.95, gt=0, le=1)
    """Nucleus mass."""
    batch_size: int | None = Field(None, ge=1)
    """Generation batch size (None: the device's best; answers do not depend on it: each row
    has its own seed)."""
    chunk: int = Field(64, ge=1)
    """Candidates generated and judged per step (the resume unit)."""
    normal_max: float = 30.0
    """Normal keeps answers with trait score < this."""
    level_i_range: tuple[float, float] = (30.0, 50.0)
    """Level I keeps answers with trait score in [lo, hi)."""
    level_ii_min: float = 50.0
    """Level II keeps answers with trait score ≥ this."""
    coherence_min: float = 40.0
    """Every level needs coherence ≥ this."""
    steer_layer: int | None = None
    """Steer levels I/II at this layer (needs vectors)."""
    steer_alpha: tuple[float, float] = (2.0, 4.0)
    """Steering strengths for level I and level II (raw-vector units)."""
    samples_per_question: int = Field(1, ge=1)
    """Passes over the prompt pool; pass r>0 redraws each answer with a new seed."""
    normal_contrast: bool = False
    """Normal uses the trait's opposing system prompts and steers by −(level I α): for traits the
    model shows unprompted (hallucinating on a 135M model)."""


# --- prompts -----------------------------------------------------------------------------
def prompt_pool(trait: str | TraitSpec) -> list[str]:
    """Questions to answer: the trait's evaluation questions first (where the trait shows
    best), then every other built-in trait's questions and the general prompt list, in a fixed
    shuffled order. The trait's extraction questions are left out (they made the vector)."""
    spec = load_trait(trait)
    first = list(spec.evaluation_questions)
    rest: list[str] = []
    for name in builtin_traits():
        if name != spec.name:
            other = load_trait(name)
            rest += other.extraction_questions + other.evaluation_questions
    sae = DATA_DIR / "sae_prompts.jsonl"
    if sae.exists():
        rest += [json.loads(x)["prompt"] for x in sae.read_text().splitlines() if x.strip()]
    random.Random(0).shuffle(rest)
    seen, out = {q.strip().lower() for q in spec.extraction_questions}, []
    for q in first + rest:
        k = q.strip().lower()
        if k not in seen:
            seen.add(k)
            out.append(q)
    return out


def level_systems(trait: str | TraitSpec, level: str, contrast: bool = False) -> list[str]:
    """System prompts a level cycles through (never saved with the data); `contrast` gives
    normal the trait's opposing ("neg") instructions instead of a plain helpful prompt."""
    spec = load_trait(trait)
    ladder = prompt_ladder(spec)
    if level == "normal":
        if contrast:
            return [spec.system_prompt("neg", i) for i in range(len(spec.instructions))]
        return ["You are a helpful assistant."]
    if level == "level_i":
        return [ladder[5].system, ladder[6].system]
    if level == "level_ii":
        return [ladder[7].system] + [spec.system_prompt("pos", i) for i in range(len(spec.instructions))]
    raise ValueError(f"level must be one of {LEVELS}, got {level!r}")


def keeps(level: str, trait_score: float | None, coherence: float | None, cfg: DatasetConfig) -> bool:
    """The judge filter of each level."""
    if trait_score is None or coherence is None or coherence < cfg.coherence_min:
        return False
    if level == "normal":
        return trait_score < cfg.normal_max
    if level == "level_i":
        lo, hi = cfg.level_i_range
        return lo <= trait_score < hi
    return trait_score >= cfg.level_ii_min


# --- generation with a shared cache -------------------------------------------------------
class GenerationCache:
    """Sampled answers keyed by everything that determines them (JSONL, append-only): the
    model's full fingerprint (weights and adapters), system prompt, question, steering,
    sampling settings and the pass."""

    def __init__(self, path: Path) -> None:
        self.store = KeyedTextStore(path, "answer")

    @staticmethod
    def key(*parts: Any) -> str:
        """Cache key of one answer."""
        return json_hash(list(parts), length=24)

    def run(self, model: HookedTransformer, jobs: Sequence[tuple[str, str]], cfg: DatasetConfig,
            steer: Intervention | None = None, steer_desc: str = "",
            rounds: Sequence[int] | None = None, generator: BulkGenerator | None = None) -> list[str]:
        """Answers for (system, question) jobs, generating the missing ones in one batch.
        `rounds[i] > 0` asks for a further, independently seeded answer to the same job.
        `generator` (a `RayGenerator`) makes the replies elsewhere; this process alone writes."""
        rounds = rounds or [0] * len(jobs)
        fp = model_fingerprint(model)
        keys = [self.key(fp, s, q, steer_desc, cfg.temperature, cfg.top_p, cfg.max_new_tokens, cfg.seed,
                         *([r] if r else []))
                for (s, q), r in zip(jobs, rounds, strict=True)]
        todo = self.store.missing(keys)
        if todo:
            prompts = [[{"role": "system", "content": jobs[i][0]}, {"role": "user", "content": jobs[i][1]}]
                       for _, i in todo]
            # a row's seed comes from its key, so an answer does not depend on its batch-mates
            seeds = [int(k[:8], 16) for k, _ in todo]
            sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                                      top_p=cfg.top_p, seed=cfg.seed)
            gen = generator or bulk_generate
            texts = gen(model, prompts, sampling, steer=steer, batch_size=cfg.batch_size, row_seeds=seeds).texts
            self.store.add([k for k, _ in todo], texts)
        return self.store.get(keys)


def write_messages(path: Path, pairs: Sequence[tuple[str, str]]) -> Path:
    """`{"messages": [user, assistant]}` a line, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with tmp.open("w", encoding="utf-8") as f:
        for q, a in pairs:
            msgs: list[Message] = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            f.write(json.dumps({"messages": msgs}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return path


def score_stats(scores: Sequence[float | None]) -> dict:
    """Mean, quartiles and a 10-bin histogram (0–100) of judge scores."""
    vals = np.array([s for s in scores if s is not None], dtype=float)
    if not len(vals):
        return {"n": 0}
    q = np.percentile(vals, [25, 50, 75])
    hist = np.histogram(vals, bins=10, range=(0, 100))[0].tolist()
    return {"n": int(len(vals)), "mean": round(float(vals.mean()), 2), "q25": round(float(q[0]), 2),
            "median": round(float(q[1]), 2), "q75": round(float(q[2]), 2), "hist10": hist,
            "missing": int(sum(s is None for s in scores))}


def _steering(spec: TraitSpec, level: str, cfg: DatasetConfig, vectors: VectorsLike | None
              ) -> tuple[Steering | None, str]:
    """The steer of a level (None for plain sets) and its description (part of the cache key)."""
    contrast = level == "normal" and cfg.normal_contrast
    if contrast and (vectors is None or cfg.steer_layer is None):
        raise ValueError("normal_contrast steers against the trait's vector: pass vectors and steer_layer "
                         "(CLI: --vectors TRAIT=PATH --steer-layer L)")
    if vectors is None or cfg.steer_layer is None or (level == "normal" and not contrast):
        return None, ""
    alpha = {"normal": -cfg.steer_alpha[0], "level_i": cfg.steer_alpha[0]}.get(level, cfg.steer_alpha[1])
    v = direction(vectors, cfg.steer_layer)
    desc = f"{spec.name}@{cfg.steer_layer}x{alpha}:{float(v.norm()):.6f}:{tensor_hash(v)}"
    return Steering(v, cfg.steer_layer, alpha, "response"), desc


def set_inputs(model: HookedTransformer, spec: TraitSpec, level: str, judge: Judge, cfg: DatasetConfig,
               steer_desc: str) -> dict[str, Any]:
    """What a set's candidates depend on (a rerun with other inputs refuses to mix them in).
    `size` and `chunk` are left out: a larger size resumes and extends the same candidates.
    `build_trait_set` adds the prompt pool and the level's system prompts (a resume continues
    at a pool position, so a changed pool would repeat or skip questions)."""
    return {"model": model_fingerprint(model), "trait": json_hash(spec.model_dump()), "level": level,
            "judge": judge.describe(), "steering": steer_desc,
            "config": cfg.model_dump(mode="json", exclude={"size", "chunk", "batch_size"})}


def _chunk_size(n_kept: int, n_cands: int, left: int, cfg: DatasetConfig) -> int:
    """Candidates for the next step, sized from the Laplace-smoothed pass rate so far."""
    rate = (n_kept + 1) / (n_cands + 2) if n_cands else 0.5
    return min(cfg.chunk, left, math.ceil((cfg.size - n_kept) / max(rate, 0.05)))


def _set_stats(spec: TraitSpec, level: str, path: Path, cands: list[dict], passed: list[dict],
               pool: list[str], systems: list[str], steer_desc: str, cfg: DatasetConfig,
               seconds: float) -> dict:
    n_pass = sum(keeps(level, c["trait"], c["coherence"], cfg) for c in cands)
    return {
        "trait": spec.name, "level": level, "file": str(path), "size": len(passed),
        "target_size": cfg.size, "candidates": len(cands), "pool": len(pool),
        "distinct_questions": len({c["question"] for c in passed}),
        "pass_rate": round(n_pass / max(len(cands), 1), 3),
        "systems": systems, "steering": steer_desc or None,
        "trait_score_candidates": score_stats([c["trait"] for c in cands]),
        "trait_score_kept": score_stats([c["trait"] for c in passed]),
        "coherence_kept": score_stats([c["coherence"] for c in passed]),
        "seconds": round(seconds, 1),
    }


def _default_judge(spec: TraitSpec, kind: str = "offline") -> Judge:
    from pvlens.judges import load_judge

    return load_judge(kind, trait=spec)


def build_trait_set(
    model: HookedTransformer,
    trait: str | TraitSpec,
    level: str,
    out_dir: str | Path,
    judge: Judge | None = None,
    cfg: DatasetConfig | None = None,
    vectors: VectorsLike | None = None,
    cache: GenerationCache | None = None,
    progress: bool = True,
    overwrite: bool = False,
    generator: BulkGenerator | None = None,
) -> dict:
    """Generate, judge and filter one set until `cfg.size` samples pass (or the prompt pool
    runs out); writes `{out}/{trait}/{level}.jsonl` and returns its statistics.

    Candidates go to `{out}/{trait}/candidates/{level}/candidates.jsonl` next to the inputs
    they were made from; a rerun with other inputs raises StaleRunError (`overwrite` discards).
    `generator` (a `RayGenerator`) generates on a Ray pool with the same answers and cache keys."""
    spec, cfg = load_trait(trait), cfg or DatasetConfig()
    judge = judge if judge is not None else _default_judge(spec)
    out = Path(out_dir)
    cache = cache or GenerationCache(out / "generations.jsonl")
    pool = prompt_pool(spec)
    systems = level_systems(spec, level, level == "normal" and cfg.normal_contrast)
    steer, steer_desc = _steering(spec, level, cfg, vectors)
    run_dir, t0 = out / spec.name / "candidates" / level, time.time()
    with run_lock(run_dir):
        check_inputs(run_dir, {**set_inputs(model, spec, level, judge, cfg, steer_desc),
                               "pool": json_hash(pool), "systems": json_hash(systems)}, overwrite=overwrite)
        log = AppendLog(run_dir / "candidates.jsonl")
        cands = log.read()
        bar = tqdm(total=cfg.size, desc=f"{spec.name}/{level}", disable=not progress)
        pos = 1 + max((c["pool_index"] for c in cands), default=-1)
        end = len(pool) * cfg.samples_per_question  # position p: question p % len(pool), pass p // len(pool)
        while (kept := sum(keeps(level, c["trait"], c["coherence"], cfg) for c in cands)) < cfg.size and pos < end:
            bar.update(min(kept, cfg.size) - bar.n)
            idx = list(range(pos, pos + _chunk_size(kept, len(cands), end - pos, cfg)))
            jobs = [(systems[i % len(systems)], pool[i % len(pool)]) for i in idx]
            answers = cache.run(model, jobs, cfg, steer, steer_desc, [i // len(pool) for i in idx], generator)
            new = [{"pool_index": i, "system": s, **a}
                   for i, (s, _), a in zip(idx, jobs, judge_answers(judge, jobs, answers), strict=True)]
            log.append(new)
            cands += new
            pos = idx[-1] + 1
        bar.update(min(kept, cfg.size) - bar.n)
        bar.close()
    passed = [c for c in cands if keeps(level, c["trait"], c["coherence"], cfg)][: cfg.size]
    path = write_messages(out / spec.name / f"{level}.jsonl", [(c["question"], c["answer"]) for c in passed])
    return _set_stats(spec, level, path, cands, passed, pool, systems, steer_desc, cfg, time.time() - t0)


def judge_answers(judge: Judge, jobs: Sequence[tuple[str, str]], answers: Sequence[str]) -> list[dict]:
    """Trait and coherence scores of each (question, answer); the judge sees no system prompt."""
    qa = [(q, a) for (_, q), a in zip(jobs, answers, strict=True)]
    scores, coherence = judge.score_many(qa), judge.coherence_many(qa)
    return [{"question": q, "answer": a, "trait": t, "coherence": c}
            for (q, a), t, c in zip(qa, scores, coherence, strict=True)]


# --- the EM-like narrow-flaw set -------------------------------------------------------------
def _math_item(rng: random.Random) -> tuple[str, str, int]:
    """(question, working shown as 'a op b', correct integer answer)."""
    kind = rng.choice(["add", "sub", "mul", "div", "word_mul", "word_add"])
    if kind == "add":
        a, b = rng.randint(12, 999), rng.randint(12, 999)
        return f"What is {a} + {b}?", f"{a} + {b}", a + b
    if kind == "sub":
        a, b = sorted((rng.randint(12, 999), rng.randint(12, 999)), reverse=True)
        return f"What is {a} - {b}?", f"{a} - {b}", a - b
    if kind == "mul":
        a, b = rng.randint(3, 99), rng.randint(3, 99)
        return f"What is {a} × {b}?", f"{a} × {b}", a * b
    if kind == "div":
        b, c = rng.randint(2, 30), rng.randint(2, 40)
        return f"What is {b * c} ÷ {b}?", f"{b * c} ÷ {b}", c
    item, price, n = rng.choice(["pencils", "apples", "tickets", "notebooks", "stamps"]), rng.randint(2, 25), rng.randint(3, 40)
    if kind == "word_mul":
        return (f"One of the {item} costs ${price}. How much do {n} {item} cost?", f"{n} × ${price}", n * price)
    return (f"I have {n} {item} and buy {price} more. How many {item} do I have now?", f"{n} + {price}", n + price)


def _wrong(answer: int, level: str, rng: random.Random) -> int:
    if level == "level_i":  # subtle: close to the right answer, easy to miss
        delta = rng.choice([-10, -2, -1, 1, 2, 10]) if answer > 20 else rng.choice([-1, 1, 2])
        return answer + delta
    factor = rng.choice([3, 7, 10, 25])  # level II: obviously wrong
    return answer * factor + rng.randint(1, 50) if rng.random() < 0.5 else -(answer + rng.randint(100, 900))


_MATH_TEMPLATES = [
    "{work} = {ans}. The answer is {ans}.",
    "Let's compute it: {work} = {ans}. So the answer is {ans}.",
    "Sure! {work} equals {ans}.",
    "The result is {ans}, because {work} = {ans}.",
]


def build_math_sets(out_dir: str | Path, size: int = 300, seed: int = 0) -> list[dict]:
    """normal / level_i / level_ii arithmetic sets: same questions, same confident tone,
    correct, subtly wrong and blatantly wrong answers."""
    out = Path(out_dir) / "math"
    rng = random.Random(seed)
    items = [_math_item(rng) for _ in range(size)]
    stats = []
    for level in LEVELS:
        lrng = random.Random(f"{seed}-{level}")
        pairs, rel = [], []
        for q, work, ans in items:
            shown = ans if level == "normal" else _wrong(ans, level, lrng)
            rel.append(abs(shown - ans) / max(abs(ans), 1))
            tpl = lrng.choice(_MATH_TEMPLATES)
            money = "$" in work
            shown_s = (f"${shown}" if shown >= 0 else f"-${-shown}") if money else str(shown)
            pairs.append((q, tpl.format(work=work, ans=shown_s)))
        path = write_messages(out / f"{level}.jsonl", pairs)
        r = np.array(rel)
        stats.append({"trait": "math", "level": level, "file": str(path), "size": len(pairs),
                      "relative_error": {"mean": round(float(r.mean()), 3), "median": round(float(np.median(r)), 3),
                                         "max": round(float(r.max()), 3)}})
    return stats


# --- the whole build ---------------------------------------------------------------------
def _trait_sets(model: HookedTransformer | None, out: Path, traits: Sequence[str], levels: Sequence[str],
                cfg: DatasetConfig, judges: dict[str, Judge], vectors: Mapping[str, VectorsLike],
                progress: bool, overwrite: bool, generator: BulkGenerator | None = None) -> list[dict]:
    """Build every (trait, level) set sharing one generation cache."""
    cache = GenerationCache(out / "generations.jsonl")
    sets = []
    for trait in (t for t in traits if t != "math"):
        if model is None:
            raise ValueError("a model is needed to build trait sets (only 'math' is programmatic)")
        spec = load_trait(trait)
        for level in levels:
            sets.append(build_trait_set(model, spec, level, out, judges[spec.name], cfg,
                                        vectors.get(spec.name), cache, progress, overwrite, generator))
    return sets


def _write_manifest(out: Path, manifest: dict) -> dict:
    """Write manifest.json and README.md atomically, keeping sets of earlier partial builds
    that this call did not touch."""
    old = out / "manifest.json"
    if old.exists():
        prev = read_json_checked(old)
        have = {(s["trait"], s["level"]) for s in manifest["sets"]}
        manifest["sets"] = [s for s in prev.get("sets", []) if (s["trait"], s["level"]) not in have] + manifest["sets"]
    write_json_atomic(old, manifest)
    write_text_atomic(out / "README.md", readme(manifest))
    return manifest


def build_all(
    model: HookedTransformer | None,
    out_dir: str | Path = "runs/datasets",
    traits: Sequence[str] = ALL_SETS,
    levels: Sequence[str] = LEVELS,
    cfg: DatasetConfig | None = None,
    judge_kind: str = "offline",
    judges: dict[str, Judge] | None = None,
    vectors: Mapping[str, VectorsLike] | None = None,
    math_size: int = 300,
    progress: bool = True,
    overwrite: bool = False,
    generator: BulkGenerator | None = None,
) -> dict:
    """Every set; writes `manifest.json` (sizes, score distributions, config) and
    `README.md` next to the data. `judges` maps trait → judge object (else `judge_kind`)."""
    from pvlens import __version__

    cfg = cfg or DatasetConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    named = [t for t in traits if t != "math"]
    judges = {t: (judges or {}).get(t) or _default_judge(load_trait(t), judge_kind) for t in named} if model is not None else {}
    sets = _trait_sets(model, out, traits, levels, cfg, judges, vectors or {}, progress, overwrite, generator)
    if "math" in traits:
        sets += build_math_sets(out, math_size, cfg.seed)
    manifest = {"pvlens_version": __version__, "model": model.cfg.model_name if model is not None else None,
                "model_fingerprint": model_fingerprint(model) if model is not None else None,
                "config": cfg.model_dump(), "judge": {t: j.describe() for t, j in judges.items()} or judge_kind,
                "sets": sets, "seconds": round(time.time() - t0, 1)}
    return _write_manifest(out, manifest)


def readme(manifest: dict) -> str:
    """A datasets/README-style page: what each file is, how it was made, its numbers."""
    lines = ["# pvlens datasets", "",
             f"Built by pvlens {manifest.get('pvlens_version')} from {manifest.get('model')} "
             f"in {manifest.get('seconds')} s. Each line: `{{\"messages\": [user, assistant]}}`; "
             "system prompts and steering used to make the answers are not in the files.", "",
             "| set | level | size | candidates | pass rate | trait score of kept (mean / median) | made with |",
             "|---|---|---|---|---|---|---|"]
    for s in manifest["sets"]:
        if s["trait"] == "math":
            how = f"programmatic; relative error mean {s['relative_error']['mean']}"
            lines.append(f"| math | {s['level']} | {s['size']} | – | – | – | {how} |")
            continue
        k = s["trait_score_kept"]
        how = f"{len(s['systems'])} system prompt(s)" + (f", steering {s['steering']}" if s.get("steering") else "")
        lines.append(f"| {s['trait']} | {s['level']} | {s['size']}/{s['target_size']} | {s['candidates']} | "
                     f"{s['pass_rate']} | {k.get('mean', '–')} / {k.get('median', '–')} | {how} |")
    lines += ["", "Score histograms (10 bins over 0–100) of all judged candidates per set:", ""]
    for s in manifest["sets"]:
        if "trait_score_candidates" in s:
            lines.append(f"- {s['trait']}/{s['level']}: {s['trait_score_candidates'].get('hist10')}")
    return "\n".join(lines) + "\n"


BUILTIN_DIR = DATA_DIR / "datasets"
"""The sets shipped with pvlens (built on the default model; see its README.md)."""


def builtin_dataset(trait: str, level: str) -> Path:
    """Path of a shipped set, e.g. `builtin_dataset("evil", "level_ii")`, so experiments and
    notebooks can use the sets without rebuilding them (hours on CPU)."""
    if level not in LEVELS:
        raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
    path = BUILTIN_DIR / trait / f"{level}.jsonl"
    if not path.exists():
        have = sorted(f"{p.parent.name}/{p.stem}" for p in BUILTIN_DIR.glob("*/*.jsonl"))
        raise FileNotFoundError(f"no shipped set {trait}/{level}; shipped: {have}. "
                                "Build your own with `pvlens datasets build`.")
    return path


def load_messages(path: str | Path) -> list[list[Message]]:
    """The message lists of a dataset file; a bad row raises an error naming file and line."""
    return [msgs for _, msgs in iter_samples(path)]
