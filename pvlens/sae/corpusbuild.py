"""`pvlens sae build-corpus`: a reproducible, deduplicated SAE corpus with a manifest.

Two kinds of source go into `<out>/corpus.jsonl` (rows `{"messages"|"text", "source", "meta"}`):

- **generated**: the model's own chat replies to the prompt plan (`pvlens.sae.promptplan`:
  templates × tasks × topics, the built-in `sae_prompts.jsonl`, every trait's questions), each
  answered neutrally, under a trait's eliciting / suppressing system prompt, or steered along a
  shipped persona vector (+α and −α). Replies go to `<out>/generated.jsonl` (an `AppendLog`) as
  batches finish; a rerun with the same inputs (checked, `pvlens.io.runs.check_inputs`) skips
  the keys already there. Each reply's sampling seed comes from the run seed and its key, so
  it does not depend on batching or on where a previous run stopped.
- **existing text**: model-generated text that ships with pvlens (the trait datasets), files the
  user names (`--extra`, e.g. rollouts), and English text from installed packages whose licence
  allows reuse (Python's `pydoc_data` topics, PSF-2.0; scikit-learn's dataset descriptions,
  BSD-3-Clause).

Exact duplicates (same rendered content) are dropped across all sources. `manifest.json` records
rows, duplicates and token counts per source, the generation time and the inputs.
"""

from __future__ import annotations

import hashlib
import json
import random
import time
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from transformer_lens import HookedTransformer

from pvlens.io.atomic import write_json_atomic
from pvlens.io.jsonl import AppendLog, iter_jsonl
from pvlens.sae.promptplan import Condition, composed_prompts, conditions

PACKAGE_TEXT_LICENCES = {"pydoc_data": "PSF-2.0 (Python Software Foundation License)",
                         "sklearn_descr": "BSD-3-Clause (scikit-learn)"}


class SaeCorpusConfig(BaseModel):
    """What `build_sae_corpus` generates and collects."""

    model_config = ConfigDict(extra="forbid")

    n_composed: int = Field(3000, ge=0, description="Composed prompts (templates × tasks × topics).")
    builtin_prompts: bool = Field(True, description="Add pvlens/data/sae_prompts.jsonl (~380 prompts).")
    trait_questions: bool = Field(True, description="Add every built-in trait's 40 questions.")
    prompt_traits: list[str] | None = Field(None, description="Traits whose system prompts are conditions (None: all built-ins).")
    steer_traits: list[str] | None = Field(None, description="Traits steered ± along their shipped vector (None: all shipped).")
    steer_alpha: float = Field(4.0, ge=0, description="Steering strength in units of the raw vector (α≈4 is visibly evil at layer 15).")
    neutral_weight: int = Field(7, ge=0, description="Neutral replies per cycle of conditions (the rest: one per system prompt / steer sign).")
    max_new_tokens: int = Field(128, ge=1, description="Reply length cap (tokens).")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature.")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int = Field(0, description="Seed for the plan's order and each reply's sampling.")
    limit: int | None = Field(None, ge=0, description="Generate only the first N jobs of the shuffled plan (a balanced subset).")


class RunConfig(BaseModel):
    """How `build_sae_corpus` runs (does not change the corpus)."""

    model_config = ConfigDict(extra="forbid")

    batch_size: int = Field(32, ge=1, description="Generation batch size.")
    max_minutes: float | None = Field(None, gt=0, description="Stop generating after this long (rerun to resume).")
    extra: list[Path] = Field(default_factory=list, description="More JSONL/text files to include (rollouts, chat data).")
    package_text: bool = Field(True, description="Include licensed English text from installed packages.")
    shipped_datasets: bool = Field(True, description="Include pvlens's shipped trait datasets.")


# --- the generation plan -----------------------------------------------------------------------


