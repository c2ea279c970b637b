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
  BSD-3-Clause), topped up to `fill_tokens` with docstrings of CPython's standard library
  (PSF-2.0) and of BSD-3-Clause packages (numpy, scipy, scikit-learn, pandas, sympy, networkx;
  modules in one seeded order, so a fill that stops early samples all of them).

Generation is continuous batching (`bulk_generate`). On a CPU two one-thread processes decode
~1.4x faster than one two-thread process, so `--shard I/N` runs a slice of the plan (keys by
hash) into its own log, `generated.shard<I>of<N>.jsonl`; a final run without `--shard` finds
nothing left to generate and writes the corpus from every log.

Exact duplicates (same rendered content) are dropped across all sources. `manifest.json` records
rows, duplicates and token counts per source, the generation time and the inputs.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import platform
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

DOCSTRING_PACKAGES = {"numpy": "numpy", "scipy": "scipy", "sklearn": "scikit-learn", "pandas": "pandas",
                      "sympy": "sympy", "networkx": "networkx"}
"""Packages (import name: distribution) whose docstrings may fill the corpus: BSD-3-Clause each,
prose-heavy, and installed with pvlens[sae] or its dependencies (a missing one is skipped)."""
PACKAGE_TEXT_LICENCES = {"pydoc_data": "PSF-2.0 (Python Software Foundation License)",
                         "sklearn_descr": "BSD-3-Clause (scikit-learn)",
                         "docstrings/stdlib": "PSF-2.0 (Python Software Foundation License)",
                         **{f"docstrings/{n}": "BSD-3-Clause" for n in DOCSTRING_PACKAGES}}
MIN_DOCSTRING_CHARS = 200
"""Shorter docstrings (one-liners, "Return x.") add little but format."""


class SaeCorpusConfig(BaseModel):
    """What `build_sae_corpus` generates and collects."""

    model_config = ConfigDict(extra="forbid")

    n_composed: int = Field(3000, ge=0, description="Composed prompts (templates × tasks × topics; at most the grid's 972).")
    replies_per_prompt: int = Field(1, ge=1, description="Conditions each prompt is answered under (consecutive in the cycle, so all differ).")
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

    batch_size: int = Field(64, ge=1, description="Cache slots of continuous batching (64: one CPU thread's best).")
    max_minutes: float | None = Field(None, gt=0, description="Stop generating after this long (rerun to resume).")
    extra: list[Path] = Field(default_factory=list, description="More JSONL/text files to include (rollouts, chat data).")
    package_text: bool = Field(True, description="Include licensed English text from installed packages.")
    shipped_datasets: bool = Field(True, description="Include pvlens's shipped trait datasets.")
    fill_tokens: int | None = Field(None, ge=0, description="Top up with stdlib docstrings until the corpus has this many tokens (None: no fill).")
    shard: tuple[int, int] | None = Field(None, description="(I, N): generate only slice I of N of the plan into its own log; no corpus is written.")


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
    r_n = min(cfg.replies_per_prompt, len(cycle))
    jobs = []
    for i, (pid, user, meta) in enumerate(prompts):
        for r in range(r_n if cycle else 0):
            cond = cycle[(i * r_n + r) % len(cycle)]
            key = f"{cond.name}|{pid}" if r == 0 else f"{cond.name}|{pid}|{r}"
            jobs.append({"key": key, "user": user, "condition": cond,
                         "meta": {**meta, "prompt_id": pid, "condition": cond.name}})
    rng.shuffle(jobs)
    return jobs[: cfg.limit] if cfg.limit is not None else jobs


def corpus_inputs(model: HookedTransformer, cfg: SaeCorpusConfig) -> dict[str, Any]:
    """What the generated replies depend on besides the config and the model's weights: the
    plan's prompt texts (composed, built-in file, trait questions), the trait specs behind the
    system prompts, and the shipped vectors the steered conditions add."""
    from pvlens.core.config import default_layer
    from pvlens.core.device import resolved_dtype_name
    from pvlens.core.fingerprint import json_hash, model_fingerprint, tensor_hash
    from pvlens.traits import builtin_traits, load_trait
    from pvlens.vectors.coerce import direction

    plan = plan_jobs(cfg.model_copy(update={"limit": None}))
    traits = builtin_traits() if cfg.prompt_traits is None else cfg.prompt_traits
    steered = shipped_steer_traits(cfg.steer_traits) if cfg.steer_alpha else []
    return {"config": cfg.model_dump(mode="json"), "model": model_fingerprint(model),
            "plan": json_hash([(j["key"], j["user"]) for j in plan]),
            "traits": {t: json_hash(load_trait(t).model_dump(mode="json")) for t in traits},
            "vectors": {t: tensor_hash(direction(t, default_layer(model))) for t in steered},
            "compute_dtype": resolved_dtype_name("auto", model.W_E.device)}


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


