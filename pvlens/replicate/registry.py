"""The experiments behind the docs' measured numbers: name → function, results file, runtime.

Each experiment writes `<out>/<name>/results.json` (schema `ReplicateResult`). A run records its
inputs with `pvlens.io.runs.check_inputs`: a rerun with the same inputs reuses the finished
result (or resumes the experiment's own keyed sub-runs); other inputs are refused, naming what
changed. `quick` runs a tiny version (tiny random model or a few samples) for the test suite.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from pvlens.errors import InputError
from pvlens.io.atomic import read_json_checked, write_json_atomic
from pvlens.io.runs import StaleRunError, check_inputs, inputs_key, run_lock

RESULTS_FILE = "results.json"


class ReplicateResult(BaseModel):
    """What every experiment's results.json holds."""

    experiment: str = Field(description="Registry name.")
    quick: bool = Field(description="True for the reduced test-suite version (never the docs' numbers).")
    seconds: float = Field(ge=0, description="Wall time of the run that produced the results.")
    inputs_key: str = Field(description="Hash of the recorded inputs (inputs.json next to this file).")
    command: str = Field(description="The command that regenerates this file.")
    results: dict[str, Any] = Field(description="The experiment's numbers (renderers read these).")


@dataclass
class Context:
    """What an experiment gets: its folder, the quick flag, and a lazily loaded model."""

    out: Path
    quick: bool = False
    model_name: str | None = None
    overwrite: bool = False
    """Discard an entry's stored results when its inputs changed (otherwise that is refused);
    results whose inputs are unchanged are still reused."""

    @cached_property
    def model(self) -> Any:
        """The default model (full) or a tiny random model (quick), loaded once per run."""
        import pvlens

        return pvlens.tiny_model() if self.quick else pvlens.load_model(self.model_name)

    def model_key(self) -> str:
        """Fingerprint of the model, for inputs."""
        from pvlens.core.fingerprint import model_fingerprint

        return model_fingerprint(self.model)


@dataclass(frozen=True)
class Experiment:
    """One registry entry."""

    name: str
    run: Callable[[Context, Path], dict[str, Any]]
    """Runs the experiment into its folder; returns the `results` object."""
    inputs: Callable[[Context], dict[str, Any]]
    """Everything the results depend on (model fingerprint, data hashes, config)."""
    minutes: float
    """Expected wall time of the full run on one core of the development machine."""
    what: str
    """One line for `pvlens replicate --list` and docs/replicate.md."""
    docs: tuple[str, ...] = field(default=())
    """Docs pages whose tables it generates."""
    native: str | None = None
    """For a command that keys its own folder (check_inputs) and writes its own results file:
    that file's name. The registry then writes no inputs.json / results.json of its own."""
    check: Callable[[Path], None] | None = None
    """Validates a native results file (raises when it does not hold what the docs need)."""


def command(name: str) -> str:
    return f"pvlens replicate --only {name}"


def run_experiment(exp: Experiment, ctx: Context) -> ReplicateResult:
    """Run (or reuse) one experiment into `ctx.out/<name>`; returns its validated results."""
    folder = ctx.out / exp.name
    if exp.native:
        return _run_native(exp, ctx, folder)
    inputs = {"experiment": exp.name, "quick": ctx.quick, **exp.inputs(ctx)}
    with run_lock(folder):
        try:
            same = check_inputs(folder, inputs)
        except StaleRunError:
            if not ctx.overwrite:
                raise
            same = check_inputs(folder, inputs, overwrite=True)  # other inputs: start over
        path = folder / RESULTS_FILE
        if same and path.exists():
            return ReplicateResult.model_validate(read_json_checked(path))
        start = time.time()
        results = exp.run(ctx, folder)
        res = ReplicateResult(experiment=exp.name, quick=ctx.quick, seconds=round(time.time() - start, 1),
                              inputs_key=inputs_key(inputs), command=command(exp.name), results=results)
        write_json_atomic(path, res.model_dump(mode="json"))
    return res


def _run_native(exp: Experiment, ctx: Context, folder: Path) -> ReplicateResult:
    """A command that keys and resumes its own folder: run it, check its results file."""
    start = time.time()
    try:
        results = exp.run(ctx, folder)
    except StaleRunError:
        if not ctx.overwrite:
            raise
        shutil.rmtree(folder)  # made with other inputs: start this entry over
        results = exp.run(ctx, folder)
    path = folder / str(results.get("file", exp.native))  # a quick run may name another file
    if not path.exists():
        raise InputError(f"{exp.name}: the run wrote no {path}")
    if exp.check is not None:
        exp.check(path)
    return ReplicateResult(experiment=exp.name, quick=ctx.quick, seconds=round(time.time() - start, 1),
                           inputs_key="recorded by the command in inputs.json", command=command(exp.name),
                           results={"native_file": str(path), **results})


def select(registry: dict[str, Experiment], only: Sequence[str] | None) -> list[Experiment]:
    """The entries named in `only` (all when empty), in registry order; unknown names refused."""
    if not only:
        return list(registry.values())
    unknown = sorted(set(only) - set(registry))
    if unknown:
        raise InputError(f"--only: unknown experiment(s) {unknown} (known: {', '.join(registry)})")
    return [e for n, e in registry.items() if n in set(only)]


def load_result(path: str | Path) -> ReplicateResult:
    """A results.json read back and validated."""
    return ReplicateResult.model_validate(read_json_checked(Path(path)))
