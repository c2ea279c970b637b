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
