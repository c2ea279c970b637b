"""Hook names, validated, and the per-forward position context hooks read.

TransformerLens 3.x silently ignores a misspelled hook name passed to `model.hooks()`;
pvlens checks every name and says which valid names are closest.
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

import torch
from jaxtyping import Bool, Int
from torch import Tensor
from transformer_lens import HookedTransformer


class HookNameError(KeyError):
    """A hook name the model does not have."""

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return str(self.args[0])


def resid_hook_name(layer: int) -> str:
    """pvlens's layer convention: layer L is the output of block L (`blocks.L.hook_resid_post`)."""
    return f"blocks.{layer}.hook_resid_post"


def check_layer(model: HookedTransformer, layer: int) -> int:
    """Validate a block index (negative counts from the end) and return it non-negative."""
    n = model.cfg.n_layers
    if not -n <= layer < n:
        raise IndexError(
            f"layer {layer} is out of range for a {n}-layer model; pvlens layers are TransformerLens "
            f"block indices 0..{n - 1} (the paper's 'layer L' is pvlens layer L-1)"
        )
    return layer % n


def validate_hook_names(model: HookedTransformer, names: Iterable[str]) -> list[str]:
    """Return `names` if all exist in `model.hook_dict`; else raise naming the closest ones."""
    names = list(names)
    valid = model.hook_dict
    for name in names:
        if name not in valid:
            close = difflib.get_close_matches(name, list(valid), n=5, cutoff=0.5)
            hint = f" Did you mean: {', '.join(close)}?" if close else ""
            raise HookNameError(
                f"hook point {name!r} does not exist on this model "
                f"({model.cfg.n_layers} layers).{hint}"
            )
    return names


@contextlib.contextmanager
def checked_hooks(
    model: HookedTransformer, fwd_hooks: list[tuple[str, Callable]]
) -> Iterator[HookedTransformer]:
    """`model.hooks(...)` with names validated; hooks are removed even on an exception."""
    validate_hook_names(model, [name for name, _ in fwd_hooks])
    with model.hooks(fwd_hooks=list(fwd_hooks)):  # type: ignore[arg-type]  # TL: names or filters
        yield model


@dataclass
class PositionContext:
    """Where the tokens of the current forward pass sit in their conversations.

    Set by pvlens's runners (generation, activation collection) around each forward so that
    steering hooks can tell prompt, response and padding apart, with and without a KV cache.
    """

    positions: Int[Tensor, "batch pos"]
    """Index of each token in its own (unpadded) sequence; -1 for padding."""
    prompt_lens: Int[Tensor, " batch"]
    """Prompt length of each row."""
    rows: Int[Tensor, " batch"] | None = None
    """Index of each row's conversation in the caller's list (runners batch and reorder
    conversations; per-conversation masks are looked up by it). None: batch order."""

    @property
    def valid(self) -> Bool[Tensor, "batch pos"]:
        return self.positions >= 0


_CONTEXT: contextvars.ContextVar[PositionContext | None] = contextvars.ContextVar(
    "pvlens_position_context", default=None
)


def current_context() -> PositionContext | None:
    """The position context of the forward pass now running, if a pvlens runner set one."""
    return _CONTEXT.get()


@contextlib.contextmanager
def position_context(ctx: PositionContext) -> Iterator[PositionContext]:
    token = _CONTEXT.set(ctx)
    try:
        yield ctx
    finally:
        _CONTEXT.reset(token)


def plain_context(
    attention_mask: Int[Tensor, "batch pos"], prompt_lens: Int[Tensor, " batch"] | None = None
) -> PositionContext:
    """Context for full (uncached) sequences, left- or right-padded, from the attention mask."""
    mask = attention_mask.long()
    positions = torch.where(mask.bool(), mask.cumsum(-1) - 1, torch.full_like(mask, -1))
    if prompt_lens is None:
        prompt_lens = mask.sum(-1)
    return PositionContext(positions=positions, prompt_lens=prompt_lens.to(mask.device))
