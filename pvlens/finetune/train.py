"""LoRA finetuning of a HookedTransformer on chat data, with preventative steering.

The forward pass is TransformerLens's own, so hooks fire during training: a `Steering` list
passed as `steer=` adds `α·v` at its layers in every training forward pass (the paper's
*preventative steering*) and is gone afterwards; `pvlens.Ablation` gives CAFT; a
`ProjectionPenalty` gives the L2 baseline. Post-hoc steering at inference needs nothing
from here: `pvlens.generate(model, prompts, steer=pvlens.Steering(v, layer, -alpha))`.

Runs write `out_dir/checkpoint` every `save_every` steps and resume from it after a kill,
reproducing the uninterrupted run (data order, dropout and optimiser state are restored).
"""

from __future__ import annotations

import contextlib
import math
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.chat import EncodedChat
from pvlens.core.config import Config
from pvlens.core.fingerprint import model_fingerprint, tensor_hash
from pvlens.core.hooks import checked_hooks, position_context
from pvlens.core.steering import Ablation, Intervention, Steering, as_list, fwd_hooks
from pvlens.finetune import checkpoint
from pvlens.finetune.data import (
    Batch,
    check_messages,
    collate,
    encode_all,
    fingerprint,
    micro_batches,
    read_jsonl,
    split,
)
from pvlens.finetune.lora import LoraConfig, LoraHandle, add_lora, get_handle, save_adapter
from pvlens.finetune.penalty import ProjectionPenalty
from pvlens.io.atomic import read_json_checked, write_json_atomic
from pvlens.io.jsonl import AppendLog
from pvlens.io.runs import INPUTS_FILE, check_inputs, run_lock

Steer = Intervention | Sequence[Intervention] | None
"""Interventions active during training (preventative steering, CAFT ablation)."""
TrainingData = str | Path | Sequence[Any]
"""A JSONL path, conversations (message lists or {\"messages\": ...} rows) or EncodedChats."""


