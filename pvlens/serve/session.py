"""The playground's state: one model, named persona vectors, a request queue and one worker thread.

Every model call runs on a single worker thread, so steering hooks of one request never meet
another request's forward pass; whole requests wait their turn in a FIFO `RequestQueue`.

Replies stream in chunks: each step continues the reply so far with `pvlens.generate` (greedy,
`chunk_tokens` new tokens), steering every position from the last prompt token on (the paper's
"response" positions, given as an explicit mask so that re-reading the reply so far is steered
exactly as a one-shot generation would be).
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import per_token
from pvlens.core.chat import EncodedChat, encode_prompt
from pvlens.core.config import Config, default_layer
from pvlens.core.generation import generate
from pvlens.core.guard import Guard, GuardRule
from pvlens.core.steering import Steering
from pvlens.errors import InputError
from pvlens.judges import Judge, load_judge
from pvlens.monitor import token_projections
from pvlens.monitor.calibrate import load_calibration
from pvlens.vectors.coerce import VectorsLike, vector_table

T = TypeVar("T")

NORM_PROMPT = "Tell me a little about the history of the bicycle and how it changed daily life."
"""Fixed prompt whose token residual norms set each layer's scale for the α limit."""


class ServeSettings(Config):
    """Limits and defaults of `pvlens serve`."""

    max_prompt_tokens: int = Field(256, ge=1)
    """Longest prompt accepted, in tokens of the chat-templated prompt."""
    max_new_tokens: int = Field(256, ge=1)
    """Most tokens a request may ask for per reply."""
    default_new_tokens: int = Field(64, ge=1)
    """Reply length the page starts with."""
    max_push: float = Field(1.0, gt=0, allow_inf_nan=False)
    """Largest steering push as a fraction of the layer's residual norm: |α|·‖v_L‖ ≤ max_push·r_L."""
    chunk_tokens: int = Field(4, ge=1)
    """Tokens generated per streaming step (each step re-reads the reply so far)."""
    system: str | None = None
    """System prompt of every request (None: the chat template's default)."""


class TraitAlpha(BaseModel):
    """One trait to steer with and its strength."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    name: str
    alpha: float


class GuardOption(BaseModel):
    """Guard the steered reply: monitor `trait` at the request's layer with the threshold
    calibrated in its vectors' sidecar (`pvlens guard calibrate`) and subtract α·v once crossed."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    trait: str
    alpha: float = Field(4.0, gt=0)
    window: int = Field(8, ge=1)
    fpr: float | None = None


class SteerRequest(BaseModel):
    """What the page sends: a prompt, the traits with their α, a layer, a reply length."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    prompt: str
    traits: list[TraitAlpha] = Field(min_length=1)
    layer: int
    max_new_tokens: int | None = None
    colour_trait: str | None = None
    judge: bool = False
    guard: GuardOption | None = None


@dataclass
class Plan:
    """A validated request, ready to generate."""

    question: str
    chat: EncodedChat
    layer: int
    traits: list[TraitAlpha]
    max_new_tokens: int
    colour_trait: str
    judge: bool
    guard: GuardOption | None = None
    threshold: float | None = None
    """The guard's calibrated threshold (None: no guard)."""


