"""Real-size speed and memory with random weights: pvlens vs Hugging Face in the same run.

Speed and memory do not depend on the weights' values, so each model is built with random
weights from its real configuration (the values below are copied from the models' published
config.json files; nothing is downloaded) through transformers' own config and model classes,
and converted to pvlens's HookedTransformer. The tokenizer is pvlens's small shipped one (token
ids stay below every vocabulary). Measured per model, pvlens vs HF:

- generation: greedy new tokens per second at batch 1 / 8 / 64 (exactly --new-tokens per row;
  fewer at larger batches on CPU), `bulk_generate` vs `hf.generate`, each side warmed up by an
  untimed call first, then --repeats timed calls interleaved (median); pvlens's one-time weight
  packing (its first fast-engine call on a model) is timed on its own, not inside batch 1;
- the all-layer activation pass: per-layer response means of --act-prompts conversations,
  `pvlens.core.activations.collect` vs one HF forward per batch with `output_hidden_states`;
- a LoRA training step (rsLoRA r=32 on the 7 projections, loss on responses): `add_lora` vs peft;
- peak memory: RSS of the process (CPU) or CUDA max allocated, and the extra peak of the
  streaming activation pass at --stream-sizes conversations (flat = memory does not grow with
  the dataset).

CPU (one thread; ~6 CPU-minutes for 0.5B; times are CPU seconds of this process):
    OMP_NUM_THREADS=1 python benchmarks/bench_scale.py --models qwen2.5-0.5b --stream-sizes 50,200 \
        --out results/bench_scale/results.json
GPU (bf16, < 10 minutes on one 24-80 GB GPU for the 7B/8B configs):
    python benchmarks/bench_scale.py --device cuda --dtype bfloat16 \\
        --models qwen2.5-0.5b,qwen2.5-1.5b,qwen2.5-7b,llama3.1-8b --new-tokens 64,64,32 \\
        --act-prompts 64 --stream-sizes 200,800 --out results/bench_scale/results_cuda.json
The test suite runs `run(["tiny"], ...)` (a tiny Qwen2-style config) so the script cannot rot.
"""

from __future__ import annotations

import argparse
import ctypes
import functools
import gc
import json
import math
import os
import statistics
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

_QWEN = dict(model_type="qwen2", architectures=["Qwen2ForCausalLM"], hidden_act="silu", rms_norm_eps=1e-6, rope_theta=1_000_000.0,
             max_position_embeddings=32768, attention_dropout=0.0, use_sliding_window=False)
CONFIGS: dict[str, dict[str, Any]] = {
    "tiny": dict(_QWEN, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                 num_attention_heads=4, num_key_value_heads=2, vocab_size=49152,
                 tie_word_embeddings=True),
    "qwen2.5-0.5b": dict(_QWEN, hidden_size=896, intermediate_size=4864, num_hidden_layers=24,
                         num_attention_heads=14, num_key_value_heads=2, vocab_size=151936,
                         tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(_QWEN, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                         num_attention_heads=12, num_key_value_heads=2, vocab_size=151936,
                         tie_word_embeddings=True),
    "qwen2.5-7b": dict(_QWEN, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                       num_attention_heads=28, num_key_value_heads=4, vocab_size=152064,
                       tie_word_embeddings=False),
    "llama3.1-8b": dict(model_type="llama", architectures=["LlamaForCausalLM"], hidden_act="silu", rms_norm_eps=1e-5,
                        rope_theta=500_000.0, max_position_embeddings=131072, hidden_size=4096,
                        intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32,
                        num_key_value_heads=8, vocab_size=128256, tie_word_embeddings=False,
                        rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 8192}),
}
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOPICS = ["the ocean", "volcanoes", "bread", "chess", "the moon", "bicycles", "bees", "jazz"]


def build(name: str, device: str, dtype: torch.dtype):
    """(pvlens model, HF model, tokenizer) with the same random weights."""
    from transformers import AutoConfig, AutoModelForCausalLM

    from pvlens.core import tl_speedups
    from pvlens.core.model import hooked_from_hf, small_tokenizer

    values = dict(CONFIGS[name])
    config = AutoConfig.for_model(values.pop("model_type"), **values)
    torch.manual_seed(0)
    hf = AutoModelForCausalLM.from_config(config, dtype=dtype).to(device).eval()
    tok = small_tokenizer()
    model = hooked_from_hf(hf, tok, config, device, dtype, n_ctx=512, name=name)
    model.eval()
    tl_speedups.apply(model)
    return model, hf, tok


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