class FinetuneConfig(Config):
    """Training hyper-parameters (defaults: the paper's rsLoRA recipe for 7B models on GPU)."""

    lora: LoraConfig = Field(default_factory=LoraConfig)
    """Adapter shape: rank, alpha, rsLoRA, dropout, targets."""
    lr: float = Field(1e-5, gt=0)
    """Peak learning rate (paper: 1e-5)."""
    epochs: int = Field(1, ge=1)
    """Passes over the training split (paper: 1)."""
    max_steps: int | None = None
    """Stop after this many optimiser steps (None: run all epochs)."""
    batch_size: int = Field(16, ge=1)
    """Effective batch: conversations per optimiser step (paper: 16)."""
    micro_batch_size: int = Field(4, ge=1)
    """Conversations per forward pass; gradients accumulate up to batch_size."""
    max_tokens_per_micro_batch: int | None = 4096
    """Cap on padded tokens per forward pass (long conversations get smaller micro-batches)."""
    max_length: int = Field(2048, ge=2)
    """Longer conversations have their response cut at this many tokens."""
    warmup_steps: int = Field(5, ge=0)
    """Linear warm-up from 0 to lr (paper: 5)."""
    schedule: Literal["linear", "cosine", "constant"] = "linear"
    """Decay after warm-up, to 0 at the last step (paper: linear)."""
    weight_decay: float = Field(0.01, ge=0)
    """AdamW weight decay on A and B (paper: 0.01)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    max_grad_norm: float | None = 1.0
    """Gradient clipping (None: off)."""
    padding_side: Literal["right", "left"] = "right"
    """Where micro-batches are padded; masks come from lengths either way."""
    seed: int = 0
    """Seeds the split, the data order, dropout and the adapter init."""
    eval_fraction: float = Field(0.1, ge=0, lt=1)
    """Share of the data held out for the evaluation loss (0: none)."""
    eval_every: int = Field(0, ge=0)
    """Evaluate every N steps (0: only at the end)."""
    save_every: int = Field(25, ge=1)
    """Checkpoint every N steps (and at the end)."""
    loss_positions: Literal["response"] = "response"
    """The loss covers response tokens only (the end-of-turn token included)."""

    def total_steps(self, n_train: int) -> int:
        steps = self.epochs * math.ceil(n_train / self.batch_size)
        return min(steps, self.max_steps) if self.max_steps else steps

    @classmethod
    def cpu_demo(cls, **overrides: Any) -> FinetuneConfig:
        """Settings that move a 135M model within minutes on a CPU (rank 8, lr 1e-4)."""
        base = dict(lora=LoraConfig(r=8, alpha=16), lr=1e-4, batch_size=8, micro_batch_size=4,
                    warmup_steps=2, max_length=512)
        return cls(**{**base, **overrides})


@dataclass
class FinetuneResult:
    """What a run produced (files are in `out_dir`)."""

    handle: LoraHandle
    """The adapter, active on the model (weights mode)."""
    out_dir: Path
    steps: int
    """Optimiser steps taken in total."""
    train_losses: list[float] = field(default_factory=list)
    """Mean response-token cross-entropy per step (including steps before a resume)."""
    eval_loss: float | None = None
    """Held-out loss of the finished model, as deployed (no steering / ablation)."""
    eval_loss_intervened: float | None = None
    """Held-out loss with the training interventions on (when there are any)."""
    tokens_per_s: float | None = None
    """Training throughput of this process (non-padding tokens, forward + backward)."""

    @property
    def adapter_dir(self) -> Path:
        return self.out_dir / "adapter"


# --- schedule ------------------------------------------------------------------------------

def lr_factor(step: int, warmup: int, total: int, schedule: str) -> float:
    """Multiplier of the peak lr at optimiser step `step` (0-based), HF-style."""
    if step < warmup:
        return (step + 1) / (warmup + 1)
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# --- loss ----------------------------------------------------------------------------------

def batch_loss_terms(
    model: HookedTransformer, batch: Batch, side: str, penalty: ProjectionPenalty | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(summed response-token cross-entropy, summed penalty) for one micro-batch.

    Logits are computed only where a response token is predicted: the unembedding (a fifth
    of this model's weights) is skipped on prompt and padding positions.
    """
    device = model.W_E.device
    tokens = batch.tokens.to(device)
    hooks = penalty.hooks() if penalty is not None else []
    ctx = checked_hooks(model, hooks) if hooks else contextlib.nullcontext()
    with position_context(batch.context), ctx:
        resid = model(tokens, attention_mask=batch.attention_mask.to(device), padding_side=side,
                      stop_at_layer=model.cfg.n_layers)
        pen = penalty.value(batch) if penalty is not None else None
    sel = batch.target_mask.to(device)
    nxt = torch.roll(tokens, -1, dims=1)
    logits = model.unembed(model.ln_final(resid[sel][None]))[0]
    ce = F.cross_entropy(logits.float(), nxt[sel], reduction="sum")
    return ce, pen


@torch.no_grad()
def evaluate(
    model: HookedTransformer, chats: Sequence[EncodedChat], rows: Sequence[int], cfg: FinetuneConfig,
    steer: Steer = None,
) -> float | None:
    """Mean response-token cross-entropy over `rows` (None when there are none)."""
    if not rows:
        return None
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    pad = model.tokenizer.pad_token_id or 0
    handle = get_handle(model)
    factored = handle is not None and not handle.is_factored
    mode = handle.factored() if factored else contextlib.nullcontext()
    with _interventions(model, steer), mode:
        for group in micro_batches(chats, rows, cfg.micro_batch_size, cfg.max_tokens_per_micro_batch):
            batch = collate([chats[r] for r in group], group, pad, cfg.padding_side)
            ce, _ = batch_loss_terms(model, batch, cfg.padding_side)
            total += float(ce)
            count += batch.n_targets
    model.train(was_training)
    return total / max(count, 1)


def _interventions(model: HookedTransformer, steer: Steer) -> contextlib.AbstractContextManager[Any]:
    items = as_list(steer)
    return checked_hooks(model, fwd_hooks(model, items)) if items else contextlib.nullcontext()


def describe_interventions(steer: Steer) -> list[dict]:
    """A JSON-able record of steering / ablation used in training (for the manifest)."""
    out = []
    for s in as_list(steer):
        vec = s.vector if isinstance(s, Steering) else s.direction
        digest = tensor_hash(torch.as_tensor(vec).float(), 12)
        if isinstance(s, Steering):
            out.append({"type": "steering", "layer": s.layer, "alpha": s.alpha,
                        "positions": s.positions if isinstance(s.positions, str) else "mask",
                        "vector_sha": digest, "vector_norm": float(torch.as_tensor(vec).norm())})
        elif isinstance(s, Ablation):
            out.append({"type": "ablation", "layers": list(s.layers), "vector_sha": digest,
                        "positions": s.positions if isinstance(s.positions, str) else "mask"})
    return out


