"""How well a judge separates labelled answers: AUROC on the held-out judge-eval sets.

`pvlens/data/judge_eval/{trait}.jsonl` holds {question, answer, label} rows (label 1 = shows
the trait), written independently of the traits' exemplars, with hard negatives (dark topics
discussed responsibly, blunt-but-polite replies, confident correct facts, ...).

Coherence has no labelled set; it is measured against synthetic corruptions of the same
answers (loops, word salad, letter soup, off-topic swaps, truncation), which should score
lower than the originals.

    python -m pvlens.judges.evaluate [TRAIT ...] [--kind offline] [--coherence]
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score

from pvlens.judges.base import Judge
from pvlens.traits import DATA_DIR

EVAL_DIR = DATA_DIR / "judge_eval"


@dataclass(frozen=True)
class EvalItem:
    """One labelled answer."""

    question: str
    answer: str
    label: int
    """1 if the answer shows the trait, else 0."""


def eval_traits() -> list[str]:
    """Traits that have a held-out labelled set."""
    return sorted(p.stem for p in EVAL_DIR.glob("*.jsonl"))


def load_eval_set(trait: str | Path) -> list[EvalItem]:
    """The labelled set of a built-in trait name, or any JSONL file of {question, answer, label}."""
    path = Path(trait) if str(trait).endswith(".jsonl") else EVAL_DIR / f"{trait}.jsonl"
    if not path.exists():
        raise FileNotFoundError(
            f"no labelled set at {path}; built-in sets: {', '.join(eval_traits())}. "
            "Pass a .jsonl path with {question, answer, label} rows for your own trait."
        )
    items = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            item = EvalItem(str(row["question"]), str(row["answer"]), int(row["label"]))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
            raise ValueError(f"{path}:{n}: expected {{question, answer, label}}: {e}") from e
        if item.label not in (0, 1):
            raise ValueError(f"{path}:{n}: label must be 0 or 1, got {item.label}")
        items.append(item)
    return items


def auroc(labels: Sequence[int], scores: Sequence[float | None]) -> float | None:
    """ROC AUC over the scored items (None scores dropped); None if a class is missing."""
    kept = [(y, s) for y, s in zip(labels, scores, strict=True) if s is not None]
    ys = {y for y, _ in kept}
    if ys != {0, 1}:
        return None
    return float(roc_auc_score([y for y, _ in kept], [s for _, s in kept]))


@dataclass
class TraitEval:
    """A judge's trait scores on one labelled set."""

    trait: str
    kind: str
    model: str
    n_pos: int
    n_neg: int
    n_scored: int
    auroc: float | None
    accuracy_at_50: float | None
    """Share of scored items on the right side of 50 (the extraction filter's threshold)."""
    mean_pos: float | None
    mean_neg: float | None


def evaluate_trait(judge: Judge, items: Sequence[EvalItem], progress: bool = False) -> TraitEval:
    """Score `items` with `judge` and summarise."""
    scores = judge.score_many([(it.question, it.answer) for it in items], progress=progress)
    labels = [it.label for it in items]
    scored = [(y, s) for y, s in zip(labels, scores, strict=True) if s is not None]
    pos = [s for y, s in scored if y == 1]
    neg = [s for y, s in scored if y == 0]
    acc = float(np.mean([(s >= 50) == (y == 1) for y, s in scored])) if scored else None
    return TraitEval(
        trait=judge.trait.name,
        kind=judge.kind,
        model=judge.model,
        n_pos=sum(labels),
        n_neg=len(labels) - sum(labels),
        n_scored=len(scored),
        auroc=auroc(labels, scores),
        accuracy_at_50=acc,
        mean_pos=float(np.mean(pos)) if pos else None,
        mean_neg=float(np.mean(neg)) if neg else None,
    )


def evaluate(
    traits: Sequence[str] | None = None, kind: str = "offline", progress: bool = False, **options: Any
) -> list[TraitEval]:
    """AUROC of a judge kind on the built-in labelled sets (all traits by default)."""
    from pvlens.judges import load_judge

    rows = []
    for trait in traits or eval_traits():
        judge = load_judge(kind, trait=trait, **options)
        rows.append(evaluate_trait(judge, load_eval_set(trait), progress=progress))
    return rows


# --- coherence ------------------------------------------------------------------------------
def _sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s]


def _shuffle_cased(answer: str, rng: random.Random) -> str:
    """Words shuffled inside each sentence, keeping capitals and end punctuation (hard case)."""
    out = []
    for sentence in _sentences(answer):
        body = sentence.rstrip(".!?")
        end = sentence[len(body) :]
        words = [w if w == "I" else w.lower() for w in body.split()]
        rng.shuffle(words)
        if words:
            words[0] = words[0][:1].upper() + words[0][1:]
        out.append(" ".join(words) + end)
    return " ".join(out)


