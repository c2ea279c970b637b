"""Reading what screening reads: the dataset (strict: every bad row names its file and line),
shard specs, and the per-sample results a run appends (lenient: a line cut by a kill is skipped).
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TypeVar

from pvlens.core.chat import Message
from pvlens.core.fingerprint import file_hash, json_hash
from pvlens.errors import InputError
from pvlens.io import conversations
from pvlens.io.jsonl import read_jsonl_lenient

Sample = tuple[int, list[Message]]
"""(index of the sample in the dataset, its messages)."""

T = TypeVar("T")


class ScreenError(InputError):
    """Input that cannot be screened; the message names the sample and the fix."""


def iter_rows(path: str | Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed row) of a user's JSONL file (errors name file:line)."""
    return conversations.iter_rows(path, error=ScreenError)


def check_messages(messages: Any, where: str) -> list[Message]:
    """A conversation to screen: messages with role and text, ending in the assistant's reply."""
    return conversations.check_messages(messages, where, need_user=True, error=ScreenError)


def iter_samples(source: str | Path, split: str | None = None, batch: int = 1024) -> Iterator[Sample]:
    """(index, messages) from a JSONL file (one `{"messages": [...]}` a line) or a local HF
    dataset folder (`datasets.save_to_disk`, column "messages"), read lazily."""
    path = Path(source)
    if not path.exists():
        raise ScreenError(f"{path} does not exist (expected a JSONL file or a datasets.save_to_disk folder)")
    if path.is_dir():
        yield from _iter_hf(path, split, batch)
        return
    for index, (lineno, rec) in enumerate(iter_rows(path)):
        if not isinstance(rec, dict):
            raise ScreenError(f'{path}:{lineno}: expected an object {{"messages": [...]}}')
        yield index, check_messages(rec.get("messages"), f"{path}:{lineno}: sample {index}")


def _iter_hf(path: Path, split: str | None, batch: int) -> Iterator[Sample]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split is None and len(ds) == 1:
            split = next(iter(ds))
        if split not in ds:
            raise ScreenError(f"{path} is a DatasetDict with splits {sorted(ds)}; choose one with --split")
        ds = ds[split]
    if "messages" not in ds.column_names:
        raise ScreenError(f'{path}: no "messages" column (columns: {ds.column_names})')
    ds = ds.select_columns(["messages"])
    index = 0
    for rows in ds.iter(batch_size=batch):  # memory-mapped arrow: only this batch is decoded
        for msgs in rows["messages"]:
            yield index, check_messages(msgs, f"{path}: sample {index}")
            index += 1


def data_fingerprint(source: str | Path) -> str:
    """Content hash of a dataset: the file's bytes, or every file of a dataset folder."""
    path = Path(source)
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        return json_hash({str(p.relative_to(path)): file_hash(p) for p in files})
    return file_hash(path)


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' → (i, n); None → (0, 1)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise ScreenError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from e
    if not (n >= 1 and 0 <= i < n):
        raise ScreenError(f"--shard {text}: need 0 <= i < n")
    return i, n


def shard_tag(shard: tuple[int, int]) -> str:
    """File-name suffix of a shard's files ('' for an unsharded run)."""
    return "" if shard == (0, 1) else f".shard-{shard[0]}-of-{shard[1]}"


def chunks(items: Iterable[T], size: int) -> Iterator[list[T]]:
    """Consecutive lists of `size` items (the last may be shorter)."""
    it = iter(items)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


def read_results(path: Path) -> dict[int, dict]:
    """Per-sample results already on disk, by index (a line cut by a kill is ignored)."""
    done: dict[int, dict] = {}
    for rec in read_jsonl_lenient(path):
        if isinstance(rec, dict) and isinstance(rec.get("index"), int):
            done[rec["index"]] = rec
    return done


def load_results(out_dir: str | Path) -> list[dict]:
    """Per-sample results of a finished (or merged) run, sorted by index; samples skipped as
    too long for the model's context are left out."""
    done = read_results(Path(out_dir) / "results.jsonl")
    return [r for _, r in sorted(done.items()) if "skipped" not in r]
