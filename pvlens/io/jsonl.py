"""JSONL reading shared by the data loaders (strict) and the resumable caches (lenient).

Two policies, because the files differ: a user's data file with a bad line is an error that
must name the file and line; a file pvlens appends to as it goes may end in a line cut off by
a kill, which is skipped so the run resumes.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def iter_jsonl(path: str | Path, error: type[Exception] = ValueError) -> Iterator[tuple[int, Any]]:
    """(line number, parsed row) for every non-blank line; a malformed line raises `error`
    with `"{path}:{line}: not valid JSON (...)"`."""
    path = Path(path)
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                raise error(f"{path}:{lineno}: not valid JSON ({e.msg})") from None
            yield lineno, row


def read_jsonl_lenient(path: str | Path) -> list[Any]:
    """Every parseable row of a file pvlens appends to; [] if it does not exist yet.

    Blank and malformed lines (a write cut off by a kill) are skipped.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


class KeyedTextStore:
    """An append-only JSONL map from a key to one text (`{"key": ..., field: ...}` a line).

    The generation caches (dataset answers, screening base replies) share it: what a killed
    run already generated is read back, and each new batch is appended as it finishes.
    """

    def __init__(self, path: str | Path, field: str):
        self.path, self.field = Path(path), field
        self.known: dict[str, str] = {
            rec["key"]: rec[field] for rec in read_jsonl_lenient(self.path)
            if isinstance(rec, dict) and "key" in rec and field in rec
        }

    def __contains__(self, key: str) -> bool:
        return key in self.known

    def missing(self, keys: list[str]) -> list[tuple[str, int]]:
        """(key, index of its last occurrence) of the keys not stored yet, sorted by key (a stable order, so a
        batch's make-up never depends on which duplicates were asked)."""
        return sorted({k: i for i, k in enumerate(keys) if k not in self.known}.items())

    def add(self, keys: list[str], texts: list[str]) -> None:
        """Store and append in one write per batch."""
        rows = []
        for k, t in zip(keys, texts, strict=True):
            self.known[k] = t
            rows.append({"key": k, self.field: t})
        AppendLog(self.path).append(rows)

    def get(self, keys: list[str]) -> list[str]:
        return [self.known[k] for k in keys]


def repair_tail(path: str | Path) -> int:
    """Cut a last line that a kill left without its newline, so the next append starts on a
    line of its own; returns the bytes removed (0 when the file ends cleanly or is absent)."""
    path = Path(path)
    if not path.exists() or path.stat().st_size == 0:
        return 0
    with path.open("rb+") as f:
        size = f.seek(0, 2)
        f.seek(max(0, size - 1))
        if f.read(1) == b"\n":
            return 0
        # find the last newline; everything after it is the cut line
        pos, chunk = size, 1 << 16
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            block = f.read(pos - start)
            i = block.rfind(b"\n")
            if i >= 0:
                keep = start + i + 1
                break
            pos = start
        else:
            keep = 0
        f.truncate(keep)
        return size - keep


class AppendLog:
    """The one resumable JSONL append-log: lenient read, tail repair, batched durable append.

    Every long run writes its results through one of these, so a kill loses at most the batch
    being written and a rerun reads back everything before it.
    """

    def __init__(self, path: str | Path, *, fsync: bool = False):
        self.path = Path(path)
        self.fsync = fsync

    def read(self) -> list[Any]:
        """Every parseable row written so far ([] if the file does not exist)."""
        return read_jsonl_lenient(self.path)

    def append(self, rows: list[Any] | Any) -> None:
        """Append one row or a batch of rows in one write (after repairing a cut tail)."""
        batch = rows if isinstance(rows, list) else [rows]
        if not batch:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        repair_tail(self.path)
        text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in batch)
        with self.path.open("a", encoding="utf-8") as f:
            f.write(text)
            if self.fsync:
                f.flush()
                os.fsync(f.fileno())

    def clear(self) -> None:
        """Remove the log (for `--overwrite`)."""
        self.path.unlink(missing_ok=True)
