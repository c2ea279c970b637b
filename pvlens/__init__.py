"""pvlens: persona vectors on TransformerLens.

Extract trait directions from contrastive rollouts, steer generation with them, monitor and
screen with projections, finetune with preventative steering, decompose with SAEs.
"""

from pvlens.chat import EncodedChat, encode_conversation, encode_messages, encode_prompt
from pvlens.generate import GenerationResult, generate
from pvlens.model import load_model, tiny_model
from pvlens.steering import Ablation, Steering, multi_layer, steer

__version__ = "0.1.0"

__all__ = [
    "Ablation",
    "EncodedChat",
    "GenerationResult",
    "Steering",
    "__version__",
    "encode_conversation",
    "encode_messages",
    "encode_prompt",
    "generate",
    "load_model",
    "multi_layer",
    "steer",
    "tiny_model",
]