def plan_jobs(cfg: SaeCorpusConfig) -> list[dict[str, Any]]:
    """Every reply of the plan: {'key', 'user', 'condition', 'meta'}, shuffled with the seed."""
    from pvlens.sae.corpus import read_prompts
    from pvlens.traits import builtin_traits, load_trait

    prompts = [(f"grid/{i}", p["prompt"], {k: p[k] for k in ("template", "task", "topic")})
               for i, p in enumerate(composed_prompts(cfg.n_composed, cfg.seed))]
    if cfg.builtin_prompts:
        prompts += [(f"builtin/{i}", r["prompt"], {"topic": r.get("topic", "")})
                    for i, r in enumerate(read_prompts())]
    traits = builtin_traits() if cfg.prompt_traits is None else cfg.prompt_traits
    if cfg.trait_questions:
        for t in traits:
            spec = load_trait(t)
            qs = list(spec.extraction_questions) + list(spec.evaluation_questions)
            prompts += [(f"q/{t}/{i}", q, {"question_trait": t}) for i, q in enumerate(qs)]
    cycle = conditions(traits, shipped_steer_traits(cfg.steer_traits), cfg.neutral_weight)
    rng = random.Random(cfg.seed)
    rng.shuffle(prompts)
    jobs = [{"key": f"{cycle[i % len(cycle)].name}|{pid}", "user": user, "condition": cycle[i % len(cycle)],
             "meta": {**meta, "prompt_id": pid, "condition": cycle[i % len(cycle)].name}}
            for i, (pid, user, meta) in enumerate(prompts)] if cycle else []
    rng.shuffle(jobs)
    return jobs[: cfg.limit] if cfg.limit is not None else jobs


def corpus_inputs(model: HookedTransformer, cfg: SaeCorpusConfig) -> dict[str, Any]:
    """What the generated replies depend on besides the config and the model's weights: the
    plan's prompt texts (composed, built-in file, trait questions), the trait specs behind the
    system prompts, and the shipped vectors the steered conditions add."""
    from pvlens.core.config import default_layer
    from pvlens.core.fingerprint import json_hash, model_fingerprint, tensor_hash
    from pvlens.traits import builtin_traits, load_trait
    from pvlens.vectors.coerce import direction

    plan = plan_jobs(cfg.model_copy(update={"limit": None}))
    traits = builtin_traits() if cfg.prompt_traits is None else cfg.prompt_traits
    steered = shipped_steer_traits(cfg.steer_traits) if cfg.steer_alpha else []
    return {"config": cfg.model_dump(mode="json"), "model": model_fingerprint(model),
            "plan": json_hash([(j["key"], j["user"]) for j in plan]),
            "traits": {t: json_hash(load_trait(t).model_dump(mode="json")) for t in traits},
            "vectors": {t: tensor_hash(direction(t, default_layer(model))) for t in steered}}


def shipped_steer_traits(names: list[str] | None) -> list[str]:
    """Traits with a shipped vector for the default model (or `names`)."""
    if names is not None:
        return list(names)
    from importlib import resources

    from pvlens.vectors.persona import DEFAULT_MODEL_KEY

    folder = Path(str(resources.files("pvlens"))) / "data" / "vectors" / DEFAULT_MODEL_KEY
    return sorted(p.stem for p in folder.glob("*.safetensors"))


def _system(cond: Condition, index: int) -> str | None:
    if cond.polarity not in ("pos", "neg") or cond.trait is None:
        return None
    from pvlens.traits import load_trait

    spec = load_trait(cond.trait)
    return spec.system_prompt(cond.polarity, index % len(spec.instructions))


def _steer(model: HookedTransformer, cond: Condition, alpha: float):
    if cond.polarity not in ("+", "-") or cond.trait is None:
        return None
    from pvlens.core.config import default_layer
    from pvlens.core.steering import Steering
    from pvlens.vectors.coerce import direction

    layer = default_layer(model)
    sign = 1.0 if cond.polarity == "+" else -1.0
    return Steering(direction(cond.trait, layer), layer, sign * alpha, "response")


def _round_robin(groups: list[list[dict]], size: int) -> Iterator[list[dict]]:
    """Chunks of `size` jobs taking turns between groups, so a time-limited run gets some of
    every condition (steered replies included) rather than all of the first group."""
    chunks = [[g[i : i + size] for i in range(0, len(g), size)] for g in groups]
    for i in range(max((len(c) for c in chunks), default=0)):
        for c in chunks:
            if i < len(c):
                yield c[i]


def row_seed(seed: int, key: str) -> int:
    """A reply's sampling seed: from the run seed and its key only."""
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (2**31)


