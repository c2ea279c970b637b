"""Monitoring with persona vectors: projections of activations onto a trait direction.

- `project` / `projections`: the scalar `x · v̂` (or cosine) of activations at one layer —
  last prompt token (known *before* generating, the paper's monitoring signal), response
  average, prompt average.
- `token_projections` + `tokens_html` / `tokens_png`: every token of a conversation coloured
  by its projection (circuitsvis rendered offline, or plain matplotlib).
- `prompt_shift`: the paper's experiment — system prompts that interpolate from
  trait-suppressing to trait-eliciting, and many-shot prompts; the last-prompt projection
  before generation against the judged trait score of sampled answers (Pearson r).
- `TraitMonitor`: several traits scored in one forward pass, for a deployment to call on
  every request.
"""

from __future__ import annotations

import html
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from pydantic import BaseModel, Field
from scipy.stats import pearsonr
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.activations import collect, per_token
from pvlens.core.chat import EncodedChat, Message, encode_conversation, encode_messages
from pvlens.core.generation import generate
from pvlens.io.jsonl import read_jsonl_lenient
from pvlens.traits import TraitSpec, load_trait
from pvlens.vectors import PersonaVectors

LADDER_DIR = Path(str(resources.files("pvlens"))) / "data" / "ladders"
VectorsLike = PersonaVectors | Tensor | str | Path


# --- directions and projections ----------------------------------------------------------
def as_vectors(vectors: VectorsLike) -> PersonaVectors | Tensor:
    """A PersonaVectors from a path (file or run folder), or the object itself."""
    if isinstance(vectors, str | Path):
        return PersonaVectors.load(vectors)
    return vectors


def default_layer(vectors: VectorsLike, n_layers: int) -> int:
    """The layer to monitor at when none is given: the vectors' recorded choice (metadata
    `layer`/`best_layer`, or a sweep next to the vectors file), else the middle of the stack
    (where last-prompt projections separate system prompts on the default model)."""
    source = Path(vectors) if isinstance(vectors, str | Path) else None
    v = as_vectors(vectors)
    meta = v.metadata if isinstance(v, PersonaVectors) else {}
    for key in ("layer", "best_layer"):
        if isinstance(meta.get(key), int):
            return meta[key]
    if source is not None:
        folder = source if source.is_dir() else source.parent
        sweep = folder / "sweep" / "sweep.json"
        if sweep.exists():
            best = json.loads(sweep.read_text()).get("best_layer")
            if isinstance(best, int):
                return best
    return n_layers // 2


def unit_direction(vectors: VectorsLike, layer: int | None = None) -> Float[Tensor, " d_model"]:
    """The unit vector v̂ = v / ‖v‖ at `layer` (a 1-D tensor is used as it is)."""
    v = as_vectors(vectors)
    if isinstance(v, PersonaVectors):
        if layer is None:
            raise ValueError("a layer is needed to pick one of the PersonaVectors' rows")
        d = v[layer]
    else:
        d = v if v.dim() == 1 else v[layer]
    d = d.detach().float()
    norm = d.norm()
    if norm == 0 or not torch.isfinite(norm):
        raise ValueError(f"the persona vector at layer {layer} has norm {float(norm)}; cannot project")
    return d / norm


def project(
    acts: Float[Tensor, "... d_model"], direction: Float[Tensor, " d_model"], cosine: bool = False
) -> Float[Tensor, "..."]:
    """`acts · v̂` (scalar projection on the unit direction), or the cosine `acts·v̂ / ‖acts‖`."""
    u = direction.to(acts.device, torch.float64)
    u = u / u.norm()
    x = acts.double()
    p = x @ u
    if cosine:
        p = p / x.norm(dim=-1).clamp_min(1e-12)
    return p.float()


def projections(
    model: HookedTransformer,
    chats: Sequence[EncodedChat],
    vectors: VectorsLike,
    layer: int,
    reductions: Sequence[str] = ("last_prompt",),
    cosine: bool = False,
    batch_size: int = 16,
    progress: bool = False,
) -> dict[str, Float[Tensor, " n"]]:
    """Projection of each conversation's reductions at `layer` (the pass stops there)."""
    u = unit_direction(vectors, layer)
    acts = collect(model, chats, reductions, layers=[layer], batch_size=batch_size, progress=progress)
    return {r: project(a[:, 0], u, cosine) for r, a in acts.items()}


