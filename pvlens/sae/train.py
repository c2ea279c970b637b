"""Train a BatchTopK SAE on one layer's residual stream with sae_lens.

The pieces are sae_lens's own: `BatchTopKTrainingSAE` (k active latents on average over a
batch, saved as a JumpReLU SAE with one learned threshold), `SAETrainer` (Adam, lr schedule,
auxiliary loss for dead latents, checkpoints). pvlens supplies the activations
(`ActivationProvider`), the norm-scaling factor, a progress bar with loss / FVU / L0, resume,
and a record of how the SAE was made (`pvlens_sae.json`).

Output folder:
    cfg.json, sae_weights.safetensors   inference SAE (`sae_lens.SAE.load_from_disk(dir)`)
    pvlens_sae.json                      layer, hook, scaling factor, config, corpus, held-out split
    train_log.jsonl                      loss / FVU / L0 / dead latents every `log_every` steps
    checkpoints/<n_samples>/             sae_lens checkpoints (weights + optimiser state)
"""

from __future__ import annotations

import hashlib
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, cast

import torch
import yaml
from pydantic import Field
from sae_lens import BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, LoggingConfig
from sae_lens.config import SAETrainerConfig
from sae_lens.training.sae_trainer import SAETrainer
from tqdm.auto import tqdm
from transformer_lens import HookedTransformer

from pvlens.core.config import Config, default_layer
from pvlens.core.device import dtype_name
from pvlens.core.fingerprint import model_fingerprint
from pvlens.core.hooks import check_layer, resid_hook_name
from pvlens.io.atomic import read_json_checked, write_json_atomic
from pvlens.io.jsonl import AppendLog
from pvlens.io.runs import changed_inputs, normalise_inputs
from pvlens.sae.corpus import Document, read_documents, split_documents
from pvlens.sae.provider import ActivationProvider, sae_compute_dtype

Corpus = str | Path | Sequence[str | Path] | Sequence[Document]
"""Corpus files or folders, or documents."""

META_FILE = "pvlens_sae.json"
LOG_FILE = "train_log.jsonl"
CHECKPOINT_DIR = "checkpoints"


class SaeTrainConfig(Config):
    """Everything that decides what SAE comes out (saved with it)."""

    layer: int | None = Field(
        None, description="Block whose output (blocks.{layer}.hook_resid_post) is encoded (None: the middle block)."
    )
    expansion: int = Field(8, ge=1, description="d_sae = expansion x d_model (ignored if d_sae is set).")
    d_sae: int | None = Field(None, description="Number of latents (overrides expansion).")
    k: float = Field(32, gt=0, description="BatchTopK: mean active latents per token over a batch.")
    lr: float = Field(5e-4, gt=0, description="Adam learning rate after warm-up.")
    lr_end: float | None = Field(None, description="LR where the final linear decay starts (None: lr).")
    lr_warm_up_steps: int = Field(100, ge=0, description="Linear warm-up steps.")
    lr_decay_fraction: float = Field(
        0.2, ge=0, lt=1, description="Fraction of steps at the end that decay the LR linearly to 0."
    )
    training_tokens: int = Field(2_000_000, gt=0, description="Activations (tokens) to train on.")
    batch_size: int = Field(4096, gt=0, description="Tokens per optimiser step.")
    seed: int = Field(0, description="Seed for SAE init, document order and shuffling.")
    aux_loss_coefficient: float = Field(
        1.0, ge=0, description="Weight of the TopK auxiliary loss that revives dead latents."
    )
    topk_threshold_lr: float = Field(
        0.01, gt=0, le=1, description="EMA rate of the inference threshold learned during training."
    )
    dead_feature_window: int = Field(
        200, gt=0, description="Steps without firing after which a latent counts as dead (aux loss)."
    )
    buffer_tokens: int = Field(65536, gt=0, description="Shuffle buffer size (tokens).")
    forward_tokens: int = Field(8192, gt=0, description="Padded tokens per model forward pass.")
    context_size: int = Field(512, ge=2, description="Longer documents are cut into windows of this.")
    holdout_fraction: float = Field(
        0.05, ge=0, lt=1, description="Documents kept out of training for evaluation."
    )
    skip_first: int = Field(1, ge=0, description="Leading positions dropped (attention sinks).")
    max_norm_ratio: float | None = Field(
        10.0, description="Drop tokens with norm > ratio x batch median (None: keep all)."
    )
    scaling_tokens: int = Field(65536, gt=0, description="Tokens used to estimate the norm scale.")
    calibrate_threshold: bool = Field(
        True, description="After training, set the inference threshold so mean L0 = k exactly."
    )
    calibration_tokens: int = Field(
        65536, gt=0, description="Training-stream tokens used to calibrate the threshold."
    )
    activation_cache: str | None = Field(
        None, description="Folder where the training activations are cached (reused across runs)."
    )
    n_checkpoints: int = Field(4, ge=0, description="Checkpoints during training (for resume).")
    log_every: int = Field(20, gt=0, description="Steps between progress-bar / log updates.")
    dtype: str = Field("auto", description="Model forward dtype: 'auto', 'float32', 'bfloat16'.")
    device: str = Field("cpu", description="Device for the SAE (the model stays where it is).")

    def n_latents(self, d_in: int) -> int:
        """Number of latents for an input width `d_in`."""
        return self.d_sae or self.expansion * d_in

    @classmethod
    def from_yaml(cls, path: str | Path, **overrides: Any) -> SaeTrainConfig:
        """Load a recipe (a YAML mapping of these fields; a `corpus` key is ignored here)."""
        data = yaml.safe_load(Path(path).read_text()) or {}
        data.pop("corpus", None)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.model_validate(data)


