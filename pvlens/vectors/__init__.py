"""Persona vectors: the value type, and how they are made (rollouts → judge → extract), swept and
compared."""

from pvlens.vectors.persona import (
    DEFAULT_MODEL_KEY,
    DEFAULT_REDUCTION,
    LAYER_CONVENTION,
    PersonaVectors,
)

__all__ = ["DEFAULT_MODEL_KEY", "DEFAULT_REDUCTION", "LAYER_CONVENTION", "PersonaVectors"]