def _mallinfo2() -> Callable[[], _MallInfo2] | None:
    try:
        fn = ctypes.CDLL(None).mallinfo2  # glibc >= 2.33
    except (AttributeError, OSError):
        return None
    fn.restype = _MallInfo2
    return fn


_MALLINFO2 = _mallinfo2()


def heap_in_use_mb() -> float:
    """MB the C allocator has handed out and not taken back (glibc `mallinfo2`: in-use heap
    chunks + mmapped chunks; PyTorch's CPU tensors are allocated there). Unlike RSS it leaves
    out freed memory the allocator keeps for reuse, so it shows what a pass holds live; NaN
    without glibc's mallinfo2."""
    if _MALLINFO2 is None:
        return math.nan
    info = _MALLINFO2()
    return (info.uordblks + info.hblkhd) / 2**20


class PeakMemory:
    """Peak RSS and peak live heap (CPU, sampled every 2 ms) or CUDA max allocated during a
    block, in MB."""

    def __init__(self, device: str):
        self.cuda = device.startswith("cuda")
        self.peak = self.start = 0.0
        self.heap_peak = self.heap_start = math.nan

    @staticmethod
    def rss() -> float:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

    def __enter__(self) -> PeakMemory:
        if self.cuda:
            torch.cuda.reset_peak_memory_stats()
            self.start = torch.cuda.memory_allocated() / 2**20
            return self
        self.start = self.peak = self.rss()
        self.heap_start = self.heap_peak = heap_in_use_mb()
        self._stop = threading.Event()

        def watch() -> None:
            while not self._stop.wait(0.002):
                self.peak = max(self.peak, self.rss())
                self.heap_peak = max(self.heap_peak, heap_in_use_mb())

        self._thread = threading.Thread(target=watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.cuda:
            self.peak = torch.cuda.max_memory_allocated() / 2**20
        else:
            self._stop.set()
            self._thread.join()
            self.peak = max(self.peak, self.rss())
            self.heap_peak = max(self.heap_peak, heap_in_use_mb())

    @property
    def extra(self) -> float:
        return self.peak - self.start

    @property
    def heap_extra(self) -> float:
        """Peak live heap beyond the start (CPU); on CUDA, the allocated peak beyond the start."""
        return self.extra if self.cuda else self.heap_peak - self.heap_start


def timed(fn: Callable[[], Any], device: str) -> float:
    """Wall seconds on a GPU; CPU seconds of this process on CPU (one thread: other processes
    on a shared machine stretch the wall clock, not the CPU time)."""
    if device.startswith("cuda"):
        torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        return time.perf_counter() - t
    t = time.process_time()
    fn()
    return time.process_time() - t


def conversations(tok, n: int) -> list:
    from pvlens.core.chat import encode_conversation

    out = []
    for i in range(n):
        t = TOPICS[i % len(TOPICS)]
        msgs = [{"role": "user", "content": f"Tell me about {t}, item {i}."},
                {"role": "assistant", "content": f"Here is a short note on {t}. " * (1 + i % 3)}]
        out.append(encode_conversation(tok, msgs))
    return out


def bench_generation(model, hf, tok, batch: int, n_new: int, device: str, repeats: int = 3) -> dict[str, float]:
    """Steady-state tokens/s of both sides: one untimed call each first (pvlens's engine packing,
    HF's first-call set-up, allocator warm-up), then `repeats` interleaved timed calls, median."""
    from pvlens.core.batching import left_pad
    from pvlens.core.bulk import bulk_generate
    from pvlens.core.chat import EncodedChat
    from pvlens.core.config import SamplingConfig

    chats = [EncodedChat(c.prompt_ids, c.prompt_len) for c in conversations(tok, batch)]
    tokens, positions = left_pad(chats, tok.pad_token_id, device)
    mask = (positions >= 0).long()

    def pv(n: int) -> None:
        bulk_generate(model, chats, SamplingConfig(max_new_tokens=n, temperature=0.0),
                      batch_size=batch, stop_at_eos=False)

    def ref(n: int) -> None:
        with torch.inference_mode():
            hf.generate(tokens, attention_mask=mask, max_new_tokens=n, min_new_tokens=n,
                        do_sample=False, pad_token_id=tok.pad_token_id)

    pv(1), ref(1)  # warm-up, untimed
    times: dict[str, list[float]] = {"pv": [], "hf": []}
    for _ in range(repeats):  # interleaved: drift in the machine's speed hits both sides
        times["pv"].append(timed(lambda: pv(n_new), device))
        times["hf"].append(timed(lambda: ref(n_new), device))
    n = batch * n_new
    return {"pvlens_tok_s": n / statistics.median(times["pv"]), "hf_tok_s": n / statistics.median(times["hf"]),
            "repeats": repeats}


def hf_activation_pass(hf, chats, batch: int, device: str) -> torch.Tensor:
    """Per-layer response means, the paper code's way but batched: output_hidden_states."""
    from pvlens.core.batching import left_pad

    out = []
    with torch.inference_mode():
        for s in range(0, len(chats), batch):
            part = chats[s : s + batch]
            tokens, positions = left_pad(part, 0, device)
            hs = hf(tokens, attention_mask=(positions >= 0).long(), output_hidden_states=True).hidden_states
            stack = torch.stack(hs[1:], 1).float()  # [batch, layers, pos, d]
            plen = torch.tensor([c.prompt_len for c in part], device=device)[:, None]
            sel = (positions >= plen).float()[:, None, :, None]
            out.append((stack * sel).sum(2) / sel.sum(2))
    return torch.cat(out)


def bench_activations(model, hf, tok, n: int, device: str, dtype: torch.dtype) -> dict[str, float]:
    from pvlens.core.activations import collect

    chats = conversations(tok, n)
    n_tok = sum(len(c.ids) for c in chats)
    t_pv = timed(lambda: collect(model, chats, ("response_avg",), batch_size=16, dtype=dtype,
                                 progress=False), device)
    t_hf = timed(lambda: hf_activation_pass(hf, chats, 16, device), device)
    return {"pvlens_tok_s": n_tok / t_pv, "hf_tok_s": n_tok / t_hf}


def streaming_memory(model, tok, sizes: Sequence[int], device: str, dtype: torch.dtype
                     ) -> tuple[dict[str, float], dict[str, float], dict[str, float], dict[str, float]]:
    """The all-layer activation pass at each dataset size, run twice: its extra peak RSS (MB,
    first run), the size of its result ([n, n_layers, d_model] float32, which grows with n by
    design), its extra peak live heap (`heap_in_use_mb`; on CUDA the allocated peak) in the
    second run, and the heap the first run left allocated after returning.

    Streaming means the extra beyond the result stays flat. RSS also keeps memory the allocator
    freed but did not return, so the live heap is the measure of what the pass holds. The
    second run is the one measured because the math libraries keep per-shape caches (oneDNN's
    bf16 matmul primitives and weight reorders): the first pass over new batch shapes leaves
    them behind (the retained column), a rerun adds none, and they stop growing once every
    shape has been seen — library state, not the pass's data."""
    from pvlens.core.activations import collect

    extra, result, heap, retained = {}, {}, {}, {}
    for n in sizes:
        chats = conversations(tok, n)
        for run in ("cold", "warm"):
            gc.collect()
            before = heap_in_use_mb()
            with PeakMemory(device) as mem:
                got = collect(model, chats, ("response_avg",), batch_size=16, dtype=dtype, progress=False)
            result[str(n)] = got["response_avg"].numel() * 4 / 2**20
            del got
            gc.collect()
            if run == "cold":
                extra[str(n)], retained[str(n)] = mem.extra, heap_in_use_mb() - before
            else:
                heap[str(n)] = mem.heap_extra
    return extra, result, heap, retained


def bench_lora(model, hf, tok, device: str) -> dict[str, float]:
    """Seconds per optimiser step (4 conversations, one micro-batch), second of two steps."""
    import peft

    from pvlens.finetune import LoraConfig, add_lora
    from pvlens.finetune.data import collate
    from pvlens.finetune.train import batch_loss_terms

    chats = conversations(tok, 4)
    batch = collate(chats, list(range(4)), tok.pad_token_id, "right")
    batch = type(batch)(**{k: v.to(device) if isinstance(v, torch.Tensor) else v
                           for k, v in vars(batch).items()})
    handle = add_lora(model, LoraConfig(r=32, alpha=64, rslora=True))
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=32, lora_alpha=64, use_rslora=True,
                                                 target_modules=MODULES, lora_dropout=0.0))
    opt_pv = torch.optim.AdamW(handle.parameters(), lr=1e-5)
    opt_hf = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-5)
    inner = pm.base_model.model

    def pv() -> None:
        with handle.factored():
            ce, _ = batch_loss_terms(model, batch, "right")
            (ce / batch.n_targets).backward()
        opt_pv.step()
        opt_pv.zero_grad(set_to_none=True)

    def ref() -> None:
        hidden = inner.model(input_ids=batch.tokens, attention_mask=batch.attention_mask).last_hidden_state
        sel = batch.target_mask
        ce = F.cross_entropy(inner.lm_head(hidden[sel]).float(),
                             torch.roll(batch.tokens, -1, dims=1)[sel], reduction="sum")
        (ce / batch.n_targets).backward()
        opt_hf.step()
        opt_hf.zero_grad(set_to_none=True)

    model.train()
    pm.train()
    times = {}
    for side, fn in (("pvlens", pv), ("hf", ref)):
        fn()  # first step allocates optimiser state
        times[f"{side}_step_s"] = timed(fn, device)
    return times