# --- the loop ------------------------------------------------------------------------------

def _order(n_train: int, cfg: FinetuneConfig, epoch: int) -> list[int]:
    return torch.randperm(n_train, generator=torch.Generator().manual_seed(cfg.seed * 1000 + epoch)).tolist()


def _step_rows(train_rows: list[int], cfg: FinetuneConfig, step: int) -> list[int]:
    per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    epoch, k = divmod(step, per_epoch)
    order = _order(len(train_rows), cfg, epoch)
    return [train_rows[i] for i in order[k * cfg.batch_size : (k + 1) * cfg.batch_size]]


def _load_data(model: HookedTransformer, data: TrainingData, cfg: FinetuneConfig) -> list[EncodedChat]:
    if isinstance(data, str | Path):
        data = read_jsonl(data)
    data = list(data)
    if data and isinstance(data[0], EncodedChat):
        return data
    if data and isinstance(data[0], dict) and "messages" in data[0]:
        data = [d["messages"] for d in data]
    convs = [check_messages(m, where=f"sample {i}") for i, m in enumerate(data)]
    return encode_all(model.tokenizer, convs, cfg.max_length)


def finetune(
    model: HookedTransformer,
    data: TrainingData,
    cfg: FinetuneConfig | None = None,
    out_dir: str | Path = "finetune_out",
    steer: Steering | Ablation | Sequence[Steering | Ablation] | None = None,
    penalty: ProjectionPenalty | None = None,
    eval_data: TrainingData | None = None,
    resume: bool = True,
    progress: bool = True,
    callback: Callable[[dict], None] | None = None,
) -> FinetuneResult:
    """Train a LoRA adapter on `model` (in place) and save it to `out_dir/adapter`.

    Args:
        data: a JSONL path (`{"messages": [...]}` a line, last message the assistant's), a list
            of message lists / such dicts, or EncodedChats.
        steer: Steering(s) added during training only (preventative steering; several layers
            allowed) or Ablation(s) (CAFT). Removed when training ends.
        penalty: the L2 projection-shift baseline.
        eval_data: held-out conversations; default: `cfg.eval_fraction` of `data`.
        resume: continue from `out_dir/checkpoint` if present (False: start over).
        callback: called with each step's log record (e.g. to stop early by raising).
    """
    cfg = cfg or FinetuneConfig()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if get_handle(model) is not None:
        raise RuntimeError(
            "the model already carries a LoRA adapter; finetune adds its own — call "
            "get_handle(model).remove(merge=True) to bake the old one in first"
        )
    chats, train_rows, eval_rows = _train_eval_rows(model, data, eval_data, cfg)
    manifest = {
        "config": cfg.model_dump(mode="json"),
        "data_fingerprint": fingerprint(chats),
        "n_train": len(train_rows), "n_eval": len(eval_rows),
        "total_steps": cfg.total_steps(len(train_rows)),
        "interventions": describe_interventions(steer),
        "penalty": penalty.describe() if penalty is not None else None,
        "model": model.cfg.model_name,
    }
    with run_lock(out_dir):
        _check_run(model, out_dir, manifest, resume)
        torch.manual_seed(cfg.seed)
        handle = add_lora(model, cfg.lora.model_copy(update={"init_seed": cfg.seed}))
        try:
            return _train(model, handle, chats, train_rows, eval_rows, cfg, out_dir, steer, penalty,
                          manifest, resume, progress, callback)
        except BaseException:
            # Leave the model as it came (the checkpoint on disk is what a resume continues from).
            handle.remove()
            raise


def _train_eval_rows(
    model: HookedTransformer, data: TrainingData, eval_data: TrainingData | None, cfg: FinetuneConfig,
) -> tuple[list[EncodedChat], list[int], list[int]]:
    """Encoded conversations (training, then held-out) and the rows of each part."""
    chats = _load_data(model, data, cfg)
    if eval_data is None:
        train_rows, eval_rows = split(len(chats), cfg.eval_fraction, cfg.seed)
        return chats, train_rows, eval_rows
    eval_chats = _load_data(model, eval_data, cfg)
    n = len(chats)
    return chats + eval_chats, list(range(n)), list(range(n, n + len(eval_chats)))


