"""Data screening with the projection difference ΔP (paper §6).

For every training sample (prompt, response): ΔP_i = proj(response_i) − proj(base_i), where
proj is the response-averaged residual at one layer projected on the unit persona vector and
base_i is the base model's own (greedy) reply to the same prompt. The dataset-level ΔP is
the mean of ΔP_i. Samples with a large ΔP push the model towards the trait when trained on.

The cheaper approximation skips generation: the base side is replaced by the projection of
the prompt itself (its last token, or its average), which the same forward pass yields.

Modules: `io` (reading the dataset and results), `base_replies` (the base model's cached
greedy replies), `kernel` (prompt once into a KV cache, both replies against it), `run` (the
chunked, resumable run keyed by its inputs), `summary` (statistics, ranking, plots, merge),
`ray_runner` (the same run on a pool of Ray actors; Ray is imported only when it starts).
"""

from __future__ import annotations

from pvlens.core.fingerprint import model_fingerprint
from pvlens.trainsets.screen.base_replies import BaseReplies
from pvlens.trainsets.screen.io import (
    Sample,
    ScreenError,
    iter_samples,
    load_results,
    parse_shard,
    read_results,
)
from pvlens.trainsets.screen.kernel import paired_activations
from pvlens.trainsets.screen.ray_runner import ModelLoader, RayOptions, screen_on_ray
from pvlens.trainsets.screen.run import CHARS_PER_TOKEN_BOUND, ScreenConfig, screen
from pvlens.trainsets.screen.summary import (
    ScreenSummary,
    auroc,
    export_flagged,
    finish,
    histogram,
    merge,
    summarise,
)

__all__ = [
    "CHARS_PER_TOKEN_BOUND",
    "BaseReplies",
    "ModelLoader",
    "RayOptions",
    "Sample",
    "ScreenConfig",
    "ScreenError",
    "ScreenSummary",
    "auroc",
    "export_flagged",
    "finish",
    "histogram",
    "iter_samples",
    "load_results",
    "merge",
    "model_fingerprint",
    "paired_activations",
    "parse_shard",
    "read_results",
    "screen",
    "screen_on_ray",
    "summarise",
]