def log_paths(out: Path) -> list[Path]:
    """Every reply log in `out`: `generated.jsonl` and the shards' logs."""
    return sorted(out.glob("generated*.jsonl"))


def shard_log(out: Path, shard: tuple[int, int] | None) -> Path:
    """The log a run appends to: its shard's own file, or `generated.jsonl`."""
    return out / ("generated.jsonl" if shard is None else f"generated.shard{shard[0]}of{shard[1]}.jsonl")


def in_shard(key: str, shard: tuple[int, int] | None) -> bool:
    """Whether a reply belongs to `shard` (by a stable hash of its key)."""
    return shard is None or zlib.crc32(key.encode()) % shard[1] == shard[0]


def generated_rows(out: Path) -> list[dict]:
    """The replies of every log, each key once (the first log that has it wins)."""
    rows: dict[str, dict] = {}
    for path in log_paths(out):
        for r in AppendLog(path).read():
            if isinstance(r, dict) and r.get("key") not in rows:
                rows[r["key"]] = r
    return list(rows.values())


def generate_replies(
    model: HookedTransformer, out: Path, cfg: SaeCorpusConfig, run: RunConfig, progress: bool = True,
) -> dict[str, Any]:
    """Generate the plan's missing replies (of `run.shard`) into its log, grouped by condition."""
    from pvlens.core.bulk import bulk_generate
    from pvlens.core.config import SamplingConfig

    if run.shard is not None and not 0 <= run.shard[0] < run.shard[1]:
        raise ValueError(f"--shard {run.shard[0]}/{run.shard[1]}: expected I/N with 0 <= I < N")
    log = AppendLog(shard_log(out, run.shard))
    done = {r["key"] for r in generated_rows(out)}
    todo = [j for j in plan_jobs(cfg) if j["key"] not in done and in_shard(j["key"], run.shard)]
    by_cond: dict[str, list[dict]] = {}  # one group per steering; system prompts batch together
    for j in todo:
        c = j["condition"]
        by_cond.setdefault(c.name if c.polarity in ("+", "-") else "unsteered", []).append(j)
    sampling = SamplingConfig(max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
                              top_p=cfg.top_p, seed=cfg.seed)
    t0, n_done, stopped = time.monotonic(), 0, False
    for group in _round_robin(list(by_cond.values()), run.batch_size * 4):
        if run.max_minutes is not None and time.monotonic() - t0 > run.max_minutes * 60:
            stopped = True
            break
        steer = _steer(model, group[0]["condition"], cfg.steer_alpha)
        convs = [_messages(_system(j["condition"], zlib.crc32(j["key"].encode())), j["user"]) for j in group]
        res = bulk_generate(model, convs, sampling, steer=steer, batch_size=run.batch_size, dtype="auto",
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


def docstring_modules() -> list[tuple[str, Path, Path]]:
    """(source, package root, module file) of every module whose docstrings may fill the corpus:
    CPython's standard library and the installed DOCSTRING_PACKAGES. Tests, vendored code,
    idlelib, lib2to3 and the stdlib's site-packages are left out."""
    import importlib.util
    import sysconfig

    skip = {"site-packages", "dist-packages", "test", "tests", "testing", "idlelib", "lib2to3",
            "__pycache__", "externals", "_vendor", "vendored"}
    roots = [("docstrings/stdlib", Path(sysconfig.get_paths()["stdlib"]))]
    for name in DOCSTRING_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.origin is not None:
            roots.append((f"docstrings/{name}", Path(spec.origin).parent))
    return [(source, root, p) for source, root in roots for p in sorted(root.rglob("*.py"))
            if not skip & set(p.relative_to(root).parts)]


def docstring_rows(seed: int = 0) -> Iterator[tuple[str, dict]]:
    """Docstrings of the standard library and permissively licensed packages (DOCSTRING_LICENCES),
    one row per module (its module, class and function docstrings of at least
    MIN_DOCSTRING_CHARS, in source order), modules of all packages in one seeded order so a fill
    that stops early samples every package. The text depends on the Python and package versions,
    which the manifest records (`docstring_versions`)."""
    import ast

    modules = docstring_modules()
    random.Random(seed).shuffle(modules)
    for source, root, path in modules:
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, ValueError):
            continue
        docs = [d for node in ast.walk(tree)
                if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
                and (d := ast.get_docstring(node)) and len(d) >= MIN_DOCSTRING_CHARS]
        if docs:
            yield source, {"text": "\n\n".join(docs),
                           "meta": {"module": f"{root.name}/{path.relative_to(root).as_posix()}"}}


