"""Data screening with the projection difference ΔP (paper §6).

For every training sample (prompt, response): ΔP_i = proj(response_i) − proj(base_i), where
proj is the response-averaged residual at one layer projected on the unit persona vector and
base_i is the base model's own (greedy) reply to the same prompt. The dataset-level ΔP is
the mean of ΔP_i. Samples with a large ΔP push the model towards the trait when trained on.

The cheaper approximation skips generation: the base side is replaced by the projection of
the prompt itself (its last token, or its average), which the same forward pass yields.

Speed: the data reply and the base reply share their prompt, so the prompt runs once into a
KV cache and both replies run against it; every pass stops at the projected layer and skips
the unembedding. Large inputs stream in chunks; each chunk's per-sample results are appended
to disk, so a killed run resumes, and `--shard i/n` runs split a corpus across machines.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from jaxtyping import Float
from pydantic import BaseModel, Field
from scipy.stats import spearmanr
from torch import Tensor
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.activations import collect, token_batches
from pvlens.core.batching import left_pad
from pvlens.core.chat import EncodedChat, Message, encode_conversation, encode_messages
from pvlens.core.device import fast_dtype
from pvlens.core.engine import engine_for
from pvlens.core.generation import generate
from pvlens.io.jsonl import KeyedTextStore, iter_jsonl
from pvlens.monitor import VectorsLike, as_vectors, default_layer, project, unit_direction

Sample = tuple[int, list[Message]]


class ScreenError(ValueError):
    """Input that cannot be screened; the message names the sample and the fix."""


class ScreenConfig(BaseModel):
    """How to screen a dataset."""

    layer: int | None = Field(None, description="Block to project at (None: the vectors' choice or the middle).")
    chunk_size: int = Field(256, ge=1, description="Samples read, scored and appended per chunk.")
    max_batch: int = Field(16, ge=1, description="Largest batch of the activation passes.")
    max_tokens: int = Field(4096, ge=64, description="Padded tokens per activation batch.")
    max_new_tokens: int = Field(64, ge=1, description="Length cap of the base model's greedy replies.")
    gen_batch_size: int = Field(16, ge=1, description="Batch size for generating base replies.")
    top_k: int = Field(20, ge=0, description="Samples exported to flagged.jsonl.")
    cosine: bool = Field(False, description="Cosine instead of projection.")
    dtype: str = Field("auto", description="Compute dtype: auto (bf16 where fast), float32, bfloat16.")


# --- input -------------------------------------------------------------------------------
def _check(index: int, messages, source) -> list[Message]:
    where = f"{source}: sample {index}"
    if not isinstance(messages, list) or not messages:
        raise ScreenError(f'{where} has no "messages" list; each line needs {{"messages": [...]}}')
    for m in messages:
        if not isinstance(m, dict) or "role" not in m or not isinstance(m.get("content"), str):
            raise ScreenError(f'{where}: every message needs a "role" and a string "content", got {m!r}')
    if messages[-1]["role"] != "assistant":
        raise ScreenError(f"{where}: the last message must be the assistant's reply (the response to screen)")
    if not any(m["role"] == "user" for m in messages[:-1]):
        raise ScreenError(f"{where}: no user message before the reply")
    return [{"role": m["role"], "content": m["content"]} for m in messages]


def iter_samples(source: str | Path, split: str | None = None, batch: int = 1024) -> Iterator[Sample]:
    """(index, messages) from a JSONL file (one `{"messages": [...]}` a line) or a local HF
    dataset folder (`datasets.save_to_disk`, column "messages"), read lazily."""
    path = Path(source)
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist (expected a JSONL file or a datasets.save_to_disk folder)")
    if path.is_dir():
        yield from _iter_hf(path, split, batch)
        return
    for index, (lineno, rec) in enumerate(iter_jsonl(path, error=ScreenError)):
        if not isinstance(rec, dict):
            raise ScreenError(f'{path}:{lineno}: expected an object {{"messages": [...]}}')
        yield index, _check(index, rec.get("messages"), f"{path}:{lineno}")


def _iter_hf(path: Path, split: str | None, batch: int) -> Iterator[Sample]:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if isinstance(ds, datasets.DatasetDict):
        if split is None and len(ds) == 1:
            split = next(iter(ds))
        if split not in ds:
            raise ScreenError(f"{path} is a DatasetDict with splits {sorted(ds)}; choose one with --split")
        ds = ds[split]
    if "messages" not in ds.column_names:
        raise ScreenError(f'{path}: no "messages" column (columns: {ds.column_names})')
    ds = ds.select_columns(["messages"])
    index = 0
    for rows in ds.iter(batch_size=batch):  # memory-mapped arrow: only this batch is decoded
        for msgs in rows["messages"]:
            yield index, _check(index, msgs, path)
            index += 1


def parse_shard(text: str | None) -> tuple[int, int]:
    """'i/n' → (i, n); None → (0, 1)."""
    if not text:
        return 0, 1
    try:
        i, n = (int(x) for x in text.split("/"))
    except ValueError as e:
        raise ScreenError(f"--shard must look like i/n (e.g. 0/4), got {text!r}") from e
    if not (n >= 1 and 0 <= i < n):
        raise ScreenError(f"--shard {text}: need 0 <= i < n")
    return i, n


def _chunks(it: Iterable, size: int) -> Iterator[list]:
    it = iter(it)
    while chunk := list(itertools.islice(it, size)):
        yield chunk


# --- base replies, cached ----------------------------------------------------------------
def model_fingerprint(model: HookedTransformer) -> str:
    """Name + a hash of a few weights, so a finetuned model never reuses the base's cache."""
    h = hashlib.sha256(model.cfg.model_name.encode())
    for t in (model.W_E[:8], model.blocks[-1].mlp.W_out[:4], model.W_U[:, :8]):
        h.update(t.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]