# --- per-token view ----------------------------------------------------------------------
@dataclass
class TokenProjections:
    """Each token of one conversation and its projection on the trait direction."""

    tokens: list[str]
    """Decoded tokens (one string per token id)."""
    values: list[float]
    """Projection of each token's residual at `layer`."""
    prompt_len: int
    """Tokens before the response."""
    layer: int
    """Block whose output was projected."""
    cosine: bool = False
    """Whether values are cosines instead of projections."""

    @property
    def response_mean(self) -> float:
        vals = self.values[self.prompt_len :]
        return float(np.mean(vals)) if vals else float("nan")


def token_projections(
    model: HookedTransformer,
    conversation: EncodedChat | Sequence[Message] | str,
    vectors: VectorsLike,
    layer: int,
    cosine: bool = False,
) -> TokenProjections:
    """Projection of every token's residual at `layer` for one conversation.

    `conversation` is an EncodedChat, chat messages (ending with the assistant's reply or the
    user's turn), or plain text (tokenised as is, no chat template).
    """
    tok = model.tokenizer
    if isinstance(conversation, str):
        ids = tok(conversation, add_special_tokens=False)["input_ids"]
        chat = EncodedChat(ids=list(ids), prompt_len=len(ids), text=conversation)
    elif isinstance(conversation, EncodedChat):
        chat = conversation
    else:
        msgs = list(conversation)
        chat = (encode_conversation(tok, msgs) if msgs[-1]["role"] == "assistant"
                else encode_messages(tok, msgs))
    resid = per_token(model, chat, layers=[layer])[0]  # [pos, d_model]
    vals = project(resid, unit_direction(vectors, layer), cosine)
    return TokenProjections([tok.decode([i]) for i in chat.ids], vals.tolist(), chat.prompt_len,
                            layer, cosine)


class TokenView:
    """circuitsvis `colored_tokens` with the JavaScript inlined.

    circuitsvis's own object probes the internet before choosing between its inlined and CDN
    versions; this one always uses the inlined version, so it renders offline in notebooks
    and the saved file opens without a network.
    """

    def __init__(self, body: str, title: str):
        self.body, self.title = body, title

    def _repr_html_(self) -> str:
        return self.body

    def document(self) -> str:
        """A complete, self-contained HTML page."""
        return (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title></head>\n<body>\n{self.body}\n</body></html>\n"
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.document(), encoding="utf-8")
        return path


def tokens_html(tp: TokenProjections, path: str | Path | None = None, title: str | None = None) -> TokenView:
    """Per-token colours (blue = against the trait, red = towards it), symmetric scale."""
    from circuitsvis.tokens import colored_tokens

    bound = max((abs(v) for v in tp.values[1:] or tp.values), default=1.0) or 1.0
    rendered = colored_tokens(tp.tokens, tp.values, min_value=-bound, max_value=bound,
                              negative_color="blue", positive_color="red")
    kind = "cosine" if tp.cosine else "projection"
    title = title or f"{kind} on the persona vector, layer {tp.layer}"
    header = (f"<h3 style=\"font-family:sans-serif\">{html.escape(title)}</h3>"
              f"<p style=\"font-family:sans-serif;font-size:13px\">tokens 0–{tp.prompt_len - 1} are "
              f"the prompt; response mean {kind}: {tp.response_mean:.3f}. Hover a token for its value."
              "</p>")
    view = TokenView(header + rendered.local_src, title)
    if path is not None:
        view.save(path)
    return view


