"""Guard thresholds calibrated from benign text, stored next to the vectors they belong to.

A guard triggers on a reply when *any* monitored token's projection exceeds the threshold, so
the false-positive rate that matters is per reply: `calibrate_threshold` takes benign
conversations, computes the projection of every monitored token (the last prompt token and
each response token, teacher-forced), keeps each conversation's maximum, and picks the
smallest threshold that at most `fpr` of those maxima exceed.

The default benign source is the clean answers of the hand-written evaluation set
(`pvlens/data/eval/<trait>.jsonl`), even-numbered rows only ("calibration" split), so the
odd-numbered rows stay held out for measuring the guard (`pvlens guard measure`).

Storage: a sidecar JSON next to the vectors file, `<stem>.guard.json`, keyed by the vectors
file's content hash. Writing thresholds into the safetensors metadata would change the file's
hash, which other caches key on; a sidecar keeps the vectors file byte-identical and a stale
sidecar (vectors re-extracted, or another model) is detected and refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from jaxtyping import Float
from torch import Tensor
from transformer_lens import HookedTransformer

from pvlens.core.activations import per_token
from pvlens.core.chat import EncodedChat, Message
from pvlens.core.fingerprint import file_hash, json_hash, model_fingerprint
from pvlens.core.guard import Guard, GuardRule, window_means
from pvlens.errors import InputError
from pvlens.io.atomic import read_json_checked, write_json_atomic
from pvlens.monitor.tokens import encode_any
from pvlens.vectors.coerce import VectorsLike, unit_direction

SPLITS = ("calibration", "heldout", "all")


@dataclass
class Calibration:
    """A guard threshold and what it was calibrated on."""

    trait: str
    """Trait (rule) name."""
    layer: int
    """Block whose residual is projected."""
    fpr: float
    """Target per-reply false-positive rate on the benign conversations."""
    threshold: float
    """Projection on the unit vector above which the guard triggers."""
    n: int
    """Benign conversations used."""
    achieved_fpr: float
    """Fraction of those conversations whose maximum exceeds the threshold."""
    inputs: dict[str, Any] = field(default_factory=dict)
    """Model fingerprint, data hash and source description."""
    window: int = 1
    """Tokens averaged by the guard this threshold is for."""


def benign_conversations(trait: str, split: str = "calibration") -> list[list[Message]]:
    """(question, clean answer) conversations of the hand-written eval set; "calibration" takes
    even-numbered rows, "heldout" odd-numbered ones, "all" both."""
    from pvlens.vectors.validate import load_eval_set

    if split not in SPLITS:
        raise InputError(f"split must be one of {SPLITS}, got {split!r}")
    rows = load_eval_set(trait)
    keep = [r for i, r in enumerate(rows) if split == "all" or (i % 2 == 0) == (split == "calibration")]
    return [[{"role": "user", "content": r.question}, {"role": "assistant", "content": r.clean_answer}]
            for r in keep]


def heldout_questions(trait: str) -> list[str]:
    """Questions of the held-out half of the eval set (benign prompts for measuring the guard)."""
    return [c[0]["content"] for c in benign_conversations(trait, "heldout")]


def reply_maxima(
    model: HookedTransformer,
    conversations: Sequence[EncodedChat | Sequence[Message]],
    vectors: VectorsLike,
    layer: int,
    window: int = 1,
) -> list[float]:
    """Per conversation, the largest monitored value over the last prompt token and the reply:
    the projection (window 1) or its mean over `window` consecutive tokens, as `Guard` sees it
    (−inf when the reply is shorter than one window)."""
    u = unit_direction(vectors, layer).float()
    return [max_window(monitored_projections(model, conv, {layer: u[None]})[layer][0], window)
            for conv in conversations]


def monitored_projections(
    model: HookedTransformer,
    conversation: EncodedChat | Sequence[Message],
    directions: Mapping[int, Float[Tensor, "k d_model"]],
) -> dict[int, Float[Tensor, "k n_monitored"]]:
    """Per layer, the projection of every token a `Guard` monitors (the last prompt token and
    each response token) on each row of that layer's `directions` (unit vectors), from one
    teacher-forced forward; the one projection routine calibration and the ROC analysis share."""
    chat = encode_any(model, conversation)
    layers = sorted(directions)
    resid = per_token(model, chat, layers=layers)
    start = max(chat.prompt_len - 1, 0)
    return {layer: (resid[i, start:] @ directions[layer].to(resid).T).T for i, layer in enumerate(layers)}


def max_window(values: Float[Tensor, " n"], window: int) -> float:
    """The largest `window`-token mean of `values` (−inf when there are fewer than `window`)."""
    return float(window_means(values, window).max())


def threshold_at_fpr(maxima: Sequence[float], fpr: float) -> float:
    """Smallest observed maximum such that at most `fpr` of the maxima lie strictly above it."""
    if not 0 <= fpr < 1:
        raise InputError(f"the false-positive rate must be in [0, 1), got {fpr}")
    x = np.sort(np.asarray(maxima, dtype=float))
    if x.size == 0:
        raise InputError("calibration needs at least one benign conversation")
    allowed = int(np.floor(fpr * x.size))  # conversations that may exceed the threshold
    return float(x[x.size - 1 - allowed])


def calibrate_threshold(
    model: HookedTransformer,
    vectors: VectorsLike,
    layer: int,
    conversations: Sequence[EncodedChat | Sequence[Message]],
    fpr: float = 0.05,
    trait: str = "trait",
    source: str = "custom",
    window: int = 1,
) -> Calibration:
    """The threshold at per-reply false-positive rate `fpr` on benign `conversations` for a
    guard that monitors `window`-token means."""
    maxima = reply_maxima(model, conversations, vectors, layer, window)
    thr = threshold_at_fpr(maxima, fpr)
    achieved = float(np.mean(np.asarray(maxima) > thr))
    inputs = {"model": model_fingerprint(model), "source": source,
              "data": json_hash([encode_any(model, c).ids for c in conversations]),
              "direction": json_hash(unit_direction(vectors, layer).tolist())}
    return Calibration(trait, int(layer), float(fpr), thr, len(maxima), achieved, inputs, window)


def sidecar_path(vectors_file: str | Path) -> Path:
    path = Path(vectors_file)
    if path.is_dir():
        path = path / "vectors.safetensors"
    return path.with_name(f"{path.stem}.guard.json")


def save_calibration(vectors_file: str | Path, calib: Calibration) -> Path:
    """Add (or replace) `calib` in the vectors file's sidecar, keyed by layer, fpr and model."""
    path, vhash = sidecar_path(vectors_file), file_hash(_vectors_path(vectors_file))
    data: dict[str, Any] = read_json_checked(path) if path.exists() else {}
    if data.get("vectors_hash") != vhash:
        data = {"vectors_hash": vhash, "entries": []}  # the vectors changed: old entries are void
    same = (calib.layer, calib.fpr, calib.inputs.get("model"), calib.window)
    data["entries"] = [e for e in data.get("entries", [])
                       if (e["layer"], e["fpr"], e["inputs"].get("model"), e.get("window", 1)) != same
                       ] + [asdict(calib)]
    write_json_atomic(path, data)
    return path


