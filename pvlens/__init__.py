"""pvlens: persona vectors on TransformerLens.

Extract trait directions from contrastive rollouts, steer generation with them, monitor and
screen with projections, finetune with preventative steering, decompose with SAEs.

The top-level names load lazily, so `import pvlens` (and CLI commands that need no model)
do not pay for importing torch and TransformerLens.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

from pvlens import _compat  # noqa: E402

_compat.install()

_LAZY = {
    "EncodedChat": "pvlens.core.chat",
    "encode_conversation": "pvlens.core.chat",
    "encode_messages": "pvlens.core.chat",
    "encode_prompt": "pvlens.core.chat",
    "GenerationResult": "pvlens.core.generation",
    "bulk_generate": "pvlens.core.bulk",
    "generate": "pvlens.core.generation",
    "load_model": "pvlens.core.model",
    "tiny_model": "pvlens.core.model",
    "Ablation": "pvlens.core.steering",
    "Capping": "pvlens.core.steering",
    "Guard": "pvlens.core.guard",
    "GuardRule": "pvlens.core.guard",
    "Steering": "pvlens.core.steering",
    "incremental": "pvlens.core.steering",
    "multi_layer": "pvlens.core.steering",
    "steer": "pvlens.core.steering",
    "PersonaVectors": "pvlens.vectors",
}

if TYPE_CHECKING:
    from pvlens.core.bulk import bulk_generate
    from pvlens.core.chat import EncodedChat, encode_conversation, encode_messages, encode_prompt
    from pvlens.core.generation import GenerationResult, generate
    from pvlens.core.guard import Guard, GuardRule
    from pvlens.core.model import load_model, tiny_model
    from pvlens.core.steering import Ablation, Capping, Steering, incremental, multi_layer, steer
    from pvlens.vectors import PersonaVectors


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'pvlens' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])


__all__ = [  # noqa: F822 — resolved lazily by __getattr__
    "Ablation", "Capping", "EncodedChat", "GenerationResult", "Guard", "GuardRule", "PersonaVectors", "Steering",
    "__version__", "bulk_generate",
    "encode_conversation", "encode_messages", "encode_prompt", "generate", "incremental", "load_model",
    "multi_layer", "steer", "tiny_model",
]
