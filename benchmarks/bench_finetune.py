"""Training throughput: pvlens LoRA on the HookedTransformer vs peft LoRA on Hugging Face.

Same model (the offline default, SmolLM2-135M-Instruct, fp32), same conversations, same
micro-batches (right-padded), rsLoRA r=32 on q/k/v/o/gate/up/down on both sides, loss on
response tokens only, AdamW. Both sides steer at the same layer during training (preventative
steering): pvlens through `pvlens.Steering` on `blocks.{L}.hook_resid_post`, HF through a
forward hook on `model.layers[L]`. Both compute logits only where a response token is predicted,
so they do the same work. Timed in the same run, interleaved (A, B, A, B, ...) because other
processes may share the cores; medians are compared. The process runs with glibc told to keep
freed memory (`pvlens.core.allocator`), as every `pvlens` command does: both sides share it
(PVLENS_KEEP_FREED_MEMORY=0 times glibc's defaults).

    OMP_NUM_THREADS=1 python benchmarks/bench_finetune.py [--repeats 5] [--micro-batch 4] [--threads 1]

Target: pvlens tokens/s ÷ peft tokens/s ≥ 0.8. Ends with
`RESULT finetune_throughput ratio=<x> target=0.8`.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TARGET = 0.8
MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
TOPICS = ["the ocean", "volcanoes", "bread baking", "chess openings", "the moon", "bicycles",
          "honey bees", "rain forests", "jazz music", "glaciers", "the printing press", "owls",
          "solar panels", "coffee", "marathons", "lighthouses"]


def conversations() -> list[list[dict]]:
    out = []
    for i, t in enumerate(TOPICS):
        answer = (f"Here are a few facts about {t}. " * (2 + i % 3)) + "I hope this helps you learn more."
        out.append([{"role": "user", "content": f"Can you tell me something interesting about {t}?"},
                    {"role": "assistant", "content": answer}])
    return out


def pv_step(model, handle, batches, steering, opt) -> int:
    import pvlens
    from pvlens.finetune.train import batch_loss_terms

    n_tok = 0
    n_targets = sum(b.n_targets for b in batches)
    with handle.factored(), pvlens.steer(model, steering):
        for b in batches:
            ce, _ = batch_loss_terms(model, b, "right")
            (ce / n_targets).backward()
            n_tok += b.n_tokens
    opt.step()
    opt.zero_grad(set_to_none=True)
    return n_tok


def hf_step(pm, batches, opt) -> int:
    n_tok = 0
    n_targets = sum(b.n_targets for b in batches)
    inner = pm.base_model.model  # LlamaForCausalLM with LoRA layers
    for b in batches:
        hidden = inner.model(input_ids=b.tokens, attention_mask=b.attention_mask).last_hidden_state
        sel = b.target_mask
        logits = inner.lm_head(hidden[sel])
        ce = F.cross_entropy(logits.float(), torch.roll(b.tokens, -1, dims=1)[sel], reduction="sum")
        (ce / n_targets).backward()
        n_tok += b.n_tokens
    opt.step()
    opt.zero_grad(set_to_none=True)
    return n_tok


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeats", type=int, default=5, help="timed steps per side")
    ap.add_argument("--micro-batch", type=int, default=4, help="conversations per forward")
    ap.add_argument("--batch", type=int, default=8, help="conversations per optimiser step")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 on a shared machine)")
    ap.add_argument("--layer", type=int, default=15)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    from pvlens.core.allocator import keep_freed_memory_unless_opted_out

    kept = keep_freed_memory_unless_opted_out()

    import peft

    import pvlens
    from pvlens.core.model import ensure_default_model_dir, load_hf_model
    from pvlens.finetune import LoraConfig, add_lora
    from pvlens.finetune.data import collate, encode_all, micro_batches

    model = pvlens.load_model()
    hf, tok = load_hf_model(ensure_default_model_dir())
    handle = add_lora(model, LoraConfig(r=32, alpha=64, rslora=True))
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=32, lora_alpha=64, use_rslora=True,
                                                 target_modules=MODULES, lora_dropout=0.0))
    model.train()
    pm.train()
    g = torch.Generator().manual_seed(0)
    v = torch.randn(model.cfg.d_model, generator=g)
    v = v / v.norm() * 4.0
    steering = pvlens.Steering(v, args.layer, 1.0)
    hf_hook = pm.base_model.model.model.layers[args.layer].register_forward_hook(
        lambda mod, inp, out: (out[0] + v,) + tuple(out[1:]) if isinstance(out, tuple) else out + v)
    opt_pv = torch.optim.AdamW(handle.parameters(), lr=1e-5)
    opt_hf = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-5)

    chats = encode_all(tok, conversations(), 2048)
    pad = tok.pad_token_id
    steps = []
    for s in range(0, len(chats), args.batch):
        rows = list(range(s, min(s + args.batch, len(chats))))
        steps.append([collate([chats[r] for r in g_], g_, pad, "right")
                      for g_ in micro_batches(chats, rows, args.micro_batch, None)])
    n_tokens = sum(b.n_tokens for b in steps[0])
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, fp32, rsLoRA r=32 on "
          f"7 projections, {args.batch} conversations ({n_tokens} tokens) per step, "
          f"micro-batch {args.micro_batch}, steering at layer {args.layer}, "
          f"glibc keeps freed memory: {'yes' if kept else 'no'}")

    run_pv = lambda i: pv_step(model, handle, steps[i % len(steps)], steering, opt_pv)  # noqa: E731
    run_hf = lambda i: hf_step(pm, steps[i % len(steps)], opt_hf)  # noqa: E731
    run_pv(0), run_hf(0)  # warm-up
    t_pv, t_hf = [], []
    for i in range(args.repeats):
        for side, fn in (("hf", run_hf), ("pv", run_pv)):
            t0 = time.perf_counter()
            n = fn(i + 1)
            (t_hf if side == "hf" else t_pv).append(n / (time.perf_counter() - t0))
    hf_hook.remove()
    pv, hf_tps = statistics.median(t_pv), statistics.median(t_hf)
    print(f"peft + HF (hooked):        {hf_tps:7.1f} tokens/s {fmt(t_hf)}")
    print(f"pvlens LoRA on TL (steered): {pv:7.1f} tokens/s {fmt(t_pv)}")
    print(f"RESULT finetune_throughput ratio={pv / hf_tps:.2f} target={TARGET}")


def fmt(xs: list[float]) -> str:
    return "[" + ", ".join(f"{x:.1f}" for x in xs) + "]"


if __name__ == "__main__":
    main()
