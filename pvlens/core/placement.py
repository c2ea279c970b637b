"""Where a model's weights live: the weights dtype per device and TransformerLens `n_devices`.

`load_model(..., device="cuda", n_devices=2)` splits the blocks over cuda:0 and cuda:1 the way
TransformerLens's forward pass expects them (block i on `get_device_for_block_index(i, cfg)`;
the embedding with the first block, the final norm and unembedding with the last). TransformerLens
3.9's own `move_model_modules_to_device` puts every module on the GPU with the most free memory
instead, which its forward then contradicts; pvlens places the modules itself.
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer, HookedTransformerConfig

from pvlens.errors import InputError


def check_n_devices(device: str, n_devices: int) -> None:
    """Refuse an `n_devices` the hardware cannot honour, naming the fix."""
    if n_devices < 1:
        raise InputError(f"n_devices={n_devices}: must be 1 or more")
    if n_devices == 1:
        return
    parsed = torch.device(device)
    if parsed.type != "cuda":
        raise InputError(
            f"n_devices={n_devices} splits the layers over several GPUs and needs device='cuda' "
            f"(got device={device!r}); use n_devices=1 on {parsed.type}"
        )
    first = parsed.index or 0
    available = torch.cuda.device_count() - first
    if n_devices > available:
        raise InputError(
            f"n_devices={n_devices} from {device} needs cuda:{first}…cuda:{first + n_devices - 1}, "
            f"but only {available} CUDA device(s) are available from there"
        )


def weights_dtype(device: str) -> torch.dtype:
    """Default weights dtype: bf16 on a GPU that runs it natively, float32 elsewhere.

    (CPU bulk passes pick their compute dtype per task: `pvlens.core.device.fast_dtype`.)
    """
    if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return torch.float32


def layer_devices(cfg: HookedTransformerConfig) -> list[torch.device]:
    """The device of each block, as TransformerLens's forward routes the residual stream."""
    from transformer_lens.utilities.multi_gpu import get_device_for_block_index

    return [torch.device(get_device_for_block_index(i, cfg)) for i in range(cfg.n_layers)]


def place_modules(model: HookedTransformer) -> HookedTransformer:
    """Move each module to its device (one device: the whole model; several: split by block)."""
    devices = layer_devices(model.cfg)
    if model.cfg.n_devices == 1:
        return model.to(devices[0], print_details=False)
    model.embed.to(devices[0])
    model.hook_embed.to(devices[0])
    for block, device in zip(model.blocks, devices, strict=True):
        block.to(device)
    if hasattr(model, "ln_final"):
        model.ln_final.to(devices[-1])
    model.unembed.to(devices[-1])
    return model
