"""Validation of persona vectors on evaluation data that no pvlens vector produced.

The hand-written sets in `pvlens/data/eval/<trait>.jsonl` hold, for each question, an answer
that shows the trait and a clean answer to the same question. For a model, a layer and some
directions this module measures:

- the sample-level AUROC of the projection (unit direction, averaged over the answer tokens,
  or over prompt + answer tokens) of trait answers vs clean answers, with a bootstrap 95 %
  interval that resamples questions (a question's two answers stay together);
- the same AUROC for every shipped trait's vector on every trait's set (a specificity matrix);
- a null: the AUROC of many random unit directions on each set, and the percentile of each
  real vector in it.

Activations are collected once per set and layer; every direction is a cheap projection.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import torch
from jaxtyping import Float
from pydantic import BaseModel
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import collect
from pvlens.core.chat import EncodedChat, encode_conversation
from pvlens.errors import InputError
from pvlens.io.jsonl import iter_jsonl

EVAL_TRAITS = ("evil", "sycophantic", "hallucinating")
"""Traits with a hand-written evaluation set shipped in pvlens/data/eval."""
EVAL_FIELDS = ("id", "question", "trait_answer", "clean_answer", "register", "length")
"""Every row of an evaluation set has exactly these string fields."""
VALIDATION_REDUCTIONS = ("response_avg", "all_avg")
"""Answer-token average (the paper's sample-level ΔP) and prompt + answer token average."""


@dataclass(frozen=True)
class EvalRow:
    """One question with a trait answer and a clean answer to it."""

    id: str
    question: str
    trait_answer: str
    clean_answer: str
    register: str
    length: str


def eval_set_path(trait: str) -> Path:
    """The shipped hand-written set of `trait` (one of EVAL_TRAITS)."""
    if trait not in EVAL_TRAITS:
        raise InputError(f"no hand-written evaluation set for trait {trait!r}; shipped: {list(EVAL_TRAITS)}")
    return Path(str(resources.files("pvlens"))) / "data" / "eval" / f"{trait}.jsonl"


def parse_eval_row(row: object, where: str) -> EvalRow:
    """An EvalRow from one parsed JSON line; errors name `where` (file:line) and the problem."""
    if not isinstance(row, dict):
        raise InputError(f"{where}: expected a JSON object, got {type(row).__name__}")
    missing = [k for k in EVAL_FIELDS if k not in row]
    extra = sorted(set(row) - set(EVAL_FIELDS))
    if missing or extra:
        raise InputError(f"{where}: fields must be {list(EVAL_FIELDS)} (missing {missing}, unexpected {extra})")
    for key in EVAL_FIELDS:
        if not isinstance(row[key], str) or not row[key].strip():
            raise InputError(f"{where}: field {key!r} must be a non-empty string")
    return EvalRow(**{k: row[k] for k in EVAL_FIELDS})


def load_eval_set(trait_or_path: str | Path) -> list[EvalRow]:
    """The rows of a shipped set (by trait name) or of any JSONL file with the same schema.

    Strict: a malformed line, a missing or extra field, or a repeated id raises InputError
    naming file:line.
    """
    path = Path(trait_or_path) if Path(trait_or_path).suffix == ".jsonl" else eval_set_path(str(trait_or_path))
    rows: list[EvalRow] = []
    seen: dict[str, int] = {}
    for lineno, raw in iter_jsonl(path, InputError):
        row = parse_eval_row(raw, f"{path}:{lineno}")
        if row.id in seen:
            raise InputError(f"{path}:{lineno}: id {row.id!r} repeats line {seen[row.id]}; ids must be unique")
        seen[row.id] = lineno
        rows.append(row)
    if not rows:
        raise InputError(f"{path}: the evaluation set is empty")
    return rows


def encode_pairs(model: HookedTransformer, rows: Sequence[EvalRow]) -> list[EncodedChat]:
    """Chats [trait answers..., clean answers...] (user question, assistant answer)."""
    def chat(question: str, answer: str) -> EncodedChat:
        return encode_conversation(
            model.tokenizer, [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        )

    return [chat(r.question, r.trait_answer) for r in rows] + [chat(r.question, r.clean_answer) for r in rows]


@dataclass
class PairActivations:
    """Per-question reductions of the trait and the clean answer at each collected layer."""

    layers: list[int]
    trait: dict[str, Float[Tensor, "n n_layers d_model"]]
    clean: dict[str, Float[Tensor, "n n_layers d_model"]]
    trait_tokens: list[int]
    """Answer length in tokens of each trait answer (for the length-only baseline)."""
    clean_tokens: list[int]
    """Answer length in tokens of each clean answer."""

    def length_auroc(self) -> float:
        """AUROC of answer length alone (trait vs clean): how much a length detector would score."""
        return float(auroc(torch.tensor(self.trait_tokens, dtype=torch.float64),
                           torch.tensor(self.clean_tokens, dtype=torch.float64)))

    def at(self, reduction: str, layer: int) -> tuple[Float[Tensor, "n d_model"], Float[Tensor, "n d_model"]]:
        """(trait, clean) activations of one reduction at one layer."""
        j = self.layers.index(layer)
        return self.trait[reduction][:, j], self.clean[reduction][:, j]


def pair_activations(
    model: HookedTransformer, rows: Sequence[EvalRow], layers: Sequence[int],
    reductions: Sequence[str] = VALIDATION_REDUCTIONS, batch_size: int = 16,
) -> PairActivations:
    """One activation pass over a set's trait and clean answers, for all `layers` at once."""
    chats = encode_pairs(model, rows)
    acts = collect(model, chats, reductions=list(reductions), layers=list(layers),
                   batch_size=batch_size, progress=False)
    n = len(rows)
    return PairActivations(
        layers=[int(x) for x in layers],
        trait={r: a[:n] for r, a in acts.items()},
        clean={r: a[n:] for r, a in acts.items()},
        trait_tokens=[c.response_len for c in chats[:n]],
        clean_tokens=[c.response_len for c in chats[n:]],
    )


@dataclass
class GroupedActivations:
    """Unpaired pos/neg activations, each sample tagged with its question (for the bootstrap)."""

    layers: list[int]
    pos: Float[Tensor, "n_pos n_layers d_model"]
    neg: Float[Tensor, "n_neg n_layers d_model"]
    pos_groups: list[int]
    neg_groups: list[int]

    def at(self, layer: int) -> tuple[Float[Tensor, "n_pos d_model"], Float[Tensor, "n_neg d_model"]]:
        """(pos, neg) activations at one layer."""
        j = self.layers.index(layer)
        return self.pos[:, j], self.neg[:, j]


def auroc(pos: Float[Tensor, "*k n_pos"], neg: Float[Tensor, "*k n_neg"]) -> Float[Tensor, "*k"]:
    """P(score of a positive > score of a negative) + ½·P(tie), over the last axis (batched)."""
    diff = pos.double().unsqueeze(-1) - neg.double().unsqueeze(-2)
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean(dim=(-1, -2))


def _question_weights(
    n_pos: int, n_neg: int, n_boot: int, seed: int,
    pos_groups: Sequence[int] | None, neg_groups: Sequence[int] | None,
) -> tuple[Tensor, Tensor]:
    """Bootstrap weights `[n_boot, n_pos]`, `[n_boot, n_neg]`: how often each sample's question is drawn."""
    if pos_groups is None or neg_groups is None:
        if n_pos != n_neg:
            raise ValueError("unpaired scores need pos_groups and neg_groups")
        pos_groups = neg_groups = list(range(n_pos))
    ids = sorted(set(pos_groups) | set(neg_groups))
    where = {g: k for k, g in enumerate(ids)}
    gen = torch.Generator().manual_seed(seed)
    draws = torch.randint(0, len(ids), (n_boot, len(ids)), generator=gen)
    counts = torch.zeros(n_boot, len(ids), dtype=torch.float64).scatter_add_(
        1, draws, torch.ones(n_boot, len(ids), dtype=torch.float64))
    return counts[:, [where[g] for g in pos_groups]], counts[:, [where[g] for g in neg_groups]]


def _weighted_aurocs(pos: Tensor, neg: Tensor, w_pos: Tensor, w_neg: Tensor) -> Tensor:
    """The AUROC under each row of bootstrap weights."""
    diff = pos.double()[:, None] - neg.double()[None, :]
    wins = (diff > 0).double() + 0.5 * (diff == 0).double()
    return torch.einsum("bi,ij,bj->b", w_pos, wins, w_neg) / (w_pos.sum(1) * w_neg.sum(1))


def _interval(values: Tensor) -> tuple[float, float]:
    lo, hi = torch.nanquantile(values, torch.tensor([0.025, 0.975], dtype=values.dtype)).tolist()
    return float(lo), float(hi)


def bootstrap_auroc(
    pos: Float[Tensor, " n_pos"], neg: Float[Tensor, " n_neg"], n_boot: int = 1000, seed: int = 0,
    pos_groups: Sequence[int] | None = None, neg_groups: Sequence[int] | None = None,
) -> tuple[float, float]:
    """95 % percentile interval of the AUROC over questions resampled with replacement.

    Every sample belongs to a question (`*_groups`; default: pos[i] and neg[i] answer question
    i); a drawn question brings all its samples, as often as it is drawn.
    """
    w_pos, w_neg = _question_weights(pos.shape[0], neg.shape[0], n_boot, seed, pos_groups, neg_groups)
    return _interval(_weighted_aurocs(pos, neg, w_pos, w_neg))


def bootstrap_auroc_difference(
    pos_a: Float[Tensor, " n_pos"], neg_a: Float[Tensor, " n_neg"],
    pos_b: Float[Tensor, " n_pos"], neg_b: Float[Tensor, " n_neg"], n_boot: int = 1000, seed: int = 0,
) -> tuple[float, float, float]:
    """AUROC(a) − AUROC(b) of two scorings of the same answers, with a 95 % interval from
    resampling the questions once for both (paired: far tighter than comparing two intervals).
    Both scorings must score the same answers: pos[i] and neg[i] answer question i."""
    if not (pos_a.shape == pos_b.shape == neg_a.shape == neg_b.shape) or pos_a.dim() != 1:
        raise ValueError(
            f"a paired AUROC difference needs both scorings of the same question-paired answers: got pos "
            f"{tuple(pos_a.shape)} / {tuple(pos_b.shape)} and neg {tuple(neg_a.shape)} / {tuple(neg_b.shape)}; "
            "pass 1-D scores with pos[i] and neg[i] answering question i"
        )
    w_pos, w_neg = _question_weights(pos_a.shape[0], neg_a.shape[0], n_boot, seed, None, None)
    values = _weighted_aurocs(pos_a, neg_a, w_pos, w_neg) - _weighted_aurocs(pos_b, neg_b, w_pos, w_neg)
    point = float(auroc(pos_a, neg_a) - auroc(pos_b, neg_b))
    return (point, *_interval(values))


def random_directions(n: int, d_model: int, seed: int = 0) -> Float[Tensor, "n d_model"]:
    """`n` random unit directions, uniform on the sphere (seeded)."""
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(n, d_model, generator=g, dtype=torch.float64)
    return dirs / dirs.norm(dim=-1, keepdim=True)


def projection_aurocs(
    trait: Float[Tensor, "n d_model"], clean: Float[Tensor, "n d_model"], dirs: Float[Tensor, "k d_model"]
) -> Float[Tensor, " k"]:
    """AUROC (trait vs clean answers) of the projection on each unit direction."""
    dirs = dirs.double()
    return auroc(dirs @ trait.double().T, dirs @ clean.double().T)


def percentile_in(value: float, null: Float[Tensor, " k"]) -> float:
    """Percent of the null below `value` (ties count half): 100 means above every null value."""
    null = null.double()
    return float(100.0 * ((null < value).double() + 0.5 * (null == value).double()).mean())


class NullSummary(BaseModel):
    """The AUROC distribution of random unit directions on one set."""

    n: int
    mean: float
    p05: float
    p95: float
    max: float
    aurocs: list[float]


class Cell(BaseModel):
    """One vector on one set: AUROC, its bootstrap interval, paired win rate, null percentile."""

    auroc: float
    ci95: tuple[float, float]
    paired_win_rate: float | None
    """Share of questions whose trait answer scores above its clean answer (paired sets only)."""
    null_percentile: float


class SetResult(BaseModel):
    """Every vector on one trait's set, and the verdicts for that trait's own vector."""

    n: int
    """Questions (paired sets: one trait and one clean answer each)."""
    n_pos: int
    n_neg: int
    cells: dict[str, Cell]
    null: NullSummary
    own_beats_others: bool
    own_beats_null_p95: bool
    length_auroc: float | None = None
    """AUROC of answer length in tokens alone (a baseline any length-sensitive score could reach)."""


def null_summary(values: Float[Tensor, " k"]) -> NullSummary:
    """Mean, 5th/95th percentile and max of a null AUROC distribution (values kept, 4 decimals)."""
    v = values.double()
    p05, p95 = torch.quantile(v, torch.tensor([0.05, 0.95], dtype=v.dtype)).tolist()
    return NullSummary(n=int(v.numel()), mean=float(v.mean()), p05=p05, p95=p95, max=float(v.max()),
                       aurocs=[round(float(x), 4) for x in v])


Groups = tuple[list[int], list[int]]
"""(question of each pos sample, question of each neg sample); None = paired by index."""


def measure_cell(
    pos: Tensor, neg: Tensor, unit: Tensor, null: Tensor, n_boot: int, seed: int, groups: Groups | None = None
) -> Cell:
    """AUROC of one unit direction on one set, with interval, paired win rate and null percentile."""
    u = unit.double()
    p, q = pos.double() @ u, neg.double() @ u
    value = float(auroc(p, q))
    pg, ng = groups if groups is not None else (None, None)
    return Cell(
        auroc=value, ci95=bootstrap_auroc(p, q, n_boot, seed, pg, ng),
        paired_win_rate=float((p > q).double().mean()) if groups is None else None,
        null_percentile=percentile_in(value, null),
    )


def measure_set(
    own: str, pos: Tensor, neg: Tensor, units: dict[str, Tensor], dirs: Tensor, n_boot: int, seed: int,
    groups: Groups | None = None,
) -> SetResult:
    """Every named unit direction and the random null on one set; verdicts for the `own` vector."""
    null = projection_aurocs(pos, neg, dirs)
    cells = {name: measure_cell(pos, neg, u, null, n_boot, seed, groups) for name, u in units.items()}
    summary = null_summary(null)
    others = [c.auroc for name, c in cells.items() if name != own]
    own_cell = cells.get(own)
    n = int(pos.shape[0]) if groups is None else len(set(groups[0]) | set(groups[1]))
    return SetResult(
        n=n, n_pos=int(pos.shape[0]), n_neg=int(neg.shape[0]), cells=cells, null=summary,
        own_beats_others=own_cell is not None and all(own_cell.auroc > a for a in others),
        own_beats_null_p95=own_cell is not None and own_cell.auroc > summary.p95,
    )
