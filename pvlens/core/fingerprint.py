"""Fingerprints of the things a cached result depends on: model weights (adapters included),
tensors, files and JSON-able settings.

A model's fingerprint hashes *every* parameter's bytes (LoRA A/B included, since parametrized
weights expose them as parameters), so any change to any weight changes it. On CPU that is one
pass over memory (≈0.3 s for 135M fp32 parameters); the result is memoised per parameter
storage and version counter, so asking again after no change is free.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from pvlens.core.templates import TEMPLATE_OPTIONS_ATTR

_MEMO: dict[tuple, str] = {}


def _tensor_bytes_hash(h: Any, t: Tensor) -> None:
    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    t = t.contiguous()
    h.update(f"{tuple(t.shape)}{t.dtype}".encode())
    if t.numel():
        h.update(t.view(-1).view(torch.uint8).numpy().data)


def tensor_hash(t: Tensor, length: int = 16) -> str:
    """Hex digest of a tensor's shape, dtype and bytes."""
    h = hashlib.blake2b(digest_size=16)
    _tensor_bytes_hash(h, t)
    return h.hexdigest()[:length]


def parametrization_state(model: nn.Module) -> tuple:
    """The plain settings (bool/int/float/str attributes) of every parametrization on `model`,
    e.g. a LoRA's scaling and its active/merged switches: they change the computed weights
    without touching any parameter."""
    state = []
    for name, module in model.named_modules():
        if not parametrize.is_parametrized(module):
            continue
        for pname, plist in module.parametrizations.items():
            for i, par in enumerate(plist):
                plain = sorted(
                    (k, v) for k, v in vars(par).items()
                    if isinstance(v, bool | int | float | str) and k != "training"
                )
                state.append((f"{name}.{pname}.{i}", type(par).__name__, tuple(plain)))
    return tuple(state)


def weights_version(model: nn.Module) -> tuple:
    """A cheap key that changes whenever a weight of `model` may have changed: each parameter's
    and buffer's storage, version counter (bumped by every in-place update, e.g. an optimiser
    step), shape and dtype — LoRA A/B and the originals under a parametrization included — plus
    `parametrization_state`. Equal keys mean the weights (computed ones too) are unchanged."""
    named = [*model.named_parameters(), *model.named_buffers()]
    tensors = tuple(
        (n, p.data_ptr(), p._version, tuple(p.shape), p.dtype, p.device) for n, p in named
    )
    return tensors, parametrization_state(model)


def model_fingerprint(model: nn.Module, length: int = 16) -> str:
    """Hash of every named parameter and buffer (names, shapes, dtypes, bytes) of `model`, and
    of its parametrizations' settings (a disabled LoRA gives the base model's weights), and of
    its tokenizer's chat template and options once `use_template` changed them.
    Sorted by name, so registration order (e.g. after an adapter is removed) does not matter."""
    named = sorted([*model.named_parameters(), *model.named_buffers()], key=lambda kv: kv[0])
    memo_key = weights_version(model)
    if memo_key in _MEMO:
        return _with_template(_MEMO[memo_key], model)[:length]
    h = hashlib.blake2b(digest_size=16)
    h.update(type(model).__name__.encode())
    if memo_key[1]:  # parametrized: hash their settings (unchanged digest for plain models)
        h.update(repr(memo_key[1]).encode())
    with torch.no_grad():
        for name, p in named:
            h.update(name.encode())
            _tensor_bytes_hash(h, p)
    digest = h.hexdigest()
    if len(_MEMO) > 64:
        _MEMO.clear()
    _MEMO[memo_key] = digest
    return _with_template(digest, model)[:length]


def _with_template(digest: str, model: nn.Module) -> str:
    """`digest` extended by the chat template and its options when they were set with
    `pvlens.core.templates.use_template` (e.g. Qwen3's enable_thinking): the same weights then
    answer other prompts, so nothing cached for the other template may be served. Models whose
    template was never changed keep their weights-only digest."""
    tok = getattr(model, "tokenizer", None)
    options = getattr(tok, TEMPLATE_OPTIONS_ATTR, None) if tok is not None else None
    if options is None:
        return digest
    state = json.dumps([digest, getattr(tok, "chat_template", None), options], sort_keys=True, default=str)
    return hashlib.blake2b(state.encode(), digest_size=16).hexdigest()


def file_hash(path: str | Path, length: int = 16) -> str:
    """Hex digest of a file's content (streamed)."""
    h = hashlib.blake2b(digest_size=16)
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:length]


def json_hash(value: Any, length: int = 16) -> str:
    """Hex digest of a JSON-able value in canonical form (sorted keys)."""
    text = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.blake2b(text.encode(), digest_size=16).hexdigest()[:length]


def source_hash(*paths: str | Path, length: int = 16) -> str:
    """Hash of the content of Python source files and of every `.py` under the folders given
    (names relative to each argument): the code that computed a stored number, for numbers that
    depend on pvlens's own implementation (engine parity, benchmark timings)."""
    files: dict[str, str] = {}
    for root in map(Path, paths):
        found = sorted(root.rglob("*.py")) if root.is_dir() else [root]
        for f in found:
            files[f"{root.name}/{f.relative_to(root)}" if root.is_dir() else f.name] = file_hash(f)
    return json_hash(files, length)
