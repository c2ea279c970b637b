"""Directional ablation baked into the weights (the refusal-direction method, Arditi et al. 2024).

Every matrix that writes to the residual stream loses its component along the unit direction
u: W ← W − (W·u) uᵀ for W_E, W_pos (absolute positions only), each block's W_O and W_out, and
their biases b_O, b_out (b ← b − (b·u) u). The residual stream then never holds u, with no
hooks, so the copy runs at full speed anywhere a HookedTransformer runs.

Equivalence with hooks: it equals projecting u out of `blocks.0.hook_resid_pre` and of each
block's `hook_resid_mid` and `hook_resid_post` (every place the stream is read). Ablation at
`hook_resid_post` only (pvlens.core.steering.Ablation) differs slightly: inside a block the MLP
still reads the attention's u-component before the block's output is cleaned.

TransformerLens processing: both operations are linear maps of the residual stream, so the
equality holds whatever the loading did. On RMSNorm models (Llama, the default model) nothing
is centred. On LayerNorm models loaded with `center_writing_weights=True` the writes are
mean-free; ablating a direction whose mean is not zero adds back a constant-mean component,
which the next LayerNorm removes, so the computation is unchanged but the stream is no
longer exactly centred (`center_direction=True` projects out the centred direction instead).

Checkpoints: `save_ablated` writes the changed tensors (a TransformerLens state-dict subset,
safetensors) with a JSON record naming the base model's fingerprint; `load_ablated` loads the
base model the usual way and applies them, refusing a base with other weights.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import torch
from jaxtyping import Float
from safetensors import safe_open
from safetensors.torch import save_file
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.fingerprint import model_fingerprint, tensor_hash
from pvlens.errors import InputError

WEIGHTS_FILE = "ablated.safetensors"
"""Changed tensors of an ablated checkpoint (TransformerLens parameter names)."""


def writing_parameters(model: HookedTransformer) -> list[str]:
    """Names of the parameters whose last axis writes to the residual stream (d_model)."""
    d = model.cfg.d_model
    names = ["embed.W_E"]
    if model.cfg.positional_embedding_type in ("standard", "shortformer"):
        names.append("pos_embed.W_pos")
    for i in range(model.cfg.n_layers):
        names += [f"blocks.{i}.attn.W_O", f"blocks.{i}.attn.b_O"]
        if not model.cfg.attn_only:
            names += [f"blocks.{i}.mlp.W_out", f"blocks.{i}.mlp.b_out"]
    params = dict(model.named_parameters())
    missing = [n for n in names if n not in params]
    if missing:
        raise InputError(f"the model lacks residual-writing parameters {missing[:3]}; "
                         "weight ablation supports TransformerLens HookedTransformer models")
    bad = [n for n in names if params[n].shape[-1] != d]
    if bad:
        raise InputError(f"parameters {bad[:3]} do not end in d_model={d}")
    return names


def unit_vector(direction: Tensor, model: HookedTransformer, center: bool = False) -> Float[Tensor, " d_model"]:
    """`direction` as a float64 unit vector of the model's width (optionally mean-centred)."""
    u = torch.as_tensor(direction).detach().double().reshape(-1)
    if u.shape[0] != model.cfg.d_model:
        raise InputError(f"direction has {u.shape[0]} entries, the model's d_model is {model.cfg.d_model}")
    if center:
        u = u - u.mean()
    if float(u.norm()) == 0.0:
        raise InputError("cannot ablate a zero direction")
    return u / u.norm()


@torch.no_grad()
def project_out_(weight: Tensor, u: Float[Tensor, " d_model"]) -> None:
    """In place: remove each row's (last axis) component along unit u, computed in float64."""
    w = weight.double()
    weight.copy_((w - (w @ u)[..., None] * u).to(weight.dtype))


@torch.no_grad()
def ablate_direction_in_weights(
    model: HookedTransformer, direction: Tensor, in_place: bool = False, center_direction: bool = False,
) -> HookedTransformer:
    """A copy of `model` (or `model` itself with `in_place`) whose residual stream never holds
    `direction`: every residual-writing weight and bias has it projected out; no hooks."""
    u = unit_vector(direction, model, center_direction)
    out = model if in_place else copy.deepcopy(model)
    params = dict(out.named_parameters())
    for name in writing_parameters(out):
        project_out_(params[name], u.to(params[name].device))
    return out


def save_ablated(
    ablated: HookedTransformer, base: HookedTransformer, out_dir: str | Path, record: dict[str, Any],
) -> Path:
    """Write the tensors that differ from `base` and `ablation.json` (base fingerprint, record)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = dict(ablated.named_parameters())
    tensors = {n: params[n].detach().cpu().contiguous() for n in writing_parameters(ablated)}
    save_file(tensors, str(out / WEIGHTS_FILE), metadata={"format": "transformer_lens state dict subset"})
    meta = {**record, "base_fingerprint": model_fingerprint(base), "tensors": sorted(tensors),
            "weights_hash": tensor_hash(torch.cat([t.reshape(-1)[:4096].float() for t in tensors.values()]))}
    (out / "ablation.json").write_text(json.dumps(meta, indent=1, default=str))
    return out


def load_ablated(base: HookedTransformer, ckpt_dir: str | Path, in_place: bool = False) -> HookedTransformer:
    """`base` (loaded as usual, e.g. pvlens.load_model) with a saved ablation applied; refuses a
    base whose weights differ from the one the checkpoint was made from."""
    ckpt = Path(ckpt_dir)
    meta_path = ckpt / "ablation.json"
    if not meta_path.exists():
        raise InputError(f"{ckpt} has no ablation.json; write one with `pvlens vectors ablate-weights`")
    meta = json.loads(meta_path.read_text())
    if meta["base_fingerprint"] != model_fingerprint(base):
        raise InputError(f"{ckpt} was made from a model with fingerprint {meta['base_fingerprint']}, this "
                         f"one is {model_fingerprint(base)}: load the base model named in {meta_path}")
    out = base if in_place else copy.deepcopy(base)
    params = dict(out.named_parameters())
    with torch.no_grad(), safe_open(str(ckpt / WEIGHTS_FILE), framework="pt") as f:
        for name in f.keys():  # noqa: SIM118 (safe_open has no __iter__)
            params[name].copy_(f.get_tensor(name).to(params[name]))
    return out
