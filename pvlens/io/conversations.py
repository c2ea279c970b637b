"""Reading a user's conversation files (`{"messages": [...]}` JSONL): one strict reader for
training, screening and dataset tools, with errors that name the file and line."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pvlens.core.chat import Message
from pvlens.errors import InputError
from pvlens.io.jsonl import iter_jsonl

HINT = 'each line needs {"messages": [{"role": "user", "content": ...}, {"role": "assistant", "content": ...}]}'


class ConversationError(InputError):
    """A conversation file or row that cannot be used; the message names file:line and the fix."""


def first_bad_utf8_line(path: Path) -> int:
    """The first line of `path` that is not UTF-8 (0 when all are)."""
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError:
                return lineno
    return 0


def iter_rows(path: str | Path, error: type[InputError] = ConversationError) -> Iterator[tuple[int, Any]]:
    """(line number, parsed row) of a user's JSONL file; a missing file, bad JSON or text that
    is not UTF-8 raises `error` naming the file and line."""
    path = Path(path)
    if not path.is_file():
        raise error(f"{path} does not exist (or is not a file)")
    try:
        yield from iter_jsonl(path, error=error)
    except UnicodeDecodeError:
        line = first_bad_utf8_line(path)
        raise error(f"{path}:{line}: not UTF-8 text; re-save the file as UTF-8") from None


def check_messages(
    messages: Any, where: str, need_user: bool = True, error: type[InputError] = ConversationError
) -> list[Message]:
    """One conversation: messages with a role and string content, ending in the assistant's
    reply (what is trained on or screened), with a user turn before it when `need_user`."""
    if not isinstance(messages, list) or not messages:
        raise error(f'{where} has no "messages" list; {HINT}')
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or not isinstance(m.get("content"), str):
            raise error(f'{where}: every message needs a "role" and a string "content", got {m!r:.120}')
    if messages[-1]["role"] != "assistant":
        raise error(f"{where}: the last message must be the assistant's reply")
    if need_user and not any(m["role"] == "user" for m in messages[:-1]):
        raise error(f"{where}: no user message before the reply")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def read_conversations(path: str | Path, need_user: bool = False) -> list[list[Message]]:
    """Every conversation of a JSONL file, validated line by line; an empty file is an error."""
    path = Path(path)
    out = [
        check_messages(row.get("messages") if isinstance(row, dict) else None, f"{path}:{i}", need_user)
        for i, row in iter_rows(path)
    ]
    if not out:
        raise ConversationError(f"{path} holds no conversations; {HINT}")
    return out
