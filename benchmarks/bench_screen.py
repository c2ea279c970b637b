"""Sample-level ΔP: pvlens vs the paper code's way, on the default model.

Both sides get the same (prompt, dataset reply, base reply) token ids; the base replies are
generated (and cached) before any timing. The paper code's way (persona_vectors
`eval/cal_projection.py`): one unbatched fp32 Hugging Face forward per conversation with
`output_hidden_states=True` and gradients on, the response mean of `hidden_states[L+1]`,
for the dataset reply and again for the base reply. pvlens: `pvlens.trainsets.screen.paired_activations`
— batched by length, the prompt run once into a KV cache that both replies continue, every
pass stopping at the projected layer, no unembedding.

Timings alternate between the two and keep each side's best of `--repeats` (other processes
share this machine's cores). Agreement: Spearman ρ between the two sample rankings and the
relative difference of the dataset ΔP.

    python benchmarks/bench_screen.py [--n 48] [--layer L] [--vectors runs/evil] [--data FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

os.environ.setdefault("HF_HUB_OFFLINE", "1")

ROOT = Path(__file__).resolve().parents[1]
TARGET = 5.0


def load_samples(args, n: int) -> list[list[dict]]:
    """Dataset conversations: a given JSONL, the shipped evil Level II set, or prompts from the
    SAE prompt list whose 'dataset replies' are base replies of other prompts (shuffled)."""
    from pvlens.trainsets.screen import iter_samples

    for path in [args.data, ROOT / "pvlens/data/datasets/evil/level_ii.jsonl"]:
        if path and Path(path).exists():
            rows = [m for _, m in iter_samples(path)][:n]
            print(f"data: {path} ({len(rows)} samples)")
            return rows
    prompts = [json.loads(x)["prompt"] for x in (ROOT / "pvlens/data/sae_prompts.jsonl").read_text().splitlines()]
    print(f"data: {n} SAE prompts, replies borrowed from other prompts' base replies")
    return [[{"role": "user", "content": p}] for p in prompts[:n]]


def paper_way(hf, chats_data, chats_base, layer: int, u: torch.Tensor) -> list[float]:
    """One unbatched fp32 HF forward per conversation, all hidden states, gradients on."""
    out = []
    for d, b in zip(chats_data, chats_base, strict=True):
        proj = []
        for c in (d, b):
            res = hf(torch.tensor([c.ids]), output_hidden_states=True)
            h = res.hidden_states[layer + 1][0, c.prompt_len :].mean(0)
            proj.append(float(h.detach() @ u))
        out.append(proj[0] - proj[1])
    return out


def pvlens_way(model, chats_data, chats_base, layer: int, u: torch.Tensor, max_batch: int) -> list[float]:
    from pvlens.trainsets.screen import paired_activations

    acts = paired_activations(model, chats_data, chats_base, layer, max_batch=max_batch)
    return ((acts["data"] - acts["base"]).double() @ u.double()).tolist()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=48, help="samples")
    ap.add_argument("--layer", type=int, default=None, help="block index (default: the vectors' choice / 15)")
    ap.add_argument("--vectors", default=None, help="vectors file or folder (default: runs/evil, else random)")
    ap.add_argument("--data", default=None, help="JSONL messages file to screen")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per side (best is kept)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both sides")
    ap.add_argument("--max-batch", type=int, default=16, help="pvlens batch size")
    ap.add_argument("--max-new-tokens", type=int, default=64, help="base reply length")
    ap.add_argument("--cache", default=str(ROOT / "runs/bench/screen_cache"), help="base-reply cache")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import pvlens
    from pvlens.core.chat import encode_conversation
    from pvlens.core.model import default_model_dir, load_hf_model
    from pvlens.monitor import default_layer, unit_direction
    from pvlens.trainsets.screen import BaseReplies
    from pvlens.vectors import PersonaVectors

    model = pvlens.load_model()
    hf, _ = load_hf_model(default_model_dir())
    tok = model.tokenizer
    vec_path = args.vectors or (ROOT / "runs/evil" if (ROOT / "runs/evil/vectors.safetensors").exists() else None)
    if vec_path is not None:
        vecs = PersonaVectors.load(vec_path)
        layer = args.layer if args.layer is not None else default_layer(vec_path, model.cfg.n_layers)
        print(f"vectors: {vec_path}, layer {layer}")
    else:
        g = torch.Generator().manual_seed(0)
        vecs = PersonaVectors({"response_avg": torch.randn(model.cfg.n_layers, model.cfg.d_model, generator=g)})
        layer = args.layer if args.layer is not None else 15
        print(f"vectors: random direction (no runs/evil yet), layer {layer}")
    u = unit_direction(vecs, layer)

    rows = load_samples(args, args.n)
    prompts = [m[:-1] if m[-1]["role"] == "assistant" else m for m in rows]
    t0 = time.time()
    base = BaseReplies(model, args.cache, args.max_new_tokens).get(prompts)
    print(f"base replies ready ({time.time() - t0:.0f} s incl. any generation; cached in {args.cache})")
    if rows[0][-1]["role"] == "assistant":
        replies = [m[-1]["content"] for m in rows]
    else:
        replies = base[1:] + base[:1]
    chats_d = [encode_conversation(tok, [*p, {"role": "assistant", "content": r}]) for p, r in zip(prompts, replies, strict=True)]
    chats_b = [encode_conversation(tok, [*p, {"role": "assistant", "content": r}]) for p, r in zip(prompts, base, strict=True)]
    ntok = sum(len(c.ids) for c in chats_d + chats_b)
    print(f"{len(rows)} samples, {ntok} tokens over both sides, mean prompt {np.mean([c.prompt_len for c in chats_d]):.0f}")

    # warm-up (engine packing, allocator) outside the timings
    pvlens_way(model, chats_d[:4], chats_b[:4], layer, u, args.max_batch)
    paper_way(hf, chats_d[:1], chats_b[:1], layer, u)
    t_paper, t_ours = [], []
    for rep in range(args.repeats):
        t = time.perf_counter()
        ref = paper_way(hf, chats_d, chats_b, layer, u)
        t_paper.append(time.perf_counter() - t)
        t = time.perf_counter()
        ours = pvlens_way(model, chats_d, chats_b, layer, u, args.max_batch)
        t_ours.append(time.perf_counter() - t)
        print(f"  run {rep}: paper way {t_paper[-1]:.1f} s, pvlens {t_ours[-1]:.1f} s")
    n = len(rows)
    sps_paper, sps_ours = n / min(t_paper), n / min(t_ours)
    ratio = sps_ours / sps_paper
    rho = float(spearmanr(ref, ours).statistic)
    dp_ref, dp_ours = float(np.mean(ref)), float(np.mean(ours))
    rel = abs(dp_ours - dp_ref) / max(abs(dp_ref), 1e-12)
    print(f"paper way: {sps_paper:.2f} samples/s   pvlens: {sps_ours:.2f} samples/s   "
          f"(median ratio {np.median(t_paper) / np.median(t_ours):.2f})")
    print(f"agreement: Spearman {rho:.5f} (need ≥ 0.99), dataset ΔP {dp_ours:.4f} vs {dp_ref:.4f} "
          f"(rel. diff {rel:.2e}, need ≤ 1e-2)")
    ok = ratio >= TARGET and rho >= 0.99 and rel <= 0.01
    out = ROOT / "benchmarks/results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_screen.json").write_text(json.dumps({
        "n": n, "layer": layer, "threads": args.threads, "paper_s": t_paper, "pvlens_s": t_ours,
        "samples_per_s": {"paper": sps_paper, "pvlens": sps_ours}, "ratio": ratio,
        "spearman": rho, "delta_p": {"paper": dp_ref, "pvlens": dp_ours}, "rel_diff": rel, "pass": ok,
    }, indent=2) + "\n")
    print(f"RESULT screen_samples_per_s ratio={ratio:.2f} target={TARGET}")


if __name__ == "__main__":
    main()
