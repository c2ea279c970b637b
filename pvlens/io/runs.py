"""Run folders: a rerun resumes only when every input that determines the result is identical.

A run records its inputs (`inputs.json`: fingerprints of the model with its adapters, the data's
content, the trait spec, the seed, every config field that changes results, the judge and its
endpoint). A rerun into the same folder with the same inputs resumes; with different inputs it
refuses and names what changed. A lock file keeps two runs out of one folder at once.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from pvlens.core.fingerprint import json_hash
from pvlens.errors import PvlensError
from pvlens.io.atomic import read_json_checked, write_json_atomic

INPUTS_FILE = "inputs.json"
LOCK_FILE = ".pvlens.lock"


class StaleRunError(PvlensError):
    """A run folder holds results made from other inputs than the ones given now."""


class RunLockedError(PvlensError):
    """Another live process is writing into the same run folder."""


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix.rstrip("."): value}


def changed_inputs(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """Dotted names of inputs that differ (added, removed or changed), sorted."""
    a, b = _flatten(old), _flatten(new)
    return sorted(k for k in a.keys() | b.keys() if a.get(k, "<absent>") != b.get(k, "<absent>"))


def _describe(key: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    a, b = _flatten(old), _flatten(new)
    return f"{key}: {a.get(key, '<absent>')!r:.60} → {b.get(key, '<absent>')!r:.60}"


def normalise_inputs(inputs: Mapping[str, Any]) -> dict[str, Any]:
    """The inputs as they read back from JSON (tuples → lists, paths → strings), so a
    recorded run compares equal to a rerun with the same values."""
    return json.loads(json.dumps(dict(inputs), sort_keys=True, default=str))


def check_inputs(out_dir: str | Path, inputs: Mapping[str, Any], *, overwrite: bool = False) -> bool:
    """Record `inputs` for a run folder, or check them against the recorded ones.

    Returns True when the folder already had the same inputs (resume). With different inputs
    it raises StaleRunError naming the changes, unless `overwrite`, which empties the folder.
    """
    out = Path(out_dir)
    path = out / INPUTS_FILE
    inputs = normalise_inputs(inputs)
    if path.exists() and not overwrite:
        _refuse_changed(out, read_json_checked(path), inputs,
                        "Use a new output folder, or pass --overwrite (overwrite=True) to discard them.")
        return True
    if overwrite and out.exists():
        for child in out.iterdir():
            if child.name == LOCK_FILE:
                continue
            shutil.rmtree(child) if child.is_dir() else child.unlink()
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(path, inputs)
    return False


def _refuse_changed(where: Path, old: Mapping[str, Any], new: Mapping[str, Any], fix: str) -> None:
    """StaleRunError naming every input that differs (up to six, with old → new values)."""
    diff = changed_inputs(old, new)
    if diff:
        lines = "; ".join(_describe(k, old, new) for k in diff[:6])
        more = f" (+{len(diff) - 6} more)" if len(diff) > 6 else ""
        raise StaleRunError(f"{where} holds results made with other inputs — {lines}{more}. {fix}")


def check_file_inputs(result: str | Path, inputs: Mapping[str, Any]) -> bool:
    """`check_inputs` for a result that is one file (it may share its folder with others): the
    inputs are recorded next to it in `<name>.inputs.json`. Returns True when the same inputs
    are recorded (resume); raises StaleRunError naming the changes when they differ, or when the
    file exists with no record (it cannot be checked); records them otherwise."""
    result = Path(result)
    record = result.with_name(f"{result.name}.inputs.json")
    inputs = normalise_inputs(inputs)
    fix = f"Write to another file, or delete {result} (and {record.name}) to start over."
    if record.exists():
        _refuse_changed(result, read_json_checked(record), inputs, fix)
        return True
    if result.exists() and result.stat().st_size:
        raise StaleRunError(f"{result} holds results with no record of their inputs ({record.name}), so they "
                            f"cannot be checked against this run. {fix}")
    result.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(record, inputs)
    return False


def inputs_key(inputs: Mapping[str, Any]) -> str:
    """One short hash of a set of inputs, for keys of caches shared across runs."""
    return json_hash(normalise_inputs(inputs))


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def run_lock(out_dir: str | Path) -> Iterator[Path]:
    """Hold `out_dir/.pvlens.lock` for the duration; a second live run into it is refused.

    A lock left by a dead process (killed run) is taken over, so a rerun after a kill works.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lock = out / LOCK_FILE
    while True:
        try:
            fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            try:
                pid = int(lock.read_text().strip() or "0")
            except (OSError, ValueError):
                pid = 0
            if pid and pid != os.getpid() and _pid_alive(pid):
                raise RunLockedError(
                    f"{out} is in use by another pvlens run (pid {pid}). Wait for it to finish, "
                    f"or use another output folder; if no run is alive, delete {lock}."
                ) from None
            lock.unlink(missing_ok=True)
            continue
        with os.fdopen(fd, "w") as f:
            f.write(str(os.getpid()))
        break
    try:
        yield lock
    finally:
        lock.unlink(missing_ok=True)
