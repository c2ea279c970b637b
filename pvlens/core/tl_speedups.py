"""The one speed fix pvlens makes to TransformerLens 3.x, isolated here.

TL 3.9's gated MLP and unembedding call `F.linear(x, W.T.contiguous())`, which copies every
weight matrix on every forward (≈430 MB per token for SmolLM2-135M, ~73 % of the time).
`x @ W` computes the same product without the copy. The fix swaps the class of the model's
own modules (never TL's classes globally), so other models in the process are untouched.
Results agree with stock TL to float tolerance (tested); bf16 accumulation order may differ.
"""

from __future__ import annotations

import torch
from transformer_lens import HookedTransformer
from transformer_lens.components import Unembed
from transformer_lens.components.mlps.gated_mlp import GatedMLP


class FastGatedMLP(GatedMLP):
    """GatedMLP without per-forward weight copies."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.W_gate.device != x.device:
            x = x.to(self.W_gate.device)
        pre_act = self.hook_pre(x @ self.W_gate)  # [batch, pos, d_mlp]
        pre_linear = self.hook_pre_linear(x @ self.W_in)  # [batch, pos, d_mlp]
        post_act = self.hook_post(self.act_fn(pre_act) * pre_linear + self.b_in)
        return post_act @ self.W_out + self.b_out


class FastUnembed(Unembed):
    """Unembed without a per-forward copy of W_U."""

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        residual = self.hook_in(residual)
        return self.hook_out(residual @ self.W_U + self.b_U)


def apply(model: HookedTransformer) -> HookedTransformer:
    """Swap in the copy-free modules where the stock ones are used exactly (in place)."""
    for block in model.blocks:
        mlp = block.mlp
        if type(mlp) is GatedMLP and not (
            model.cfg.is_layer_norm_activation() and getattr(mlp, "hook_mid", None) is not None
        ):
            mlp.__class__ = FastGatedMLP
    if type(model.unembed) is Unembed:
        model.unembed.__class__ = FastUnembed
    return model
