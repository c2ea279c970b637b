"""Atomic writes: a metadata file is either the old version or the new one, never half."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over `path`."""
    write_bytes_atomic(path, text.encode("utf-8"))


def write_bytes_atomic(path: str | Path, data: bytes) -> None:
    """Binary `write_text_atomic`: temporary file in the same folder, fsync, rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json_atomic(path: str | Path, value: Any, indent: int | None = 2) -> None:
    """`json.dumps(value)` written atomically."""
    write_text_atomic(path, json.dumps(value, indent=indent, ensure_ascii=False, default=str) + "\n")


def read_json_checked(path: str | Path) -> Any:
    """Read a metadata file pvlens wrote; an empty or partial file is an error naming the file
    and the fix, never silently trusted."""
    path = Path(path)
    text = path.read_text(encoding="utf-8")
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is empty or cut off ({e.msg}); it was not written completely. "
            "Delete it (or rerun with --overwrite) to start that run again."
        ) from None