class BaseReplies:
    """The base model's greedy replies, keyed by (model, prompt messages, length cap), on disk."""

    def __init__(self, model: HookedTransformer, cache_dir: str | Path, max_new_tokens: int,
                 batch_size: int = 16):
        self.model, self.max_new_tokens, self.batch_size = model, max_new_tokens, batch_size
        self.store = KeyedTextStore(Path(cache_dir) / "base_replies.jsonl", "reply")
        self.fp = model_fingerprint(model)

    def key(self, prompt: Sequence[Message]) -> str:
        blob = json.dumps([self.fp, self.max_new_tokens, list(prompt)], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()[:24]

    def get(self, prompts: Sequence[Sequence[Message]]) -> list[str]:
        """Replies for every prompt, generating (greedy) and caching the missing ones."""
        keys = [self.key(p) for p in prompts]
        missing = self.store.missing(keys)
        if missing:
            tok = self.model.tokenizer
            chats = [encode_messages(tok, prompts[i]) for _, i in missing]
            texts = generate(self.model, chats, max_new_tokens=self.max_new_tokens, temperature=0.0,
                             batch_size=self.batch_size, progress=False).texts
            self.store.add([k for k, _ in missing], texts)
        return self.store.get(keys)


# --- activations: prompt once, both replies against its cache ----------------------------
@torch.inference_mode()
def paired_activations(
    model: HookedTransformer,
    data: Sequence[EncodedChat],
    base: Sequence[EncodedChat],
    layer: int | Sequence[int],
    max_tokens: int = 4096,
    max_batch: int = 16,
    dtype: torch.dtype | str | None = "auto",
) -> dict[str, Float[Tensor, "n d_model"] | Float[Tensor, "n n_layers d_model"]]:
    """Residuals at `layer` for pairs of conversations that share their prompt.

    Returns response averages of the data and base replies ("data", "base"), and the prompt's
    last-token and average residuals ("last_prompt", "prompt_avg"): [n, d_model] for one layer,
    [n, len(layers), d_model] for a list. Each prompt runs once into a KV cache (only the
    layers up to the deepest requested), then each side's replies run against it; falls back
    to two `collect` passes when the fast engine cannot run the model or a pair's prompts differ.
    """
    n, d = len(data), model.cfg.d_model
    if len(base) != n:
        raise ValueError(f"{n} data conversations but {len(base)} base conversations")
    single = isinstance(layer, int)
    layers = [layer] if single else [int(x) for x in layer]
    if dtype == "auto":
        dtype = fast_dtype(model.W_E.device)
    engine = engine_for(model, dtype)
    same = all(a.prompt_ids == b.prompt_ids for a, b in zip(data, base, strict=True))
    if engine is None or not same:
        red = ("response_avg", "last_prompt", "prompt_avg")
        a = collect(model, data, red, layers=layers, batch_size=max_batch, max_tokens=max_tokens,
                    dtype=dtype, progress=False)
        b = collect(model, base, ("response_avg",), layers=layers, batch_size=max_batch,
                    max_tokens=max_tokens, dtype=dtype, progress=False)
        out = {"data": a["response_avg"], "base": b["response_avg"],
               "last_prompt": a["last_prompt"], "prompt_avg": a["prompt_avg"]}
        return {k: v[:, 0] for k, v in out.items()} if single else out
    slot = {lay: j for j, lay in enumerate(layers)}
    out = {k: torch.zeros(n, len(layers), d) for k in ("data", "base", "last_prompt", "prompt_avg")}
    device = model.W_E.device
    pad = model.tokenizer.pad_token_id or 0
    cost = [c.prompt_len + c.response_len + b.response_len for c, b in zip(data, base, strict=True)]
    keep = max(layers) + 1
    grab: dict[int, Tensor] = {}

    def at_layer(i: int, x: Tensor) -> None:
        if i in slot:
            grab[slot[i]] = x.float()

    def masked_mean(mask: Tensor) -> Tensor:  # [rows, n_layers, d] in float64
        m = mask.double()
        xs = torch.stack([grab[j].double() for j in range(len(layers))], dim=1)
        return (torch.einsum("bt,bltd->bld", m, xs) / m.sum(-1).clamp(min=1)[:, None, None]).float()

    for idx in token_batches(cost, max_tokens, max_batch):
        rows = len(idx)
        prompts = [EncodedChat(data[i].prompt_ids, data[i].prompt_len) for i in idx]
        p_tok, p_pos = left_pad(prompts, pad, device)
        width = p_tok.shape[1]
        r_max = max(max(data[i].response_len, base[i].response_len) for i in idx)
        cache = engine.new_cache(rows, width + r_max, n_layers=keep)
        engine.forward(p_tok, p_pos, cache, stop_at_layer=keep, on_resid=at_layer, logits=None)
        out["last_prompt"][idx] = torch.stack([grab[j][:, -1] for j in range(len(layers))], 1).cpu()
        out["prompt_avg"][idx] = masked_mean(p_pos >= 0).cpu()
        for side, chats in (("data", data), ("base", base)):
            cache.rewind(width)  # forget the other side's reply: both continue the prompt
            r_len = max(chats[i].response_len for i in idx)
            tok = torch.full((rows, r_len), pad, dtype=torch.long)
            pos = torch.full((rows, r_len), -1, dtype=torch.long)
            for j, i in enumerate(idx):
                c = chats[i]
                tok[j, : c.response_len] = torch.tensor(c.response_ids)
                pos[j, : c.response_len] = torch.arange(c.prompt_len, c.prompt_len + c.response_len)
            tok, pos = tok.to(device), pos.to(device)
            engine.forward(tok, pos, cache, stop_at_layer=keep, on_resid=at_layer, logits=None)
            out[side][idx] = masked_mean(pos >= 0).cpu()
    return {k: v[:, 0] for k, v in out.items()} if single else out


# --- the screening run -------------------------------------------------------------------
def _shard_tag(shard: tuple[int, int]) -> str:
    return "" if shard == (0, 1) else f".shard-{shard[0]}-of-{shard[1]}"


def _vectors_hash(u: Tensor) -> str:
    return hashlib.sha256(u.float().cpu().numpy().tobytes()).hexdigest()[:16]


def read_results(path: Path) -> dict[int, dict]:
    """Per-sample results already on disk (a truncated last line is ignored)."""
    done: dict[int, dict] = {}
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
                done[int(rec["index"])] = rec
            except (json.JSONDecodeError, KeyError, TypeError):
                continue
    return done


def screen(
    model: HookedTransformer,
    data: str | Path,
    vectors: VectorsLike,
    out_dir: str | Path,
    cfg: ScreenConfig | None = None,
    cache_dir: str | Path | None = None,
    shard: tuple[int, int] = (0, 1),
    split: str | None = None,
    progress: bool = True,
) -> ScreenSummary | None:
    """Screen `data`: per-sample ΔP appended chunk by chunk to `out_dir/results*.jsonl`.

    Unsharded runs also write the summary (`screen.json`), the histogram (`delta_hist.png`)
    and the top-k samples (`flagged.jsonl`) and return the summary; shard runs return None —
    join them with `merge`.
    """
    cfg = cfg or ScreenConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    n_layers = model.cfg.n_layers
    layer = cfg.layer if cfg.layer is not None else default_layer(vectors, n_layers)
    if not -n_layers <= layer < n_layers:
        raise IndexError(f"layer {layer} out of range for a {n_layers}-layer model")
    layer %= n_layers
    u = unit_direction(as_vectors(vectors), layer)
    if u.shape[0] != model.cfg.d_model:
        raise ScreenError(f"vectors have d_model {u.shape[0]} but the model has {model.cfg.d_model}")
    tag = _shard_tag(shard)
    meta = {"data": str(Path(data).resolve()), "split": split, "layer": layer,
            "vectors": str(vectors) if isinstance(vectors, str | Path) else None,
            "vectors_hash": _vectors_hash(u), "model": model.cfg.model_name,
            "model_fingerprint": model_fingerprint(model), "shard": list(shard),
            "config": cfg.model_dump()}
    meta_path = out / f"meta{tag}.json"
    if meta_path.exists():
        old = json.loads(meta_path.read_text())
        for k in ("vectors_hash", "layer", "model_fingerprint", "data"):
            if old.get(k) != meta[k]:
                raise ScreenError(
                    f"{out} holds results of a different run ({k}: {old.get(k)} ≠ {meta[k]}); "
                    "use another --out folder or delete it")
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")
    results_path = out / f"results{tag}.jsonl"
    done = read_results(results_path)
    _rewrite_if_truncated(results_path, done)
    base = BaseReplies(model, cache_dir or out / "base_cache", cfg.max_new_tokens, cfg.gen_batch_size)
    tok = model.tokenizer
    todo = (s for s in iter_samples(data, split) if s[0] % shard[1] == shard[0] and s[0] not in done)
    bar = tqdm(desc="screen", unit="sample", disable=not progress, initial=len(done))
    for chunk in _chunks(todo, cfg.chunk_size):
        prompts = [msgs[:-1] for _, msgs in chunk]
        replies = base.get(prompts)
        data_chats = [encode_conversation(tok, msgs) for _, msgs in chunk]
        base_chats = [encode_conversation(tok, [*p, {"role": "assistant", "content": r}])
                      for p, r in zip(prompts, replies, strict=True)]
        acts = paired_activations(model, data_chats, base_chats, layer, cfg.max_tokens,
                                  cfg.max_batch, _dtype(cfg.dtype))
        proj = {k: project(v, u, cfg.cosine).tolist() for k, v in acts.items()}
        lines = []
        for j, (index, _) in enumerate(chunk):
            rec = {"index": index, "proj": proj["data"][j], "base": proj["base"][j],
                   "delta": proj["data"][j] - proj["base"][j],
                   "last_prompt": proj["last_prompt"][j], "prompt_avg": proj["prompt_avg"][j],
                   "response_tokens": data_chats[j].response_len,
                   "base_tokens": base_chats[j].response_len}
            done[index] = rec
            lines.append(json.dumps(rec) + "\n")
        with results_path.open("a", encoding="utf-8") as f:  # one write per chunk
            f.write("".join(lines))
            f.flush()
        bar.update(len(chunk))
    bar.close()
    if shard != (0, 1):
        return None
    return finish(out, list(done.values()), data, split, cfg.top_k, layer)


def _dtype(name: str) -> torch.dtype | str:
    if name == "auto":
        return "auto"
    try:
        return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[name]
    except KeyError as e:
        raise ScreenError(f"dtype must be auto, float32, bfloat16 or float16, got {name!r}") from e


def _rewrite_if_truncated(path: Path, done: dict[int, dict]) -> None:
    """After a kill mid-write, drop the partial last line so appends stay parseable."""
    if path.exists() and path.stat().st_size and not path.read_bytes().endswith(b"\n"):
        path.write_text("".join(json.dumps(r) + "\n" for r in done.values()), encoding="utf-8")


# --- summary, merge, exports ---------------------------------------------------------------
class ScreenSummary(BaseModel):
    """Dataset-level numbers of a screening run."""

    n: int = Field(description="Samples screened.")
    layer: int = Field(description="Block projected at.")
    delta_p: float = Field(description="Dataset ΔP: mean over samples of proj(response) − proj(base reply).")
    proj_mean: float = Field(description="Mean projection of the dataset's responses.")
    base_mean: float = Field(description="Mean projection of the base model's replies.")
    delta_std: float = Field(description="Standard deviation of sample-level ΔP.")
    approx: dict[str, float] = Field(
        description="Prompt-only approximations of dataset ΔP: mean(proj − last_prompt), "
        "mean(proj − prompt_avg).")
    approx_spearman: dict[str, float | None] = Field(
        description="Spearman ρ between each sample-level approximation and the full ΔP.")
    top: list[dict] = Field(description="The top-k samples by ΔP (index, delta).")
    files: dict[str, str] = Field(default_factory=dict, description="Files written.")


def _spearman(a: Sequence[float], b: Sequence[float]) -> float | None:
    if len(a) < 3 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    return float(spearmanr(a, b).statistic)


def summarise(results: Sequence[dict], layer: int, top_k: int = 20) -> ScreenSummary:
    """Dataset ΔP, the approximations and how well they agree with the full ΔP."""
    if not results:
        raise ScreenError("no samples were screened (empty input, or this shard got none)")
    rs = sorted(results, key=lambda r: r["index"])
    delta = np.array([r["delta"] for r in rs], dtype=np.float64)
    proj = np.array([r["proj"] for r in rs], dtype=np.float64)
    approx = {k: proj - np.array([r[k] for r in rs], dtype=np.float64)
              for k in ("last_prompt", "prompt_avg")}
    order = sorted(rs, key=lambda r: -r["delta"])[:top_k]
    return ScreenSummary(
        n=len(rs), layer=layer, delta_p=float(delta.mean()), proj_mean=float(proj.mean()),
        base_mean=float(np.mean([r["base"] for r in rs])),
        delta_std=float(delta.std(ddof=1)) if len(rs) > 1 else 0.0,
        approx={k: float(v.mean()) for k, v in approx.items()},
        approx_spearman={k: _spearman(list(v), list(delta)) for k, v in approx.items()},
        top=[{"index": r["index"], "delta": r["delta"]} for r in order],
    )


def finish(out: Path, results: Sequence[dict], data: str | Path | None, split: str | None,
           top_k: int, layer: int) -> ScreenSummary:
    """Write screen.json, delta_hist.png and flagged.jsonl for a complete set of results."""
    summary = summarise(results, layer, top_k)
    hist = histogram({"dataset": [r["delta"] for r in results]}, out / "delta_hist.png",
                     title=f"sample-level ΔP (layer {layer}), dataset ΔP = {summary.delta_p:.3f}")
    summary.files = {"results": str(out / "results.jsonl"), "histogram": str(hist)}
    if data is not None and top_k > 0 and Path(data).exists():
        summary.files["flagged"] = str(export_flagged(data, summary.top, out / "flagged.jsonl", split))
    (out / "screen.json").write_text(summary.model_dump_json(indent=2) + "\n")
    return summary


def export_flagged(data: str | Path, top: Sequence[dict], path: Path, split: str | None = None) -> Path:
    """The top-ranked samples with their messages and ΔP (a second streaming pass)."""
    want = {t["index"]: t["delta"] for t in top}
    found: dict[int, list[Message]] = {}
    for index, msgs in iter_samples(data, split):
        if index in want:
            found[index] = msgs
            if len(found) == len(want):
                break
    with path.open("w", encoding="utf-8") as f:
        for t in top:
            if t["index"] in found:
                rec = {"index": t["index"], "delta": t["delta"], "messages": found[t["index"]]}
                f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    return path


def histogram(groups: dict[str, Sequence[float]], path: str | Path, title: str = "sample-level ΔP",
              bins: int = 40) -> Path:
    """Overlaid histograms of sample-level ΔP (one per named group), with their means."""
    from pvlens.io.viz import _save, plt

    fig, ax = plt.subplots(figsize=(6, 3.6))
    all_vals = np.concatenate([np.asarray(v, dtype=float) for v in groups.values()])
    edges = np.histogram_bin_edges(all_vals, bins=bins)
    for name, vals in groups.items():
        vals = np.asarray(vals, dtype=float)
        line = ax.hist(vals, bins=edges, alpha=0.55, label=f"{name} (n={len(vals)}, mean {vals.mean():.2f})")
        ax.axvline(vals.mean(), color=line[2][0].get_facecolor(), ls="--", lw=1)
    ax.axvline(0, color="k", lw=0.8)
    ax.set_xlabel("ΔP = proj(response) − proj(base reply)")
    ax.set_ylabel("samples")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def merge(out_dir: str | Path, shard_dirs: Sequence[str | Path] = (), data: str | Path | None = None,
          top_k: int | None = None) -> ScreenSummary:
    """Join shard results (from `out_dir` and any `shard_dirs`) into `out_dir/results.jsonl`
    and write the summary files; every shard 0..n-1 must be present and from the same run."""
    out = Path(out_dir)
    dirs = [out, *[Path(d) for d in shard_dirs]]
    metas = {}
    for d in dirs:
        for p in sorted(d.glob("meta.shard-*-of-*.json")):
            m = json.loads(p.read_text())
            metas[tuple(m["shard"])] = (m, d / p.name.replace("meta", "results").replace(".json", ".jsonl"))
    if not metas:
        raise ScreenError(f"no shard results (meta.shard-*-of-*.json) in {', '.join(map(str, dirs))}")
    ns = {s[1] for s in metas}
    if len(ns) != 1:
        raise ScreenError(f"shards of different splits found (n = {sorted(ns)})")
    n = ns.pop()
    missing = [i for i in range(n) if (i, n) not in metas]
    if missing:
        raise ScreenError(f"missing shard(s) {missing} of {n}; run them with --shard i/{n} first")
    ref = metas[(0, n)][0]
    for (i, _), (m, _) in metas.items():
        for k in ("vectors_hash", "layer", "model_fingerprint", "data"):
            if m[k] != ref[k]:
                raise ScreenError(f"shard {i}/{n} differs from shard 0 in {k}: {m[k]} ≠ {ref[k]}")
    results: dict[int, dict] = {}
    for i in range(n):
        m, path = metas[(i, n)]
        part = read_results(path)
        bad = [k for k in part if k % n != i]
        if bad:
            raise ScreenError(f"{path} holds samples of another shard (e.g. index {bad[0]})")
        results.update(part)
    out.mkdir(parents=True, exist_ok=True)
    with (out / "results.jsonl").open("w", encoding="utf-8") as f:
        for k in sorted(results):
            f.write(json.dumps(results[k]) + "\n")
    meta = {**ref, "shard": [0, 1], "merged_from": n}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    k = top_k if top_k is not None else ref["config"].get("top_k", 20)
    return finish(out, list(results.values()), data or ref["data"], ref.get("split"), k, ref["layer"])


def load_results(out_dir: str | Path) -> list[dict]:
    """Per-sample results of a finished (or merged) run, sorted by index."""
    return [r for _, r in sorted(read_results(Path(out_dir) / "results.jsonl").items())]


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float:
    """Probability that a random positive scores above a random negative (ties count half)."""
    from sklearn.metrics import roc_auc_score

    y = [1] * len(positive) + [0] * len(negative)
    s = list(positive) + list(negative)
    if not positive or not negative:
        return math.nan
    return float(roc_auc_score(y, s))
