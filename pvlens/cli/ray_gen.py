"""`--ray [ADDRESS] --workers N` of the generating commands (`pvlens extract`, `pvlens datasets
build`): a `RayGenerator` for the run, or None to generate in this process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pvlens.core.ray_bulk import RayGenerator
    from pvlens.core.ray_pool import ModelLoader


def ray_address_optional(args: list[str]) -> list[str]:
    """`--ray` without an address (last, before another option, or before an existing file) means
    `--ray local`."""
    out = []
    for i, a in enumerate(args):
        out.append(a)
        nxt = args[i + 1] if i + 1 < len(args) else None
        if a == "--ray" and (nxt is None or nxt.startswith("-") or Path(nxt).exists()):
            out.append("local")
    return out


def worker_loader(model: str | None, device: str | None, worker_gpus: float) -> ModelLoader:
    """What each Ray actor loads: `model` on `device`, or on cuda when actors hold GPUs."""
    from pvlens.core.ray_pool import ModelLoader

    return ModelLoader(model, device or ("cuda" if worker_gpus > 0 else "cpu"))


@contextmanager
def ray_generator(address: str | None, workers: int, model: str | None, device: str | None,
                  worker_cpus: float = 1.0, worker_gpus: float = 0.0) -> Iterator[RayGenerator | None]:
    """A generator pool on `address` whose workers load `model` (None: no --ray, no pool); actors
    with GPUs load it on cuda unless `device` says otherwise."""
    if address is None:
        yield None
        return
    from pvlens.core.ray_bulk import RayGenerator
    from pvlens.core.ray_pool import RayOptions

    opts = RayOptions(address=address, workers=workers, worker_cpus=worker_cpus, worker_gpus=worker_gpus)
    with RayGenerator(worker_loader(model, device, worker_gpus), opts, progress=True) as gen:
        yield gen
