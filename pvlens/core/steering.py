"""Steering and ablation of residual-stream directions through TransformerLens hook points.

`Steering(v, layer, alpha)` adds `alpha * v` to `blocks.{layer}.hook_resid_post` at chosen
positions. Positions are defined on each conversation's own token indices, so a KV-cached
generation and a full recomputation steer exactly the same tokens:

- "all": every (non-padding) token.
- "prompt": tokens before the response.
- "response": the paper's semantics — the last position of every forward pass during
  generation, i.e. the last prompt token plus every generated token (index ≥ prompt_len - 1).
- a boolean mask per conversation (1-D for all rows, or [batch, pos]) over unpadded indices.

`Ablation` projects a direction out; `Capping` clamps its projection at a ceiling. Objects
with their own `fwd_hooks(model)` (`pvlens.Guard`) are accepted wherever these are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeVar, cast, runtime_checkable

import torch
from jaxtyping import Bool, Float
from torch import Tensor
from transformer_lens import HookedTransformer
from transformer_lens.hook_points import HookPoint

from pvlens.core.hooks import (
    PositionContext,
    check_layer,
    checked_hooks,
    current_context,
    resid_hook_name,
)

Positions = Literal["all", "prompt", "response"] | str | Tensor
"""'all', 'prompt', 'response' or a boolean mask; other strings are refused when used."""


def position_mask(
    positions: Positions,
    ctx: PositionContext | None,
    batch: int,
    seq: int,
    device: str | torch.device,
) -> Bool[Tensor, "batch pos"] | None:
    """Which tokens of the current forward to touch; None means all of them."""
    if ctx is None:  # a user's own forward pass: no padding or prompt info available
        if isinstance(positions, str) and positions in ("all", "prompt"):
            return None
        if isinstance(positions, str) and positions == "response":
            mask = torch.zeros(batch, seq, dtype=torch.bool, device=device)
            mask[:, -1] = True
            return mask
        raise ValueError("an explicit position mask needs a pvlens runner (generate / collect)")
    pos, valid = ctx.positions.to(device), ctx.valid.to(device)
    prompt_lens = ctx.prompt_lens.to(device)[:, None]
    if isinstance(positions, Tensor):
        explicit = positions.to(device).bool()
        if explicit.dim() == 1:
            explicit = explicit[None].expand(batch, -1)
        elif ctx.rows is not None:  # runners reorder conversations into batches
            explicit = explicit[ctx.rows.to(device)]
        elif explicit.shape[0] != batch:
            raise ValueError(
                f"a [batch, pos] position mask has {explicit.shape[0]} rows but this forward "
                f"pass has {batch}; give one row per conversation or a 1-D mask"
            )
        idx = pos.clamp(min=0)
        inside = idx < explicit.shape[1]
        picked = torch.gather(explicit, 1, idx.clamp(max=explicit.shape[1] - 1))
        return valid & inside & picked
    if positions == "all":
        return valid
    if positions == "prompt":
        return valid & (pos < prompt_lens)
    if positions == "response":
        return valid & (pos >= prompt_lens - 1)
    raise ValueError(f"positions must be 'all', 'prompt', 'response' or a bool mask, got {positions!r}")


@dataclass
class Steering:
    """Add `alpha * vector` at `blocks.{layer}.hook_resid_post` on the chosen positions."""

    vector: Tensor | Sequence[float]
    """Direction to add, [d_model] (raw, not normalised: the paper's alpha is in units of the
    raw vector); a list is converted, any other shape refused with a message."""
    layer: int
    """TransformerLens block index; the vector is added to that block's output."""
    alpha: float = 1.0
    """Strength; negative subtracts the direction."""
    positions: Positions = "all"
    """'all', 'prompt', 'response' (paper), or a boolean mask over token indices."""

    def __post_init__(self) -> None:
        if not isinstance(self.vector, Tensor):
            self.vector = torch.as_tensor(self.vector)
        if self.vector.dim() != 1:
            raise ValueError(
                f"a steering vector must be 1-D [d_model], got shape {tuple(self.vector.shape)}; "
                "for a PersonaVectors object pass vecs[layer]"
            )

    @property
    def hook_name(self) -> str:
        return resid_hook_name(self.layer)

    @property
    def tensor(self) -> Float[Tensor, " d_model"]:
        """The vector as a tensor (`__post_init__` converted any list)."""
        return cast(Tensor, self.vector)

    def hook(
        self, resid: Float[Tensor, "batch pos d_model"], hook: HookPoint | None = None
    ) -> Float[Tensor, "batch pos d_model"]:
        """The TransformerLens hook function."""
        if self.alpha == 0:
            return resid
        add = (self.alpha * self.tensor).to(device=resid.device, dtype=resid.dtype)
        mask = positions_for(self.positions, resid)
        if mask is None:
            return resid + add
        return resid + mask[..., None].to(resid.dtype) * add

    def applied(self, model: HookedTransformer):
        """Context manager: the model is steered inside the `with` block."""
        return steer(model, self)


