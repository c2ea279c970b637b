"""LoRA on a HookedTransformer's own weights, numerically the same as peft's LoRA on HF.

peft cannot wrap TransformerLens weights (they are einsum parameters, not `nn.Linear`), so the
update is written on the parameters directly with `torch.nn.utils.parametrize`:
`W ← W + s · layout(B @ A)`. `A [r, in]` and `B [out, r]` use peft's convention for the HF
`nn.Linear` the TL tensor came from, and `layout` maps the 2-D `[out, in]` update onto TL's
tensor (3-D per head for attention). So an adapter here equals peft's adapter on
`q/k/v/o_proj` and `gate/up/down_proj`, value for value (tested against peft).

Two ways to run the same adapter:
- **weights** (default): every read of `W_Q` etc. returns the adapted weight, so anything that
  uses the weights — the TL forward, pvlens's fast engine, `generate`, `collect` — sees the
  adapter with no extra code.
- **factored** (`handle.factored()`, what training uses): the weights stay the base weights and
  hooks add `s · B(A(dropout(x)))` to each projection's output, as peft does. Gradients then
  never form a full `[in, out]` weight gradient, which makes a training step ~1.4× cheaper,
  and dropout on the adapter input becomes possible. Both modes give the same outputs.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, cast

import torch
import torch.nn.functional as F
from einops import rearrange
from pydantic import Field, field_validator
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from torch.nn.utils import parametrize
from transformer_lens import HookedTransformer

from pvlens.core.config import Config

Target = Literal["q", "k", "v", "o", "gate", "up", "down"]
ALL_TARGETS: tuple[Target, ...] = ("q", "k", "v", "o", "gate", "up", "down")
ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
HF_NAMES = {  # HF module names of the Llama family (Llama, Qwen2, Mistral) per target
    "q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
    "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
    "down": "mlp.down_proj",
}


class LoraConfig(Config):
    """Which weights get a low-rank update and how it is scaled (defaults: the paper's)."""

    r: int = Field(32, ge=1)
    """Rank of the update (paper: 32)."""
    alpha: float = 64.0
    """Scale numerator (paper: 64)."""
    rslora: bool = True
    """Rank-stabilised scaling alpha/sqrt(r) (paper); False gives classic alpha/r."""
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    """Dropout on each adapter's input while training (factored mode only; paper: 0)."""
    targets: tuple[Target, ...] = ALL_TARGETS
    """Projections to adapt, named like HF's q/k/v/o_proj and gate/up/down_proj."""
    layers: tuple[int, ...] | None = None
    """Blocks to adapt (TransformerLens indices); None = every block."""
    init_seed: int = 0
    """Seed of A's kaiming-uniform init (peft's default); B starts at zero."""

    @field_validator("targets")
    @classmethod
    def _unique_targets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("targets is empty: name at least one of " + ", ".join(ALL_TARGETS))
        return tuple(dict.fromkeys(v))

    @property
    def scaling(self) -> float:
        return self.alpha / (math.sqrt(self.r) if self.rslora else self.r)


# --- layouts: HF [out, in] update <-> TransformerLens tensor -------------------------------

def _qkv_layout(d: Tensor, shape: torch.Size) -> Tensor:
    """HF q/k/v_proj update `[heads*d_head, d_model]` as TL's W_Q/W_K/W_V `[heads, d_model, d_head]`."""
    return rearrange(d, "(n h) m -> n m h", n=shape[0], m=shape[1], h=shape[2])


def _o_layout(d: Tensor, shape: torch.Size) -> Tensor:
    """HF o_proj update `[d_model, heads*d_head]` as TL's W_O `[heads, d_head, d_model]`."""
    return rearrange(d, "m (n h) -> n h m", n=shape[0], h=shape[1], m=shape[2])


def _mlp_layout(d: Tensor, shape: torch.Size) -> Tensor:
    return d.T  # W_in / W_gate / W_out are the HF weight transposed


def _in_out(kind: str, shape: torch.Size) -> tuple[int, int]:
    if kind == "qkv":
        return shape[1], shape[0] * shape[2]
    if kind == "o":
        return shape[0] * shape[1], shape[2]
    return shape[0], shape[1]


_LAYOUTS: dict[str, Callable[[Tensor, torch.Size], Tensor]] = {
    "qkv": _qkv_layout, "o": _o_layout, "mlp": _mlp_layout,
}


class LoraParametrization(nn.Module):
    """`W ↦ W + s · layout(B @ A)`: the parametrization registered on one TL weight."""

    def __init__(self, kind: str, shape: torch.Size, r: int, scaling: float, dropout: float):
        super().__init__()
        self.kind, self.shape, self.scaling = kind, torch.Size(shape), scaling
        n_in, n_out = _in_out(kind, self.shape)
        self.lora_A = nn.Parameter(torch.empty(r, n_in))
        self.lora_B = nn.Parameter(torch.zeros(n_out, r))
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.active = True
        """The adapter contributes (False inside `LoraHandle.disabled()`)."""
        self.merged = False
        """The update is already folded into the stored base weight."""
        self.factored = False
        """Training mode: hooks add the update to activations; the weight stays the base."""

    def delta(self) -> Tensor:
        """The update in the TL tensor's layout (differentiable in A and B)."""
        return _LAYOUTS[self.kind](self.scaling * (self.lora_B @ self.lora_A), self.shape)

    def forward(self, weight: Tensor) -> Tensor:
        if self.factored:
            return weight if not self.merged else weight - self.delta().to(weight.dtype)
        if self.active and not self.merged:
            return weight + self.delta().to(weight.dtype)
        if self.merged and not self.active:
            return weight - self.delta().to(weight.dtype)
        return weight

    def apply_to(self, x: Tensor) -> Tensor:
        """`s · B(A(dropout(x)))` on activations laid out like the HF linear's input."""
        a = self.lora_A.to(x.dtype)
        b = self.lora_B.to(x.dtype)
        return F.linear(F.linear(self.dropout(x), a), b) * self.scaling


@dataclass
class _Site:
    """One adapted weight: where it lives and its parametrization."""

    layer: int
    target: str
    module: nn.Module
    param_name: str
    lora: LoraParametrization
    param_order: list[str] = field(default_factory=list)
    """The module's parameter names in their order before the adapter (restored on removal,
    so a removed adapter leaves the model exactly as it was, fingerprint included)."""

    @property
    def original(self) -> Tensor:
        """The stored (unadapted) weight under the parametrization."""
        return cast(Any, self.module).parametrizations[self.param_name].original


def _param_name(model: HookedTransformer, layer: int, target: str) -> tuple[nn.Module, str, str]:
    block = model.blocks[layer]
    attn, mlp = block.attn, block.mlp
    if target in ("q", "k", "v", "o"):
        name = {"q": "W_Q", "k": "W_K", "v": "W_V", "o": "W_O"}[target]
        if target in ("k", "v") and f"_{name}" in attn._parameters:
            name = f"_{name}"  # grouped-query attention stores [n_kv_heads, d_model, d_head]
        if name not in attn._parameters:
            raise ValueError(f"block {layer}'s attention has no parameter {name}")
        return attn, name, "o" if target == "o" else "qkv"
    gated = "W_gate" in mlp._parameters
    if target == "gate" and not gated:
        raise ValueError(
            f"target 'gate' needs a gated MLP; {model.cfg.model_name} has none (drop 'gate')"
        )
    name = {"gate": "W_gate", "up": "W_in", "down": "W_out"}[target]
    if name not in mlp._parameters:
        raise ValueError(f"block {layer}'s MLP has no parameter {name}")
    return mlp, name, "mlp"


@dataclass
class LoraHandle:
    """The adapters added to one model: toggle, merge, save, train."""

    model: HookedTransformer
    config: LoraConfig
    sites: list[_Site] = field(default_factory=list)
    _hooks: list = field(default_factory=list, repr=False)
    _factored: bool = field(default=False, repr=False)

    # --- parameters ----------------------------------------------------------------------
    def parameters(self) -> list[nn.Parameter]:
        """A and B of every adapter (what the optimiser trains)."""
        return [p for s in self.sites for p in (s.lora.lora_A, s.lora.lora_B)]

    def state_dict(self) -> dict[str, Tensor]:
        """`blocks.{l}.{target}.lora_A/B` → tensor (CPU copies)."""
        out = {}
        for s in self.sites:
            out[f"blocks.{s.layer}.{s.target}.lora_A"] = s.lora.lora_A.detach().cpu().clone()
            out[f"blocks.{s.layer}.{s.target}.lora_B"] = s.lora.lora_B.detach().cpu().clone()
        return out

    def load_state_dict(self, state: dict[str, Tensor]) -> None:
        expected = {f"blocks.{s.layer}.{s.target}.lora_{ab}" for s in self.sites for ab in "AB"}
        missing, extra = expected - set(state), set(state) - expected
        if missing or extra:
            raise ValueError(
                f"adapter tensors do not match this model's adapters: missing {sorted(missing)[:4]}, "
                f"unexpected {sorted(extra)[:4]} (was it saved with other targets/layers?)"
            )
        self._check_unmerged("load weights into")
        with torch.no_grad():
            for s in self.sites:
                for ab in "AB":
                    p = getattr(s.lora, f"lora_{ab}")
                    t = state[f"blocks.{s.layer}.{s.target}.lora_{ab}"]
                    if t.shape != p.shape:
                        raise ValueError(
                            f"lora_{ab} of blocks.{s.layer}.{s.target}: shape {tuple(t.shape)} "
                            f"in the file, {tuple(p.shape)} here (different rank or model?)"
                        )
                    p.copy_(t)

    @property
    def n_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    # --- switching -----------------------------------------------------------------------
    @contextlib.contextmanager
    def disabled(self) -> Iterator[HookedTransformer]:
        """The base model inside the block (e.g. base activations for a shift or a penalty)."""
        before = [s.lora.active for s in self.sites]
        for s in self.sites:
            s.lora.active = False
        try:
            yield self.model
        finally:
            for s, a in zip(self.sites, before, strict=True):
                s.lora.active = a

    @property
    def is_factored(self) -> bool:
        return self._factored

    @contextlib.contextmanager
    def factored(self) -> Iterator[HookedTransformer]:
        """Training mode: base weights + hooks adding `s·B(A(dropout(x)))` to each projection.

        Only the TransformerLens forward runs these hooks (pvlens's fast engine sees them and
        falls back to it). Inputs are read where TL computes them, before any user hook on
        `hook_z` / `mlp.hook_post`.
        """
        if self._factored:
            raise RuntimeError("factored mode is already on")
        self._factored = True
        for s in self.sites:
            s.lora.factored = True
        try:
            self._install_hooks()
            yield self.model
        finally:
            for h in self._hooks:
                h.remove()
            self._hooks.clear()
            self._factored = False
            for s in self.sites:
                s.lora.factored = False

    def _install_hooks(self) -> None:
        by_layer: dict[int, dict[str, LoraParametrization]] = {}
        for s in self.sites:
            by_layer.setdefault(s.layer, {})[s.target] = s.lora
        for layer, loras in by_layer.items():
            block: Any = self.model.blocks[layer]  # TL block: attn/mlp hook points by name
            stash: dict[str, Tensor] = {}
            reg = self._hooks.append
            attn, mlp = block.attn, block.mlp
            if {"q", "k", "v"} & loras.keys():
                def grab_qkv(mod, args, kwargs, stash=stash):
                    stash["q"] = kwargs.get("query_input")
                    stash["k"] = kwargs.get("key_input")
                    stash["v"] = kwargs.get("value_input")
                reg(attn.register_forward_pre_hook(grab_qkv, with_kwargs=True))
                for t in ("q", "k", "v"):
                    if t in loras:
                        reg(getattr(attn, f"hook_{t}").register_forward_hook(
                            _add_heads(loras[t], stash, t)))
            if "o" in loras:
                def grab_z(mod, args, out, stash=stash):
                    stash["o"] = out.flatten(-2)
                reg(attn.hook_z.register_forward_hook(grab_z))
                reg(attn.register_forward_hook(_add_out(loras["o"], stash, "o")))
            if {"gate", "up"} & loras.keys():
                def grab_mlp_in(mod, args, stash=stash):
                    stash["mlp_in"] = args[0]
                reg(mlp.register_forward_pre_hook(grab_mlp_in))
                gated = hasattr(mlp, "W_gate")
                if "gate" in loras:
                    reg(mlp.hook_pre.register_forward_hook(_add_out(loras["gate"], stash, "mlp_in")))
                if "up" in loras:
                    point = mlp.hook_pre_linear if gated else mlp.hook_pre
                    reg(point.register_forward_hook(_add_out(loras["up"], stash, "mlp_in")))
            if "down" in loras:
                def grab_post(mod, args, out, stash=stash):
                    stash["down"] = out
                reg(mlp.hook_post.register_forward_hook(grab_post))
                reg(mlp.register_forward_hook(_add_out(loras["down"], stash, "down")))
            reg(block.register_forward_hook(lambda mod, args, out, stash=stash: stash.clear()))

    # --- merging -------------------------------------------------------------------------
    def merge(self) -> None:
        """Fold the update into the stored weights (the parametrization then adds nothing)."""
        with torch.no_grad():
            for s in self.sites:
                if not s.lora.merged:
                    orig = s.original
                    orig.add_(s.lora.delta().to(orig.dtype))
                    s.lora.merged = True

    def unmerge(self) -> None:
        """Undo `merge` (exact up to float rounding)."""
        with torch.no_grad():
            for s in self.sites:
                if s.lora.merged:
                    orig = s.original
                    orig.sub_(s.lora.delta().to(orig.dtype))
                    s.lora.merged = False

    def _check_unmerged(self, what: str) -> None:
        if any(s.lora.merged for s in self.sites):
            raise RuntimeError(f"cannot {what} a merged adapter; call handle.unmerge() first")

    def remove(self, merge: bool = False) -> HookedTransformer:
        """Take the adapters off; `merge=True` keeps their effect baked into plain weights."""
        if self._factored:
            raise RuntimeError("leave handle.factored() before removing the adapters")
        for s in self.sites:
            s.lora.active = merge
            s.lora.factored = False
            # leave_parametrized=True stores forward(original): base (+ delta if merge).
            parametrize.remove_parametrizations(s.module, s.param_name, leave_parametrized=True)
            s.module._parameters[s.param_name].requires_grad_(False)
        for s in self.sites:
            params = s.module._parameters
            order = [n for n in s.param_order if n in params] + [n for n in params if n not in s.param_order]
            s.module._parameters = {n: params[n] for n in order}
        self.sites.clear()
        self.model.__dict__.pop("_pvlens_lora", None)
        return self.model

    # --- files ---------------------------------------------------------------------------
    def save(self, directory: str | Path, extra: dict | None = None) -> Path:
        """Write `adapter.safetensors` + `adapter_config.json` (config, model shape, `extra`)."""
        return save_adapter(self, directory, extra)


def _add_heads(lora: LoraParametrization, stash: dict, key: str):
    def hook(mod, args, out):  # out: [batch, pos, heads, d_head]; HF's (heads d_head) order
        if not lora.active:
            return out
        return out + lora.apply_to(stash[key]).view(out.shape).to(out.dtype)
    return hook


def _add_out(lora: LoraParametrization, stash: dict, key: str):
    def hook(mod, args, out):
        if not lora.active:
            return out
        return out + lora.apply_to(stash[key]).to(out.dtype)
    return hook


def get_handle(model: HookedTransformer) -> LoraHandle | None:
    """The adapters on `model`, if `add_lora` put some there."""
    return model.__dict__.get("_pvlens_lora")


def add_lora(model: HookedTransformer, config: LoraConfig | None = None) -> LoraHandle:
    """Put LoRA adapters on `model` in place; freeze every other parameter.

    Returns the handle that owns the adapters (also reachable by `get_handle(model)`).
    """
    config = config or LoraConfig()
    if get_handle(model) is not None:
        raise RuntimeError("this model already has LoRA adapters; call handle.remove() first")
    n = model.cfg.n_layers
    layers = range(n) if config.layers is None else [int(x) for x in config.layers]
    for layer in layers:
        if not 0 <= layer < n:
            raise IndexError(f"LoRA layer {layer} is out of range for a {n}-layer model")
    if "gate" in config.targets and not model.cfg.gated_mlp:
        raise ValueError("target 'gate' needs a gated MLP (Llama-style); remove it from targets")
    for p in model.parameters():
        p.requires_grad_(False)
    gen = torch.Generator().manual_seed(config.init_seed)
    handle = LoraHandle(model=model, config=config)
    orders: dict[int, list[str]] = {}
    for layer in layers:
        for target in config.targets:
            module, name, kind = _param_name(model, layer, target)
            weight = module._parameters[name]
            order = orders.setdefault(id(module), list(module._parameters))
            lora = LoraParametrization(kind, weight.shape, config.r, config.scaling, config.dropout)
            _kaiming_uniform(lora.lora_A, gen)
            lora.to(weight.device)
            parametrize.register_parametrization(module, name, lora, unsafe=True)
            cast(Any, module).parametrizations[name].original.requires_grad_(False)
            handle.sites.append(_Site(layer, target, module, name, lora, order))
    model.__dict__["_pvlens_lora"] = handle
    return handle


def _kaiming_uniform(w: Tensor, gen: torch.Generator) -> None:
    """peft/nn.Linear init: kaiming_uniform(a=√5) → U(-1/√fan_in, 1/√fan_in), seeded."""
    bound = 1.0 / math.sqrt(w.shape[1])
    with torch.no_grad():
        w.copy_(torch.rand(w.shape, generator=gen) * 2 * bound - bound)


# --- files -------------------------------------------------------------------------------

def _model_info(model: HookedTransformer) -> dict:
    cfg = model.cfg
    return {"model_name": cfg.model_name, "n_layers": cfg.n_layers, "d_model": cfg.d_model,
            "architecture": cfg.original_architecture}


def save_adapter(handle: LoraHandle, directory: str | Path, extra: dict | None = None) -> Path:
    """Save the adapter tensors (safetensors) and a JSON config next to them."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    handle._check_unmerged("save")
    save_file(handle.state_dict(), str(directory / ADAPTER_WEIGHTS))
    meta = {"format": "pvlens-lora/1", "lora": handle.config.model_dump(mode="json"),
            "model": _model_info(handle.model), **({"extra": extra} if extra else {})}
    (directory / ADAPTER_CONFIG).write_text(json.dumps(meta, indent=2))
    return directory


def read_adapter_config(directory: str | Path) -> dict:
    path = Path(directory) / ADAPTER_CONFIG
    if not path.exists():
        raise FileNotFoundError(
            f"{path} not found: {directory} is not a pvlens adapter folder "
            "(expected adapter.safetensors + adapter_config.json from save_adapter)"
        )
    meta = json.loads(path.read_text())
    if meta.get("format", "").split("/")[0] != "pvlens-lora":
        raise ValueError(f"{path} is not a pvlens adapter config (peft adapters load into HF models)")
    return meta


def load_adapter(model: HookedTransformer, directory: str | Path) -> LoraHandle:
    """Add adapters to `model` as saved in `directory` (a folder written by `save_adapter`)."""
    meta = read_adapter_config(directory)
    info = meta["model"]
    if (info["n_layers"], info["d_model"]) != (model.cfg.n_layers, model.cfg.d_model):
        raise ValueError(
            f"adapter was trained on {info['model_name']} ({info['n_layers']} layers, d_model "
            f"{info['d_model']}); this model has {model.cfg.n_layers} layers, d_model {model.cfg.d_model}"
        )
    handle = add_lora(model, LoraConfig(**meta["lora"]))
    handle.load_state_dict(load_file(str(Path(directory) / ADAPTER_WEIGHTS)))
    return handle


def export_peft(handle: LoraHandle, directory: str | Path) -> Path:
    """Write the adapter in peft's format, loadable with `PeftModel.from_pretrained(hf, dir)`.

    Only for the Llama family (Llama, Qwen2, Mistral), whose HF module names are known.
    """
    import peft

    arch = handle.model.cfg.original_architecture
    if arch not in ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM", "Qwen3ForCausalLM"):
        raise ValueError(f"peft export knows the Llama family's module names, not {arch!r}")
    handle._check_unmerged("export")
    cfg = handle.config
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    peft.LoraConfig(
        r=cfg.r, lora_alpha=cfg.alpha,  # type: ignore[arg-type]  # peft annotates int; floats work
        use_rslora=cfg.rslora, lora_dropout=cfg.dropout,
        target_modules=sorted({HF_NAMES[t].split(".")[1] for t in cfg.targets}),
        layers_to_transform=list(cfg.layers) if cfg.layers is not None else None,
        task_type="CAUSAL_LM", bias="none",
    ).save_pretrained(str(directory))
    tensors = {}
    for s in handle.sites:
        base = f"base_model.model.model.layers.{s.layer}.{HF_NAMES[s.target]}"
        tensors[f"{base}.lora_A.weight"] = s.lora.lora_A.detach().cpu().contiguous()
        tensors[f"{base}.lora_B.weight"] = s.lora.lora_B.detach().cpu().contiguous()
    save_file(tensors, str(directory / "adapter_model.safetensors"))
    return directory


def lora_from_peft_modules(handle: LoraHandle, hf_peft_model, adapter: str = "default") -> None:
    """Copy A/B from a peft-wrapped HF Llama-family model into `handle` (for comparisons)."""
    layers = _hf_layers(hf_peft_model)
    with torch.no_grad():
        for s in handle.sites:
            mod: Any = layers[s.layer].get_submodule(HF_NAMES[s.target])
            s.lora.lora_A.copy_(mod.lora_A[adapter].weight)
            s.lora.lora_B.copy_(mod.lora_B[adapter].weight)


def _hf_layers(hf_model) -> Sequence[nn.Module]:
    for path in ("base_model.model.model.layers", "model.layers", "model.model.layers"):
        try:
            return hf_model.get_submodule(path)
        except AttributeError:
            continue
    raise ValueError("could not find the decoder layers of this HF model")
