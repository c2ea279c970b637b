"""Text for SAE training: a built-in chat corpus pvlens generates itself, and readers for
the user's own data.

An SAE learns the features of the activations it is trained on. Persona vectors live in the
residual stream of *chat* replies, so the built-in corpus is the default model's own sampled
replies to a broad prompt set (`pvlens/data/sae_prompts.jsonl`, ~380 prompts over 20 topics
and styles) plus every built-in trait's questions under neutral, trait-eliciting and
trait-suppressing system prompts — the contexts whose features the decomposition looks for.
It is generated offline, appended to a JSONL file as batches finish, and resumed by key.

Readers turn any supported source into `Document`s (token ids, chat-templated where the source
is a conversation):

- JSONL chat data, one `{"messages": [...]}` per line (the paper's dataset format);
- pvlens rollouts JSONL (`system`/`question`/`response`, or `prompt_text` + `response`);
- JSONL with a `text` field, and plain `.txt` files (split into windows of `max_len` tokens);
- local Hugging Face datasets saved with `save_to_disk` (rows in any of the forms above).
"""

from __future__ import annotations

import json
import random
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.chat import encode_conversation, encode_messages, stop_token_ids
from pvlens.core.device import as_dtype, resolved_dtype_name
from pvlens.core.fingerprint import json_hash, model_fingerprint
from pvlens.core.generation import generate
from pvlens.io.jsonl import iter_jsonl
from pvlens.io.runs import check_file_inputs

PROMPTS_PATH = Path(__file__).resolve().parent.parent / "data" / "sae_prompts.jsonl"


@dataclass
class Document:
    """One training text as token ids, with where it came from."""

    ids: list[int]
    """Token ids (chat-templated for conversations; no padding)."""
    source: str = ""
    """File (and line/row) it was read from, for top-activating context tables."""
    meta: dict = field(default_factory=dict)
    """Free-form labels (topic, trait, polarity, ...)."""

    def __len__(self) -> int:
        return len(self.ids)


# --- the built-in corpus ---------------------------------------------------------------------


class CorpusConfig(BaseModel):
    """What `build_corpus` generates."""

    model_config = ConfigDict(extra="forbid")

    prompts_path: Path = Field(PROMPTS_PATH, description="JSONL of {'prompt', 'topic'} user prompts.")
    samples_per_prompt: int = Field(2, ge=1, description="Sampled replies per general prompt.")
    traits: list[str] | None = Field(
        None, description="Trait names whose questions are added (None: all built-ins; []: none)."
    )
    trait_samples: int = Field(
        1, ge=0, description="Replies per trait question under each system-prompt condition."
    )
    trait_conditions: list[str] = Field(
        ["neutral", "pos", "neg"],
        description="System prompts for trait questions: 'neutral' (template default), 'pos', 'neg'.",
    )
    max_new_tokens: int = Field(160, ge=1, description="Reply length cap (tokens).")
    temperature: float = Field(0.7, ge=0, description="Sampling temperature (diverse, still fluent).")
    top_p: float = Field(0.95, gt=0, le=1, description="Nucleus sampling mass.")
    seed: int = Field(0, description="Sampling seed (each job's reply depends only on it and the key).")
    batch_size: int = Field(32, ge=1, description="Generation batch size.")
    limit: int | None = Field(None, description="Generate only the first N jobs (quick corpora).")
    dtype: str = Field("auto", description="Generation compute dtype: 'auto' (bf16 where fast), 'float32', 'bfloat16'.")


@dataclass
class CorpusJob:
    """One reply to generate."""

    key: str
    """Unique id; a row with this key in the output file means the job is done."""
    user: str
    """User message."""
    system: str | None
    """System prompt (None: the chat template's default)."""
    meta: dict
    """Labels written with the row."""


def read_prompts(path: Path = PROMPTS_PATH) -> list[dict]:
    """Rows of a prompts JSONL ({'prompt': str, 'topic': str})."""
    rows = []
    for i, line in enumerate(Path(path).read_text().splitlines()):
        if not line.strip():
            continue
        row = json.loads(line)
        if not isinstance(row.get("prompt"), str) or not row["prompt"].strip():
            raise ValueError(f"{path}:{i + 1}: each line needs a non-empty 'prompt' string")
        rows.append(row)
    return rows


