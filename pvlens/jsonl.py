"""JSONL reading shared by the data loaders (strict) and the resumable caches (lenient).

Two policies, because the files differ: a user's data file with a bad line is an error that
must name the file and line; a file pvlens appends to as it goes may end in a line cut off by
a kill, which is skipped so the run resumes.
"""

from __future__ import annotations

import json
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
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self.path.open("a", encoding="utf-8") as f:
            for k, t in zip(keys, texts, strict=True):
                self.known[k] = t
                f.write(json.dumps({"key": k, self.field: t}, ensure_ascii=False) + "\n")

    def get(self, keys: list[str]) -> list[str]:
        return [self.known[k] for k in keys]
