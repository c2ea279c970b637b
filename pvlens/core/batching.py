"""Left-padded batches of token ids with explicit positions (never masks built from pad ids:
SmolLM2's pad token also occurs inside chat prompts)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from jaxtyping import Int
from torch import Tensor

from pvlens.core.chat import EncodedChat


def left_pad(
    chats: Sequence[EncodedChat] | Sequence[Sequence[int]], pad_id: int, device: torch.device | str
) -> tuple[Int[Tensor, "batch pos"], Int[Tensor, "batch pos"]]:
    """(tokens, positions) with every row right-aligned; positions are -1 on padding."""
    rows = [c.ids if isinstance(c, EncodedChat) else list(c) for c in chats]
    width = max(len(r) for r in rows)
    tokens = torch.full((len(rows), width), pad_id, dtype=torch.long)
    positions = torch.full((len(rows), width), -1, dtype=torch.long)
    for i, ids in enumerate(rows):
        n = len(ids)
        tokens[i, width - n :] = torch.as_tensor(ids, dtype=torch.long)
        positions[i, width - n :] = torch.arange(n)
    return tokens.to(device), positions.to(device)