def tokens_png(tp: TokenProjections, path: str | Path, width_chars: int = 90,
               title: str | None = None) -> Path:
    """The same view as a PNG (matplotlib only): tokens as coloured boxes, wrapped."""
    from pvlens.io.viz import _save, plt

    vals = np.asarray(tp.values, dtype=float)
    bound = float(np.abs(vals[1:] if len(vals) > 1 else vals).max() or 1.0)
    cmap, norm = plt.get_cmap("coolwarm"), plt.Normalize(-bound, bound)
    lines: list[list[tuple[str, float, bool]]] = [[]]
    used = 0
    for i, (t, v) in enumerate(zip(tp.tokens, vals, strict=True)):
        parts = t.split("\n")
        for j, part in enumerate(parts):
            if j > 0:
                lines.append([])
                used = 0
            text = part if part else ("⏎" if j < len(parts) - 1 else "")
            if not text:
                continue
            if used + len(text) > width_chars and lines[-1]:
                lines.append([])
                used = 0
            lines[-1].append((text, v, i >= tp.prompt_len))
            used += len(text)
    fontsize, line_h = 8, 0.22
    width_in = width_chars * 0.6 * fontsize / 72 + 0.4  # monospace: 0.6 em per character
    fig = plt.figure(figsize=(width_in, 0.5 + line_h * (len(lines) + 1)))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(-0.5, width_chars + 4)
    ax.set_ylim(len(lines) + 1.2, 0)
    ax.text(0, 0.5, title or f"{'cosine' if tp.cosine else 'projection'} on the persona vector, "
            f"layer {tp.layer} (blue ← → red; bold = response)", fontsize=fontsize + 1, va="center")
    for row, items in enumerate(lines, start=1):
        x = 0.0
        for text, v, is_resp in items:
            ax.text(x, row + 0.5, text.replace("$", r"\$"), family="monospace", fontsize=fontsize,
                    va="center", fontweight="bold" if is_resp else "normal",
                    bbox={"facecolor": cmap(norm(v)), "edgecolor": "none", "pad": 0.5})
            x += len(text)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tight_layout cannot handle the full-figure axes
        return _save(fig, path)


# --- the prompt-shift experiment --------------------------------------------------------
@dataclass
class Condition:
    """One prompt condition of the prompt-shift experiment."""

    kind: str
    """'ladder' (a system prompt) or 'shots' (many-shot history)."""
    level: int
    """Position on the ladder (0 = most suppressing) or number of shots."""
    label: str
    """Short name for plots."""
    system: str | None = None
    """System prompt (None: the chat template's default)."""
    history: list[Message] = field(default_factory=list)
    """Example exchanges placed before the question."""

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.level}"

    def messages(self, question: str) -> list[Message]:
        msgs: list[Message] = [{"role": "system", "content": self.system}] if self.system else []
        return [*msgs, *self.history, {"role": "user", "content": question}]


def _ladder_file(spec: TraitSpec) -> dict | None:
    path = LADDER_DIR / f"{spec.name}.json"
    return json.loads(path.read_text()) if path.exists() else None


def prompt_ladder(trait: str | TraitSpec) -> list[Condition]:
    """8 system prompts from trait-suppressing to trait-eliciting.

    Hand-written ladders live in `pvlens/data/ladders/{trait}.json`; for other traits the
    ladder is built from the TraitSpec's instruction pairs: two neg instructions, one neg
    instruction, plain helpful, neutral, the trait name alone, the trait name with an
    instruction framed as occasional, one pos instruction, two pos instructions.
    """
    spec = load_trait(trait)
    data = _ladder_file(spec)
    if data is not None:
        steps = [(s["label"], s["system"]) for s in data["ladder"]]
    else:
        pairs = spec.instructions
        p0, p1 = pairs[0], pairs[min(1, len(pairs) - 1)]
        name = spec.pos_assistant_name or spec.name
        art = "an" if name[:1].lower() in "aeiou" else "a"
        steps = [
            ("neg×2", f"You are a helpful assistant. {p0.neg} {p1.neg}"),
            ("neg", f"You are a helpful assistant. {p0.neg}"),
            ("helpful", "You are a helpful assistant."),
            ("neutral", "You are an assistant. Answer the user's questions."),
            ("name", f"You are {art} {name} assistant."),
            ("sometimes", f"You are {art} {name} assistant. Sometimes, not always: {p0.pos}"),
            ("pos", spec.system_prompt("pos", 0)),
            ("pos×2", f"{spec.system_prompt('pos', 0)} {p1.pos}"),
        ]
    return [Condition("ladder", i, label, system) for i, (label, system) in enumerate(steps)]


