"""Disk cache of judgements (sqlite), so a rerun never pays for the same judgement twice.

One row per (judge kind, model, rubric hash, settings, question, answer). A row holds either a
score, a "no score" (score NULL, error NULL: the judge answered but gave no usable number,
e.g. integer mass < 0.25 or REFUSAL), or a failure (error set: the call itself failed after
all retries). Scores and no-scores are final; failures are retried on the next run.

Thread-safe (one connection guarded by a lock) and safe across processes (WAL journal, busy
timeout). API keys never reach this file: keys are built from the judgement's inputs only.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS judgements (
    key TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    rubric_hash TEXT NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    score REAL,
    error TEXT,
    detail TEXT,
    created REAL NOT NULL
)
"""


@dataclass
class Judgement:
    """The outcome of judging one (question, answer) pair."""

    score: float | None
    """0-100, or None (no score, or a failed call when `error` is set)."""
    error: str | None = None
    """Why the call failed (after retries); None for a real judgement."""
    detail: dict[str, Any] = field(default_factory=dict)
    """Judge-specific evidence: integer mass, raw reply, factors, ..."""

    @property
    def failed(self) -> bool:
        return self.error is not None


def judgement_key(
    kind: str, model: str, rubric_hash: str, settings: dict[str, Any], question: str, answer: str
) -> str:
    """A stable sha256 over everything that determines a judgement."""
    payload = json.dumps(
        [kind, model, rubric_hash, settings, question, answer], sort_keys=True, ensure_ascii=False
    )
    return hashlib.sha256(payload.encode()).hexdigest()


class JudgementCache:
    """sqlite-backed judgement store (pass `path=":memory:"` for a throwaway one)."""

    def __init__(self, path: str | Path):
        self.path = str(path)
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, timeout=30.0)
        with self._lock:
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(SCHEMA)
            self._conn.commit()

    @classmethod
    def default(cls) -> JudgementCache:
        """The shared cache: `{PVLENS_CACHE or ~/.cache/pvlens}/judgements.sqlite`."""
        from pvlens.core.model import cache_dir

        return cls(cache_dir() / "judgements.sqlite")

    def get_many(self, keys: list[str]) -> dict[str, Judgement]:
        """The stored judgements among `keys` (failures included; callers decide on retries)."""
        found: dict[str, Judgement] = {}
        unique = list(dict.fromkeys(keys))
        with self._lock:
            for i in range(0, len(unique), 500):  # sqlite's variable limit
                chunk = unique[i : i + 500]
                marks = ",".join("?" * len(chunk))
                rows = self._conn.execute(
                    f"SELECT key, score, error, detail FROM judgements WHERE key IN ({marks})",
                    chunk,
                ).fetchall()
                for key, score, error, detail in rows:
                    found[key] = Judgement(score, error, json.loads(detail) if detail else {})
        return found

    def put(
        self,
        key: str,
        judgement: Judgement,
        *,
        kind: str,
        model: str,
        rubric_hash: str,
        question: str,
        answer: str,
    ) -> None:
        """Store (or overwrite) one judgement; committed immediately so a crash loses nothing."""
        with self._lock:
            self._conn.execute(
                "INSERT OR REPLACE INTO judgements VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    key,
                    kind,
                    model,
                    rubric_hash,
                    question,
                    answer,
                    judgement.score,
                    judgement.error,
                    json.dumps(judgement.detail, ensure_ascii=False, default=str),
                    time.time(),
                ),
            )
            self._conn.commit()

    def failures(self, kind: str | None = None) -> list[dict[str, Any]]:
        """Stored failed calls (for inspection and tests)."""
        query = (
            "SELECT kind, model, question, answer, error FROM judgements WHERE error IS NOT NULL"
        )
        args: tuple = ()
        if kind is not None:
            query += " AND kind = ?"
            args = (kind,)
        with self._lock:
            rows = self._conn.execute(query, args).fetchall()
        cols = ("kind", "model", "question", "answer", "error")
        return [dict(zip(cols, r, strict=True)) for r in rows]

    def __len__(self) -> int:
        with self._lock:
            return self._conn.execute("SELECT COUNT(*) FROM judgements").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class NullCache:
    """A cache that stores nothing (`cache=False`)."""

    path = None

    def get_many(self, keys: list[str]) -> dict[str, Judgement]:
        return {}

    def put(self, key: str, judgement: Judgement, **_: Any) -> None:
        pass

    def failures(self, kind: str | None = None) -> list[dict[str, Any]]:
        return []
