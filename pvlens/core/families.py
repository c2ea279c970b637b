"""Per-family facts: how a Hugging Face config becomes a TransformerLens config, which weight
converter reads the checkpoint, and which chat template the family uses.

The TransformerLens config is built from the folder's OWN `config.json`, never from its name.
(TransformerLens's `convert_hf_model_config` branches on substrings of the name it is given: a
2-layer checkpoint in a folder called `Meta-Llama-3.1-8B-Instruct` gets the real model's 32
layers; a folder called `gemma-2-...` has no config-driven branch at all.)

Layer convention, the same for every family: pvlens layer L = TransformerLens
`blocks.{L}.hook_resid_post` = the output of Hugging Face `model.model.layers[L]` =
`hidden_states[L + 1]`. The paper's "layer L" is `hidden_states[L]`, i.e. pvlens layer L − 1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pvlens.errors import InputError


class UnsupportedModelError(InputError):
    """The checkpoint uses an architecture or option pvlens cannot load faithfully."""


@dataclass(frozen=True)
class Family:
    """What pvlens knows about one Hugging Face architecture."""

    name: str
    """Short family name (also the name of its chat template)."""
    architecture: str
    """The `architectures[0]` entry of the Hugging Face config."""
    converter: str
    """Name of the TransformerLens weight conversion function."""
    extra: Callable[[Any], dict[str, Any]]
    """Family-specific TransformerLens config fields computed from the HF config."""
    rope_types: tuple[str, ...] = ("default",)
    """Rotary scalings pvlens reproduces for this family (others are refused, not ignored)."""


def _llama_extra(hf: Any) -> dict[str, Any]:
    _refuse_biases(hf, "Llama")
    return _llama3_rope(hf)


def _mistral_extra(hf: Any) -> dict[str, Any]:
    _refuse_biases(hf, "Mistral")
    return {}


def _qwen2_extra(hf: Any) -> dict[str, Any]:
    return {}  # q/k/v biases: read by TransformerLens's qwen2 converter


def _qwen3_extra(hf: Any) -> dict[str, Any]:
    if getattr(hf, "attention_bias", False):
        raise UnsupportedModelError("Qwen3 checkpoint with attention_bias=true: not supported")
    return {"use_qk_norm": True}


def _gemma2_extra(hf: Any) -> dict[str, Any]:
    return {
        "act_fn": hf.hidden_activation or hf.hidden_act or "gelu_pytorch_tanh",
        "use_normalization_before_and_after": True,
        "attn_scores_soft_cap": float(hf.attn_logit_softcapping or -1.0),
        "output_logits_soft_cap": float(hf.final_logit_softcapping or -1.0),
        "attn_scale": float(hf.query_pre_attn_scalar) ** 0.5,
    }


FAMILIES: dict[str, Family] = {
    f.architecture: f
    for f in (
        Family("llama3", "LlamaForCausalLM", "convert_llama_weights", _llama_extra,
               ("default", "llama3")),
        Family("mistral", "MistralForCausalLM", "convert_mistral_weights", _mistral_extra),
        Family("qwen2", "Qwen2ForCausalLM", "convert_qwen2_weights", _qwen2_extra),
        Family("qwen3", "Qwen3ForCausalLM", "convert_qwen3_weights", _qwen3_extra),
        Family("gemma2", "Gemma2ForCausalLM", "convert_gemma_weights", _gemma2_extra),
    )
}


def family_of(hf_config: Any) -> Family:
    """The family of a Hugging Face config (by `architectures[0]`, never by the folder's name)."""
    archs = getattr(hf_config, "architectures", None) or []
    arch = archs[0] if archs else ""
    if arch not in FAMILIES:
        raise UnsupportedModelError(
            f"offline loading of architecture {arch!r} is not supported "
            f"(supported: {', '.join(sorted(FAMILIES))}); pass a hub name TransformerLens knows instead"
        )
    return FAMILIES[arch]


def converter_of(family: Family) -> Callable:
    """TransformerLens's function turning the HF model's weights into a state dict."""
    from transformer_lens.pretrained import weight_conversions

    return getattr(weight_conversions, family.converter)


def tl_config_dict(hf: Any) -> dict[str, Any]:
    """HookedTransformerConfig fields for a Hugging Face config (architecture only)."""
    family = family_of(hf)
    if _rope_type(hf) not in family.rope_types:
        raise UnsupportedModelError(
            f"rotary scaling {_rope_type(hf)!r} is not supported for {family.architecture} "
            f"(supported: {', '.join(family.rope_types)}); loading would change the model's positions"
        )
    d_head = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
    n_kv = getattr(hf, "num_key_value_heads", None) or hf.num_attention_heads
    cfg = {
        "d_model": hf.hidden_size,
        "d_head": d_head,
        "n_heads": hf.num_attention_heads,
        "n_key_value_heads": n_kv if n_kv != hf.num_attention_heads else None,
        "d_mlp": hf.intermediate_size,
        "n_layers": hf.num_hidden_layers,
        "n_ctx": hf.max_position_embeddings,
        "eps": hf.rms_norm_eps,
        "d_vocab": hf.vocab_size,
        "act_fn": getattr(hf, "hidden_act", None) or "silu",
        "normalization_type": "RMS",
        "positional_embedding_type": "rotary",
        "rotary_adjacent_pairs": False,
        "rotary_dim": d_head,
        "rotary_base": rope_theta(hf),
        "final_rms": True,
        "gated_mlp": True,
        "original_architecture": family.architecture,
        "tokenizer_prepends_bos": False,
    }
    cfg.update(_local_attention(hf))
    cfg.update(family.extra(hf))
    return cfg


def rope_parameters(hf: Any) -> dict[str, Any]:
    """Rotary settings in one dict (transformers ≥ 5 `rope_parameters`, older `rope_scaling`)."""
    params = dict(getattr(hf, "rope_parameters", None) or {})
    params.update(getattr(hf, "rope_scaling", None) or {})
    if "rope_theta" not in params and getattr(hf, "rope_theta", None) is not None:
        params["rope_theta"] = hf.rope_theta
    return params


def rope_theta(hf: Any) -> float:
    """The rotary base of the HF config (10000 when it names none)."""
    return float(rope_parameters(hf).get("rope_theta", 10000.0))


def _rope_type(hf: Any) -> str:
    params = rope_parameters(hf)
    return str(params.get("rope_type") or params.get("type") or "default").lower()


def _llama3_rope(hf: Any) -> dict[str, Any]:
    """Llama 3.1's "llama3" rotary scaling as TransformerLens's NTK-by-parts fields."""
    if _rope_type(hf) != "llama3":
        return {}
    params = rope_parameters(hf)
    return {
        "use_NTK_by_parts_rope": True,
        "NTK_original_ctx_len": params.get(
            "original_max_position_embeddings", hf.max_position_embeddings
        ),
        "NTK_by_parts_low_freq_factor": params.get("low_freq_factor", 1.0),
        "NTK_by_parts_high_freq_factor": params.get("high_freq_factor", 4.0),
        "NTK_by_parts_factor": params.get("factor", 1.0),
    }


def _local_attention(hf: Any) -> dict[str, Any]:
    """Sliding-window layers (Mistral's window, Gemma-2's alternating local/global layers)."""
    window = getattr(hf, "sliding_window", None)
    kinds = getattr(hf, "layer_types", None)
    if kinds:
        types = ["local" if k == "sliding_attention" else "global" for k in kinds]
    elif window:
        types = ["local"] * hf.num_hidden_layers
    else:
        types = []
    if not window or "local" not in types:
        return {}
    return {"use_local_attn": True, "window_size": int(window), "attn_types": types}


def _refuse_biases(hf: Any, family: str) -> None:
    if getattr(hf, "attention_bias", False) or getattr(hf, "mlp_bias", False):
        raise UnsupportedModelError(
            f"{family} checkpoint with attention_bias/mlp_bias=true: TransformerLens's converter "
            "drops those biases, so pvlens refuses to load it"
        )