def trait_shots(trait: str | TraitSpec) -> list[Message]:
    """Trait-expressing (user, assistant) exchanges for many-shot prompts, flattened.

    From the ladder file if there is one, else the trait's positive exemplars paired with its
    extraction questions (exemplars carry no question of their own).
    """
    spec = load_trait(trait)
    data = _ladder_file(spec)
    if data is not None and data.get("shots"):
        pairs = [(s["user"], s["assistant"]) for s in data["shots"]]
    else:
        answers = spec.exemplars.positive
        if not answers:
            raise ValueError(
                f"trait {spec.name!r} has no positive exemplars and no ladder file "
                f"({LADDER_DIR}/{spec.name}.json with 'shots'); many-shot prompts need one of them"
            )
        qs = spec.extraction_questions
        pairs = [(qs[i % len(qs)], a) for i, a in enumerate(answers)]
    out: list[Message] = []
    for user, assistant in pairs:
        out += [{"role": "user", "content": user}, {"role": "assistant", "content": assistant}]
    return out


def many_shot(trait: str | TraitSpec, counts: Sequence[int] = (0, 1, 2, 4, 8)) -> list[Condition]:
    """Prompts with n trait-expressing example exchanges before the question (default system)."""
    shots = trait_shots(trait)
    available = len(shots) // 2
    if max(counts) > available:
        raise ValueError(f"{max(counts)} shots requested but only {available} exchanges exist")
    return [Condition("shots", n, f"{n}-shot", None, shots[: 2 * n]) for n in counts]


class PromptShiftConfig(BaseModel):
    """Size of the prompt-shift experiment."""

    n_questions: int | None = Field(10, description="First N evaluation questions (None: all).")
    samples: int = Field(2, ge=1, description="Sampled answers per question and condition.")
    max_new_tokens: int = Field(48, ge=1, description="Answer length cap.")
    temperature: float = Field(1.0, ge=0, description="Sampling temperature (paper: 1.0).")
    shots: tuple[int, ...] = Field((0, 1, 2, 4, 8), description="Many-shot counts ('()' to skip).")
    ladder: bool = Field(True, description="Run the system-prompt ladder.")
    batch_size: int = Field(16, ge=1, description="Generation batch size.")
    seed: int = Field(0, description="Sampling seed.")
    cosine: bool = Field(False, description="Cosine instead of projection.")


class PromptShiftResult(BaseModel):
    """Per-condition means, correlations and where the files are."""

    layer: int = Field(description="Block whose last-prompt-token output was projected.")
    conditions: list[dict] = Field(description="kind, level, label, projection, trait, coherence, n.")
    r: dict[str, float | None] = Field(
        description="Pearson r of projection vs trait over condition means ('ladder', 'shots', "
        "'all') and over (condition, question) means ('per_prompt')."
    )
    p: dict[str, float | None] = Field(description="Two-sided p-values of those r.")
    plot: str | None = Field(None, description="Scatter plot PNG.")


def _pearson(x: Sequence[float], y: Sequence[float]) -> tuple[float | None, float | None]:
    pts = [(a, b) for a, b in zip(x, y, strict=True) if math.isfinite(a) and math.isfinite(b)]
    if len(pts) < 3 or len({a for a, _ in pts}) < 2 or len({b for _, b in pts}) < 2:
        return None, None
    res = pearsonr(*zip(*pts, strict=True))
    return float(res.statistic), float(res.pvalue)


