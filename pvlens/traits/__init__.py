"""Traits: the TraitSpec type and the built-in library (pvlens/data/traits/*.json)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from pvlens.traits.spec import (
    PAPER_SHAPE,
    Exemplars,
    InstructionPair,
    TraitSpec,
    TraitSpecError,
)

DATA_DIR = Path(str(resources.files("pvlens"))) / "data"
BUILTIN_DIR = DATA_DIR / "traits"
COHERENCE_RUBRIC_PATH = DATA_DIR / "coherence_rubric.txt"


def builtin_traits() -> list[str]:
    """Names of the traits shipped with pvlens."""
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.json"))


def load_trait(trait: str | Path | TraitSpec) -> TraitSpec:
    """A TraitSpec from a built-in name, a JSON/YAML path, or a TraitSpec (returned as is)."""
    if isinstance(trait, TraitSpec):
        return trait
    path = Path(trait)
    if path.suffix in (".json", ".yaml", ".yml"):
        if path.exists():
            return TraitSpec.load(path)
        raise TraitSpecError(f"trait file {path} does not exist")
    builtin = BUILTIN_DIR / f"{trait}.json"
    if builtin.exists():
        return TraitSpec.load(builtin)
    raise TraitSpecError(
        f"unknown trait {str(trait)!r}: not a built-in ({', '.join(builtin_traits())}) "
        'and not a .json/.yaml file. Write one with `pvlens traits new NAME "description"`.'
    )


def coherence_rubric() -> str:
    """The trait-independent 0-100 coherence judge prompt, with {question} and {answer} slots."""
    return COHERENCE_RUBRIC_PATH.read_text()


__all__ = [
    "BUILTIN_DIR",
    "COHERENCE_RUBRIC_PATH",
    "PAPER_SHAPE",
    "Exemplars",
    "InstructionPair",
    "TraitSpec",
    "TraitSpecError",
    "builtin_traits",
    "coherence_rubric",
    "load_trait",
]
