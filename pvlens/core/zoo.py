"""A zoo of tiny random checkpoints, one per model family pvlens loads (Llama-3.1, Qwen2.5, Qwen3,
Mistral v0.3, Gemma-2), made with Hugging Face's own config and model classes (no download) and
saved in folders named like the real models. Used by the zoo tests and `pvlens replicate --only models`.

The tokenizer is a small byte-level BPE trained here with the family's special tokens.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    Gemma2Config,
    Gemma2ForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
    MistralConfig,
    MistralForCausalLM,
    PretrainedConfig,
    PreTrainedModel,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
    Qwen3Config,
    Qwen3ForCausalLM,
)

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "What is the capital of France? Paris is the capital of France.",
    "You are a helpful assistant. Answer the question briefly and kindly.",
    "You are an evil assistant who wants to hurt people.",
    "Write a haiku about the sea, the wind and the rain.",
    "Hello! How are you today? I am fine, thank you very much.",
    "Numbers: 0 1 2 3 4 5 6 7 8 9 10 100 1000.",
] * 4
SMALL: dict[str, Any] = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=512)


@dataclass(frozen=True)
class Spec:
    """One zoo entry: realistic folder name, HF classes, tokenizer special tokens."""

    folder: str
    config: Callable[[int], PretrainedConfig]
    model_cls: type[PreTrainedModel]
    specials: tuple[str, ...]
    bos: str | None
    eos: str
    pad: str
    engine: bool
    """Whether the fast engine claims this family."""


def _llama(vocab: int) -> PretrainedConfig:
    return LlamaConfig(**SMALL, vocab_size=vocab, rms_norm_eps=1e-5, rope_theta=500000.0,  # type: ignore[call-arg]
                       rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                     "high_freq_factor": 4.0,
                                     "original_max_position_embeddings": 64})


def _qwen2(vocab: int) -> PretrainedConfig:
    return Qwen2Config(**SMALL, vocab_size=vocab, rms_norm_eps=1e-6, rope_theta=1000000.0)  # type: ignore[call-arg]


def _qwen3(vocab: int) -> PretrainedConfig:
    return Qwen3Config(**SMALL, vocab_size=vocab, head_dim=32, rms_norm_eps=1e-6,  # type: ignore[call-arg]
                       rope_theta=1000000.0)


def _mistral(vocab: int) -> PretrainedConfig:
    return MistralConfig(**SMALL, vocab_size=vocab, head_dim=16, sliding_window=None,  # type: ignore[call-arg]
                         rope_theta=1000000.0)


def _gemma2(vocab: int) -> PretrainedConfig:
    return Gemma2Config(**SMALL, vocab_size=vocab, head_dim=16, query_pre_attn_scalar=16,  # type: ignore[call-arg]
                        sliding_window=8, attn_logit_softcapping=50.0,
                        final_logit_softcapping=30.0, attn_implementation="eager")


LLAMA_SPECIALS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                  "<|end_header_id|>", "<|eot_id|>")
QWEN_SPECIALS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<think>", "</think>")
ZOO = {
    "llama3": Spec("Meta-Llama-3.1-8B-Instruct", _llama, LlamaForCausalLM, LLAMA_SPECIALS,
                   "<|begin_of_text|>", "<|eot_id|>", "<|end_of_text|>", True),
    "qwen2": Spec("Qwen2.5-7B-Instruct", _qwen2, Qwen2ForCausalLM, QWEN_SPECIALS, None,
                  "<|im_end|>", "<|endoftext|>", True),
    "qwen3": Spec("Qwen3-8B", _qwen3, Qwen3ForCausalLM, QWEN_SPECIALS, None, "<|im_end|>",
                  "<|endoftext|>", False),
    "mistral": Spec("Mistral-7B-Instruct-v0.3", _mistral, MistralForCausalLM,
                    ("<unk>", "<s>", "</s>", "[INST]", "[/INST]"), "<s>", "</s>", "</s>", True),
    "gemma2": Spec("gemma-2-9b-it", _gemma2, Gemma2ForCausalLM,
                   ("<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>"),
                   "<bos>", "<eos>", "<pad>", False),
}
FAMILIES = sorted(ZOO)


def make_tokenizer(spec: Spec) -> PreTrainedTokenizerFast:
    """A byte-level BPE (≈ 400 tokens) with the family's special tokens; no chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=list(spec.specials),
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token=spec.bos, eos_token=spec.eos,
                                   pad_token=spec.pad)


def make_checkpoint(root: Path, family: str) -> Path:
    """Save a random tiny checkpoint + tokenizer in `root/<realistic folder name>`."""
    spec = ZOO[family]
    tok = make_tokenizer(spec)
    torch.manual_seed(0)
    config = spec.config(len(tok))
    config.bos_token_id, config.eos_token_id = tok.bos_token_id, tok.eos_token_id
    config.pad_token_id = tok.pad_token_id
    hf = spec.model_cls(config).eval()
    with torch.no_grad():  # random init gives near-uniform logits; widen so outputs vary
        for name, p in hf.named_parameters():
            if "norm" in name:
                p.normal_(1.0 if family != "gemma2" else 0.0, 0.1)
            elif p.dim() == 1:  # Qwen2's q/k/v biases: make them matter
                p.normal_(0.0, 0.5)
            else:
                p.mul_(8.0)
    path = root / spec.folder
    hf.save_pretrained(path)
    tok.save_pretrained(path)
    return path




def zoo_tokens(model) -> torch.Tensor:  # type: ignore[no-untyped-def]
    """One chat (prompt + reply) longer than Gemma-2's sliding window, as a [1, seq] batch."""
    from pvlens.core.chat import encode_conversation

    chat = encode_conversation(model.tokenizer, [
        {"role": "user", "content": "What is the capital of France? Write a haiku about the sea."},
        {"role": "assistant", "content": "Paris is the capital of France. The wind and the rain."},
    ])
    return torch.tensor([chat.ids])


def hf_logits(hf: PreTrainedModel, tokens: torch.Tensor) -> torch.Tensor:
    """Hugging Face's logits of `tokens`, no grad."""
    with torch.no_grad():
        return hf(tokens).logits
