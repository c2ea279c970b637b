"""LoRA finetuning on the HookedTransformer, with preventative steering, CAFT and the L2
projection-penalty baseline; the finetuning-shift metric; capability checks.

Post-hoc steering at inference needs nothing from here:
`pvlens.generate(model, prompts, steer=pvlens.Steering(v, layer, -alpha))`.
"""

from pvlens.finetune.capability import (
    MCQuestion,
    MCResult,
    builtin_mc,
    capability_report,
    load_mmlu,
    mc_accuracy,
    perplexity,
)
from pvlens.finetune.lora import (
    LoraConfig,
    LoraHandle,
    add_lora,
    export_peft,
    get_handle,
    load_adapter,
    save_adapter,
)
from pvlens.finetune.penalty import ProjectionPenalty
from pvlens.finetune.shift import ShiftResult, finetuning_shift
from pvlens.finetune.train import FinetuneConfig, FinetuneResult, evaluate, finetune

__all__ = [
    "FinetuneConfig",
    "FinetuneResult",
    "LoraConfig",
    "LoraHandle",
    "MCQuestion",
    "MCResult",
    "ProjectionPenalty",
    "ShiftResult",
    "add_lora",
    "builtin_mc",
    "capability_report",
    "evaluate",
    "export_peft",
    "finetune",
    "finetuning_shift",
    "get_handle",
    "load_adapter",
    "load_mmlu",
    "mc_accuracy",
    "perplexity",
    "save_adapter",
]