@dataclass
class RequestQueue:
    """FIFO turns for whole requests: one generates, the others wait (asyncio.Lock is fair)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    size: int = 0
    """Requests holding or waiting for the lock."""


def residual_norms(model: HookedTransformer, system: str | None = None) -> list[float]:
    """Median residual norm per layer over NORM_PROMPT's tokens (the first token excluded:
    its norm is an outlier in most models)."""
    chat = encode_prompt(model.tokenizer, NORM_PROMPT, system)
    resid = per_token(model, chat)  # [n_layers, pos, d_model]
    return [float(r[1:].norm(dim=-1).median()) for r in resid]


class Session:
    """The model, the vectors by name, and the single worker thread every model call runs on."""

    def __init__(
        self,
        model: HookedTransformer,
        vectors: Mapping[str, VectorsLike],
        settings: ServeSettings | None = None,
        judge_factory: Callable[[str], Judge] | None = None,
        model_name: str = "",
    ) -> None:
        if not vectors:
            raise InputError("the playground needs at least one persona vector (--vectors NAME=PATH)")
        self.model = model
        self.settings = settings or ServeSettings()
        self.model_name = model_name or model.cfg.model_name
        self.n_layers = model.cfg.n_layers
        self.tables = {name: self._table(name, v) for name, v in vectors.items()}
        self.sources = {name: Path(v) for name, v in vectors.items() if isinstance(v, str | Path)}
        """Vectors given as files: where a guard's sidecar thresholds are looked up."""
        self.norms = residual_norms(model, self.settings.system)
        self.judge_factory = judge_factory or (lambda trait: load_judge("offline", trait=trait))
        self.judges: dict[str, Judge | str] = {}
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pvlens-serve")

    def _table(self, name: str, vectors: VectorsLike) -> Tensor:
        table = vector_table(vectors, self.n_layers)
        if table.shape[1] != self.model.cfg.d_model:
            raise InputError(
                f"vectors {name!r} have d_model {table.shape[1]} but the model has "
                f"{self.model.cfg.d_model}: they were extracted from another model"
            )
        return table

    # --- limits and validation ---------------------------------------------------------------
    def alpha_max(self, name: str, layer: int) -> float:
        """Largest |α| for trait `name` at `layer`: max_push · r_L / ‖v_L‖ (0 for a zero vector)."""
        norm = float(self.tables[name][layer].norm())
        return self.settings.max_push * self.norms[layer] / norm if norm > 0 else 0.0

    def describe(self) -> dict[str, Any]:
        """What the page needs to draw its controls."""
        s = self.settings
        return {
            "model": self.model_name, "n_layers": self.n_layers,
            "default_layer": default_layer(self.n_layers),
            "max_prompt_tokens": s.max_prompt_tokens, "max_new_tokens": s.max_new_tokens,
            "default_new_tokens": min(s.default_new_tokens, s.max_new_tokens), "max_push": s.max_push,
            "traits": [
                {"name": n, "alpha_max": [self.alpha_max(n, layer) for layer in range(self.n_layers)]}
                for n in self.tables
            ],
            "guard_traits": sorted(self.sources),
        }

    def plan(self, req: SteerRequest) -> Plan:
        """Check a request against the model and the limits; InputError names what is wrong."""
        if not 0 <= req.layer < self.n_layers:
            raise InputError(f"layer {req.layer} is out of range: the model has layers 0–{self.n_layers - 1}")
        names = [t.name for t in req.traits]
        if len(set(names)) != len(names):
            raise InputError("a trait is listed twice; give each trait once with its α")
        for t in req.traits:
            self._check_trait(t, req.layer)
        colour = req.colour_trait or names[0]
        if colour not in names:
            raise InputError(f"colour_trait {colour!r} is not one of the steered traits {names}")
        return Plan(req.prompt, self._encode(req.prompt), req.layer, list(req.traits),
                    self._new_tokens(req.max_new_tokens), colour, req.judge, req.guard,
                    self._threshold(req.guard, req.layer))

    def _threshold(self, guard: GuardOption | None, layer: int) -> float | None:
        """The sidecar threshold for a guard request; InputError naming the fix when missing."""
        if guard is None:
            return None
        if guard.trait not in self.tables:
            raise InputError(f"unknown guard trait {guard.trait!r}; this playground has {sorted(self.tables)}")
        if guard.trait not in self.sources:
            raise InputError(f"the guard needs {guard.trait!r} as a vectors file with calibrated thresholds "
                             "(`pvlens guard calibrate FILE`); it was given as a tensor")
        return load_calibration(self.sources[guard.trait], layer, self.model, guard.fpr, guard.window).threshold

    def _check_trait(self, t: TraitAlpha, layer: int) -> None:
        if t.name not in self.tables:
            raise InputError(f"unknown trait {t.name!r}; this playground has {sorted(self.tables)}")
        limit = self.alpha_max(t.name, layer)
        if abs(t.alpha) > limit * (1 + 1e-9):
            raise InputError(
                f"α = {t.alpha:g} for {t.name!r} is out of range at layer {layer}: |α| ≤ {limit:.3g} "
                f"(the push |α|·‖v‖ may be at most {self.settings.max_push:g}× the layer's residual norm)"
            )

    def _encode(self, prompt: str) -> EncodedChat:
        if not prompt.strip():
            raise InputError("the prompt is empty; type a message to send")
        chat = encode_prompt(self.model.tokenizer, prompt, self.settings.system)
        if len(chat.ids) > self.settings.max_prompt_tokens:
            raise InputError(
                f"the prompt is {len(chat.ids)} tokens long (chat template included); "
                f"the limit is {self.settings.max_prompt_tokens}"
            )
        return chat

    def _new_tokens(self, asked: int | None) -> int:
        s = self.settings
        n = min(s.default_new_tokens, s.max_new_tokens) if asked is None else asked
        if not 1 <= n <= s.max_new_tokens:
            raise InputError(f"max_new_tokens must be between 1 and {s.max_new_tokens}, got {n}")
        return n

    # --- model work (worker thread only) -----------------------------------------------------
    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on the worker thread (the only thread that touches the model)."""
        return await asyncio.wrap_future(self.executor.submit(fn, *args))

    def steers(self, plan: Plan) -> list[Steering]:
        """One Steering per trait, on every position from the last prompt token on."""
        mask = self.response_mask(plan)
        return [Steering(self.tables[t.name][plan.layer], plan.layer, t.alpha, mask) for t in plan.traits]

    def response_mask(self, plan: Plan) -> Tensor:
        """Positions from the last prompt token on, for every length the reply can reach."""
        p = len(plan.chat.ids)
        mask = torch.zeros(p + plan.max_new_tokens + 1, dtype=torch.bool)
        mask[p - 1 :] = True
        return mask

    def guard(self, plan: Plan) -> Guard | None:
        """The steered side's guard, monitoring from the last prompt token on (an explicit mask,
        so re-reading the reply so far sees every monitored token again, as one-shot would)."""
        if plan.guard is None or plan.threshold is None:
            return None
        g = plan.guard
        rule = GuardRule(self.tables[g.trait][plan.layer], plan.threshold, g.trait)
        return Guard([rule], plan.layer, g.alpha, window=g.window, positions=self.response_mask(plan))

    def continue_reply(self, plan: Plan, reply: list[int], steered: bool) -> tuple[list[int], bool, int | None]:
        """The reply after up to `chunk_tokens` more greedy tokens, whether it ended, and the
        reply index where the guard (steered side) triggered."""
        n = min(self.settings.chunk_tokens, plan.max_new_tokens - len(reply))
        chat = EncodedChat(plan.chat.ids + reply, len(plan.chat.ids) + len(reply))
        guard = self.guard(plan) if steered else None
        out = generate(self.model, [chat], steer=self.steers(plan) if steered else None,
                       max_new_tokens=n, temperature=0.0, progress=False, guard=guard)
        new, event = out.chats[0].response_ids, out.triggered[0]
        at = None if event is None else event.position - len(plan.chat.ids)
        return reply + new, out.finished[0] or len(reply) + len(new) >= plan.max_new_tokens, at

    def decode(self, ids: list[int]) -> str:
        return str(self.model.tokenizer.decode(ids, skip_special_tokens=True))

    def reply_projections(self, plan: Plan, reply: list[int]) -> tuple[list[str], list[float]]:
        """Each reply token and its projection on the colour trait's unit vector at the layer,
        read by the unsteered model; an empty reply gives the last prompt token's value only."""
        vector = self.tables[plan.colour_trait][plan.layer]
        tp = token_projections(self.model, plan.chat.with_response(reply), vector, plan.layer)
        start = tp.prompt_len if reply else tp.prompt_len - 1
        return tp.tokens[tp.prompt_len :], tp.values[start:]

    def colour_view(self, plan: Plan, replies: dict[str, list[int]]) -> dict[str, Any]:
        """Both replies' projections centred on the unsteered reply's mean, on one scale."""
        views = {side: self.reply_projections(plan, reply) for side, reply in replies.items()}
        base_values = views["unsteered"][1]
        baseline = sum(base_values) / len(base_values)
        out: dict[str, Any] = {"type": "projections", "trait": plan.colour_trait, "layer": plan.layer,
                               "baseline": baseline}
        scale = 0.0
        for side, (tokens, values) in views.items():
            centred = [v - baseline for v in values] if tokens else []
            scale = max([scale, *map(abs, centred)])
            out[side] = [[t, c] for t, c in zip(tokens, centred, strict=True)]
        out["scale"] = scale if scale > 0 and math.isfinite(scale) else 1.0
        return out

    def judge_scores(self, plan: Plan, texts: dict[str, str]) -> dict[str, Any]:
        """Each steered trait's judge score (0–100) of both replies, or why there is none."""
        scores, notes = {}, []
        for t in plan.traits:
            judge = self._judge(t.name)
            if isinstance(judge, str):
                notes.append(judge)
                continue
            scores[t.name] = {side: judge.score(plan.question, text) for side, text in texts.items()}
        return {"type": "judge", "scores": scores, "notes": notes}

    def _judge(self, trait: str) -> Judge | str:
        if trait not in self.judges:
            try:
                self.judges[trait] = self.judge_factory(trait)
            except (ValueError, KeyError, FileNotFoundError) as e:
                self.judges[trait] = f"no judge for {trait!r}: {e}"
        return self.judges[trait]

    # --- one request ---------------------------------------------------------------------------
    async def stream(self, plan: Plan) -> AsyncIterator[dict[str, Any]]:
        """Events of one request: text of each side as it grows, then colours, scores, done."""
        replies: dict[str, list[int]] = {"unsteered": [], "steered": []}
        open_sides, triggered = list(replies), None
        while open_sides:
            for side in list(open_sides):
                replies[side], ended, at = await self.run(self.continue_reply, plan, replies[side],
                                                          side == "steered")
                triggered = at if side == "steered" else triggered
                if ended:
                    open_sides.remove(side)
                text = self.decode(replies[side])
                yield {"type": "text", "side": side, "text": text if ended else text.rstrip("\ufffd"),
                       "tokens": len(replies[side]), "done": ended}
        texts = {side: self.decode(ids).strip() for side, ids in replies.items()}
        yield await self.run(self.colour_view, plan, replies)
        if plan.judge:
            yield await self.run(self.judge_scores, plan, texts)
        guard = None if plan.guard is None else {"trait": plan.guard.trait, "threshold": plan.threshold,
                                                  "window": plan.guard.window, "triggered_at": triggered}
        yield {"type": "done", **texts, "guard": guard}

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
