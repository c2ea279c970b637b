"""`pvlens replicate`: one command that regenerates every measured number the docs show."""

from pvlens.replicate.registry import (
    Context,
    Experiment,
    ReplicateResult,
    load_result,
    run_experiment,
    select,
)

__all__ = ["Context", "Experiment", "ReplicateResult", "load_result", "run_experiment", "select"]