def corpus_jobs(cfg: CorpusConfig) -> list[CorpusJob]:
    """Every reply the corpus is made of, in a fixed order (shuffled with `seed`)."""
    jobs = []
    for i, row in enumerate(read_prompts(cfg.prompts_path)):
        for s in range(cfg.samples_per_prompt):
            meta = {"kind": "general", "topic": row.get("topic", ""), "prompt_index": i, "sample": s}
            jobs.append(CorpusJob(f"general/{i}/{s}", row["prompt"], None, meta))
    if cfg.trait_samples > 0:
        for spec in _trait_specs(cfg.traits):
            questions = list(spec.extraction_questions) + list(spec.evaluation_questions)
            for q_idx, q in enumerate(questions):
                for cond in cfg.trait_conditions:
                    for s in range(cfg.trait_samples):
                        # cycle through the instruction pairs so every one is used
                        inst = (q_idx + s) % len(spec.instructions)
                        system = None if cond == "neutral" else spec.system_prompt(cond, inst)
                        meta = {"kind": "trait", "trait": spec.name, "condition": cond,
                                "question_index": q_idx, "instruction": inst, "sample": s}
                        jobs.append(CorpusJob(f"{spec.name}/{cond}/{q_idx}/{s}", q, system, meta))
    random.Random(cfg.seed).shuffle(jobs)  # a --limit'ed corpus still covers every topic
    return jobs[: cfg.limit] if cfg.limit is not None else jobs


def _trait_specs(names: Sequence[str] | None) -> list:
    from pvlens.traits import builtin_traits, load_trait

    names = builtin_traits() if names is None else list(names)
    return [load_trait(n) for n in names]


def _done_keys(path: Path) -> set[str]:
    keys: set[str] = set()
    if not path.exists():
        return keys
    for line in path.read_text().splitlines():
        try:
            keys.add(json.loads(line)["key"])
        except (json.JSONDecodeError, KeyError, TypeError):
            continue  # a line cut by a killed run: the job is redone
    return keys


def build_corpus(
    model: HookedTransformer, out: str | Path, cfg: CorpusConfig | None = None, progress: bool = True
) -> Path:
    """Generate the built-in chat corpus into `out` (JSONL, one conversation a line).

    Each line is `{"key", "messages": [system?, user, assistant], "meta"}`. Rows are appended as
    batches finish; rerunning skips keys already present, so a killed run resumes.
    """
    cfg = cfg or CorpusConfig()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    check_file_inputs(out, corpus_inputs(model, cfg))
    done = _done_keys(out)
    todo = [j for j in corpus_jobs(cfg) if j.key not in done]
    _repair_tail(out)
    chunk = cfg.batch_size * 4
    bar = tqdm(total=len(todo), desc="corpus", disable=not progress or not todo)
    dtype = as_dtype(cfg.dtype, model.W_E.device)
    for start in range(0, len(todo), chunk):
        group = todo[start : start + chunk]
        conversations = [_messages(job.system, job.user) for job in group]
        res = generate(
            model, conversations, max_new_tokens=cfg.max_new_tokens, temperature=cfg.temperature,
            top_p=cfg.top_p, seed=_batch_seed(cfg.seed, group[0].key), batch_size=cfg.batch_size,
            progress=False, dtype=dtype,
        )
        rows = [
            {"key": job.key, "messages": [*msgs, {"role": "assistant", "content": text}],
             "meta": {**job.meta, "finished": fin}}
            for job, msgs, text, fin in zip(group, conversations, res.texts, res.finished, strict=True)
        ]
        with out.open("a") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
        bar.update(len(group))
    bar.close()
    return out


def corpus_inputs(model: HookedTransformer, cfg: CorpusConfig) -> dict[str, object]:
    """What the generated replies depend on (recorded in `<corpus>.inputs.json`): the model's
    weights, every job's text (prompts file and trait specs), the sampling settings, the batch
    size (a batch's seed comes from its first job) and the resolved dtype. Not `limit`: a larger
    limit resumes and extends the same corpus."""
    jobs = corpus_jobs(cfg.model_copy(update={"limit": None}))
    return {"model": model_fingerprint(model), "jobs": json_hash([(j.key, j.system, j.user) for j in jobs]),
            "config": cfg.model_dump(mode="json", exclude={"limit", "prompts_path", "dtype"}),
            "compute_dtype": resolved_dtype_name(cfg.dtype, model.W_E.device, model.cfg.dtype)}


def _messages(system: str | None, user: str) -> list[dict]:
    head = [{"role": "system", "content": system}] if system is not None else []
    return [*head, {"role": "user", "content": user}]


def _batch_seed(seed: int, key: str) -> int:
    """A batch's sampling seed from the run seed and its first job's key: a fresh run is
    reproducible, and a resumed run does not replay the samples of the batches before it."""
    return (seed * 1_000_003 + zlib.crc32(key.encode())) % (2**31)


def _repair_tail(path: Path) -> None:
    """Drop a partial last line left by a killed run (so appends start on a fresh line)."""
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        text = path.read_text()
        path.write_text(text[: text.rfind("\n") + 1])


# --- readers -------------------------------------------------------------------------------