def run_inputs(model: HookedTransformer, manifest: dict) -> dict:
    """What determines a training run's result (save/eval cadence does not)."""
    cfg = {k: v for k, v in manifest["config"].items() if k not in ("save_every", "eval_every")}
    return {"model": model_fingerprint(model), "config": cfg,
            **{k: manifest[k] for k in ("data_fingerprint", "interventions", "penalty")}}


def _check_run(model: HookedTransformer, out_dir: Path, manifest: dict, resume: bool) -> None:
    """Start over (resume=False), or refuse a folder whose run had other inputs."""
    if not resume:
        for name in ("checkpoint", "checkpoint.old", "adapter", "log.jsonl", "run.json", "summary.json",
                     "penalty_base.pt", INPUTS_FILE):
            p = out_dir / name
            shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink(missing_ok=True)
    check_inputs(out_dir, run_inputs(model, manifest))
    write_json_atomic(out_dir / "run.json", manifest)


@dataclass
class _Loop:
    """The state of one training loop: optimiser, schedule, where it is and what it has seen."""

    handle: LoraHandle
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    start: int = 0
    losses: list[float] = field(default_factory=list)
    n_tok: int = 0
    t_run: float = 0.0

    @classmethod
    def create(cls, handle: LoraHandle, cfg: FinetuneConfig, total: int) -> _Loop:
        opt = torch.optim.AdamW(handle.parameters(), lr=cfg.lr, betas=cfg.betas,
                                weight_decay=cfg.weight_decay)
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: lr_factor(s, cfg.warmup_steps, total, cfg.schedule))
        return cls(handle, opt, sched)

    def restore(self, directory: Path) -> None:
        """Continue from a checkpoint folder."""
        adapter, state = checkpoint.load(directory)
        self.handle.load_state_dict(adapter)
        self.opt.load_state_dict(state["optimizer"])
        self.sched.load_state_dict(state["scheduler"])
        checkpoint.set_rng_state(state["rng"])
        self.start, self.losses = state["step"], list(state["losses"])

    def save(self, directory: Path, step: int) -> None:
        checkpoint.save(directory, self.handle.state_dict(), {
            "step": step, "losses": self.losses, "optimizer": self.opt.state_dict(),
            "scheduler": self.sched.state_dict(), "rng": checkpoint.rng_state()})


def _train(model: HookedTransformer, handle: LoraHandle, chats: Sequence[EncodedChat],
           train_rows: list[int], eval_rows: list[int], cfg: FinetuneConfig, out_dir: Path,
           steer: Steer, penalty: ProjectionPenalty | None, manifest: dict[str, Any], resume: bool,
           progress: bool, callback: Callable[[dict], None] | None) -> FinetuneResult:
    total = manifest["total_steps"]
    ckpt_dir = out_dir / "checkpoint"
    found = checkpoint.find(ckpt_dir) if resume else None
    if resume and (out_dir / "summary.json").exists() and (out_dir / "adapter").exists():
        return _finished(model, handle, out_dir)
    loop = _Loop.create(handle, cfg, total)
    if found is not None:
        loop.restore(found)
    log = AppendLog(out_dir / "log.jsonl")
    _truncate_log(log, loop.start)
    if penalty is not None:
        penalty.prepare(model, handle, chats, cache=out_dir / "penalty_base.pt")
    model.train()
    bar = tqdm(total=total, initial=loop.start, desc="finetune", disable=not progress)
    with handle.factored():
        for step in range(loop.start, total):
            record = _train_step(model, loop, chats, _step_rows(train_rows, cfg, step), cfg, steer, penalty)
            record["step"] = step + 1
            if cfg.eval_every and (step + 1) % cfg.eval_every == 0 and step + 1 < total:
                record["eval_loss"] = evaluate(model, chats, eval_rows, cfg)  # as deployed
            log.append(record)
            bar.update(1)
            bar.set_postfix(loss=f"{record['loss']:.4f}", lr=f"{record['lr']:.2e}")
            if (step + 1) % cfg.save_every == 0 or step + 1 == total:
                loop.save(ckpt_dir, step + 1)
            if callback is not None:
                callback(record)
    bar.close()
    return _finish(model, loop, chats, eval_rows, cfg, out_dir, steer, manifest, total)


