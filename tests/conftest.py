"""Shared test set-up: offline by construction, and a per-module tiny random model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer random Llama-architecture HookedTransformer with the small shipped SmolLM2
    tokenizer (no default model or GGUF wheel needed)."""
    import pvlens

    return pvlens.tiny_model()
