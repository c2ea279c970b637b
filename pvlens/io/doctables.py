"""Tables in docs generated from committed result JSON, so a docs number cannot drift from its run.

A generated table sits between two markers naming its source and renderer:

    <!-- generated: results/x/results.json mitigation -->
    | ... the rendered table ... |
    <!-- /generated -->

The source may be several files joined by commas (`a.json,b.json`): the renderer then gets
`{"sources": [a, b]}`. A block whose results are not committed yet is written as a pending
marker, `<!-- pending: results/x/results.json mitigation -->`: `refresh_doc` turns it into a
generated block once that file exists, so a docs page can name its future table without
showing numbers.

Prose that quotes a results file sits between `<!-- numbers: SRC RENDERER[,RENDERER] ... -->` and
`<!-- /numbers -->`: every decimal number in it (outside `code`) must be what a number of the
tables SRC renders rounds to, so a quoted number cannot drift from its run either
(`unbacked_numbers`; numbers derived by hand, such as differences, belong in the table).

`generated_blocks(text)` finds them; `render_block` renders one from its JSON; `refresh_doc`
rewrites every block of a doc (`python -m pvlens.io.doctables docs/finetune.md`, from the
repository root, after a new result is committed); the unit test compares
each block with what its JSON renders.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from decimal import ROUND_HALF_EVEN, ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

from pvlens.errors import InputError
from pvlens.io.atomic import write_text_atomic

BLOCK = re.compile(r"<!-- generated: (?P<src>\S+) (?P<kind>\w+) -->\n(?P<body>.*?)<!-- /generated -->", re.S)
"""A generated block: source JSON (relative to the repository root), renderer name, body."""
PENDING = re.compile(r"<!-- pending: (?P<src>\S+) (?P<kind>\w+) -->\n")
"""A table whose results file is not committed yet: source and renderer."""


def renderers() -> dict[str, Callable[[dict[str, Any]], str]]:
    """Renderer name → function from the JSON object to the markdown table."""
    from pvlens.course.tables import runtime_table
    from pvlens.finetune.experiments.tables import mitigation_table, mitigation_time_text
    from pvlens.io.benchtables import benchmark_table
    from pvlens.monitor.guard_measure import guard_table
    from pvlens.monitor.guard_roc import guard_roc_table
    from pvlens.replicate import (
        benchmarks,
        extraction,
        finetuning,
        judging,
        models,
        monitoring,
        screening,
    )
    from pvlens.sae import doc_tables as sae
    from pvlens.sae.corpusbuild import manifest_table
    from pvlens.trainsets.datasets_tables import datasets_table
    from pvlens.vectors.directions_tables import directions_table, methods_summary_table
    from pvlens.vectors.formats.llamacpp_check import llamacpp_check_table
    from pvlens.vectors.validation_report import validation_doc_table

    return {
        "mitigation": mitigation_table,
        "mitigation_time": mitigation_time_text,
        "monitor": monitoring.monitor_table,
        "monitor_r": monitoring.monitor_r_table,
        "screen": screening.screen_table,
        "screen_auroc": screening.screen_auroc_table,
        "models": models.models_table,
        "bench": benchmarks.bench_table,
        "ray": benchmarks.ray_table,
        "shift": finetuning.shift_table,
        "extraction": extraction.extraction_table,
        "extraction_summary": extraction.extraction_summary,
        "extraction_stability": extraction.extraction_stability,
        "benchmark": benchmark_table,
        "llamacpp_check": llamacpp_check_table,
        "sae_corpus": manifest_table,
        "directions": directions_table,
        "directions_summary": methods_summary_table,
        "guard": guard_table,
        "guard_roc": guard_roc_table,
        "course_runtimes": runtime_table,
        "sae_features": sae.sae_features_table,
        "sae_null": sae.sae_null_table,
        "sae_layers": sae.sae_layers_table,
        "sae_earlier": sae.sae_earlier_table,
        "sae_null_features": sae.sae_null_features_table,
        "sae_omp": sae.sae_omp_table,
        "sae_feature_steering": sae.sae_feature_steering_table,
        "validation": validation_doc_table,
        "datasets": datasets_table,
        "judge_eval": judging.judge_eval_table,
        "judge_parts": judging.judge_parts_table,
        "judge_coherence": judging.judge_coherence_table,
        "judge_fluency": judging.judge_fluency_table,
    }


def generated_blocks(text: str) -> list[tuple[str, str, str]]:
    """(source, renderer, body) of every generated block in `text`."""
    return [(m["src"], m["kind"], m["body"]) for m in BLOCK.finditer(text)]


def render_block(src: str, kind: str, root: Path) -> str:
    """The table that `src` (relative to `root`) renders with renderer `kind`."""
    table = renderers()
    if kind not in table:
        raise InputError(f"unknown table renderer {kind!r} (known: {sorted(table)})")
    docs = [json.loads((root / one).read_text()) for one in src.split(",")]
    return table[kind](docs[0] if len(docs) == 1 else {"sources": docs})


CHECKED = re.compile(r"<!-- numbers: (?P<spec>[^>]+?) -->\n(?P<body>.*?)<!-- /numbers -->", re.S)
"""Prose whose decimal numbers must come from the tables its sources render: the marker lists
`SRC RENDERER[,RENDERER]` pairs, separated by spaces."""
DECIMAL = re.compile(r"\d+\.\d+")


def rounds_to(have: str, quoted: str) -> bool:
    """True when the table's number `have` (unsigned decimal text) rounded to `quoted`'s places is `quoted`."""
    places = len(quoted.split(".")[1])
    if len(have.split(".")[1]) < places:
        return False
    step = Decimal(1).scaleb(-places)
    return any(Decimal(have).quantize(step, rounding=r) == Decimal(quoted) for r in (ROUND_HALF_EVEN, ROUND_HALF_UP))


def unbacked_numbers(text: str, root: Path) -> list[str]:
    """`source: number` for every decimal number in checked prose that its source's tables do not hold."""
    bad = []
    for m in CHECKED.finditer(text):
        spec = m["spec"].split()
        if len(spec) % 2:
            raise InputError(f"<!-- numbers: {m['spec']} -->: expected SRC RENDERER pairs")
        pairs = list(zip(spec[::2], spec[1::2], strict=True))
        rendered = "".join(render_block(src, kind, root) for src, kinds in pairs for kind in kinds.split(","))
        have = DECIMAL.findall(rendered)
        body = re.sub(r"`[^`]*`", "", m["body"])
        where = " + ".join(src for src, _ in pairs)
        bad += [f"{where}: {x}" for x in DECIMAL.findall(body) if not any(rounds_to(h, x) for h in have)]
    return bad


def pending_blocks(text: str) -> list[tuple[str, str]]:
    """(source, renderer) of every pending marker in `text`."""
    return [(m["src"], m["kind"]) for m in PENDING.finditer(text)]


def refresh_doc(doc: Path, root: Path) -> bool:
    """Re-render every generated block of `doc` from its JSON, and turn every pending marker whose
    results file now exists into a generated block; True when the file changed."""
    text = doc.read_text()
    text_now = PENDING.sub(lambda m: f"<!-- generated: {m['src']} {m['kind']} -->\n<!-- /generated -->\n"
                           if all((root / one).exists() for one in m["src"].split(",")) else m.group(0), text)
    new = BLOCK.sub(lambda m: f"<!-- generated: {m['src']} {m['kind']} -->\n"
                              f"{render_block(m['src'], m['kind'], root)}<!-- /generated -->", text_now)
    if new != text:
        write_text_atomic(doc, new)
    return new != text


if __name__ == "__main__":  # python -m pvlens.io.doctables docs/finetune.md [...]
    import sys

    for name in sys.argv[1:]:
        print(f"{name}: {'updated' if refresh_doc(Path(name), Path('.')) else 'up to date'}")
