"""How far replies depend on the batch: the same rows, seeds and model at several slot counts.

`bulk_generate` gives every row its own seeded generator, so a row's random draws never depend
on its batch. Its logits can, in the last bits: matmul blocking and summation order change with
the batch's shape (and with shared-prefix prefill), and a sampled token whose draw falls that
close to a CDF boundary flips, after which the reply goes its own way. This script measures how
often that happens on the default model, for sampled and greedy decoding:

- workload: the evil trait's extraction plan (--instructions × --questions × --samples, pos and
  neg), --new-tokens tokens, fp32 (the compute dtype the replications pin);
- runs: `bulk_generate` at each of --slots (prefix sharing on, the default), and at the largest
  slot count with sharing off (a no-op hook attached, which turns it off);
- reported: for each pair of runs, how many replies are token-identical, and where the first
  differing token of the others sits.

    python benchmarks/bench_invariance.py [--slots 16,32,80] [--out results/bench_bulk/invariance.json]

Ends with `RESULT sampled_replies_identical ratio=<fewest identical / rows over the pairs>` and
the same for greedy; there is no target: this documents a property, it does not race anything.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def first_difference(a: list[int], b: list[int]) -> int | None:
    """Index of the first differing token (None when equal)."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def compare(runs: dict[str, list[list[int]]]) -> list[dict]:
    """Identical replies and first-difference positions for every pair of runs."""
    out = []
    for (na, a), (nb, b) in itertools.combinations(runs.items(), 2):
        diffs = [d for x, y in zip(a, b, strict=True) if (d := first_difference(x, y)) is not None]
        out.append({"a": na, "b": nb, "rows": len(a), "identical": len(a) - len(diffs),
                    "first_difference_at": sorted(diffs)})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--instructions", type=int, default=5)
    ap.add_argument("--questions", type=int, default=4)
    ap.add_argument("--samples", type=int, default=2)
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--slots", default="16,32,80")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also write the numbers as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    import pvlens
    from pvlens.core.bulk import bulk_generate
    from pvlens.core.chat import encode_prompt
    from pvlens.core.config import SamplingConfig
    from pvlens.core.machine import machine_facts
    from pvlens.traits import load_trait
    from pvlens.vectors.rollouts import plan

    model = pvlens.load_model(dtype=torch.float32)
    spec = load_trait("evil")
    todo = plan(spec, args.questions, args.instructions, args.samples)
    prompts = [encode_prompt(model.tokenizer, spec.extraction_questions[q], spec.system_prompt(pol, i))
               for pol, i, q, _ in todo]
    seeds = list(range(len(prompts)))
    slots = [int(x) for x in args.slots.split(",")]
    results: dict = {"rows": len(prompts), "new_tokens": args.new_tokens, "dtype": "float32",
                     "threads": args.threads, "slots": slots, "machine": machine_facts()}
    for name, temperature in (("sampled", 1.0), ("greedy", 0.0)):
        s = SamplingConfig(max_new_tokens=args.new_tokens, temperature=temperature, top_p=1.0, seed=0)
        runs: dict[str, list[list[int]]] = {}
        for n in slots:
            res = bulk_generate(model, prompts, s, batch_size=n, dtype=torch.float32, row_seeds=seeds)
            runs[f"{n} slots"] = [c.response_ids for c in res.chats]
        with model.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: x)]):
            res = bulk_generate(model, prompts, s, batch_size=max(slots), dtype=torch.float32, row_seeds=seeds)
        runs[f"{max(slots)} slots, no sharing"] = [c.response_ids for c in res.chats]
        pairs = compare(runs)
        results[name] = pairs
        for p in pairs:
            print(f"{name}: {p['a']} vs {p['b']}: {p['identical']}/{p['rows']} identical; "
                  f"first differences at tokens {p['first_difference_at']}", flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    for name in ("sampled", "greedy"):
        worst = min(p["identical"] / p["rows"] for p in results[name])
        print(f"RESULT {name}_replies_identical ratio={worst:.3f}")


if __name__ == "__main__":
    main()