Corruption = Callable[[str, random.Random, str], str]
CORRUPTIONS: dict[str, Corruption] = {
    "repeat_word": lambda a, r, o: " ".join([r.choice(a.split()).strip(".,!?").lower()] * 40),
    "sentence_loop": lambda a, r, o: " ".join([_sentences(a)[0]] * 6),
    "phrase_loop": lambda a, r, o: " ".join(a.split()[:4] * 12),
    "word_salad": lambda a, r, o: " ".join(r.sample(a.split(), len(a.split()))),
    "word_salad_cased": lambda a, r, o: _shuffle_cased(a, r),
    "off_topic": lambda a, r, o: o,
    "letter_soup": lambda a, r, o: " ".join(
        "".join(r.choice("bcdfghjklmnpqrstvwxz aeiou") for _ in range(r.randint(3, 9)))
        for _ in a.split()
    ),
    "symbols": lambda a, r, o: "".join(
        r.choice("abcdefghijklmnopqrstuvwxyz0123456789#$%&*@!  ") for _ in a
    ),
    "truncated_half": lambda a, r, o: a[: len(a) // 2],
    "empty": lambda a, r, o: "",
}
"""Ways to break a coherent answer: (answer, rng, an unrelated answer) -> corrupted text."""
MILD = {"truncated_half"}
"""Corruptions the coherence rubric still calls coherent (an abrupt ending is about 75)."""


@dataclass
class CoherenceEval:
    """Coherence scores of original answers vs. one corruption of them."""

    corruption: str
    n: int
    auroc: float | None
    """P(original scores above its corruption)."""
    share_original_ge50: float
    share_corrupted_lt50: float


def evaluate_coherence(
    judge: Judge,
    items: Sequence[EvalItem],
    corruptions: Sequence[str] | None = None,
    seed: int = 0,
    progress: bool = False,
) -> list[CoherenceEval]:
    """AUROC of coherence(original) vs coherence(corrupted) for each corruption."""
    rng = random.Random(seed)
    n = len(items)
    pairs = [(it.question, it.answer) for it in items]
    original = judge.coherence_many(pairs, progress=progress)
    rows = []
    for name in corruptions or list(CORRUPTIONS):
        fn = CORRUPTIONS[name]
        # the off-topic answer comes from half the list away: another trait's topic
        broken = [
            (q, fn(a, rng, items[(i + n // 2 + 7) % n].answer)) for i, (q, a) in enumerate(pairs)
        ]
        corrupted = judge.coherence_many(broken, progress=progress)
        ok = [s for s in original if s is not None]
        bad = [s for s in corrupted if s is not None]
        rows.append(
            CoherenceEval(
                corruption=name,
                n=n,
                auroc=auroc([1] * n + [0] * n, list(original) + list(corrupted)),
                share_original_ge50=float(np.mean([s >= 50 for s in ok])) if ok else 0.0,
                share_corrupted_lt50=float(np.mean([s < 50 for s in bad])) if bad else 0.0,
            )
        )
    return rows


def all_items(traits: Sequence[str] | None = None) -> list[EvalItem]:
    """Every labelled answer of the given (default: all) traits, for coherence checks."""
    return [it for t in traits or eval_traits() for it in load_eval_set(t)]


# --- tables ---------------------------------------------------------------------------------
def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def trait_table(rows: Sequence[TraitEval]) -> str:
    """A markdown table of trait AUROCs, with the mean."""
    lines = [
        "| trait | AUROC | acc@50 | mean score pos | mean score neg | n pos/neg | scored |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r.trait} | {_fmt(r.auroc)} | {_fmt(r.accuracy_at_50, 2)} | "
            f"{_fmt(r.mean_pos, 1)} | {_fmt(r.mean_neg, 1)} | {r.n_pos}/{r.n_neg} | "
            f"{r.n_scored}/{r.n_pos + r.n_neg} |"
        )
    aucs = [r.auroc for r in rows if r.auroc is not None]
    accs = [r.accuracy_at_50 for r in rows if r.accuracy_at_50 is not None]
    if len(rows) > 1 and aucs:
        lines.append(f"| **mean** | **{np.mean(aucs):.3f}** | **{np.mean(accs):.2f}** | | | | |")
    return "\n".join(lines)


def coherence_table(rows: Sequence[CoherenceEval]) -> str:
    """A markdown table of coherence AUROCs per corruption."""
    lines = [
        "| corruption | AUROC (original > corrupted) | originals ≥ 50 | corrupted < 50 |",
        "|---|---|---|---|",
    ]
    for r in rows:
        mild = " (mild)" if r.corruption in MILD else ""
        lines.append(
            f"| {r.corruption}{mild} | {_fmt(r.auroc)} | {r.share_original_ge50:.2f} | "
            f"{r.share_corrupted_lt50:.2f} |"
        )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("traits", nargs="*", help="traits (default: all with a labelled set)")
    parser.add_argument("--kind", default="offline")
    parser.add_argument("--model", default=None)
    parser.add_argument("--coherence", action="store_true", help="also run the coherence check")
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    args = parser.parse_args(argv)
    options = {"model": args.model} if args.model else {}
    rows = evaluate(args.traits or None, kind=args.kind, **options)
    coh = []
    if args.coherence:
        from pvlens.judges import load_judge

        judge = load_judge(args.kind, trait=rows[0].trait, **options)
        coh = evaluate_coherence(judge, all_items(args.traits or None))
    if args.json:
        print(
            json.dumps(
                {"trait": [asdict(r) for r in rows], "coherence": [asdict(c) for c in coh]},
                indent=2,
            )
        )
        return
    print(trait_table(rows))
    if coh:
        print()
        print(coherence_table(coh))


if __name__ == "__main__":
    main()