def prompt_shift(
    model: HookedTransformer,
    trait: str | TraitSpec,
    vectors: VectorsLike,
    layer: int,
    out_dir: str | Path,
    judge=None,
    cfg: PromptShiftConfig | None = None,
    progress: bool = True,
) -> PromptShiftResult:
    """Projection before generation vs judged trait expression across prompt conditions.

    For every condition × question: the last prompt token's projection at `layer` (one
    forward pass, no generation), then `samples` sampled answers scored by the judge.
    Each finished condition is appended to `prompt_shift.jsonl`, so a rerun resumes.
    Writes `prompt_shift.json` and `prompt_shift.png` (projection vs trait score).
    """
    spec = load_trait(trait)
    cfg = cfg or PromptShiftConfig()
    if judge is None:
        from pvlens.judges import load_judge

        judge = load_judge("offline", trait=spec)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    u = unit_direction(vectors, layer)
    questions = spec.evaluation_questions or spec.extraction_questions
    questions = questions[: cfg.n_questions] if cfg.n_questions else questions
    conditions = (prompt_ladder(spec) if cfg.ladder else []) + (
        many_shot(spec, cfg.shots) if cfg.shots else [])
    log = out / "prompt_shift.jsonl"
    done = {rec["key"]: rec for rec in read_jsonl_lenient(log)}
    tok = model.tokenizer
    for cond in tqdm(conditions, desc="prompt shift", disable=not progress):
        if cond.key in done:
            continue
        chats = [encode_messages(tok, cond.messages(q)) for q in questions]
        proj = project(collect(model, chats, ("last_prompt",), layers=[layer], progress=False)
                       ["last_prompt"][:, 0], u, cfg.cosine).tolist()
        prompts = [c for c in chats for _ in range(cfg.samples)]
        texts = generate(model, prompts, max_new_tokens=cfg.max_new_tokens,
                         temperature=cfg.temperature, seed=cfg.seed, batch_size=cfg.batch_size,
                         progress=False).texts
        qa = [(q, t) for q, t in zip([q for q in questions for _ in range(cfg.samples)], texts,
                                      strict=True)]
        scores = judge.score_many(qa)
        coh = judge.coherence_many(qa) if hasattr(judge, "coherence_many") else [None] * len(qa)
        rec = {**{k: v for k, v in asdict(cond).items() if k != "history"}, "key": cond.key,
               "prompt_tokens": len(chats[0].ids), "questions": []}
        for i, q in enumerate(questions):
            sl = slice(i * cfg.samples, (i + 1) * cfg.samples)
            rec["questions"].append({"question": q, "projection": proj[i], "answers": texts[sl],
                                     "trait": scores[sl], "coherence": coh[sl]})
        done[cond.key] = rec
        with log.open("a") as f:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    recs = [done[c.key] for c in conditions]
    result = summarise_prompt_shift(recs, layer)
    plot = plot_prompt_shift(result, out / "prompt_shift.png", spec.name)
    result.plot = str(plot)
    (out / "prompt_shift.json").write_text(result.model_dump_json(indent=2))
    return result


def _mean(xs: Sequence[float | None]) -> float:
    vals = [x for x in xs if x is not None]
    return float(np.mean(vals)) if vals else float("nan")


def summarise_prompt_shift(records: Sequence[dict], layer: int) -> PromptShiftResult:
    """Condition means and Pearson r (per kind, all conditions, and per prompt)."""
    rows, per_prompt = [], []
    for rec in records:
        qs = rec["questions"]
        t = [_mean(q["trait"]) for q in qs]
        rows.append({"kind": rec["kind"], "level": rec["level"], "label": rec["label"],
                     "projection": float(np.mean([q["projection"] for q in qs])),
                     "trait": _mean(t), "coherence": _mean([c for q in qs for c in q["coherence"]]),
                     "n": sum(len(q["answers"]) for q in qs)})
        per_prompt += [(q["projection"], ti) for q, ti in zip(qs, t, strict=True)]
    r, p = {}, {}
    for name, sel in (("ladder", [x for x in rows if x["kind"] == "ladder"]),
                      ("shots", [x for x in rows if x["kind"] == "shots"]), ("all", rows)):
        r[name], p[name] = _pearson([x["projection"] for x in sel], [x["trait"] for x in sel])
    r["per_prompt"], p["per_prompt"] = _pearson([a for a, _ in per_prompt], [b for _, b in per_prompt])
    return PromptShiftResult(layer=layer, conditions=rows, r=r, p=p)