def generate_replies(
    model: HookedTransformer, log: AppendLog, cfg: SaeCorpusConfig, run: RunConfig, progress: bool = True,
) -> dict[str, Any]:
    """Generate the plan's missing replies into `log`, grouped by condition; returns timing."""
    from pvlens.core.generation import generate

    done = {r.get("key") for r in log.read() if isinstance(r, dict)}
    todo = [j for j in plan_jobs(cfg) if j["key"] not in done]
    by_cond: dict[str, list[dict]] = {}  # one group per steering; system prompts batch together
    for j in todo:
        c = j["condition"]
        by_cond.setdefault(c.name if c.polarity in ("+", "-") else "unsteered", []).append(j)
    t0, n_done, stopped = time.monotonic(), 0, False
    for group in _round_robin(list(by_cond.values()), run.batch_size * 2):
        if run.max_minutes is not None and time.monotonic() - t0 > run.max_minutes * 60:
            stopped = True
            break
        steer = _steer(model, group[0]["condition"], cfg.steer_alpha)
        convs = [_messages(_system(j["condition"], zlib.crc32(j["key"].encode())), j["user"]) for j in group]
        res = generate(model, convs, steer=steer, max_new_tokens=cfg.max_new_tokens,
                       temperature=cfg.temperature, top_p=cfg.top_p, seed=cfg.seed,
                       batch_size=run.batch_size, progress=False,
                       row_seeds=[row_seed(cfg.seed, j["key"]) for j in group])
        log.append([{"key": j["key"], "messages": [*m, {"role": "assistant", "content": text}],
                     "meta": {**j["meta"], "finished": fin}}
                    for j, m, text, fin in zip(group, convs, res.texts, res.finished, strict=True)])
        n_done += len(group)
        if progress:
            print(f"corpus: {len(done) + n_done}/{len(done) + len(todo)} replies "
                  f"({time.monotonic() - t0:.0f} s)", flush=True)
    return {"seconds": round(time.monotonic() - t0, 1), "generated_now": n_done,
            "complete": not stopped and n_done == len(todo)}


def generated_source(condition: str) -> str:
    """Manifest source of a generated reply: neutral, system-prompted or steered."""
    if condition.startswith("steer:"):
        return "generated/steered"
    return "generated/neutral" if condition == "neutral" else "generated/system_prompt"


def _messages(system: str | None, user: str) -> list[dict]:
    head = [{"role": "system", "content": system}] if system is not None else []
    return [*head, {"role": "user", "content": user}]


# --- existing text -----------------------------------------------------------------------------


def package_text_rows() -> Iterator[tuple[str, dict]]:
    """English text from installed packages whose licence allows reuse (see PACKAGE_TEXT_LICENCES)."""
    try:
        from pydoc_data import topics as pydoc_topics
    except ImportError:  # pragma: no cover - part of CPython
        pydoc_topics = None
    topics: dict[str, str] = dict(pydoc_topics.topics) if pydoc_topics is not None else {}
    for name in sorted(topics):
        yield "pydoc_data", {"text": topics[name], "meta": {"topic": name}}
    try:
        import sklearn
    except ImportError:  # pragma: no cover - sklearn is a pvlens[sae] dependency
        return
    for path in sorted((Path(sklearn.__file__).parent / "datasets" / "descr").glob("*.rst")):
        yield "sklearn_descr", {"text": path.read_text(encoding="utf-8"), "meta": {"file": path.name}}


def shipped_dataset_rows() -> Iterator[tuple[str, dict]]:
    """pvlens's shipped trait datasets (the default model's replies; see their README)."""
    root = Path(__file__).resolve().parent.parent / "data" / "datasets"
    for path in sorted(root.glob("*/*.jsonl")):
        for _, row in iter_jsonl(path):
            yield f"datasets/{path.parent.name}", {"messages": row["messages"],
                                                    "meta": {"set": f"{path.parent.name}/{path.stem}"}}


def file_rows(path: Path) -> Iterator[tuple[str, dict]]:
    """Rows of a user-named JSONL (chat / rollouts / text) or a plain text file."""
    if path.suffix != ".jsonl":
        yield path.name, {"text": path.read_text(encoding="utf-8")}
        return
    for _, row in iter_jsonl(path):
        if isinstance(row, dict):
            yield path.name, row


