"""Guarded generation: monitor a trait's projection token by token and intervene once it
crosses a threshold (the paper's "flag imminent trait shifts; consider on-the-fly inhibition").

A `Guard` is one hook at `blocks.{layer}.hook_resid_post`. On every forward pass it projects
the residual of each monitored position onto each rule's unit vector; where a projection
exceeds the rule's threshold the guard triggers for that conversation and, from that very
position on, either for the rest of the reply ("latch") or only at positions still above the
threshold ("while_above"), it

- "subtract": adds −alpha·v (raw vector, the units of `Steering`),
- "ablate": projects the direction out (h ← h − (h·v̂)v̂),
- "cap": clamps the projection at the threshold (h ← h − max(0, h·v̂ − t)v̂).

It lives in `pvlens.core` next to `Steering` because it is a generation-time intervention that
needs only hooks and the position context (it works with the KV cache, the fast engine and the
TransformerLens forward alike); calibrating thresholds from data is monitoring work and lives in
`pvlens.monitor.calibrate`. Rows that never cross are returned bit for bit (`torch.where`), so
their replies equal unguarded generation. A Guard keeps per-conversation state: `generate`
resets it; do not share one Guard between concurrent generations.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from pvlens.core.hooks import check_layer, current_context, resid_hook_name
from pvlens.core.steering import Positions, position_mask

Action = Literal["subtract", "ablate", "cap"]
Mode = Literal["latch", "while_above"]
ACTIONS = ("subtract", "ablate", "cap")
MODES = ("latch", "while_above")
NEVER = 2**62


@dataclass
class GuardRule:
    """One trait direction and the projection above which the guard steps in."""

    vector: Float[Tensor, " d_model"]
    """Raw trait vector at the guard's layer (monitoring uses its unit direction)."""
    threshold: float
    """Projection on the unit direction above which the guard triggers."""
    name: str = "trait"
    """Label reported in events."""

    def __post_init__(self) -> None:
        self.vector = torch.as_tensor(self.vector).detach().float()
        if self.vector.dim() != 1 or not torch.isfinite(self.vector).all() or self.vector.norm() == 0:
            raise ValueError(f"guard rule {self.name!r}: the vector must be a finite, non-zero [d_model]")

    @property
    def unit(self) -> Float[Tensor, " d_model"]:
        return self.vector / self.vector.norm()


@dataclass(frozen=True)
class GuardEvent:
    """Where a rule first triggered in one conversation."""

    rule: str
    """The rule's name."""
    row: int
    """Index of the conversation in the caller's list."""
    position: int
    """Token index (in the unpadded conversation) whose residual crossed the threshold."""
    reply_index: int
    """position − prompt length: −1 is the last prompt token, 0 the first reply token; the
    first reply token generated under the intervention is reply_index + 1."""
    projection: float
    """The monitored value that crossed (the projection, or its window mean)."""
    token: str = ""
    """The crossing token, decoded (filled in by `generate`)."""


