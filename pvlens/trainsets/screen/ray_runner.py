"""Screening on a Ray cluster: a pool of actors, each holding the model once, screens blocks
of the dataset; the driver alone writes.

The driver reads the dataset in blocks of `ScreenConfig.chunk_size` samples (the same chunks a
single-process run makes, so the numbers are the same), looks up the block's base replies in
the reply cache and sends both to a worker. The worker (`ScreenWorker`) runs `screen_chunk` —
generating the missing base replies — and returns the per-sample results with the new replies
and their keys. The driver appends the replies to the cache (`KeyedTextStore`) and then the
results to `results.jsonl` (`AppendLog`): one writer, so any number of workers cannot corrupt
either file, and each index is written once.

Faults: an actor whose process dies is restarted by Ray (`max_restarts`) and its running and
queued blocks are retried on it (`max_task_retries`); when Ray gives up, the driver replaces
the actor and resubmits the block (up to `max_block_attempts`). A killed worker costs at most
its blocks' work. A killed driver resumes on rerun: the done indices come from results.jsonl.

Ray is optional (`pip install pvlens[ray]`): it is imported only when a Ray run starts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import Field
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.config import Config
from pvlens.core.fingerprint import model_fingerprint
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

ModelFactory = Callable[[], HookedTransformer]
"""Builds the model inside a worker (picklable: a `ModelLoader`, or a module-level function)."""


class RayOptions(Config):
    """Where and how a screening run uses Ray."""

    address: str | None = None
    """Cluster to join ("auto", "ray://host:10001", "host:6379"); None or "local" starts a local one."""
    workers: int = Field(2, ge=1)
    """Actors in the pool (each loads the model once)."""
    worker_cpus: float = Field(1.0, gt=0)
    """CPUs reserved per actor; torch in the actor uses that many threads (at least one)."""
    worker_gpus: float = Field(0.0, ge=0)
    """GPUs reserved per actor (fractions share a GPU)."""
    local_cpus: int | None = Field(None, ge=1)
    """CPUs of a local cluster started here (None: all of this machine's)."""
    max_restarts: int = Field(3, ge=-1)
    """Times Ray restarts a dead actor (-1: without limit)."""
    max_task_retries: int = Field(3, ge=-1)
    """Times Ray reruns a block whose actor died while running or holding it."""
    max_block_attempts: int = Field(3, ge=1)
    """Times the driver itself resubmits a block after Ray gave up on its actor."""
    blocks_in_flight: int = Field(2, ge=1)
    """Blocks queued per actor (two keeps an actor busy while the driver writes)."""


@dataclass(frozen=True)
class ModelLoader:
    """A picklable model factory: `pvlens.load_model(name, device=...)` in the worker."""

    name: str | None = None
    """Model name or folder (None: the default model)."""
    device: str | None = "cpu"
    """Device inside the worker ("cuda" on a GPU actor: Ray sets CUDA_VISIBLE_DEVICES)."""

    def __call__(self) -> HookedTransformer:
        from pvlens.core.model import load_model

        return load_model(self.name, device=self.device)


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


def connect(opts: RayOptions) -> bool:
    """Join (or start) the cluster; True when this call started Ray (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if opts.address in (None, "local"):
        ray.init(address="local", num_cpus=opts.local_cpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False)
    else:
        ray.init(address=opts.address, log_to_driver=False)
    return True


@dataclass
class Job:
    """A block in flight: its samples, the actor it went to, how often it was tried."""

    block: list[Sample]
    slot: int
    actor: Any
    attempts: int = 1


class WorkerPool:
    """The actors; replaces one that Ray gave up on."""

    def __init__(self, factory: ModelFactory, opts: RayOptions) -> None:
        import ray

        self.opts = opts
        self.remote = ray.remote(ScreenWorker).options(
            num_cpus=opts.worker_cpus, num_gpus=opts.worker_gpus, max_restarts=opts.max_restarts,
            max_task_retries=opts.max_task_retries)
        self.factory = factory
        self.actors = [self._new() for _ in range(opts.workers)]
        self.busy = [0] * opts.workers

    def _new(self) -> Any:
        return self.remote.remote(self.factory, int(max(1, self.opts.worker_cpus)))

    def facts(self, cfg: ScreenConfig) -> ModelFacts:
        """The model's facts, after checking every worker loaded the same model."""
        import ray

        facts = ray.get([a.facts.remote(cfg) for a in self.actors])
        if len({f.fingerprint for f in facts}) != 1:
            raise ScreenError("the Ray workers loaded different models (fingerprints differ); give every "
                              "node the same model files")
        return facts[0]

    def pids(self) -> list[int]:
        """Process ids of the current actors."""
        import ray

        return ray.get([a.pid.remote() for a in self.actors])

    def free_slot(self) -> int:
        """The actor with the fewest blocks in flight."""
        return min(range(len(self.actors)), key=lambda i: self.busy[i])

    def replace(self, slot: int, dead: Any) -> None:
        """Put a fresh actor in `slot` if it still holds the dead one."""
        import ray

        if self.actors[slot] is dead:
            ray.kill(dead, no_restart=True)
            self.actors[slot] = self._new()

    def shutdown(self) -> None:
        """Stop every actor."""
        import ray

        for a in self.actors:
            ray.kill(a, no_restart=True)


@dataclass
class RayRun:
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

    def submit(self, block: list[Sample], attempts: int = 1) -> None:
        """Send a block to the least busy actor."""
        slot = self.pool.free_slot()
        actor = self.pool.actors[slot]
        ref = actor.screen_block.remote(block, self.known(block), self.u, self.layer, self.cfg)
        self.pool.busy[slot] += 1
        self.pending[ref] = Job(block, slot, actor, attempts)

    def write(self, res: BlockResult) -> None:
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

    def collect_one(self) -> int:
        """Wait for one block; write it, or resubmit it when its actor died. Returns samples written."""
        import ray
        from ray.exceptions import RayActorError

        [ref], _ = ray.wait(list(self.pending), num_returns=1)
        job = self.pending.pop(ref)
        self.pool.busy[job.slot] -= 1
        try:
            res = ray.get(ref)
        except RayActorError as e:
            if job.attempts >= self.pool.opts.max_block_attempts:
                raise ScreenError(f"a block starting at sample {job.block[0][0]} failed "
                                  f"{job.attempts} times on dead Ray workers; last: {e}") from e
            self.pool.replace(job.slot, job.actor)
            self.submit(job.block, job.attempts + 1)
            return 0
        self.write(res)
        if self.on_block is not None:
            self.on_block(self.pool)
        return len(job.block)

    def run(self, blocks: Iterator[list[Sample]], bar: tqdm) -> None:
        """Keep every actor fed with `blocks_in_flight` blocks until all are written."""
        capacity = len(self.pool.actors) * self.pool.opts.blocks_in_flight
        exhausted = False
        while True:
            while not exhausted and len(self.pending) < capacity:
                block = next(blocks, None)
                if block is None:
                    exhausted = True
                else:
                    self.submit(block)
            if not self.pending:
                return
            bar.update(self.collect_one())


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
    factory = model if callable(model) else ModelLoader(model, "cuda" if opts.worker_gpus > 0 else "cpu")
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