def docstring_versions() -> dict[str, str]:
    """Versions of the packages whose docstrings can fill the corpus (Python's for the stdlib)."""
    import importlib.metadata

    out = {"stdlib": platform.python_version()}
    for name, dist in DOCSTRING_PACKAGES.items():
        try:
            out[name] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            continue
    return out


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
    fill: Iterator[tuple[str, dict]] | None = None, fill_tokens: int | None = None,
) -> dict[str, dict[str, int]]:
    """Deduplicate `sources` into `out/corpus.jsonl`, then add rows of `fill` while the corpus
    has fewer than `fill_tokens` tokens; per-source rows / duplicates / documents / tokens."""
    from pvlens.sae.corpus import row_documents

    seen: set[str] = set()
    stats: dict[str, dict[str, int]] = {}
    tmp = out / "corpus.jsonl.tmp"

    def total() -> int:
        return sum(s["tokens"] for s in stats.values())

    filling = iter(()) if fill is None or fill_tokens is None else itertools.takewhile(
        lambda _: total() < fill_tokens, fill)
    with tmp.open("w", encoding="utf-8") as f:
        for rows in [*sources, filling]:
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
    timing = generate_replies(model, out, cfg, run, progress)
    seconds = _add_generation_seconds(out, shard_log(out, run.shard).name, timing["seconds"])
    timing["seconds_total"] = round(sum(seconds.values()), 1)
    timing["seconds_by_log"] = seconds
    if run.shard is not None:  # a slice of the generation only: the unsharded run writes the corpus
        return {"shard": list(run.shard), "generation": timing}
    rows = generated_rows(out)
    sources: list[Iterator[tuple[str, dict]]] = [((generated_source(r["meta"]["condition"]), r) for r in rows)]
    if run.shipped_datasets:
        sources.append(shipped_dataset_rows())
    sources += [file_rows(Path(p)) for p in run.extra]
    if run.package_text:
        sources.append(package_text_rows())
    fill = docstring_rows(cfg.seed) if run.package_text and run.fill_tokens else None
    stats = write_corpus(out, sources, model.tokenizer, fill=fill, fill_tokens=run.fill_tokens)
    manifest = {
        "corpus": str(out / "corpus.jsonl"), "config": cfg.model_dump(mode="json"),
        "model": model_fingerprint(model), "planned_replies": len(plan_jobs(cfg)),
        "generated_replies": len(rows), "generation": timing, "fill_tokens": run.fill_tokens,
        "python": platform.python_version(),
        "docstring_versions": docstring_versions() if fill is not None else {},
        "build_seconds": round(time.monotonic() - t0, 1), "sources": stats,
        "total_tokens": sum(s["tokens"] for s in stats.values()),
        "licences": PACKAGE_TEXT_LICENCES if run.package_text else {},
        "extra": [str(p) for p in run.extra],
    }
    write_json_atomic(out / "manifest.json", manifest)
    return manifest


def _add_generation_seconds(out: Path, log_name: str, seconds: float) -> dict[str, float]:
    """Generation seconds per log, summed over the runs that wrote it (`generation_seconds.json`)."""
    path = out / "generation_seconds.json"
    record = json.loads(path.read_text()) if path.exists() else {}
    record[log_name] = round(record.get(log_name, 0.0) + seconds, 1)
    write_json_atomic(path, record)
    return record


def manifest_table(manifest: dict[str, Any]) -> str:
    """The manifest's per-source token counts as a markdown table (docs/sae.md's generated block)."""
    gen = manifest["generation"]
    lines = ["| source | rows | duplicates dropped | documents | tokens |", "|---|---|---|---|---|"]
    for name, s in manifest["sources"].items():
        lines.append(f"| {name} | {s['rows']} | {s['duplicates']} | {s['documents']} | {s['tokens']} |")
    lines.append(f"| **total** | | | | **{manifest['total_tokens']}** |")
    lines.append("")
    total = manifest["total_tokens"] or 1
    chat = sum(v["tokens"] for k, v in manifest["sources"].items() if k not in PACKAGE_TEXT_LICENCES)
    lines.append(f"Chat text (generated replies, datasets, extra files): {chat} tokens ({100 * chat / total:.0f} %); "
                 f"package text: {total - chat} tokens ({100 * (total - chat) / total:.0f} %).")
    lines.append("")
    logs = {k: v for k, v in gen.get("seconds_by_log", {}).items() if v}
    where = (" in " + ", ".join(f"{k} {v:.0f} s" for k, v in logs.items())) if len(logs) > 1 else ""
    lines.append(f"Generated replies: {manifest['generated_replies']} of {manifest['planned_replies']} planned "
                 f"({'complete' if gen['complete'] else 'incomplete'}), {gen['seconds_total']:.0f} s of generation"
                 f"{where}; collecting and de-duplicating: {manifest['build_seconds']:.0f} s.")
    return "\n".join(lines) + "\n"