def run(models: Sequence[str], device: str = "cpu", dtype: str = "float32",
        new_tokens: Sequence[int] = (16, 8, 4), batches: Sequence[int] = (1, 8, 64),
        act_prompts: int = 32, stream_sizes: Sequence[int] = (100, 400), repeats: int = 3) -> dict[str, Any]:
    """Every measurement for every model; returns the results dict (also what --out writes)."""
    from pvlens.core.device import as_dtype
    from pvlens.core.engine import engine_for
    from pvlens.core.machine import machine_facts

    dt = as_dtype(dtype)
    out: dict[str, Any] = {"device": device, "dtype": dtype, "threads": torch.get_num_threads(),
                           "machine": machine_facts(),
                           "load_average_1min_before": os.getloadavg()[0], "models": {}}
    for name in models:
        with PeakMemory(device) as build_mem:
            model, hf, tok = build(name, device, dt)
        n_params = sum(p.numel() for p in hf.parameters())
        row: dict[str, Any] = {"params": n_params, "build_peak_mb": build_mem.peak}
        # one-time: the fast engine packs the weights on its first call (cached on the model)
        row["engine_pack_s"] = timed(functools.partial(engine_for, model, dt), device)
        row["generation"] = {str(b): bench_generation(model, hf, tok, b, n, device, repeats)
                             for b, n in zip(batches, new_tokens, strict=True)}
        row["activations"] = bench_activations(model, hf, tok, act_prompts, device, dt)
        (row["stream_extra_mb"], row["stream_result_mb"], row["stream_heap_mb"],
         row["stream_heap_retained_mb"]) = streaming_memory(model, tok, stream_sizes, device, dt)
        row["lora"] = bench_lora(model, hf, tok, device)
        row["peak_mb"] = (torch.cuda.max_memory_allocated() / 2**20 if device.startswith("cuda")
                          else _max_rss_mb())
        out["models"][name] = row
        print(json.dumps({name: row}), flush=True)
        del model, hf
    out["load_average_1min_after"] = os.getloadavg()[0]
    return out


def _max_rss_mb() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--models", default="qwen2.5-0.5b", help=f"comma list of {', '.join(CONFIGS)}")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--new-tokens", default="16,8,4", help="new tokens at batch 1,8,64")
    ap.add_argument("--act-prompts", type=int, default=32)
    ap.add_argument("--stream-sizes", default="100,400")
    ap.add_argument("--repeats", type=int, default=3, help="timed generation calls per side (median)")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    res = run(args.models.split(","), args.device, args.dtype,
              [int(x) for x in args.new_tokens.split(",")], (1, 8, 64), args.act_prompts,
              [int(x) for x in args.stream_sizes.split(",")], args.repeats)
    if args.out:
        from pvlens.io.atomic import write_json_atomic

        args.out.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(args.out, res)
    print(json.dumps(res, indent=1))


if __name__ == "__main__":
    main()