@dataclass
class Guard:
    """Monitor projections at `layer` and intervene on conversations that cross a threshold."""

    rules: Sequence[GuardRule]
    """Trait directions and thresholds; each triggers independently."""
    layer: int
    """Block whose output is monitored and steered (TransformerLens index)."""
    alpha: float = 4.0
    """Strength of "subtract" (units of the raw vector); unused by "ablate" and "cap"."""
    action: Action = "subtract"
    """"subtract" alpha·v, "ablate" the direction, or "cap" the projection at the threshold."""
    mode: Mode = "latch"
    """"latch": intervene from the trigger to the end of the reply; "while_above": only where
    the projection exceeds the threshold."""
    window: int = 1
    """Monitor the mean projection of the last `window` monitored tokens (1: each token alone);
    a window is judged only once full, so the guard cannot trigger on the first window−1 tokens."""
    positions: Positions = "response"
    """Monitored (and steerable) tokens: "response" = last prompt token + every reply token."""
    _events: dict[tuple[int, int], GuardEvent] = field(default_factory=dict, init=False, repr=False)
    _history: dict[tuple[int, int], dict[int, float]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if isinstance(self.rules, GuardRule):
            self.rules = [self.rules]
        if not self.rules:
            raise ValueError("a Guard needs at least one GuardRule")
        if self.action not in ACTIONS:
            raise ValueError(f"guard action must be one of {ACTIONS}, got {self.action!r}")
        if self.mode not in MODES:
            raise ValueError(f"guard mode must be one of {MODES}, got {self.mode!r}")
        if self.window < 1:
            raise ValueError(f"guard window must be >= 1 token, got {self.window}")

    def reset(self) -> None:
        """Forget earlier triggers (`generate` calls this before each run)."""
        self._events.clear()
        self._history.clear()

    def events(self) -> list[GuardEvent]:
        """First trigger of every (rule, conversation), by conversation then rule."""
        return sorted(self._events.values(), key=lambda e: (e.row, e.rule))

    def fwd_hooks(self, model: HookedTransformer) -> list[tuple[str, Callable[..., Tensor]]]:
        layer = check_layer(model, self.layer)
        for rule in self.rules:
            if rule.vector.shape[-1] != model.cfg.d_model:
                raise ValueError(f"guard rule {rule.name!r} has d_model {rule.vector.shape[-1]}, "
                                 f"the model {model.cfg.d_model}")
        return [(resid_hook_name(layer), self.hook)]

    def hook(self, resid: Float[Tensor, "batch pos d_model"], hook: HookPoint | None = None) -> Tensor:
        batch, seq = resid.shape[0], resid.shape[1]
        ctx = current_context()
        monitored = position_mask(self.positions, ctx, batch, seq, resid.device)
        if monitored is None:
            monitored = torch.ones(batch, seq, dtype=torch.bool, device=resid.device)
        if ctx is None:
            pos = torch.arange(seq, device=resid.device).expand(batch, -1)
            prompt_lens = torch.zeros(batch, dtype=torch.long, device=resid.device)
        else:
            pos, prompt_lens = ctx.positions.to(resid.device), ctx.prompt_lens.to(resid.device)
        numbered = ctx is not None and ctx.rows is not None
        rows = ctx.rows.tolist() if numbered else [-1 - b for b in range(batch)]  # type: ignore[union-attr]
        saved = None
        if not numbered:  # see _unnumbered
            saved = self._unnumbered(bool((pos == 0).any()))
        out = resid
        for k, rule in enumerate(self.rules):
            u = rule.unit.to(device=resid.device, dtype=resid.dtype)
            stat = self._stat(k, resid @ u, monitored, pos, rows)
            above = monitored & (stat > rule.threshold)
            self._record(k, above, stat, pos, prompt_lens, rows)
            active = above if self.mode == "while_above" else monitored & (pos >= self._starts(k, rows, pos))
            if bool(active.any()):
                out = torch.where(active[..., None], self._act(out, rule, u), out)
        if saved is not None:
            self._events, self._history = saved
        return out

    def _stat(self, k: int, proj: Float[Tensor, "batch pos"], monitored: Bool[Tensor, "batch pos"],
              pos: Int[Tensor, "batch pos"], rows: list[int]) -> Float[Tensor, "batch pos"]:
        """The monitored value: the projection, or its mean over the last `window` monitored
        tokens (earlier forwards' projections come from the per-conversation history)."""
        if self.window == 1:
            return proj
        stat = torch.full_like(proj, -math.inf)
        for b, row in enumerate(rows):
            sel = monitored[b]
            if not bool(sel.any()):
                continue
            here, vals = pos[b][sel].tolist(), proj[b][sel]
            hist = self._history.setdefault((k, row), {})
            prev = [hist[q] for q in sorted(hist) if q < here[0]][-(self.window - 1):]
            seq = torch.cat([torch.tensor(prev, dtype=vals.dtype, device=vals.device), vals])
            stat[b, sel] = window_means(seq, self.window)[len(prev):]
            hist.update(zip(here, vals.tolist(), strict=True))
        return stat

    def _unnumbered(self, starts_sequences: bool) -> tuple[dict, dict] | None:
        """Runners that do not number conversations (activation collection, MC scoring) are
        keyed by batch slot (negative rows). A forward that starts its sequences (holds position
        0) replaces their state and keeps its triggers for later forwards (e.g. options scored
        on a cached prompt); a later forward's own triggers last for that forward only, so one
        continuation's trigger does not leak into the next. Returns the state to restore."""
        if starts_sequences:
            self._events = {key: e for key, e in self._events.items() if key[1] >= 0}
            self._history = {key: h for key, h in self._history.items() if key[1] >= 0}
            return None
        return dict(self._events), {key: dict(h) for key, h in self._history.items()}

    def _record(self, k: int, above: Bool[Tensor, "batch pos"], proj: Tensor,
                pos: Int[Tensor, "batch pos"], prompt_lens: Tensor, rows: list[int]) -> None:
        """Keep the earliest crossing of rule k per conversation (a recomputing forward sees
        old positions again; the earliest one wins, so cached and uncached runs agree)."""
        if not bool(above.any()):
            return
        first = torch.where(above, pos, torch.full_like(pos, NEVER)).min(dim=1)
        for b in torch.nonzero(first.values < NEVER).flatten().tolist():
            p, key = int(first.values[b]), (k, rows[b])
            old = self._events.get(key)
            if old is None or p < old.position:
                col = int(first.indices[b])
                self._events[key] = GuardEvent(self.rules[k].name, rows[b], p,
                                               p - int(prompt_lens[b]), float(proj[b, col]))

    def _starts(self, k: int, rows: list[int], pos: Tensor) -> Int[Tensor, "batch 1"]:
        starts = [self._events[(k, r)].position if (k, r) in self._events else NEVER for r in rows]
        return torch.tensor(starts, device=pos.device, dtype=pos.dtype)[:, None]

    def _act(self, resid: Tensor, rule: GuardRule, u: Tensor) -> Tensor:
        if self.action == "subtract":
            return resid - self.alpha * rule.vector.to(device=resid.device, dtype=resid.dtype)
        proj = resid @ u
        if self.action == "ablate":
            return resid - proj[..., None] * u
        return resid - (proj - rule.threshold).clamp_min(0)[..., None] * u


def window_means(values: Float[Tensor, " n"], window: int) -> Float[Tensor, " n"]:
    """Mean of each full window of `window` consecutive values ending at i; −inf before the
    first full window. Each window is summed on its own, so a cached run (a few values at a
    time) and a recomputation (all at once) get bit-identical means."""
    out = torch.full_like(values, -math.inf)
    if values.shape[0] >= window:
        out[window - 1:] = values.unfold(0, window, 1).mean(-1)
    return out


def first_crossing(values: Float[Tensor, " n"], window: int, threshold: float) -> int | None:
    """Index of the first monitored token whose `window`-token mean exceeds `threshold` (the
    guard's trigger decision on unguarded activations; index 0 is the last prompt token, so
    reply_index = index − 1); None when none does."""
    above = torch.nonzero(window_means(values, window) > threshold).flatten()
    return int(above[0]) if above.numel() else None


def events_by_row(events: Sequence[GuardEvent], n_rows: int) -> list[list[GuardEvent]]:
    """Events grouped per conversation (empty list: the guard never triggered there)."""
    out: list[list[GuardEvent]] = [[] for _ in range(n_rows)]
    for e in events:
        out[e.row].append(e)
    return out
