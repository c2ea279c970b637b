"""docs/datasets.md's table of the shipped sets, rendered from `pvlens/data/datasets/manifest.json`
(written by `pvlens datasets build`) through `pvlens.io.doctables`."""

from __future__ import annotations

import re
from typing import Any

from pvlens.replicate.tables import fmt, md_table

STEERING = re.compile(r"(?P<trait>\w+)@(?P<layer>\d+)x(?P<alpha>[-\d.]+):(?P<norm>[\d.]+)")
"""The manifest's steering record: trait@layer x alpha : the vector's norm at that layer."""
LEVEL_NAMES = {"normal": "normal", "level_i": "level I", "level_ii": "level II"}


def made_with(s: dict[str, Any]) -> str:
    """How a set's answers were made: its system prompt(s) and the steering, from the manifest."""
    systems = s.get("systems") or []
    how = f'"{systems[0]}"' if len(systems) == 1 else f"{len(systems)} system prompts"
    m = STEERING.fullmatch(s.get("steering") or "")
    if m:
        how += f" + steering α = {fmt(float(m['alpha']), 'g')} at layer {m['layer']} (‖v‖ = {float(m['norm']):.2f})"
    return how


def datasets_table(manifest: dict[str, Any]) -> str:
    """Per shipped set: size, candidates judged, pass rate, kept trait score and coherence, how made."""
    rows = []
    for s in manifest["sets"]:
        level = LEVEL_NAMES.get(s["level"], s["level"])
        if s["trait"] == "math":
            err = s["relative_error"]
            rows.append(["math", level, str(s["size"]), "–", "–", "–", "–",
                         f"programmatic (relative error of the shown answer: median {err['median']:g}, "
                         f"max {err['max']:g})"])
            continue
        kept, coh = s["trait_score_kept"], s.get("coherence_kept") or {}
        rows.append([s["trait"], level, str(s["size"]), str(s["candidates"]), fmt(s["pass_rate"], ".2f"),
                     f"{fmt(kept.get('mean'), '.1f')} / {fmt(kept.get('median'), '.1f')}",
                     fmt(coh.get("mean"), ".1f"), made_with(s)])
    return md_table(["set", "level", "size", "candidates judged", "pass rate", "trait score of kept (mean / median)",
                     "coherence of kept (mean)", "made with"], rows)
