"""The paper's finetuning experiments (§5): mitigations of trait acquisition, and the shift.

**Mitigation** (`run_mitigation`, `mitigation.py`): finetune on a trait-inducing dataset
(e.g. Level II evil) and compare, on the same evaluation, the base model, the finetuned model
with no mitigation, post-hoc steering (subtract α·v at inference from the unmitigated model),
preventative steering (add α·v during training only; one layer or several), CAFT (project the
direction out during training) and the L2 projection penalty. Each arm records the judge's
trait score and coherence on the trait's evaluation questions, built-in multiple-choice
accuracy, held-out perplexity and the finetuning shift at the steering layer.

**Shift** (`run_shift`, `shift.py`): finetune once per dataset (every trait × severity found),
and relate, per trait, the finetuning shift and the screening ΔP of the dataset to the trait
expression after finetuning (the paper's Figures 6 and 7).

Both are resumable and keyed by their inputs: a rerun with the same inputs skips what is
done; other inputs are refused with a message naming what changed (`overwrite=True` /
`--overwrite` discards the old results).
"""

from pvlens.finetune.experiments.config import EvalConfig, MitigationConfig, Preset, ShiftConfig
from pvlens.finetune.experiments.evaluation import (
    TraitProbe,
    evaluate_model,
    evaluate_trait,
    mean_last_prompt,
)
from pvlens.finetune.experiments.mitigation import (
    Arm,
    mitigation_arms,
    run_mitigation,
    write_mitigation_report,
)
from pvlens.finetune.experiments.plots import plot_mitigation, plot_shift
from pvlens.finetune.experiments.shift import find_datasets, run_shift
from pvlens.finetune.experiments.tables import mitigation_table, shift_table, summarise_shift

__all__ = [
    "Arm",
    "EvalConfig",
    "MitigationConfig",
    "Preset",
    "ShiftConfig",
    "TraitProbe",
    "evaluate_model",
    "evaluate_trait",
    "find_datasets",
    "mean_last_prompt",
    "mitigation_arms",
    "mitigation_table",
    "plot_mitigation",
    "plot_shift",
    "run_mitigation",
    "run_shift",
    "shift_table",
    "summarise_shift",
    "write_mitigation_report",
]
