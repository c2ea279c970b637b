"""The deployment monitor: several traits scored from one forward pass per batch of requests."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import collect
from pvlens.core.chat import EncodedChat, Message, encode_conversation, encode_messages
from pvlens.monitor.projection import default_layer, project
from pvlens.vectors.coerce import VectorsLike, unit_direction

REDUCTIONS = ("last_prompt", "prompt_avg", "response_avg")
"""What a monitor can project: before generation, the prompt average, or the reply average."""


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
    ) -> None:
        if not vectors:
            raise ValueError("TraitMonitor needs at least one trait: {name: vectors path or object}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"reduction must be last_prompt, prompt_avg or response_avg, got {reduction!r}")
        self.model, self.reduction, self.cosine, self.batch_size = model, reduction, cosine, batch_size
        self.layers: dict[str, int] = {}
        dirs = []
        for name, v in vectors.items():
            wanted = layer.get(name) if isinstance(layer, Mapping) else layer
            self.layers[name] = self._check_layer(name, v, wanted)
            dirs.append(self._direction(name, v, self.layers[name]))
        self.traits = list(vectors)
        self.directions: Float[Tensor, "n_traits d_model"] = torch.stack(dirs)
        self.needed = sorted(set(self.layers.values()))

    def _check_layer(self, name: str, vectors: VectorsLike, layer: int | None) -> int:
        n = self.model.cfg.n_layers
        layer = default_layer(vectors, n) if layer is None else layer
        if not -n <= layer < n:
            raise IndexError(f"layer {layer} for trait {name!r} is out of range (0..{n - 1})")
        return layer % n

    def _direction(self, name: str, vectors: VectorsLike, layer: int) -> Float[Tensor, " d_model"]:
        d = unit_direction(vectors, layer)
        if d.shape[-1] != self.model.cfg.d_model:
            raise ValueError(f"vectors for {name!r} have d_model {d.shape[-1]}, model has {self.model.cfg.d_model}")
        return d

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