def load_calibration(
    vectors_file: str | Path, layer: int, model: HookedTransformer | None = None, fpr: float | None = None,
    window: int = 1,
) -> Calibration:
    """The stored calibration for `layer` (and `fpr`, and `model` if given), checked against the
    vectors file's hash; InputError naming the fix when there is none or it is stale."""
    path = sidecar_path(vectors_file)
    fix = f"run `pvlens guard calibrate {vectors_file} --layer {layer}`"
    if not path.exists():
        raise InputError(f"no guard thresholds for {vectors_file} ({path} is missing); {fix}")
    data = read_json_checked(path)
    if data.get("vectors_hash") != file_hash(_vectors_path(vectors_file)):
        raise InputError(f"{path} was calibrated for other vectors than {vectors_file}; {fix}")
    fp = model_fingerprint(model) if model is not None else None
    found = [e for e in data["entries"] if e["layer"] == layer and (fpr is None or e["fpr"] == fpr)
             and (fp is None or e["inputs"].get("model") == fp) and e.get("window", 1) == window]
    if not found:
        raise InputError(f"{path} has no threshold for layer {layer}, window {window}"
                         f"{'' if fpr is None else f', fpr {fpr}'}{'' if fp is None else ' and this model'}; {fix}")
    return Calibration(**min(found, key=lambda e: e["fpr"]))


def _vectors_path(vectors_file: str | Path) -> Path:
    path = Path(vectors_file)
    return path / "vectors.safetensors" if path.is_dir() else path


def shipped_vectors_file(trait: str) -> Path:
    """Path of a shipped trait's vectors file (where its shipped sidecar lives)."""
    from importlib import resources

    from pvlens.vectors.persona import DEFAULT_MODEL_KEY

    path = Path(str(resources.files("pvlens"))) / "data" / "vectors" / DEFAULT_MODEL_KEY / f"{trait}.safetensors"
    if not path.exists():
        raise InputError(f"no shipped vectors for {trait!r}; pass a vectors file")
    return path


def resolve_vectors_file(source: str | Path) -> Path:
    """A vectors file/run folder, or a bare shipped trait name ("evil")."""
    path = Path(source)
    if not path.exists() and isinstance(source, str) and "/" not in source and not path.suffix:
        return shipped_vectors_file(source)
    if not path.exists():
        raise InputError(f"{source} does not exist; pass a vectors file, run folder or shipped trait name")
    return path


def parse_guard_spec(spec: str) -> tuple[str, float | None]:
    """"TRAIT" or "TRAIT:THRESHOLD" (TRAIT a shipped name or a vectors path) → (source, threshold)."""
    source, sep, thr = spec.rpartition(":")
    if not sep or not _is_float(thr):
        return spec, None
    return source, float(thr)


def _is_float(text: str) -> bool:
    try:
        return np.isfinite(float(text))
    except ValueError:
        return False


def load_guard(
    model: HookedTransformer,
    specs: Sequence[str],
    layer: int | None = None,
    alpha: float = 4.0,
    action: str = "subtract",
    mode: str = "latch",
    fpr: float | None = None,
    window: int = 1,
) -> Guard:
    """A Guard from "TRAIT[:THRESHOLD]" specs; a missing threshold comes from the vectors'
    sidecar (calibrated for this model and layer; the lowest stored fpr unless `fpr` is given)."""
    from pvlens.core.config import default_layer
    from pvlens.vectors.coerce import as_persona_vectors

    layer = default_layer(model) if layer is None else layer
    rules = []
    for spec in specs:
        source, thr = parse_guard_spec(spec)
        vfile = resolve_vectors_file(source)
        vecs = as_persona_vectors(vfile, n_layers=model.cfg.n_layers)
        if thr is None:
            thr = load_calibration(vfile, layer, model, fpr, window).threshold
        rules.append(GuardRule(vecs[layer], thr, Path(source).stem))
    return Guard(rules, layer, alpha, action, mode, window)  # type: ignore[arg-type]  # checked in Guard
