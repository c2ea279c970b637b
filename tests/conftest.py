"""Shared test set-up: offline by construction, and a per-module tiny random model."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Runtime checks of the annotations (types by beartype, tensor shapes by jaxtyping), installed
# before the first `import pvlens`. Always on for pvlens.core; PVLENS_TYPECHECK=1 extends them
# to all of pvlens (not yet the default: other packages still have annotations that fail).
# PEP 484's numeric tower: an int is a valid `float` argument, as static checkers also accept.
import jaxtyping  # noqa: E402

TYPECHECKED = ["pvlens"] if os.environ.get("PVLENS_TYPECHECK") == "1" else ["pvlens.core"]
jaxtyping.install_import_hook(
    TYPECHECKED, "beartype.beartype(conf=beartype.BeartypeConf(is_pep484_tower=True))"
)


@pytest.fixture(scope="module")
def tiny():
    """A 2-layer random Llama-architecture HookedTransformer with the small shipped SmolLM2
    tokenizer (no default model or GGUF wheel needed)."""
    import pvlens

    return pvlens.tiny_model()