def recipe_corpus(path: str | Path) -> list[str]:
    """The `corpus:` entry of a recipe YAML (a path or a list of paths), if any."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    corpus = data.get("corpus") or []
    return [corpus] if isinstance(corpus, str) else list(corpus)


class _Trainer(SAETrainer):
    """SAETrainer with a pvlens progress bar (loss, FVU, L0, dead) and a JSONL log."""

    def __init__(self, *args: Any, log_path: Path, log_every: int, progress: bool, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.log_path, self.log_every, self.progress = log_path, log_every, progress
        self.t0 = time.time()

    def fit(self):
        # the stock bar is replaced by ours (see _update_pbar); keep it silent
        import sae_lens.training.sae_trainer as st

        real_tqdm = st.tqdm
        st.tqdm = _silent_tqdm
        self.bar = tqdm(total=self.cfg.total_training_samples, initial=self.n_training_samples,
                        desc=f"SAE L{self.sae.cfg.metadata.hook_layer}", unit="tok",
                        unit_scale=True, disable=not self.progress)
        try:
            return super().fit()
        finally:
            st.tqdm = real_tqdm
            self.bar.close()

    @torch.no_grad()
    def _update_pbar(self, step_output: Any, pbar: Any, update_interval: int = 100) -> None:
        self.bar.update(self.cfg.train_batch_size_samples)
        if self.n_training_steps % self.log_every and self.n_training_samples < self.cfg.total_training_samples:
            return
        x, x_hat = step_output.sae_in.float(), step_output.sae_out.float()
        fvu = ((x - x_hat).pow(2).sum() / (x - x.mean(0)).pow(2).sum()).item()
        l0 = (step_output.feature_acts > 0).float().sum(-1).mean().item()
        row = {
            "step": self.n_training_steps,
            "tokens": self.n_training_samples,
            "loss": step_output.loss.item(),
            **{k: float(v) for k, v in step_output.losses.items()},
            "fvu": fvu,
            "l0": l0,
            "dead": int(self.dead_neurons.sum()),
            "threshold": float(getattr(self.sae, "topk_threshold", float("nan"))),
            "lr": self.optimizer.param_groups[0]["lr"],
            "seconds": round(time.time() - self.t0, 1),
        }
        self.bar.set_postfix(loss=f"{row['loss']:.3g}", fvu=f"{fvu:.3f}", l0=f"{l0:.1f}",
                             dead=row["dead"])
        AppendLog(self.log_path).append(row)


def _silent_tqdm(*args: Any, **kwargs: Any) -> tqdm:
    kwargs["disable"] = True
    return tqdm(*args, **kwargs)


def _latest_checkpoint(out: Path) -> Path | None:
    root = out / CHECKPOINT_DIR
    if not root.is_dir():
        return None
    done = [p for p in root.iterdir() if p.name.isdigit() and (p / "trainer_state.pt").exists()]
    return max(done, key=lambda p: int(p.name)) if done else None


def sae_layer(cfg: SaeTrainConfig, model: HookedTransformer) -> int:
    """The checked block the SAE encodes (`cfg.layer`, or the middle block)."""
    return check_layer(model, default_layer(model) if cfg.layer is None else cfg.layer)


def build_sae(cfg: SaeTrainConfig, model: HookedTransformer) -> BatchTopKTrainingSAE:
    """A fresh BatchTopK training SAE for `cfg.layer` of `model` (seeded)."""
    layer = sae_layer(cfg, model)
    d_in = model.cfg.d_model
    torch.manual_seed(cfg.seed)
    sae_cfg = BatchTopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=cfg.n_latents(d_in),
        k=cfg.k,
        topk_threshold_lr=cfg.topk_threshold_lr,
        aux_loss_coefficient=cfg.aux_loss_coefficient,
        # the trainer scales inputs by our factor and folds it into the weights at the end
        normalize_activations="expected_average_only_in",
        device=cfg.device,
    )
    sae_cfg.metadata.model_name = model.cfg.model_name
    sae_cfg.metadata.hook_name = resid_hook_name(layer)
    sae_cfg.metadata.hook_layer = layer
    sae_cfg.metadata.context_size = cfg.context_size
    sae_cfg.metadata.prepend_bos = False
    return BatchTopKTrainingSAE(sae_cfg)


def trainer_config(cfg: SaeTrainConfig, out: Path) -> SAETrainerConfig:
    """sae_lens's trainer settings: steps, lr schedule, dead-latent window, checkpoints."""
    steps = cfg.training_tokens // cfg.batch_size
    if steps < 1:
        raise ValueError(
            f"training_tokens ({cfg.training_tokens}) < batch_size ({cfg.batch_size}): no step to run"
        )
    warm = min(cfg.lr_warm_up_steps, steps // 2)
    decay = min(int(steps * cfg.lr_decay_fraction), steps - warm)
    return SAETrainerConfig(
        total_training_samples=steps * cfg.batch_size,
        train_batch_size_samples=cfg.batch_size,
        lr=cfg.lr,
        lr_end=cfg.lr_end if cfg.lr_end is not None else cfg.lr,
        lr_scheduler_name="constant",
        lr_warm_up_steps=warm,
        lr_decay_steps=decay,
        device=cfg.device,
        dead_feature_window=cfg.dead_feature_window,
        feature_sampling_window=max(cfg.dead_feature_window, cfg.log_every),
        n_checkpoints=cfg.n_checkpoints,
        checkpoint_path=str(out / CHECKPOINT_DIR),
        save_final_checkpoint=False,
        logger=LoggingConfig(log_to_wandb=False),
    )


def train_sae(
    model: HookedTransformer,
    corpus: str | Path | Sequence[str | Path] | Sequence[Document],
    cfg: SaeTrainConfig,
    out: str | Path,
    resume: bool = True,
    progress: bool = True,
) -> Path:
    """Train a BatchTopK SAE on `cfg.layer` and save the inference SAE in `out`.

    Args:
        corpus: corpus file(s) (see `pvlens.sae.corpus.read_documents`) or Documents.
        resume: continue from the latest checkpoint in `out/checkpoints` if there is one
            (the data stream restarts with a seed offset, so already-seen batches are not
            replayed in the same order); False starts over and deletes old checkpoints.
    Returns: `out`, ready for `sae_lens.SAE.load_from_disk(out)` and `pvlens sae eval`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    layer = sae_layer(model=model, cfg=cfg)
    cfg = cfg.changed(layer=layer)
    sources = _source_names(corpus)
    docs = _as_documents(corpus, model, cfg.context_size)
    train_docs, held = split_documents(docs, cfg.holdout_fraction, cfg.seed)
    inputs = resume_inputs(cfg, model, train_docs)
    checkpoint = _start_or_resume(out, cfg, resume, inputs)
    _write_meta(out, {"status": "training", **_meta(cfg, model, layer, sources, docs, held), "inputs": inputs})
    sae = build_sae(cfg, model)
    trainer = _Trainer(
        cfg=trainer_config(cfg, out), sae=sae, data_provider=iter(()),
        log_path=out / LOG_FILE, log_every=cfg.log_every, progress=progress,
    )
    if checkpoint is not None:
        sae.load_weights_from_checkpoint(checkpoint)
        trainer.load_trainer_state(checkpoint)
        # sae_lens saves the step counter before incrementing it; the sample count is exact
        trainer.n_training_steps = trainer.n_training_samples // cfg.batch_size
    provider = ActivationProvider(
        model, train_docs, layer, batch_size=cfg.batch_size, buffer_tokens=max(
            cfg.buffer_tokens, 2 * cfg.batch_size), seed=cfg.seed + trainer.n_training_samples,
        dtype=cfg.dtype, forward_tokens=cfg.forward_tokens, skip_first=cfg.skip_first,
        max_norm_ratio=cfg.max_norm_ratio, cache_file=_cache_file(cfg, model, layer, train_docs),
    )
    if checkpoint is None:
        trainer.activation_scaler.scaling_factor = provider.estimate_scaling_factor(cfg.scaling_tokens)
    scale = trainer.activation_scaler.scaling_factor
    trainer.data_provider = provider
    t0 = time.time()
    trainer.fit()  # folds the scaling factor into the weights: the saved SAE reads raw activations
    ema = float(sae.topk_threshold)
    calibrated = _calibrate(sae, provider, cfg) if cfg.calibrate_threshold else None
    sae.save_inference_model(out)
    _write_meta(out, {
        **_meta(cfg, model, layer, sources, docs, held), "inputs": inputs,
        "status": "done", "scaling_factor": scale, "threshold_ema": ema,
        "threshold_calibrated": calibrated, "train_seconds": round(time.time() - t0, 1),
        "resumed_from": checkpoint.name if checkpoint is not None else None,
        "provider_stats": {**provider.stats.__dict__}, "final_train_metrics": _last_log(out / LOG_FILE),
    })
    return out


RESUME_FREE = frozenset({"n_checkpoints", "log_every", "activation_cache", "calibrate_threshold", "calibration_tokens"})
"""Config fields a resumed run may change: cadence, cache location, and the after-training threshold
calibration (the checkpoints do not depend on them)."""


def resume_inputs(cfg: SaeTrainConfig, model: HookedTransformer, train_docs: Sequence[Document]) -> dict[str, Any]:
    """What a checkpoint depends on: every training setting, the model's weights (adapters too),
    the training documents' tokens and the resolved forward dtype ("auto" differs per CPU)."""
    h = hashlib.sha1()
    for d in train_docs:
        h.update(b"|" + ",".join(map(str, d.ids)).encode())
    return {**cfg.model_dump(mode="json", exclude=set(RESUME_FREE)), "model": model_fingerprint(model),
            "documents": h.hexdigest()[:16], "compute_dtype": dtype_name(sae_compute_dtype(model, cfg.dtype))}


def _start_or_resume(out: Path, cfg: SaeTrainConfig, resume: bool, inputs: dict[str, Any]) -> Path | None:
    """The checkpoint to resume from (checked against the recorded inputs), or None after
    clearing old checkpoints and log when not resuming."""
    if not resume:
        shutil.rmtree(out / CHECKPOINT_DIR, ignore_errors=True)
        (out / LOG_FILE).unlink(missing_ok=True)
        return None
    checkpoint = _latest_checkpoint(out)
    if checkpoint is not None:
        _check_resume_config(out, cfg, inputs)
    return checkpoint


def _calibrate(sae: BatchTopKTrainingSAE, provider: ActivationProvider, cfg: SaeTrainConfig) -> float:
    n_batches = max(1, cfg.calibration_tokens // cfg.batch_size)
    return calibrate_threshold(sae, [next(provider) for _ in range(n_batches)])


@torch.no_grad()
def calibrate_threshold(sae: BatchTopKTrainingSAE, batches: Sequence[torch.Tensor]) -> float:
    """Set the SAE's inference threshold to the batch-top-k cut-off over all `batches` at once.

    BatchTopK keeps the k x N largest pre-activations of a batch of N tokens. Saved as JumpReLU,
    the SAE keeps every pre-activation above one threshold, which training estimates as a
    running average (rate `topk_threshold_lr`) of each batch's smallest kept value. After few
    steps that average lags far behind (it starts at 0), and the loaded SAE fires many more
    than k latents. Here the cut-off is computed directly on many tokens of (raw, training)
    activations, so the inference SAE has mean L0 = k on the training distribution.
    Call after `fit()` (the scaling factor is folded then). Returns the new threshold.
    """
    sae.eval()
    pres = [sae.encode_with_hidden_pre(b.to(sae.device))[1] for b in batches]
    threshold = torch.tensor(l0_cutoff(pres, sae.cfg.k))
    sae.topk_threshold = threshold.to(sae.topk_threshold)
    return float(threshold)


@torch.no_grad()
def l0_cutoff(pres: Sequence[torch.Tensor], l0: float) -> float:
    """The one threshold that keeps, on average, `l0` of the positive pre-activations per token
    over all batches `pres` ([tokens, d_sae] each): the (l0 x tokens)-th largest value.

    Each batch contributes its 4 l0 B largest values: the global cut-off lies among them unless one
    batch holds over 4x its share of the kept values (checked)."""
    cands, floors, n = [], [], 0
    for pre in pres:
        flat = pre.relu().flatten()
        top = flat.topk(min(flat.numel(), int(4 * l0 * pre.shape[0]) + 1)).values
        cands.append(top)
        floors.append(top[-1])
        n += pre.shape[0]
    pool = torch.cat(cands)
    threshold = pool.topk(max(1, min(int(l0 * n), pool.numel()))).values.min()
    if max(floors) > threshold:
        raise RuntimeError("threshold calibration: one batch dominates; use more calibration tokens")
    return float(threshold)


def _cache_file(cfg: SaeTrainConfig, model: HookedTransformer, layer: int, docs: Sequence[Document]) -> Path | None:
    """Activation-cache path keyed by everything the cached activations depend on."""
    if cfg.activation_cache is None:
        return None
    h = hashlib.sha1()
    # every weight (adapters included): a finetuned model of the same name differs
    settings = (model.cfg.model_name, model.cfg.d_model, layer, cfg.skip_first,
                cfg.max_norm_ratio, _dtype_key(cfg, model), cfg.context_size, model_fingerprint(model))
    h.update(repr(settings).encode())
    for d in docs:
        h.update(b"|" + ",".join(map(str, d.ids)).encode())
    return Path(cfg.activation_cache) / f"{model.cfg.model_name}-L{layer}-{h.hexdigest()[:16]}.safetensors"


def _dtype_key(cfg: SaeTrainConfig, model: HookedTransformer) -> str:
    """The forward dtype `cfg.dtype` resolves to here ("auto" is bf16 on AMX CPUs, fp32 elsewhere),
    as the name it was recorded by before ("float32", "bfloat16"; an explicit name stays as given)."""
    if cfg.dtype != "auto":
        return cfg.dtype
    return dtype_name(sae_compute_dtype(model, cfg.dtype))


def _source_names(corpus: Corpus) -> list[str]:
    if isinstance(corpus, str | Path):
        return [str(corpus)]
    if corpus and isinstance(corpus[0], Document):
        return ["<documents>"]
    return [str(c) for c in corpus]


def _as_documents(corpus: Corpus, model: HookedTransformer, max_len: int) -> list[Document]:
    if not isinstance(corpus, str | Path) and corpus and isinstance(corpus[0], Document):
        return [d for d in corpus if isinstance(d, Document)]
    return read_documents(cast(Any, corpus), model.tokenizer, max_len=max_len)


def _meta(cfg: SaeTrainConfig, model: HookedTransformer, layer: int, sources: list[str],
          docs: Sequence[Document], held: Sequence[Document]) -> dict:
    import sae_lens

    import pvlens

    return {
        "layer": layer,
        "hook_name": resid_hook_name(layer),
        "model_name": model.cfg.model_name,
        "d_model": model.cfg.d_model,
        "train_config": cfg.model_dump(),
        "corpus": sources,
        "n_documents": len(docs),
        "n_heldout_documents": len(held),
        "heldout_sources": [d.source for d in held],
        "versions": {"pvlens": pvlens.__version__, "sae_lens": sae_lens.__version__,
                     "torch": torch.__version__},
    }


def _write_meta(out: Path, meta: dict) -> None:
    write_json_atomic(out / META_FILE, meta)


def read_meta(sae_dir: str | Path) -> dict:
    """The pvlens record of a trained SAE folder (empty if the SAE was made elsewhere)."""
    path = Path(sae_dir) / META_FILE
    return read_json_checked(path) if path.exists() else {}


def _check_resume_config(out: Path, cfg: SaeTrainConfig, inputs: dict[str, Any]) -> None:
    meta = read_meta(out)
    if "inputs" in meta:  # recorded since the reuse audit: every input of the checkpoints
        changed = changed_inputs(meta["inputs"], normalise_inputs(inputs))
    else:  # an older folder recorded only its config: check the fields it always checked
        old = meta.get("train_config")
        if old is None:
            return
        fixed = ("layer", "expansion", "d_sae", "k", "batch_size", "training_tokens", "seed")
        changed = [f for f in fixed if old.get(f) != getattr(cfg, f)]
    if changed:
        raise ValueError(
            f"{out} holds checkpoints of a run with different {', '.join(changed)}; "
            "use another --out, or --no-resume to start over"
        )


def _last_log(path: Path) -> dict | None:
    rows = AppendLog(path).read()
    return rows[-1] if rows else None