def read_documents(
    sources: str | Path | Sequence[str | Path], tokenizer, max_len: int = 512
) -> list[Document]:
    """Documents from JSONL (chat / rollouts / text), .txt files or `save_to_disk` datasets.

    Conversations are rendered with the tokenizer's chat template; texts longer than `max_len`
    tokens are split into windows (each window is a document: SAE training sees positions
    0..max_len-1 only, and position 0 is excluded downstream — see `provider`).
    """
    if isinstance(sources, str | Path):
        sources = [sources]
    docs: list[Document] = []
    for src in sources:
        path = Path(src)
        if not path.exists():
            raise FileNotFoundError(
                f"corpus source {path} does not exist; build one with `pvlens sae build-corpus` "
                "or pass a JSONL / .txt file or a datasets.save_to_disk folder"
            )
        if path.is_dir():
            rows: Iterable[tuple[str, dict]] = _dataset_rows(path)
        elif path.suffix == ".jsonl":
            rows = _jsonl_rows(path)
        else:
            rows = [(str(path), {"text": path.read_text()})]
        for where, row in rows:
            docs.extend(row_documents(row, where, tokenizer, max_len))
    if not docs:
        raise ValueError(f"no documents found in {[str(s) for s in sources]}")
    return docs


def _jsonl_rows(path: Path) -> Iterator[tuple[str, dict]]:
    for i, row in iter_jsonl(path):
        yield f"{path.name}:{i}", row


def _dataset_rows(path: Path) -> Iterator[tuple[str, dict]]:
    try:
        from datasets import load_from_disk
    except ImportError as e:  # pragma: no cover - datasets comes with sae_lens
        raise ImportError("reading a dataset folder needs `pip install datasets`") from e
    try:
        ds = load_from_disk(str(path))
    except FileNotFoundError as e:
        raise ValueError(f"{path} is a folder but not a `datasets.save_to_disk` dataset") from e
    if hasattr(ds, "keys"):  # a DatasetDict: use the train split (or the first one)
        split = "train" if "train" in ds else next(iter(ds.keys()))
        ds = ds[split]
    for i, row in enumerate(ds):
        yield f"{path.name}[{i}]", row


def row_documents(row: dict, where: str, tokenizer, max_len: int) -> list[Document]:
    meta = row.get("meta") if isinstance(row.get("meta"), dict) else {}
    if "messages" in row:
        ids = _chat_ids(tokenizer, row["messages"], where)
    elif "response" in row and "prompt_text" in row and not row.get("question"):
        ids = tokenizer(row["prompt_text"], add_special_tokens=False)["input_ids"]
        ids += tokenizer(row["response"], add_special_tokens=False)["input_ids"]
        ids += _end_of_turn(tokenizer)
    elif ("question" in row or "prompt" in row) and ("response" in row or "answer" in row):
        messages = [{"role": "system", "content": row["system"]}] if row.get("system") else []
        messages.append({"role": "user", "content": row.get("question") or row.get("prompt")})
        messages.append({"role": "assistant", "content": row.get("response") or row.get("answer")})
        ids = _chat_ids(tokenizer, messages, where)
    elif "text" in row:
        ids = tokenizer(row["text"], add_special_tokens=False)["input_ids"]
    else:
        raise ValueError(
            f"{where}: unrecognised row with keys {sorted(row)}; expected 'messages', "
            "'prompt_text'+'response', 'question'+'response', or 'text'"
        )
    ids = list(ids)
    return [
        Document(ids[i : i + max_len], where, dict(meta))
        for i in range(0, len(ids), max_len)
        if len(ids[i : i + max_len]) >= 2
    ]


def _chat_ids(tokenizer, messages, where: str) -> list[int]:
    if not isinstance(messages, list) or not messages:
        raise ValueError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
    if messages[-1].get("role") == "assistant":
        return encode_conversation(tokenizer, messages).ids
    return encode_messages(tokenizer, messages).ids


def _end_of_turn(tokenizer) -> list[int]:
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>"):
        if marker in vocab:
            return [vocab[marker]]
    stops = stop_token_ids(tokenizer)
    return [min(stops)] if stops else []


def split_documents(
    docs: Sequence[Document], holdout_fraction: float, seed: int = 0
) -> tuple[list[Document], list[Document]]:
    """(train, held-out) split by document, reproducible from `seed`.

    Held-out documents never reach training, so evaluation measures generalisation to new
    texts rather than to new positions of texts the SAE has seen.
    """
    if not 0 <= holdout_fraction < 1:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {holdout_fraction}")
    order = list(range(len(docs)))
    random.Random(seed).shuffle(order)
    n_held = round(len(docs) * holdout_fraction)
    if holdout_fraction > 0 and len(docs) > 1:
        n_held = max(1, n_held)
    held = sorted(order[:n_held])
    held_set = set(held)
    return [d for i, d in enumerate(docs) if i not in held_set], [docs[i] for i in held]