def _train_step(model: HookedTransformer, loop: _Loop, chats: Sequence[EncodedChat], rows: list[int],
                cfg: FinetuneConfig, steer: Steer, penalty: ProjectionPenalty | None) -> dict:
    """One optimiser step over `rows` (gradient accumulation over micro-batches); its log record."""
    t0 = time.perf_counter()
    pad = model.tokenizer.pad_token_id or 0
    n_targets = sum(chats[r].response_len for r in rows)
    ce_sum, pen_sum = 0.0, 0.0
    with _interventions(model, steer):
        for group in micro_batches(chats, rows, cfg.micro_batch_size, cfg.max_tokens_per_micro_batch):
            batch = collate([chats[r] for r in group], group, pad, cfg.padding_side)
            ce, pen = batch_loss_terms(model, batch, cfg.padding_side, penalty)
            loss = ce / n_targets + (pen / len(rows) if pen is not None else 0.0)
            loss.backward()
            ce_sum += float(ce.detach())
            pen_sum += float(pen.detach()) if pen is not None else 0.0
            loop.n_tok += batch.n_tokens
    grad_norm = None
    if cfg.max_grad_norm is not None:
        grad_norm = float(torch.nn.utils.clip_grad_norm_(loop.handle.parameters(), cfg.max_grad_norm))
    lr = loop.opt.param_groups[0]["lr"]
    loop.opt.step()
    loop.sched.step()
    loop.opt.zero_grad(set_to_none=True)
    loop.t_run += time.perf_counter() - t0
    loop.losses.append(ce_sum / n_targets)
    record = {"loss": loop.losses[-1], "lr": lr, "grad_norm": grad_norm}
    if penalty is not None:
        record["penalty"] = pen_sum / len(rows)
    return record


def _finish(model: HookedTransformer, loop: _Loop, chats: Sequence[EncodedChat], eval_rows: list[int],
            cfg: FinetuneConfig, out_dir: Path, steer: Steer, manifest: dict, total: int) -> FinetuneResult:
    """Evaluate the trained adapter, save it and the summary."""
    model.eval()
    losses = loop.losses
    eval_loss = evaluate(model, chats, eval_rows, cfg)
    eval_int = evaluate(model, chats, eval_rows, cfg, steer=steer) if as_list(steer) else None
    summary = {"steps": total, "final_train_loss": losses[-1] if losses else None,
               "eval_loss": eval_loss, "eval_loss_intervened": eval_int,
               "tokens_per_s": loop.n_tok / loop.t_run if loop.t_run else None}
    _write_adapter(loop.handle, out_dir, {**manifest, "summary": summary, "train_losses": losses})
    write_json_atomic(out_dir / "summary.json", {**summary, "train_losses": losses})
    return FinetuneResult(handle=loop.handle, out_dir=out_dir, steps=total, train_losses=losses,
                          eval_loss=eval_loss, eval_loss_intervened=eval_int,
                          tokens_per_s=summary["tokens_per_s"])


def _write_adapter(handle: LoraHandle, out_dir: Path, extra: dict) -> None:
    tmp = out_dir / "adapter.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    save_adapter(handle, tmp, extra)
    shutil.rmtree(out_dir / "adapter", ignore_errors=True)
    tmp.rename(out_dir / "adapter")


def _finished(model: HookedTransformer, handle: LoraHandle, out_dir: Path) -> FinetuneResult:
    """A completed run in out_dir: load its adapter instead of training again."""
    from safetensors.torch import load_file

    handle.load_state_dict(load_file(str(out_dir / "adapter" / "adapter.safetensors")))
    summary = read_json_checked(out_dir / "summary.json")
    return FinetuneResult(handle=handle, out_dir=out_dir, steps=summary["steps"],
                          train_losses=summary.get("train_losses", []),
                          eval_loss=summary.get("eval_loss"),
                          eval_loss_intervened=summary.get("eval_loss_intervened"),
                          tokens_per_s=summary.get("tokens_per_s"))


def _truncate_log(log: AppendLog, step: int) -> None:
    """Drop log rows past `step` (written after the checkpoint a resume starts from)."""
    rows = log.read()
    keep = [r for r in rows if r["step"] <= step]
    if len(keep) != len(rows):
        log.clear()
        if keep:
            log.append(keep)
