"""The screening run: stream the dataset in chunks, get the base model's replies, project both
sides, append each chunk's per-sample results, resume after a kill.

A run folder is keyed by every input that determines its numbers (data content, the unit
vector, the layer, the model's full fingerprint, the context size, the result-changing config
fields); a rerun with other inputs refuses and names them (`overwrite=True` discards).

Long inputs: a sample is *skipped* when its prompt plus the longer of its reply and the base
reply cap (`max_new_tokens`) does not fit the model's context (`model.cfg.n_ctx`); a sample
with more than `CHARS_PER_TOKEN_BOUND × n_ctx` characters is skipped without tokenising. A
skipped sample is recorded in the results (`"skipped": "too_long"`) and counted in
`screen.json`, so memory per sample is bounded by the context and one sample never stops a run.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from pydantic import Field
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.chat import EncodedChat, Message, encode_conversation
from pvlens.core.config import Config
from pvlens.core.fingerprint import model_fingerprint, tensor_hash
from pvlens.io.atomic import write_json_atomic
from pvlens.io.jsonl import AppendLog
from pvlens.io.runs import INPUTS_FILE, StaleRunError, check_inputs, run_lock
from pvlens.monitor import default_layer, project
from pvlens.trainsets.screen import kernel
from pvlens.trainsets.screen.base_replies import BaseReplies
from pvlens.trainsets.screen.io import (
    Sample,
    ScreenError,
    chunks,
    data_fingerprint,
    iter_samples,
    read_results,
    shard_tag,
)
from pvlens.trainsets.screen.summary import ScreenSummary, finish
from pvlens.vectors.coerce import VectorsLike, as_persona_vectors, unit_direction

CHARS_PER_TOKEN_BOUND = 64
"""A sample longer than this many characters per context token is skipped untokenised."""


class ScreenConfig(Config):
    """How to screen a dataset."""

    layer: int | None = None
    """Block to project at (None: the vectors' recorded choice, else the middle block)."""
    chunk_size: int = Field(256, ge=1)
    """Samples read, scored and appended per chunk (the resume unit)."""
    max_batch: int = Field(16, ge=1)
    """Largest batch of the activation passes."""
    max_tokens: int = Field(4096, ge=64)
    """Padded tokens per activation batch."""
    max_new_tokens: int = Field(64, ge=1)
    """Length cap of the base model's greedy replies."""
    gen_batch_size: int = Field(16, ge=1)
    """Batch size for generating base replies."""
    top_k: int = Field(20, ge=0)
    """Samples exported to flagged.jsonl."""
    cosine: bool = False
    """Cosine instead of projection."""
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """Compute dtype: auto (bf16 where the CPU is fast at it), float32, bfloat16, float16."""


@dataclass(frozen=True)
class ModelFacts:
    """What a run needs to know of its model without holding it (a Ray driver asks a worker)."""

    name: str
    """The model's name (recorded in meta.json)."""
    fingerprint: str
    """`model_fingerprint` of every weight (the run's and the reply cache's key)."""
    n_layers: int
    """Blocks."""
    d_model: int
    """Residual width."""
    n_ctx: int
    """Context size (decides which samples are skipped as too long)."""
    dtype: str
    """The resolved compute dtype of the activation passes."""


def model_facts(model: HookedTransformer, cfg: ScreenConfig) -> ModelFacts:
    """The facts of `model` that key a run under `cfg`."""
    return ModelFacts(model.cfg.model_name, model_fingerprint(model), model.cfg.n_layers, model.cfg.d_model,
                      model.cfg.n_ctx, str(resolved_dtype(model, cfg)))


def direction_for(n_layers: int, d_model: int, vectors: VectorsLike, layer: int | None) -> tuple[int, Tensor]:
    """The layer to project at (in 0..n_layers-1) and the unit vector there, for a model of this shape."""
    if layer is None:  # the vectors' recorded choice (a sweep next to the file), else the middle
        layer = default_layer(as_persona_vectors(vectors) if isinstance(vectors, Mapping) else vectors, n_layers)
    if not -n_layers <= layer < n_layers:
        raise ScreenError(f"--layer {layer} is out of range for a {n_layers}-layer model")
    layer %= n_layers
    u = unit_direction(vectors, layer)
    if u.shape[0] != d_model:
        raise ScreenError(f"vectors have d_model {u.shape[0]} but the model has {d_model}")
    return layer, u


def resolve_direction(model: HookedTransformer, vectors: VectorsLike, layer: int | None) -> tuple[int, Tensor]:
    """The layer to project at (in 0..n_layers-1) and the unit vector there."""
    return direction_for(model.cfg.n_layers, model.cfg.d_model, vectors, layer)


def resolved_dtype(model: HookedTransformer, cfg: ScreenConfig) -> torch.dtype:
    """The dtype the activation passes run in ('auto' decided for this machine)."""
    return kernel.compute_dtype(cfg.dtype, model.W_E.device) or model.cfg.dtype


def run_inputs(model: HookedTransformer | ModelFacts, data: str | Path, split: str | None, u: Tensor,
               layer: int, cfg: ScreenConfig) -> dict[str, Any]:
    """Everything that determines a run's per-sample results (recorded in inputs.json)."""
    facts = model if isinstance(model, ModelFacts) else model_facts(model, cfg)
    return {
        "data": data_fingerprint(data), "split": split, "vectors": tensor_hash(u), "layer": layer,
        "model": facts.fingerprint, "n_ctx": facts.n_ctx, "long_inputs": "skip",
        "config": {"cosine": cfg.cosine, "max_new_tokens": cfg.max_new_tokens, "dtype": facts.dtype},
    }


def prepare_folder(out: Path, inputs: dict[str, Any], overwrite: bool) -> None:
    """Resume (same inputs), refuse (other inputs, or results with no record of inputs), or
    start afresh (`overwrite`)."""
    if not overwrite and not (out / INPUTS_FILE).exists() and any(out.glob("results*.jsonl")):
        raise StaleRunError(f"{out} holds screening results with no record of their inputs (inputs.json); "
                            "use a new output folder, or pass --overwrite (overwrite=True) to discard them")
    check_inputs(out, inputs, overwrite=overwrite)


def too_long(messages: list[Message], n_ctx: int) -> bool:
    """True when the text alone shows the sample cannot fit the context (no tokenising)."""
    return sum(len(m["content"]) for m in messages) > CHARS_PER_TOKEN_BOUND * n_ctx


def _skipped(index: int, tokens: int | None) -> dict[str, Any]:
    return {"index": index, "skipped": "too_long", "tokens": tokens}


def _encode_fitting(model: HookedTransformer, chunk: list[Sample], cfg: ScreenConfig
                    ) -> tuple[list[tuple[int, list[Message], EncodedChat]], list[dict]]:
    """Tokenise the chunk's samples; those that do not fit the context are set aside as skipped."""
    n_ctx, keep, skipped = model.cfg.n_ctx, [], []
    for index, msgs in chunk:
        if too_long(msgs, n_ctx):
            skipped.append(_skipped(index, None))
            continue
        chat = encode_conversation(model.tokenizer, msgs)
        if chat.prompt_len + max(chat.response_len, cfg.max_new_tokens) > n_ctx:
            skipped.append(_skipped(index, len(chat.ids)))
        else:
            keep.append((index, msgs, chat))
    return keep, skipped


def screen_chunk(model: HookedTransformer, chunk: list[Sample], base: BaseReplies, u: Tensor,
                 layer: int, cfg: ScreenConfig) -> list[dict]:
    """Per-sample results of one chunk (skipped samples included as such)."""
    fitting, skipped = _encode_fitting(model, chunk, cfg)
    if not fitting:
        return skipped
    prompts = [msgs[:-1] for _, msgs, _ in fitting]
    replies = base.get(prompts)
    data_chats = [c for _, _, c in fitting]
    base_chats = [encode_conversation(model.tokenizer, [*p, {"role": "assistant", "content": r}])
                  for p, r in zip(prompts, replies, strict=True)]
    acts = kernel.paired_activations(model, data_chats, base_chats, layer, cfg.max_tokens,
                                     cfg.max_batch, resolved_dtype(model, cfg))
    proj = {k: project(v, u, cfg.cosine).tolist() for k, v in acts.items()}
    recs = []
    for j, (index, _, chat) in enumerate(fitting):
        recs.append({"index": index, "proj": proj["data"][j], "base": proj["base"][j],
                     "delta": proj["data"][j] - proj["base"][j],
                     "last_prompt": proj["last_prompt"][j], "prompt_avg": proj["prompt_avg"][j],
                     "response_tokens": chat.response_len, "base_tokens": base_chats[j].response_len})
    return skipped + recs


def todo_samples(data: str | Path, split: str | None, shard: tuple[int, int], done: dict) -> Iterator[Sample]:
    """The samples of `shard` not in `done`, in dataset order."""
    return (s for s in iter_samples(data, split) if s[0] % shard[1] == shard[0] and s[0] not in done)


def run_meta(model_name: str, data: str | Path, vectors: VectorsLike, split: str | None,
             shard: tuple[int, int], cfg: ScreenConfig, inputs: dict[str, Any]) -> dict[str, Any]:
    """meta.json of a run (what was screened, how, and its inputs)."""
    return {"data": str(Path(data).resolve()), "split": split, "layer": inputs["layer"],
            "vectors": str(vectors) if isinstance(vectors, str | Path) else None,
            "model": model_name, "shard": list(shard), "config": cfg.model_dump(),
            "inputs": inputs}


def screen(
    model: HookedTransformer,
    data: str | Path,
    vectors: VectorsLike,
    out_dir: str | Path,
    cfg: ScreenConfig | None = None,
    cache_dir: str | Path | None = None,
    shard: tuple[int, int] = (0, 1),
    split: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> ScreenSummary | None:
    """Screen `data`: per-sample ΔP appended chunk by chunk to `out_dir/results*.jsonl`.

    Unsharded runs also write the summary (`screen.json`), the histogram (`delta_hist.png`)
    and the top-k samples (`flagged.jsonl`) and return the summary; shard runs return None —
    join them with `merge`. A rerun with the same inputs resumes; with other inputs it raises
    StaleRunError naming them, unless `overwrite`.
    """
    cfg = cfg or ScreenConfig()
    out = Path(out_dir)
    layer, u = resolve_direction(model, vectors, cfg.layer)
    inputs = run_inputs(model, data, split, u, layer, cfg)
    tag = shard_tag(shard)
    with run_lock(out):
        prepare_folder(out, inputs, overwrite)
        write_json_atomic(out / f"meta{tag}.json", run_meta(model.cfg.model_name, data, vectors, split, shard, cfg, inputs))
        log = AppendLog(out / f"results{tag}.jsonl")
        done = read_results(log.path)
        base = BaseReplies(model, cache_dir or out / "base_cache", cfg.max_new_tokens, cfg.gen_batch_size)
        bar = tqdm(desc="screen", unit="sample", disable=not progress, initial=len(done))
        for chunk in chunks(todo_samples(data, split, shard, done), cfg.chunk_size):
            recs = screen_chunk(model, chunk, base, u, layer, cfg)
            log.append(recs)  # one write per chunk
            done.update((r["index"], r) for r in recs)
            bar.update(len(chunk))
        bar.close()
        if shard != (0, 1):
            return None
        return finish(out, list(done.values()), data, split, cfg.top_k, layer)
