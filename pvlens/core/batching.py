"""Left-padded batches of token ids with explicit positions (never masks built from pad ids:
SmolLM2's pad token also occurs inside chat prompts)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from pvlens.core.chat import EncodedChat


def left_pad(
    chats: Sequence[EncodedChat] | Sequence[Sequence[int]], pad_id: int, device: torch.device | str,
    starts: Sequence[int] | None = None,
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """(tokens, positions) with every row right-aligned; positions are -1 on padding. Row j's
    positions count from `starts[j]` (default 0): its tokens continue a cached prefix."""
    rows = [c.ids if isinstance(c, EncodedChat) else list(c) for c in chats]
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, ids in enumerate(rows):
        n = len(ids)
        tokens[i, width - n :] = torch.as_tensor(ids, dtype=torch.long)
        first = starts[i] if starts is not None else 0
        positions[i, width - n :] = torch.arange(first, first + n)
    return tokens.to(device), positions.to(device)
