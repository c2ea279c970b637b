"""`--ray [ADDRESS] --workers N` of the generating commands (`pvlens extract`, `pvlens datasets
build`): a `RayGenerator` for the run, or None to generate in this process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pvlens.core.ray_bulk import RayGenerator


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


@contextmanager
def ray_generator(address: str | None, workers: int, model: str | None, device: str | None
                  ) -> Iterator[RayGenerator | None]:
    """A generator pool on `address` whose workers load `model` (None: no --ray, no pool)."""
    if address is None:
        yield None
        return
    from pvlens.core.ray_bulk import RayGenerator
    from pvlens.core.ray_pool import ModelLoader, RayOptions

    opts = RayOptions(address=address, workers=workers)
    with RayGenerator(ModelLoader(model, device or "cpu"), opts, progress=True) as gen:
        yield gen
