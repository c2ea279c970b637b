"""Screening on a Ray cluster: a pool of actors, each holding the model once, screens blocks
of the dataset; the driver alone writes.

The driver reads the dataset in blocks of `ScreenConfig.chunk_size` samples (the same chunks a
single-process run makes, so the numbers are the same), looks up the block's base replies in
the reply cache and sends both to a worker. The worker (`ScreenWorker`) runs `screen_chunk` —
generating the missing base replies — and returns the per-sample results with the new replies
and their keys. The driver appends the replies to the cache (`KeyedTextStore`) and then the
results to `results.jsonl` (`AppendLog`): one writer, so any number of workers cannot corrupt
either file, and each index is written once.

Faults are handled by the shared pool (`pvlens.core.ray_pool`): a killed worker costs at most
its blocks' work. A killed driver resumes on rerun: the done indices come from results.jsonl.

Ray is optional (`pip install pvlens[ray]`): it is imported only when a Ray run starts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from pvlens.core.fingerprint import model_fingerprint
from pvlens.core.ray_pool import (
    ActorPool,
    BlockRunner,
    Job,
    ModelFactory,
    ModelLoader,
    RayOptions,
    connect,
    model_factory,
)
from pvlens.io.atomic import write_json_atomic
from pvlens.io.jsonl import AppendLog, KeyedTextStore
from pvlens.io.runs import run_lock
from pvlens.trainsets.screen.base_replies import BaseReplies, MemoryReplies, reply_key, reply_store
from pvlens.trainsets.screen.io import Sample, ScreenError, chunks, read_results
from pvlens.trainsets.screen.run import (
    ModelFacts,
    ScreenConfig,
    direction_for,
    model_facts,
    prepare_folder,
    run_inputs,
    run_meta,
    screen_chunk,
    todo_samples,
)
from pvlens.trainsets.screen.summary import ScreenSummary, finish
from pvlens.vectors.coerce import VectorsLike


@dataclass
class BlockResult:
    """What a worker returns for one block."""

    records: list[dict]
    """Per-sample results (as `screen_chunk` makes them)."""
    replies: dict[str, str]
    """Base replies generated for this block, by cache key."""
    fingerprint: str
    """The worker model's fingerprint (the driver checks every block came from the same model)."""
    cpu_seconds: float = 0.0
    """CPU time the worker process spent on the block (for cost models)."""


class ScreenWorker:
    """A Ray actor's state: the model, loaded once; screens blocks (base replies included)."""

    def __init__(self, factory: ModelFactory, threads: int = 1) -> None:
        torch.set_num_threads(max(1, threads))
        self.model = factory()

    def facts(self, cfg: ScreenConfig) -> ModelFacts:
        """The facts of this worker's model that key the run."""
        return model_facts(self.model, cfg)

    def pid(self) -> int:
        """This actor's process id (tests kill it)."""
        return os.getpid()

    def screen_block(self, block: list[Sample], known: dict[str, str], u: Tensor, layer: int,
                     cfg: ScreenConfig) -> BlockResult:
        """Screen one block; `known` holds the block's cached base replies by key."""
        t0 = time.process_time()
        store = MemoryReplies(known)
        base = BaseReplies(self.model, "", cfg.max_new_tokens, cfg.gen_batch_size, store=store)
        records = screen_chunk(self.model, block, base, u, layer, cfg)
        return BlockResult(records, store.added, model_fingerprint(self.model), time.process_time() - t0)


class WorkerPool(ActorPool):
    """The screening actors (`ScreenWorker`)."""

    def __init__(self, factory: ModelFactory, opts: RayOptions) -> None:
        super().__init__(ScreenWorker, factory, opts)

    def facts(self, cfg: ScreenConfig) -> ModelFacts:
        """The model's facts, after checking every worker loaded the same model and computes in
        the same dtype ("auto" resolves per node: bf16 on AMX CPUs, fp32 elsewhere)."""
        facts = self.call_all("facts", cfg)
        if len({f.fingerprint for f in facts}) != 1:
            raise ScreenError("the Ray workers loaded different models (fingerprints differ); give every "
                              "node the same model files")
        if len({f.dtype for f in facts}) != 1:
            raise ScreenError(f"the Ray workers would compute in different dtypes ({sorted({f.dtype for f in facts})}): "
                              "dtype 'auto' resolves per node; set PVLENS_COMPUTE_DTYPE=float32 on every node "
                              "(or ScreenConfig(dtype='float32')) so one run's results share one precision")
        return facts[0]