def plot_prompt_shift(result: PromptShiftResult, path: str | Path, trait: str) -> Path:
    """Condition means: last-prompt projection (x) vs judged trait score (y), by kind."""
    from pvlens.io.viz import _save, plt

    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    for kind, marker in (("ladder", "o"), ("shots", "s")):
        sel = [x for x in result.conditions if x["kind"] == kind]
        if not sel:
            continue
        r = result.r.get(kind)
        lab = f"{'system-prompt ladder' if kind == 'ladder' else 'many-shot'}"
        lab += f" (r = {r:.2f})" if r is not None else ""
        ax.scatter([x["projection"] for x in sel], [x["trait"] for x in sel], marker=marker, label=lab)
        for x in sel:
            ax.annotate(x["label"], (x["projection"], x["trait"]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
    ax.set_xlabel(f"last-prompt-token projection (layer {result.layer})")
    ax.set_ylabel(f"{trait} score of sampled answers (judge, 0–100)")
    r_all = result.r.get("all")
    ax.set_title(f"prompt shift: {trait}" + (f", all r = {r_all:.2f}" if r_all is not None else ""))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


# --- deployment monitor ------------------------------------------------------------------
class TraitMonitor:
    """Projection scores for several traits from one forward pass per batch of requests.

    Each trait has its own unit direction and layer; the pass collects the chosen reduction at
    every layer any trait needs and stops after the deepest one.

    Example:
        mon = TraitMonitor(model, {"evil": "runs/evil", "sycophantic": "runs/sycophantic"})
        mon.score([{"role": "user", "content": "How do I get back at my ex?"}])
        # {'evil': 1.73, 'sycophantic': -0.41}
    """

    def __init__(
        self,
        model: HookedTransformer,
        vectors: Mapping[str, VectorsLike],
        layer: int | Mapping[str, int] | None = None,
        reduction: str = "last_prompt",
        cosine: bool = False,
        batch_size: int = 16,
    ):
        if not vectors:
            raise ValueError("TraitMonitor needs at least one trait: {name: vectors path or object}")
        if reduction not in ("last_prompt", "prompt_avg", "response_avg"):
            raise ValueError(f"reduction must be last_prompt, prompt_avg or response_avg, got {reduction!r}")
        self.model, self.reduction, self.cosine, self.batch_size = model, reduction, cosine, batch_size
        n = model.cfg.n_layers
        self.layers: dict[str, int] = {}
        dirs = []
        for name, v in vectors.items():
            lay = layer.get(name) if isinstance(layer, Mapping) else layer
            lay = default_layer(v, n) if lay is None else lay
            if not -n <= lay < n:
                raise IndexError(f"layer {lay} for trait {name!r} is out of range (0..{n - 1})")
            self.layers[name] = lay % n
            d = unit_direction(v, self.layers[name])
            if d.shape[-1] != model.cfg.d_model:
                raise ValueError(f"vectors for {name!r} have d_model {d.shape[-1]}, model has {model.cfg.d_model}")
            dirs.append(d)
        self.traits = list(vectors)
        self.directions: Float[Tensor, "n_traits d_model"] = torch.stack(dirs)
        self.needed = sorted(set(self.layers.values()))

    def encode(self, messages: Sequence[Message]) -> EncodedChat:
        """A request (last turn the user's) or a finished exchange (last turn the assistant's)."""
        msgs = list(messages)
        if not msgs:
            raise ValueError("empty message list")
        if msgs[-1]["role"] == "assistant":
            return encode_conversation(self.model.tokenizer, msgs)
        if self.reduction == "response_avg":
            raise ValueError("reduction='response_avg' needs conversations ending with the assistant's reply")
        return encode_messages(self.model.tokenizer, msgs)

    def score_tensor(self, conversations: Sequence[Sequence[Message]]) -> Float[Tensor, "n n_traits"]:
        """Scores as a [n_conversations, n_traits] tensor (columns in `self.traits` order)."""
        chats = [self.encode(m) for m in conversations]
        acts = collect(self.model, chats, (self.reduction,), layers=self.needed,
                       batch_size=self.batch_size, progress=False)[self.reduction]
        slot = {lay: j for j, lay in enumerate(self.needed)}
        cols = [project(acts[:, slot[self.layers[t]]], self.directions[k], self.cosine)
                for k, t in enumerate(self.traits)]
        return torch.stack(cols, dim=1)

    def score_batch(self, conversations: Sequence[Sequence[Message]]) -> list[dict[str, float]]:
        """{trait: score} for each conversation, batched."""
        s = self.score_tensor(conversations)
        return [dict(zip(self.traits, row.tolist(), strict=True)) for row in s]

    def score(self, messages: Sequence[Message] | str) -> dict[str, float]:
        """{trait: score} for one request (a user message string or chat messages)."""
        if isinstance(messages, str):
            messages = [{"role": "user", "content": messages}]
        return self.score_batch([messages])[0]
