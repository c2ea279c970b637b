"""Shared test set-up: offline by construction, and a per-module tiny random model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# `dtype="auto"` means bf16 on CPUs with AMX / AVX512-bf16 and fp32 elsewhere. The tests compare
# code paths (KV cache vs batch, one pass vs many, engine vs TransformerLens) at fp32 tolerances,
# so pin fp32 on every machine; PVLENS_COMPUTE_DTYPE=auto runs the suite with hardware detection.
os.environ.setdefault("PVLENS_COMPUTE_DTYPE", "float32")


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer random Llama-architecture HookedTransformer with the SmolLM2 tokenizer."""
    import pvlens

    return pvlens.tiny_model()