def unit_vector(direction: Float[Tensor, " d_model"]) -> Float[Tensor, " d_model"]:
    """`direction` as a float32 unit vector (a zero vector stays zero)."""
    d = torch.as_tensor(direction).float()
    return d / d.norm().clamp_min(1e-12)


def positions_for(positions: Positions, resid: Tensor) -> Tensor | None:
    """The [batch, seq] mask of `positions` for this forward's residual (None: every position)."""
    return position_mask(positions, current_context(), resid.shape[0], resid.shape[1], resid.device)


@dataclass
class Ablation:
    """Project a direction out of the residual stream (x ← x − (x·u)u) at given layers (CAFT)."""

    direction: Float[Tensor, " d_model"]
    """Direction to remove; normalised internally."""
    layers: Sequence[int] = field(default_factory=list)
    """Blocks whose output loses the direction."""
    positions: Positions = "all"
    """Which tokens (see module docstring)."""

    @property
    def unit(self) -> Tensor:
        return unit_vector(self.direction)

    def hook(self, resid: Tensor, hook: HookPoint | None = None) -> Tensor:
        u = self.unit.to(device=resid.device, dtype=resid.dtype)
        proj = (resid @ u)[..., None] * u
        mask = positions_for(self.positions, resid)
        if mask is not None:
            proj = proj * mask[..., None].to(resid.dtype)
        return resid - proj


@dataclass
class Capping:
    """Clamp the projection on a unit direction to at most `cap`, per position:
    h ← h − max(0, h·v̂ − cap)·v̂ (the assistant-axis "capping"). Positions at or below the cap
    are returned unchanged, bit for bit."""

    direction: Float[Tensor, " d_model"]
    """Direction whose projection is capped; normalised internally."""
    layers: Sequence[int] = field(default_factory=list)
    """Blocks whose output is capped."""
    cap: float = 0.0
    """Largest projection (onto the unit direction) a position keeps."""
    positions: Positions = "all"
    """Which tokens (see module docstring)."""

    @property
    def unit(self) -> Tensor:
        return unit_vector(self.direction)

    def hook(self, resid: Tensor, hook: HookPoint | None = None) -> Tensor:
        u = self.unit.to(device=resid.device, dtype=resid.dtype)
        excess = resid @ u - self.cap
        over = excess > 0
        mask = positions_for(self.positions, resid)
        if mask is not None:
            over = over & mask
        return torch.where(over[..., None], resid - excess[..., None] * u, resid)


@runtime_checkable
class HookIntervention(Protocol):
    """Anything that brings its own (hook name, function) pairs, e.g. `pvlens.Guard`."""

    def fwd_hooks(self, model: HookedTransformer) -> list[tuple[str, Callable[..., Tensor]]]: ...


Intervention = Steering | Ablation
"""The additive and projection interventions training also accepts."""
AnyIntervention = Steering | Ablation | Capping | HookIntervention
"""Everything `steer`, `generate` and the scoring runners accept."""
InterventionT = TypeVar("InterventionT", bound=AnyIntervention)


def as_list(steer: InterventionT | Sequence[InterventionT] | None) -> list[InterventionT]:
    if steer is None:
        return []
    if isinstance(steer, Steering | Ablation | Capping | HookIntervention):
        return [steer]
    return list(steer)


