"""Small helpers the experiments' table renderers share."""

from __future__ import annotations

import math
from collections.abc import Sequence


def fmt(x: float | None, spec: str) -> str:
    """`x` formatted with `spec`; a missing or non-finite value as a dash, minus signs as −."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return format(x, spec).replace("-", "−")


def md_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A markdown table ending with a newline."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"