@dataclass
class RayRun(BlockRunner):
    """The driver of one Ray screening run: submits blocks, writes what comes back."""

    pool: WorkerPool
    facts: ModelFacts
    u: Tensor
    layer: int
    cfg: ScreenConfig
    log: AppendLog
    store: KeyedTextStore
    done: dict[int, dict]
    on_block: Callable[[WorkerPool], None] | None = None
    pending: dict[Any, Job] = field(default_factory=dict)
    cpu_seconds: float = 0.0
    """Worker CPU time of the blocks written."""

    def known(self, block: list[Sample]) -> dict[str, str]:
        """The block's base replies already in the cache, by key."""
        keys = (reply_key(self.facts.fingerprint, self.cfg.max_new_tokens, msgs[:-1]) for _, msgs in block)
        return {k: self.store.known[k] for k in keys if k in self.store}

    def call(self, actor: Any, block: list[Sample]) -> Any:
        """Screen `block` on `actor`, sending its cached base replies along."""
        return actor.screen_block.remote(block, self.known(block), self.u, self.layer, self.cfg)

    def label(self, block: list[Sample]) -> str:
        return f"the block starting at sample {block[0][0]}"

    def write(self, block: list[Sample], res: BlockResult) -> int:
        """Replies first (a kill between the two loses no generation), then the results, each index once."""
        if res.fingerprint != self.facts.fingerprint:
            raise ScreenError("a Ray worker's model differs from the run's (fingerprint changed mid-run); "
                              "give every node the same model files")
        new = {k: v for k, v in res.replies.items() if k not in self.store}
        if new:
            self.store.add(list(new), list(new.values()))
        recs = [r for r in res.records if r["index"] not in self.done]
        self.log.append(recs)
        self.done.update((r["index"], r) for r in recs)
        self.cpu_seconds += res.cpu_seconds
        return len(block)


def screen_on_ray(
    model: str | ModelFactory | None,
    data: str | Path,
    vectors: VectorsLike,
    out_dir: str | Path,
    cfg: ScreenConfig | None = None,
    ray: RayOptions | None = None,
    cache_dir: str | Path | None = None,
    split: str | None = None,
    progress: bool = True,
    overwrite: bool = False,
    on_block: Callable[[WorkerPool], None] | None = None,
) -> ScreenSummary:
    """`screen` on a Ray actor pool: the same results.jsonl, screen.json and resume semantics.

    `model` is a model name / folder (None: the default model; loaded on the GPU when
    `ray.worker_gpus` > 0) or a picklable factory each worker calls once. `on_block(pool)`
    runs after each written block (tests use it to kill a worker).
    """
    cfg, opts = cfg or ScreenConfig(), ray or RayOptions()
    factory = model_factory(model, opts)
    started = connect(opts)
    pool = WorkerPool(factory, opts)
    try:
        return _drive(pool, data, vectors, Path(out_dir), cfg, cache_dir, split, progress, overwrite, on_block)
    finally:
        pool.shutdown()
        if started:
            import ray as ray_mod

            ray_mod.shutdown()


def _drive(pool: WorkerPool, data: str | Path, vectors: VectorsLike, out: Path, cfg: ScreenConfig,
           cache_dir: str | Path | None, split: str | None, progress: bool, overwrite: bool,
           on_block: Callable[[WorkerPool], None] | None) -> ScreenSummary:
    """The run folder's life, as in `screen`: check inputs under the lock, resume, finish."""
    facts = pool.facts(cfg)
    layer, u = direction_for(facts.n_layers, facts.d_model, vectors, cfg.layer)
    inputs = run_inputs(facts, data, split, u, layer, cfg)
    with run_lock(out):
        prepare_folder(out, inputs, overwrite)
        write_json_atomic(out / "meta.json", run_meta(facts.name, data, vectors, split, (0, 1), cfg, inputs))
        log = AppendLog(out / "results.jsonl")
        done = read_results(log.path)
        run = RayRun(pool, facts, u, layer, cfg, log, reply_store(cache_dir or out / "base_cache"), done, on_block)
        bar = tqdm(desc="screen (ray)", unit="sample", disable=not progress, initial=len(done))
        run.run(chunks(todo_samples(data, split, (0, 1), done), cfg.chunk_size), bar)
        bar.close()
        return finish(out, list(done.values()), data, split, cfg.top_k, layer)


__all__ = ["BlockResult", "ModelLoader", "RayOptions", "RayRun", "ScreenWorker", "WorkerPool", "screen_on_ray"]
