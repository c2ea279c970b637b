"""`bulk_generate` on a Ray actor pool: the same replies as one process, row for row.

The driver cuts the prompts into blocks of `block_size` rows; each actor (`GenerateWorker`)
holds the model, loaded once, and runs `bulk_generate` on a block with the rows' global seed
offsets (`row_seeds`, default: the row's index in the whole call). `bulk_generate` seeds every
row from (seed, row_seed) alone, so a reply's random draws depend neither on its block nor on
its worker. The logits can differ in the last bits with the batch's shape, so a sampled reply
can differ from a single-process run whose batches held other rows (`bench_invariance.py`
measures how often); with the same blocks and slots the runs are equal. The driver puts the blocks
back in order; each row is written once even when a dead worker's block is rerun.

`RayGenerator` keeps the pool across calls (an extraction or a dataset build generates in many
chunks) and has `bulk_generate`'s call signature, so pipelines take it as their `generator`.
Ray is optional (`pip install pvlens[ray]`): it is imported only when a pool starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.bulk import bulk_generate
from pvlens.core.config import SamplingConfig
from pvlens.core.fingerprint import model_fingerprint
from pvlens.core.generation import GenerationResult, PromptLike
from pvlens.core.ray_pool import (
    ActorPool,
    BlockRunner,
    Job,
    ModelFactory,
    RayOptions,
    RayPoolError,
    connect,
    model_factory,
)
from pvlens.core.steering import Intervention

Steer = Intervention | Sequence[Intervention] | None


class BulkGenerator(Protocol):
    """`bulk_generate`'s call as pipelines use it (`bulk_generate` itself or a `RayGenerator`)."""

    def __call__(self, model: HookedTransformer, prompts: Sequence[PromptLike], sampling: SamplingConfig,
                 *, steer: Steer = None, batch_size: int | None = None,
                 row_seeds: Sequence[int] | None = None) -> GenerationResult: ...


@dataclass(frozen=True)
class GenBlock:
    """Rows [start, start + len(prompts)) of one call, with their seeds and settings."""

    start: int
    prompts: list[PromptLike]
    row_seeds: list[int]
    sampling: SamplingConfig
    steer: Steer
    batch_size: int | None


class GenerateWorker:
    """A Ray actor's state: the model, loaded once; generates blocks of rows."""

    def __init__(self, factory: ModelFactory, threads: int = 1) -> None:
        torch.set_num_threads(max(1, threads))
        self.model = factory()

    def fingerprint(self) -> str:
        """This worker's model fingerprint (every worker must hold the same model)."""
        return model_fingerprint(self.model)

    def pid(self) -> int:
        """This actor's process id (tests kill it)."""
        return os.getpid()

    def generate(self, block: GenBlock) -> list[str]:
        """The block's replies, in its row order."""
        return bulk_generate(self.model, block.prompts, block.sampling, steer=block.steer,
                             batch_size=block.batch_size, row_seeds=block.row_seeds).texts


@dataclass
class GenRun(BlockRunner):
    """One call's blocks in flight; collects each row once, by its global index."""

    pool: ActorPool
    texts: dict[int, str] = field(default_factory=dict)
    on_block: Callable[[Any], None] | None = None
    pending: dict[Any, Job] = field(default_factory=dict)

    def call(self, actor: Any, block: GenBlock) -> Any:
        return actor.generate.remote(block)

    def label(self, block: GenBlock) -> str:
        return f"the block of rows {block.start}..{block.start + len(block.prompts) - 1}"

    def write(self, block: GenBlock, result: list[str]) -> int:
        for i, text in enumerate(result, start=block.start):
            self.texts.setdefault(i, text)
        return len(result)


class RayGenerator:
    """A pool of generation actors with `bulk_generate`'s call signature (see the module docstring).

    `model` is a name / folder (None: the default model) or a picklable factory each worker calls
    once. `on_block(pool)` runs after each collected block (tests use it to kill a worker)."""

    def __init__(self, model: str | ModelFactory | None = None, ray: RayOptions | None = None,
                 block_size: int = 64, progress: bool = False,
                 on_block: Callable[[Any], None] | None = None) -> None:
        if block_size < 1:
            raise ValueError(f"block_size must be at least 1, got {block_size}")
        self.opts, self.block_size, self.progress, self.on_block = ray or RayOptions(), block_size, progress, on_block
        self.started = connect(self.opts)
        self.pool = ActorPool(GenerateWorker, model_factory(model, self.opts), self.opts)
        prints = set(self.pool.call_all("fingerprint"))
        if len(prints) != 1:
            self.close()
            raise RayPoolError("the Ray workers loaded different models (fingerprints differ); give every "
                               "node the same model files")
        self.fingerprint: str = prints.pop()
        self.checked: set[int] = set()

    def check(self, model: HookedTransformer | None) -> None:
        """Refuse a driver model other than the workers' (the driver keys caches by its fingerprint)."""
        if model is None or id(model) in self.checked:
            return
        if model_fingerprint(model) != self.fingerprint:
            raise RayPoolError("the Ray workers hold a different model than this process (fingerprints "
                               "differ); pass the same model name to both")
        self.checked.add(id(model))

    def __call__(self, model: HookedTransformer | None, prompts: Sequence[PromptLike],
                 sampling: SamplingConfig | None = None, *, steer: Steer = None, batch_size: int | None = None,
                 row_seeds: Sequence[int] | None = None) -> GenerationResult:
        """Replies for `prompts`, equal to `bulk_generate(model, prompts, ...)` row for row (texts only)."""
        self.check(model)
        prompts = list(prompts)
        seeds = list(row_seeds) if row_seeds is not None else list(range(len(prompts)))
        if len(seeds) != len(prompts):
            raise ValueError(f"{len(seeds)} row_seeds for {len(prompts)} prompts")
        sampling = sampling or SamplingConfig(temperature=0.0)
        blocks = (GenBlock(s, prompts[s:s + self.block_size], seeds[s:s + self.block_size], sampling, steer,
                           batch_size) for s in range(0, len(prompts), self.block_size))
        run = GenRun(self.pool, on_block=self.on_block)
        with tqdm(total=len(prompts), desc="generate (ray)", disable=not self.progress) as bar:
            run.run(blocks, bar)
        return GenerationResult(texts=[run.texts[i] for i in range(len(prompts))])

    def close(self) -> None:
        """Stop the actors (and Ray, when this generator started it)."""
        self.pool.shutdown()
        if self.started:
            import ray

            ray.shutdown()
            self.started = False

    def __enter__(self) -> RayGenerator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def bulk_generate_on_ray(
    model: str | ModelFactory | None,
    prompts: Sequence[PromptLike],
    sampling: SamplingConfig | None = None,
    steer: Steer = None,
    *,
    ray: RayOptions | None = None,
    block_size: int = 64,
    batch_size: int | None = None,
    row_seeds: Sequence[int] | None = None,
    progress: bool = False,
) -> GenerationResult:
    """`bulk_generate` for one list of prompts on a fresh Ray pool (`ray.address`, `ray.workers`):
    the same texts as one process. For many calls, keep a `RayGenerator` (the model loads once)."""
    with RayGenerator(model, ray, block_size, progress) as gen:
        return gen(None, prompts, sampling, steer=steer, batch_size=batch_size, row_seeds=row_seeds)


__all__ = ["BulkGenerator", "GenerateWorker", "RayGenerator", "bulk_generate_on_ray"]
