"""The syllabus's runtime table, rendered from course/runtimes.json (`make course` writes it)."""

from __future__ import annotations

from typing import Any


def _minutes(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds / 60:.1f} min"


def runtime_table(data: dict[str, Any]) -> str:
    """Markdown table: chapter, wall-clock and kernel CPU time of the full build, the machine's load."""
    rows = ["| chapter | wall clock | kernel CPU time | load average | threads | date |", "|---|---|---|---|---|---|"]
    for stem, r in data["chapters"].items():
        load = r.get("load_avg")
        rows.append(f"| {stem} | {_minutes(r['seconds'])} | {_minutes(r.get('cpu_seconds'))} | "
                    f"{'—' if load is None else load} on {r['cpus']} cores | {r['threads']} | {r['date']} |")
    return "\n".join(rows) + "\n"
