"""One base for every pvlens config, one set of sampling fields, and model-relative defaults.

Configs forbid unknown fields (a typo such as `samples_per_pairs=3` is an error, not a silent
default) and take their field docs from the attribute docstrings, which the CLI shows as help.
"""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field

ConfigT = TypeVar("ConfigT", bound="Config")


class Config(BaseModel):
    """Base of pvlens configs: unknown fields are errors; field docs come from docstrings."""

    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True, validate_assignment=True)

    def changed(self: ConfigT, **updates: Any) -> ConfigT:  # a TypeVar: beartype refuses typing.Self
        """A validated copy with `updates` applied (unknown names raise, unlike `model_copy`)."""
        return type(self).model_validate({**self.model_dump(), **updates})


class SamplingConfig(Config):
    """How replies are sampled; shared by every config that generates text."""

    max_new_tokens: int = Field(64, ge=1)
    """Tokens generated per reply at most."""
    temperature: float = Field(1.0, ge=0.0)
    """Sampling temperature; 0 is greedy."""
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    """Nucleus sampling mass (1.0 = off)."""
    seed: int = 0
    """Base seed; row i of a batch uses a generator seeded from (seed, i), so batching never changes a reply."""
    batch_size: int | None = Field(None, ge=1)
    """Rows decoded together (cache slots of `bulk_generate`); None: the device's best
    (`pvlens.core.bulk.auto_batch_size`). Replies do not depend on it."""


def _n_layers(model_or_n_layers: Any) -> int:
    if isinstance(model_or_n_layers, int):
        return model_or_n_layers
    cfg = getattr(model_or_n_layers, "cfg", None)
    n = getattr(cfg, "n_layers", None)
    if not isinstance(n, int):
        raise TypeError(
            f"need a HookedTransformer or a layer count, got {type(model_or_n_layers).__name__}"
        )
    return n


def default_layer(model_or_n_layers: Any) -> int:
    """The middle block, where persona directions are strongest in the paper's models and
    in SmolLM2-135M (layer 15 of 30); use it wherever a single layer must be chosen blind."""
    return _n_layers(model_or_n_layers) // 2


def default_layers(model_or_n_layers: Any, count: int = 3) -> list[int]:
    """`count` evenly spaced blocks around the middle (12, 15, 18 on a 30-layer model)."""
    n = _n_layers(model_or_n_layers)
    mid = n // 2
    step = max(1, n // 10)
    half = count // 2
    layers = [mid + (i - half) * step for i in range(count)]
    return sorted({min(n - 1, max(0, x)) for x in layers})