def content_hash(row: dict) -> str:
    """Hash of what a row renders to (messages or text), for exact de-duplication."""
    body = row.get("messages") if "messages" in row else {k: row.get(k) for k in
                                                          ("system", "question", "prompt", "prompt_text",
                                                           "response", "answer", "text")}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()[:24]


def write_corpus(
    out: Path, sources: list[Iterator[tuple[str, dict]]], tokenizer, max_len: int = 512,
) -> dict[str, dict[str, int]]:
    """Deduplicate `sources` into `out/corpus.jsonl`; per-source rows / duplicates / documents / tokens."""
    from pvlens.sae.corpus import row_documents

    seen: set[str] = set()
    stats: dict[str, dict[str, int]] = {}
    tmp = out / "corpus.jsonl.tmp"
    with tmp.open("w", encoding="utf-8") as f:
        for rows in sources:
            for source, row in rows:
                s = stats.setdefault(source, {"rows": 0, "duplicates": 0, "documents": 0, "tokens": 0})
                h = content_hash(row)
                if h in seen:
                    s["duplicates"] += 1
                    continue
                seen.add(h)
                docs = row_documents(row, source, tokenizer, max_len)
                s["rows"] += 1
                s["documents"] += len(docs)
                s["tokens"] += sum(len(d) for d in docs)
                f.write(json.dumps({**row, "source": source}, ensure_ascii=False) + "\n")
    tmp.replace(out / "corpus.jsonl")
    return stats


def build_sae_corpus(
    model: HookedTransformer, out: str | Path, cfg: SaeCorpusConfig | None = None,
    run: RunConfig | None = None, progress: bool = True,
) -> dict[str, Any]:
    """Generate (resumably) and collect the corpus into `out`; returns the manifest."""
    from pvlens.core.fingerprint import model_fingerprint
    from pvlens.io.runs import check_inputs

    cfg, run = cfg or SaeCorpusConfig(), run or RunConfig()
    out = Path(out)
    t0 = time.monotonic()
    check_inputs(out, corpus_inputs(model, cfg))
    log = AppendLog(out / "generated.jsonl")
    timing = generate_replies(model, log, cfg, run, progress)
    old = out / "manifest.json"
    before = json.loads(old.read_text())["generation"].get("seconds_total", 0.0) if old.exists() else 0.0
    timing["seconds_total"] = round(before + timing["seconds"], 1)
    sources: list[Iterator[tuple[str, dict]]] = [
        ((generated_source(r["meta"]["condition"]), r) for r in log.read() if isinstance(r, dict))]
    if run.shipped_datasets:
        sources.append(shipped_dataset_rows())
    sources += [file_rows(Path(p)) for p in run.extra]
    if run.package_text:
        sources.append(package_text_rows())
    stats = write_corpus(out, sources, model.tokenizer)
    manifest = {
        "corpus": str(out / "corpus.jsonl"), "config": cfg.model_dump(mode="json"),
        "model": model_fingerprint(model), "planned_replies": len(plan_jobs(cfg)),
        "generated_replies": len(log.read()), "generation": timing,
        "build_seconds": round(time.monotonic() - t0, 1), "sources": stats,
        "total_tokens": sum(s["tokens"] for s in stats.values()),
        "licences": PACKAGE_TEXT_LICENCES if run.package_text else {},
        "extra": [str(p) for p in run.extra],
    }
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def manifest_table(manifest: dict[str, Any]) -> str:
    """The manifest's per-source token counts as a markdown table (docs/sae.md's generated block)."""
    gen = manifest["generation"]
    lines = ["| source | rows | duplicates dropped | documents | tokens |", "|---|---|---|---|---|"]
    for name, s in manifest["sources"].items():
        lines.append(f"| {name} | {s['rows']} | {s['duplicates']} | {s['documents']} | {s['tokens']} |")
    lines.append(f"| **total** | | | | **{manifest['total_tokens']}** |")
    lines.append("")
    lines.append(f"Generated replies: {manifest['generated_replies']} of {manifest['planned_replies']} planned "
                 f"({'complete' if gen['complete'] else 'incomplete'}), {gen['seconds_total']:.0f} s of generation.")
    return "\n".join(lines) + "\n"
