"""Monitoring with persona vectors: projections of activations onto a trait direction.

- `projection`: `project` / `projections`, the scalar `x · v̂` (or cosine) of activations at
  one layer — last prompt token (known *before* generating, the paper's monitoring signal),
  response average, prompt average — and `default_layer`.
- `tokens`: `token_projections` + `tokens_html` / `tokens_png`, every token of a conversation
  coloured by its projection (circuitsvis rendered offline, or plain matplotlib).
- `prompt_shift`: the paper's experiment — system prompts that interpolate from
  trait-suppressing to trait-eliciting, and many-shot prompts (built in
  `pvlens.traits.prompts`); the last-prompt projection before generation against the judged
  trait score of sampled answers (Pearson r).
- `deploy`: `TraitMonitor`, several traits scored in one forward pass, for a deployment to
  call on every request.
"""

from __future__ import annotations

from pvlens.monitor.deploy import TraitMonitor
from pvlens.monitor.projection import (
    VectorsLike,
    as_vectors,
    default_layer,
    project,
    projections,
    unit_direction,
)
from pvlens.monitor.prompt_shift import (
    PromptShiftConfig,
    PromptShiftResult,
    plot_prompt_shift,
    prompt_shift,
    summarise_prompt_shift,
)
from pvlens.monitor.tokens import (
    TokenProjections,
    TokenView,
    token_projections,
    tokens_html,
    tokens_png,
)
from pvlens.traits.prompts import LADDER_DIR, Condition, many_shot, prompt_ladder, trait_shots

__all__ = [
    "LADDER_DIR",
    "Condition",
    "PromptShiftConfig",
    "PromptShiftResult",
    "TokenProjections",
    "TokenView",
    "TraitMonitor",
    "VectorsLike",
    "as_vectors",
    "default_layer",
    "many_shot",
    "plot_prompt_shift",
    "project",
    "projections",
    "prompt_ladder",
    "prompt_shift",
    "summarise_prompt_shift",
    "token_projections",
    "tokens_html",
    "tokens_png",
    "trait_shots",
    "unit_direction",
]