def fwd_hooks(
    model: HookedTransformer, steer: AnyIntervention | Sequence[AnyIntervention] | None
) -> list[tuple[str, Callable[..., Tensor]]]:
    """(hook name, function) pairs for TransformerLens, with layers checked."""
    hooks = []
    for s in as_list(steer):
        if isinstance(s, Steering):
            check_layer(model, s.layer)
            if s.tensor.shape[-1] != model.cfg.d_model:
                raise ValueError(
                    f"steering vector has d_model {s.tensor.shape[-1]}, model has {model.cfg.d_model}"
                )
            hooks.append((resid_hook_name(s.layer % model.cfg.n_layers), s.hook))
        elif isinstance(s, Ablation | Capping):
            for layer in s.layers:
                check_layer(model, layer)
                hooks.append((resid_hook_name(layer % model.cfg.n_layers), s.hook))
        elif isinstance(s, HookIntervention):
            hooks.extend(s.fwd_hooks(model))
        else:
            raise TypeError(f"expected Steering, Ablation, Capping or Guard, got {type(s).__name__}")
    return hooks


@contextlib.contextmanager
def steer(
    model: HookedTransformer, steer: AnyIntervention | Sequence[AnyIntervention] | None
) -> Iterator[HookedTransformer]:
    """Steer (or ablate) inside a `with` block: one intervention or a list (multi-layer)."""
    with checked_hooks(model, fwd_hooks(model, steer)):
        yield model


def multi_layer(
    vectors: Float[Tensor, "n_layers d_model"],
    layers: Sequence[int],
    alphas: float | Sequence[float],
    positions: Positions = "all",
) -> list[Steering]:
    """One Steering per listed layer, each adding its layer's **full** vector: `alpha_i * v_i`
    at block `layers[i]`.

    The pushes add up along the stack (steering at 12 and 16 pushes the top by α₁₂·v₁₂ +
    α₁₆·v₁₆). This is *not* the paper's multi-layer scheme, which steers every layer with
    incremental vectors so the total push is α·v_L: use `incremental` for that.
    """
    if isinstance(alphas, int | float):
        alphas = [float(alphas)] * len(layers)
    if len(alphas) != len(layers):
        raise ValueError(f"{len(layers)} layers but {len(alphas)} alphas")
    return [Steering(vectors[layer], layer, a, positions) for layer, a in zip(layers, alphas, strict=True)]


def incremental(
    vectors: Float[Tensor, "n_layers d_model"],
    alpha: float,
    positions: Positions = "response",
    layers: Sequence[int] | None = None,
) -> list[Steering]:
    """The paper's all-layer incremental steering: at block ℓ add α·(v_ℓ − v_{ℓ−1}).

    The pushes telescope, so the accumulated push at the top block is α·v_L and no layer's
    share is counted twice (`multi_layer` instead adds each listed layer's full vector).

    Args:
        vectors: one vector per block, [n_layers, d_model] (for PersonaVectors: `vecs.vectors`).
        alpha: strength, in units of the raw vectors.
        positions: which tokens (see the module docstring; "response" as in the paper).
        layers: None steers every block (v_{−1} = 0: block 0 gets its full v_0), or a contiguous
            ascending range of blocks, whose first block gets its full vector.
    Returns: one Steering per block; the differences are kept in float64 so their sum is v_L.
    """
    n = vectors.shape[0]
    blocks = list(range(n)) if layers is None else [int(x) % n for x in layers]
    if not blocks:
        raise ValueError("incremental steering needs at least one layer")
    if blocks != list(range(blocks[0], blocks[0] + len(blocks))):
        raise ValueError(
            f"incremental steering needs a contiguous ascending range of layers, got {list(layers)}; "
            "use multi_layer for scattered layers"
        )
    table = torch.as_tensor(vectors).double()
    previous = torch.zeros_like(table[0])
    out = []
    for layer in blocks:
        out.append(Steering(table[layer] - previous, layer, alpha, positions))
        previous = table[layer]
    return out
