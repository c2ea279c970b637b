"""Settings of the finetuning experiments: how an arm is evaluated, the mitigation arms, the
shift experiment, and the `quick` / `full` presets."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field
from transformer_lens import HookedTransformer

from pvlens.core.config import Config, SamplingConfig, default_layer, default_layers
from pvlens.finetune.lora import LoraConfig
from pvlens.finetune.train import FinetuneConfig

Preset = Literal["quick", "full"]


class EvalConfig(SamplingConfig):
    """How one model (arm) is evaluated; the sampling fields say how its answers are drawn
    (the same seeds in every arm)."""

    max_new_tokens: int = Field(64, ge=1)
    """Answer length cap."""
    temperature: float = Field(0.7, ge=0.0)
    """Sampling temperature (0: greedy)."""
    batch_size: int = Field(20, ge=1)
    """Generation batch size."""
    n_questions: int | None = 20
    """First N evaluation questions of the trait (None: all)."""
    samples: int = Field(2, ge=1)
    """Sampled answers per question."""
    mc_limit: int | None = None
    """First N built-in multiple-choice questions (None: all 254; 0: skip)."""
    perplexity: bool = True
    """Measure held-out perplexity."""
    positions: Literal["all", "prompt", "response"] = "response"
    """Positions steered at inference (post-hoc arms), as in the layer × α sweep."""

    @property
    def sampling(self) -> SamplingConfig:
        """The sampling part alone (what `evaluate_steered` takes)."""
        return SamplingConfig(**{k: getattr(self, k) for k in SamplingConfig.model_fields})


def _check_preset(name: str) -> None:
    if name not in ("quick", "full"):
        raise ValueError(f"preset must be 'quick' or 'full', got {name!r}")


def _quick_train() -> FinetuneConfig:
    return FinetuneConfig.cpu_demo(lr=1e-3, max_steps=2, batch_size=4, eval_fraction=0.0,
                                   lora=LoraConfig(r=4, alpha=8))


class MitigationConfig(Config):
    """The arms of the mitigation experiment and the shared training recipe."""

    trait: str = "evil"
    """Trait judged and whose evaluation questions are asked."""
    layer: int | None = None
    """Steering layer: single-layer arms, CAFT, the L2 penalty and the reported shift (None: the middle block)."""
    train: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig.cpu_demo(lr=1e-3, epochs=1))
    """Training recipe shared by every finetuned arm (CPU: rank 8, 1 epoch, lr 1e-3)."""
    posthoc_alphas: list[float] = [4.0, 8.0]
    """Post-hoc steering strengths (α·v subtracted at inference, raw-vector units)."""
    prevent_alphas: list[float] = [4.0, 8.0]
    """Preventative steering strengths at `layer` (added during training only)."""
    multi_layers: list[int] | None = None
    """Layers of the multi-layer preventative arms (None: three around the middle; empty: none)."""
    n_multi_layers: int = Field(3, ge=2)
    """How many evenly spaced layers around the middle the default multi-layer arms use."""
    multi_alphas: list[float] = [3.0]
    """Per-layer strength of each multi-layer preventative arm (the full v_ℓ at each listed layer)."""
    incremental_alphas: list[float] = [1.0]
    """Strengths of the all-layer incremental preventative arms (the paper's multi-layer scheme:
    α·(v_ℓ − v_{ℓ−1}) at every block during training, so the push at the top is α·v_L). The last
    block's vector is far longer than the middle one's (shipped evil: ‖v₂₉‖ ≈ 104 vs ‖v₁₅‖ ≈ 12.6),
    so α = 1 pushes the top about as hard as single-layer α = 8 at the middle (8 × 12.6 ≈ 101)."""
    seeds: list[int] = Field(default_factory=lambda: [0], min_length=1)
    """Training seeds: every trained arm is trained once per seed (LoRA init and data order), and
    each seed's evaluation samples with `eval.seed + seed`."""
    max_samples: int | None = Field(None, ge=1)
    """Train on the first N samples of the data file (None: all)."""
    bootstrap: int = Field(2000, ge=1000)
    """Bootstrap resamples of the trait / coherence intervals (over (seed, question) samples)."""
    caft: bool = True
    """Run the CAFT arm (direction projected out at `layer` during training)."""
    l2_weights: list[float] = [1.0]
    """Weights of the L2 projection-penalty arms (empty: none)."""
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig(n_questions=10, samples=2,
                                                                max_new_tokens=48, mc_limit=80))
    """Evaluation of every arm."""

    @classmethod
    def preset(cls, name: Preset, **overrides: Any) -> MitigationConfig:
        """`quick`: minutes, for tests and the notebook; `full`: the documented run."""
        _check_preset(name)
        if name == "full":
            return cls(**overrides)
        base = dict(
            train=_quick_train(), posthoc_alphas=[4.0], prevent_alphas=[4.0], n_multi_layers=2,
            multi_alphas=[2.0], incremental_alphas=[1.0],
            caft=True, l2_weights=[1.0],
            eval=EvalConfig(n_questions=3, samples=1, max_new_tokens=24, mc_limit=16, perplexity=False),
        )
        return cls(**{**base, **overrides})

    def resolved(self, model: HookedTransformer | int) -> MitigationConfig:
        """A copy with the model-relative defaults (layer, multi-layer arms) filled in."""
        layer = default_layer(model) if self.layer is None else self.layer
        multi = self.multi_layers
        if multi is None:
            multi = default_layers(model, self.n_multi_layers)
        return self.changed(layer=layer, multi_layers=list(multi))

    def for_seed(self, seed: int) -> MitigationConfig:
        """The settings of one seed: training seeded with `seed`, evaluation with `eval.seed + seed`."""
        return self.changed(train=self.train.changed(seed=seed), eval=self.eval.changed(seed=self.eval.seed + seed))


class ShiftConfig(Config):
    """Datasets → finetune → (shift, ΔP, trait expression) per trait."""

    layer: int | None = None
    """Layer of the shift and of the screening projection (None: the middle block)."""
    train: FinetuneConfig = Field(default_factory=lambda: FinetuneConfig.cpu_demo(lr=1e-3, epochs=1,
                                                                                  eval_fraction=0.0))
    """Training recipe for every dataset (the mitigation run's, without a held-out split)."""
    eval: EvalConfig = Field(default_factory=lambda: EvalConfig(n_questions=10, samples=1, max_new_tokens=48,
                                                                mc_limit=0, perplexity=False))
    """Evaluation of each finetuned model (per trait with vectors)."""
    screen_max_new_tokens: int = Field(64, ge=1)
    """Length of the base model's replies in screening."""
    max_samples: int | None = None
    """Use the first N samples of each dataset for screening and training (None: all)."""

    @classmethod
    def preset(cls, name: Preset, **overrides: Any) -> ShiftConfig:
        """`quick`: minutes, for tests and the notebook; `full`: the documented run."""
        _check_preset(name)
        if name == "full":
            return cls(**overrides)
        base = dict(train=_quick_train().changed(batch_size=8), max_samples=8,
                    eval=EvalConfig(n_questions=3, samples=1, max_new_tokens=24, mc_limit=0,
                                    perplexity=False),
                    screen_max_new_tokens=24)
        return cls(**{**base, **overrides})

    def resolved(self, model: HookedTransformer | int) -> ShiftConfig:
        """A copy with the layer filled in (None: the model's middle block)."""
        return self.changed(layer=default_layer(model) if self.layer is None else self.layer)
