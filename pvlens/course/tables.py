"""The syllabus's runtime table, rendered from course/runtimes.json (`make course` writes it)."""

from __future__ import annotations

from typing import Any


def runtime_table(data: dict[str, Any]) -> str:
    """Markdown table: chapter, measured full-size runtime, when and on what."""
    rows = ["| chapter | measured runtime | threads | CPU | date |", "|---|---|---|---|---|"]
    for stem, r in data["chapters"].items():
        rows.append(f"| {stem} | {r['seconds'] / 60:.1f} min | {r['threads']} of {r['cpus']} | {r['cpu']} | {r['date']} |")
    return "\n".join(rows) + "\n"
