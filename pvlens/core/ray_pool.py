"""The Ray actor pool every pvlens Ray run shares: actors that each load the model once, blocks
of work kept in flight on them, and the fault handling.

Faults: an actor whose process dies is restarted by Ray (`max_restarts`) and its running and
queued blocks are rerun on it (`max_task_retries`); when Ray gives up, the driver replaces the
actor and resubmits the block (up to `max_block_attempts`). A killed worker costs at most its
blocks' work, and the driver writes each block once (`BlockRunner.write`).

Users: `pvlens.trainsets.screen.ray_runner` (screening) and `pvlens.core.ray_bulk` (bulk
generation). Ray is optional (`pip install pvlens[ray]`): it is imported only when a pool starts.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pydantic import Field
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.config import Config
from pvlens.errors import PvlensError

ModelFactory = Callable[[], HookedTransformer]
"""Builds the model inside a worker (picklable: a `ModelLoader`, or a module-level function)."""


class RayPoolError(PvlensError):
    """A Ray run that cannot go on (a block failed on dead workers too often, models differ)."""


class RayOptions(Config):
    """Where and how a run uses Ray."""

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
    local_worker_niceness: int = Field(0, ge=0, le=19)
    """Niceness of a local cluster's workers. Ray's own default (15) starves them whenever
    anything else runs on the machine (measured: 1.6 % of a core beside two busy processes);
    the environment variable RAY_worker_niceness, when set, wins."""
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


def model_factory(model: str | ModelFactory | None, opts: RayOptions) -> ModelFactory:
    """A factory as given, or a `ModelLoader` of a name (on the GPU when actors get GPUs)."""
    return model if callable(model) else ModelLoader(model, "cuda" if opts.worker_gpus > 0 else "cpu")


def connect(opts: RayOptions) -> bool:
    """Join (or start) the cluster; True when this call started Ray (the caller shuts it down)."""
    import ray

    if ray.is_initialized():
        return False
    if opts.address in (None, "local"):
        os.environ.setdefault("RAY_worker_niceness", str(opts.local_worker_niceness))
        ray.init(address="local", num_cpus=opts.local_cpus, include_dashboard=False,
                 _node_ip_address="127.0.0.1", log_to_driver=False)
    else:
        ray.init(address=opts.address, log_to_driver=False)
    return True


class ActorPool:
    """Actors of one worker class, each built with (factory, threads); replaces one Ray gave up on."""

    def __init__(self, worker_cls: type, factory: ModelFactory, opts: RayOptions) -> None:
        import ray

        self.opts = opts
        self.remote: Any = ray.remote(worker_cls).options(
            num_cpus=opts.worker_cpus, num_gpus=opts.worker_gpus, max_restarts=opts.max_restarts,
            max_task_retries=opts.max_task_retries)
        self.factory = factory
        self.actors = [self._new() for _ in range(opts.workers)]
        self.busy = [0] * opts.workers

    def _new(self) -> Any:
        return self.remote.remote(self.factory, int(max(1, self.opts.worker_cpus)))

    def call_all(self, method: str, *args: Any) -> list[Any]:
        """`method(*args)` on every actor, their answers in actor order."""
        import ray

        return ray.get([getattr(a, method).remote(*args) for a in self.actors])

    def pids(self) -> list[int]:
        """Process ids of the current actors (the worker class has a `pid` method)."""
        return self.call_all("pid")

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
class Job:
    """A block in flight: its payload, the actor it went to, how often it was tried."""

    block: Any
    slot: int
    actor: Any
    attempts: int = 1


class BlockRunner:
    """Keeps every actor of `pool` fed with blocks and hands each finished block to `write` once.

    Subclasses set `pool`, `pending` (empty dict) and `on_block`, and define `call` (submit a
    block to an actor), `write` (store a result; returns the count for the progress bar) and
    `label` (names a block in errors)."""

    pool: ActorPool
    pending: dict[Any, Job]
    on_block: Callable[[Any], None] | None

    def call(self, actor: Any, block: Any) -> Any:
        """The object ref of `block` running on `actor`."""
        raise NotImplementedError

    def write(self, block: Any, result: Any) -> int:
        """Store one finished block; returns how many items it held."""
        raise NotImplementedError

    def label(self, block: Any) -> str:
        """The block, for error messages."""
        return "a block"

    def submit(self, block: Any, attempts: int = 1) -> None:
        """Send a block to the least busy actor."""
        slot = self.pool.free_slot()
        actor = self.pool.actors[slot]
        ref = self.call(actor, block)
        self.pool.busy[slot] += 1
        self.pending[ref] = Job(block, slot, actor, attempts)

    def collect_one(self) -> int:
        """Wait for one block; write it, or resubmit it when its actor died. Returns items written."""
        import ray
        from ray.exceptions import RayActorError

        [ref], _ = ray.wait(list(self.pending), num_returns=1)
        job = self.pending.pop(ref)
        self.pool.busy[job.slot] -= 1
        try:
            res = ray.get(ref)
        except RayActorError as e:
            if job.attempts >= self.pool.opts.max_block_attempts:
                raise RayPoolError(f"{self.label(job.block)} failed {job.attempts} times on dead Ray "
                                   f"workers; last: {e}") from e
            self.pool.replace(job.slot, job.actor)
            self.submit(job.block, job.attempts + 1)
            return 0
        n = self.write(job.block, res)
        if self.on_block is not None:
            self.on_block(self.pool)
        return n

    def run(self, blocks: Iterator[Any], bar: tqdm) -> None:
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
