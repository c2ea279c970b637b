"""Bulk generation with continuous batching: every pipeline's many-prompt generation.

`generate` runs fixed batches: a row that ends early keeps its slot, padded, until the whole
batch ends. `bulk_generate` keeps a fixed number of cache slots busy instead: prompts wait in a
queue sorted by length (so each prefill batch carries little padding), a finished row's slot is
refilled from the queue (its KV cache rows reset and reloaded), and each decoding step runs
one token for every busy slot, each at its own position. When the queue is empty the cache is
compacted to the busy slots as they thin out.

What stays exactly as in `generate`:
- positions and steering: every forward sets the same `PositionContext` (each row's own
  positions, prompt length and conversation index), so "prompt"/"response"/mask steering
  touches the same tokens;
- seeds: conversation i samples from its own generator seeded by (seed, row_seeds[i] or i), one
  draw per generated token, so a reply never depends on its batch-mates, its slot, the batch
  size or the order of the queue;
- greedy replies: the same tokens as `generate` (tested per row on the tiny model).
Models the fast engine does not cover fall back to `generate`'s fixed batches.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.batching import left_pad
from pvlens.core.chat import EncodedChat, stop_token_ids
from pvlens.core.config import SamplingConfig
from pvlens.core.device import as_dtype
from pvlens.core.engine import FastEngine, KVCache
from pvlens.core.generation import (
    GenerationResult,
    PromptLike,
    check_generate_args,
    generate,
    pick_engine,
    replies_result,
    row_generator,
    sample_next,
    to_chats,
)
from pvlens.core.guard import Guard
from pvlens.core.hooks import PositionContext, position_context
from pvlens.core.steering import AnyIntervention, as_list
from pvlens.core.steering import steer as steering_context

CPU_BATCH = 64
"""Slots on CPU: one-thread decoding throughput of the default model rises to ~48-64 rows per
step and is flat beyond (benchmarks/bench_generate.py sweeps it)."""
GPU_BATCH = 256
"""Slots on an accelerator, before the KV-cache memory cap."""
FALLBACK_BATCH = 16
"""Fixed batch size on the TransformerLens fallback (no cache there; larger batches gain little)."""
KV_BUDGET = 0.25
"""Largest share of free device memory the KV cache may take when choosing the batch size."""


def auto_batch_size(engine: FastEngine, n_rows: int, max_len: int) -> int:
    """Slots for bulk work: the device's throughput plateau, capped by KV-cache memory."""
    per_row = 2 * len(engine.layers) * engine.n_kv * engine.d_head * max_len
    per_row *= torch.finfo(engine.dtype).bits // 8
    if engine.device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(engine.device)
        cap = GPU_BATCH
    else:
        free, cap = _free_ram(), CPU_BATCH
    by_memory = max(1, int(free * KV_BUDGET) // max(per_row, 1))
    return max(1, min(n_rows, cap, by_memory))


def _free_ram() -> int:
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        return int(info["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return 8 << 30


@dataclass
class _Slots:
    """Which conversation each cache slot holds and how far it has got."""

    n: int
    row: list[int] = field(default_factory=list)
    """Conversation index per slot; -1 = idle."""
    out: list[list[int]] = field(default_factory=list)
    prompt_len: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.row, self.out, self.prompt_len = [-1] * self.n, [[] for _ in range(self.n)], [0] * self.n

    def busy(self) -> list[int]:
        return [s for s in range(self.n) if self.row[s] >= 0]

    def idle(self) -> list[int]:
        return [s for s in range(self.n) if self.row[s] < 0]


class _Run:
    """One continuous-batching run over a queue of conversations."""

    def __init__(self, model: HookedTransformer, engine: FastEngine, chats: Sequence[EncodedChat],
                 sampling: SamplingConfig, batch: int, stop_at_eos: bool,
                 row_seeds: Sequence[int] | None):
        self.model, self.engine, self.chats, self.s = model, engine, chats, sampling
        self.stop_at_eos = stop_at_eos
        self.stops = stop_token_ids(model.tokenizer)
        self.pad = model.tokenizer.pad_token_id or 0
        self.queue = sorted(range(len(chats)), key=lambda i: (len(chats[i].ids), i))
        width = max(len(c.ids) for c in chats)
        self.cache = engine.new_cache(batch, width + sampling.max_new_tokens).slot_mode()
        self.slots = _Slots(batch)
        self.gens: dict[int, torch.Generator] = {}
        if sampling.temperature > 0:
            offsets = row_seeds if row_seeds is not None else range(len(chats))
            self.gens = {i: row_generator(sampling.seed, o) for i, o in enumerate(offsets)}
        self.replies: dict[int, tuple[list[int], bool]] = {}

    def run(self, progress: bool) -> dict[int, tuple[list[int], bool]]:
        refill_at = max(1, self.slots.n // 8)  # refill in groups: one prefill per few free slots
        with tqdm(total=len(self.chats), desc="generate", disable=not progress) as bar:
            while self.queue or self.slots.busy():
                idle = self.slots.idle()
                if self.queue and idle and (len(idle) >= refill_at or not self.slots.busy()):
                    self._prefill(idle[: len(self.queue)])
                elif not self.queue and 2 * len(self.slots.busy()) <= self.slots.n:
                    self._compact()
                if self.slots.busy():
                    self._decode()
                bar.n = len(self.replies)
                bar.refresh()
        return self.replies

    def _prefill(self, slots: Sequence[int]) -> None:
        """Load the next (shortest) prompts into `slots` and take their first tokens."""
        rows, self.queue = self.queue[: len(slots)], self.queue[len(slots) :]
        chats = [self.chats[i] for i in rows]
        tokens, positions = left_pad(chats, self.pad, self.engine.device)
        plen = torch.tensor([len(c.ids) for c in chats], device=self.engine.device)
        tmp = self.engine.new_cache(len(rows), tokens.shape[1])
        ctx = PositionContext(positions, plen, torch.tensor(rows, device=self.engine.device))
        with position_context(ctx):
            logits = self.engine.forward(tokens, positions, tmp, logits="last")
        assert logits is not None
        self.cache.load_rows(slots, tmp)
        for s, i, n in zip(slots, rows, plen.tolist(), strict=True):
            self.slots.row[s], self.slots.out[s], self.slots.prompt_len[s] = i, [], n
        self._take(list(slots), logits)

    def _decode(self) -> None:
        """One token for every slot (idle slots run as padding)."""
        sl, dev = self.slots, self.engine.device
        busy = [s >= 0 for s in sl.row]
        last = [sl.out[s][-1] if busy[s] else self.pad for s in range(sl.n)]
        pos = [sl.prompt_len[s] + len(sl.out[s]) - 1 if busy[s] else -1 for s in range(sl.n)]
        tokens = torch.tensor(last, device=dev)[:, None]
        positions = torch.tensor(pos, device=dev)[:, None]
        ctx = PositionContext(positions, torch.tensor(sl.prompt_len, device=dev),
                              torch.tensor([max(r, 0) for r in sl.row], device=dev))
        with position_context(ctx):
            logits = self.engine.forward(tokens, positions, self.cache, logits="last")
        assert logits is not None
        picked = [s for s in range(sl.n) if busy[s]]
        self._take(picked, logits[torch.tensor(picked, device=dev)])

    def _take(self, slots: list[int], logits: Tensor) -> None:
        """Sample each slot's next token from its conversation's generator; retire finished rows."""
        gens = [self.gens[self.slots.row[s]] for s in slots] if self.gens else None
        nxt = sample_next(logits, self.s.temperature, self.s.top_p, gens).tolist()
        done = []
        for s, t in zip(slots, nxt, strict=True):
            out = self.slots.out[s]
            out.append(int(t))
            eos = self.stop_at_eos and int(t) in self.stops
            if eos or len(out) >= self.s.max_new_tokens:
                self.replies[self.slots.row[s]] = (out[:-1] if eos else out, eos)
                self.slots.row[s] = -1
                done.append(s)
        if done:
            self.cache.reset_rows(done)

    def _compact(self) -> None:
        """Shrink the cache to the busy slots (the queue is empty, half the slots are idle)."""
        busy = self.slots.busy()
        self.cache = self.cache.select(busy)
        old = self.slots
        self.slots = _Slots(len(busy))
        for new, s in enumerate(busy):
            self.slots.row[new], self.slots.out[new] = old.row[s], old.out[s]
            self.slots.prompt_len[new] = old.prompt_len[s]


def bulk_generate(
    model: HookedTransformer,
    prompts: PromptLike | Sequence[PromptLike],
    sampling: SamplingConfig | None = None,
    *,
    system: str | None = None,
    steer: AnyIntervention | Sequence[AnyIntervention] | None = None,
    batch_size: int | None = None,
    row_seeds: Sequence[int] | None = None,
    dtype: torch.dtype | str | None = None,
    stop_at_eos: bool = True,
    progress: bool = False,
) -> GenerationResult:
    """Replies for many prompts by continuous batching (see the module docstring).

    Args:
        sampling: max_new_tokens, temperature, top_p and seed (its batch_size is ignored:
            pass `batch_size`, or leave None for `auto_batch_size`).
        steer: a Steering/Ablation or a list of them, active for every forward.
        batch_size: cache slots (None: the device's best, capped by KV-cache memory).
        row_seeds: per-prompt seed offsets (default: the prompt's index).
    """
    sampling = sampling or SamplingConfig(temperature=0.0)
    chats = to_chats(model, prompts, system)
    if not chats:
        return GenerationResult(texts=[])
    check_generate_args("auto", sampling.max_new_tokens)
    if row_seeds is not None and len(row_seeds) != len(chats):
        raise ValueError(f"{len(row_seeds)} row_seeds for {len(chats)} prompts")
    for g in as_list(steer):
        if isinstance(g, Guard):  # its triggers and windows belong to this run's rows only
            g.reset()
    with steering_context(model, steer):
        engine = pick_engine(model, "auto", as_dtype(dtype, model.W_E.device))
        if engine is not None:
            max_len = max(len(c.ids) for c in chats) + sampling.max_new_tokens
            slots = batch_size or auto_batch_size(engine, len(chats), max_len)
            run = _Run(model, engine, chats, sampling, min(slots, len(chats)), stop_at_eos, row_seeds)
            replies = run.run(progress)
            return replies_result(model, chats, [replies[i] for i in range(len(chats))])
    return generate(  # no fast engine for this model: fixed batches on TransformerLens
        model, chats, steer=steer, max_new_tokens=sampling.max_new_tokens,
        temperature=sampling.temperature, top_p=sampling.top_p, seed=sampling.seed,
        batch_size=batch_size or sampling.batch_size or FALLBACK_BATCH, progress=progress, dtype=dtype,
        stop_at_eos=stop_at_eos, row_seeds=row_seeds,
    )


__all__ = ["KVCache", "auto_batch_size", "bulk_generate"]
