"""Activation extraction speed: pvlens `activations.collect` vs the paper code's way.

Task: the response-average residual of every layer for N (prompt, response) pairs (default
256: the bundled judge-evaluation answers, seven traits, half of them trait-expressing).

- Paper code's way (persona_vectors `generate_vec.py`): one unbatched fp32 Hugging Face
  forward per conversation with `output_hidden_states=True` and gradients on, then the mean
  of `hidden_states[l + 1]` over the response tokens for every layer.
- pvlens: `pvlens.core.activations.collect(model, chats, ["response_avg"])` — batched by length,
  stopping after the last layer (no unembedding), in the dtype the hardware runs fastest
  (`pvlens.core.device.fast_dtype`: bf16 with AMX/avx512-bf16 or a bf16 GPU, else fp32),
  reduced in float64.

Agreement: both sides give the persona-style vector "mean over trait-expressing answers minus
mean over the others"; per-layer cosine between the two must be ≥ 0.999. Timings alternate
between the sides (other processes may share the cores) and the medians are compared.

    python benchmarks/bench_activations.py [--n 256] [--repeats 3] [--dtype auto]

Ends with `RESULT activations_response_avg ratio=<x> target=5.0` and
`RESULT activations_min_cosine ratio=<cos> target=0.999`.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TARGET = 5.0
MIN_COSINE = 0.999


def pairs(n: int) -> list[tuple[str, str, int]]:
    """(question, answer, label) rows, interleaved across the bundled traits."""
    files = sorted((ROOT / "pvlens/data/judge_eval").glob("*.jsonl"))
    per = [[json.loads(x) for x in f.read_text().splitlines() if x.strip()] for f in files]
    rows = [r for group in zip(*per, strict=False) for r in group]
    if len(rows) < n:
        raise SystemExit(f"only {len(rows)} bundled pairs; use --n {len(rows)} or less")
    return [(r["question"], r["answer"], int(r["label"])) for r in rows[:n]]


def paper_way(hf, chats) -> torch.Tensor:
    """[n, n_layers, d] response means, one gradient-tracking fp32 HF forward per sample."""
    out, last = [], {}
    # HF appends the *final-normed* output as the last hidden state; pvlens' last row is the
    # raw output of the last block (blocks.{L-1}.hook_resid_post). Keep the paper's forward
    # and swap in the last block's raw output so the two compare the same quantity.
    hook = hf.model.layers[-1].register_forward_hook(
        lambda _m, _i, o: last.__setitem__("h", o[0] if isinstance(o, tuple) else o))
    for c in chats:
        res = hf(torch.tensor([c.ids]), output_hidden_states=True)
        hs = (*res.hidden_states[1:-1], last["h"])  # index 0 is the embeddings
        out.append(torch.stack([h[0, c.prompt_len :].mean(0).detach() for h in hs]))
    hook.remove()
    return torch.stack(out)


def pvlens_way(model, chats, dtype) -> torch.Tensor:
    from pvlens.core.activations import collect

    return collect(model, chats, ["response_avg"], dtype=dtype, progress=False)["response_avg"]


def diff_of_means(acts: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    a = acts.double()
    return a[labels == 1].mean(0) - a[labels == 0].mean(0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=256, help="(prompt, response) pairs")
    ap.add_argument("--repeats", type=int, default=3, help="timed runs per side")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--dtype", default="auto", help="pvlens compute dtype: auto, float32, bfloat16")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import pvlens
    from pvlens.core.device import as_dtype, fast_dtype
    from pvlens.core.model import ensure_default_model_dir, load_hf_model

    model = pvlens.load_model()
    hf, _ = load_hf_model(ensure_default_model_dir())
    dtype = as_dtype(args.dtype, model.W_E.device)
    rows = pairs(args.n)
    chats = [pvlens.encode_conversation(model.tokenizer, [{"role": "user", "content": q},
                                                          {"role": "assistant", "content": a}])
             for q, a, _ in rows]
    labels = torch.tensor([lab for *_, lab in rows])
    n_tok = sum(len(c.ids) for c in chats)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, pvlens dtype {dtype} "
          f"(auto → {fast_dtype('cpu')} on this CPU); {len(chats)} pairs, {n_tok} tokens "
          f"(mean {n_tok / len(chats):.0f}, response mean "
          f"{sum(c.response_len for c in chats) / len(chats):.0f})")

    paper_way(hf, chats[:2]), pvlens_way(model, chats[:8], dtype)  # warm-up
    t_paper, t_ours = [], []
    for rep in range(args.repeats):
        t = time.perf_counter()
        ref = paper_way(hf, chats)
        t_paper.append(time.perf_counter() - t)
        t = time.perf_counter()
        ours = pvlens_way(model, chats, dtype)
        t_ours.append(time.perf_counter() - t)
        print(f"  run {rep}: paper way {t_paper[-1]:.1f} s, pvlens {t_ours[-1]:.1f} s")

    cos = torch.nn.functional.cosine_similarity(diff_of_means(ours, labels),
                                                diff_of_means(ref, labels), dim=-1)
    err = (ours.double() - ref.double()).abs().max().item()
    ratio = statistics.median(t_paper) / statistics.median(t_ours)
    print(f"paper way median {statistics.median(t_paper):.1f} s, pvlens median "
          f"{statistics.median(t_ours):.1f} s; per-sample max |Δ| {err:.2e}; per-layer cosine of "
          f"the difference of means: min {cos.min().item():.6f}, mean {cos.mean().item():.6f}")
    if cos.min().item() < MIN_COSINE:
        print(f"WARNING: cosine below {MIN_COSINE} at layers "
              f"{(cos < MIN_COSINE).nonzero().flatten().tolist()}")
    print(f"RESULT activations_response_avg ratio={ratio:.2f} target={TARGET}")
    print(f"RESULT activations_min_cosine ratio={cos.min().item():.6f} target={MIN_COSINE}")


if __name__ == "__main__":
    main()
