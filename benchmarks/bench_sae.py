"""SAE training throughput on the default model (SmolLM2-135M-Instruct), layer 15.

Three numbers, in tokens (activations) per second:
1. activations: `layer_activations` (fast engine, stopped after block 15, in pvlens's compute
   dtype for the machine: bf16 where it runs fast) over chat-templated prompts, against the
   plain Hugging Face forward of the same 16 decoder layers with `output_hidden_states`, loaded
   in that same dtype, in length-sorted batches under the same token budget (ratio: pvlens / HF;
   each side warmed up untimed once, then medians of 3 interleaved passes);
2. sae_step: BatchTopK training steps (sae_lens) on activations already in memory;
3. end_to_end: `train_sae` for one epoch of a fresh corpus — model passes, shuffling, scaling
   estimate and SAE steps together, which is what a first epoch costs.

    python benchmarks/bench_sae.py [--n-prompts 128] [--threads 1] [--out results/bench_sae/results.json]

Ends with `RESULT sae_<name> ...` lines. Rates are per wall-clock second, so they fall when other
processes share the cores: the load average before and after is printed and, with --out, kept
with the RESULT lines in a file docs/sae.md's table is generated from
(`python -m pvlens.io.doctables docs/sae.md`).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
LAYER = 15


def corpus_file(tmp: Path, n: int) -> Path:
    """Built-in prompts as one-turn conversations with a short fixed reply (no generation)."""
    rows = (ROOT / "pvlens/data/sae_prompts.jsonl").read_text().splitlines()[:n]
    path = tmp / "bench_corpus.jsonl"
    with path.open("w") as f:
        for r in rows:
            q = json.loads(r)["prompt"]
            reply = f"Here is a short answer about this: {q.lower()} It depends on the details."
            f.write(json.dumps({"messages": [{"role": "user", "content": q},
                                             {"role": "assistant", "content": reply}]}) + "\n")
    return path


def bench_activations(model, docs, dtype: torch.dtype, rounds: int = 3) -> tuple[float, float]:
    """(pvlens, HF) activation tokens per second, both sides computing in `dtype`: medians of
    `rounds` interleaved passes over `docs`, after one untimed pass of each side over a few
    documents (pvlens packs its engine's weights there, both sides set up their kernels), so
    neither side's one-time setup is timed against the other's warm passes."""
    import statistics

    from pvlens.core.activations import token_batches
    from pvlens.core.batching import left_pad
    from pvlens.core.model import default_model_dir, load_hf_model
    from pvlens.sae.provider import layer_activations

    hf, _ = load_hf_model(default_model_dir(), dtype=dtype)
    hf.model.layers = hf.model.layers[: LAYER + 1]  # same depth as the engine's early stop
    hf.config.num_hidden_layers = LAYER + 1
    pad = model.tokenizer.pad_token_id or 0

    def ours(part) -> int:
        return sum(c.acts.shape[0] for c in layer_activations(model, part, LAYER, dtype=dtype))

    def theirs(part) -> int:
        with torch.inference_mode():
            for group in token_batches([len(d.ids) for d in part], 8192, 64):
                ids, positions = left_pad([part[i].ids for i in group], pad, "cpu")
                mask = (positions >= 0).long()
                out = hf.model(ids, attention_mask=mask, output_hidden_states=True)
                _ = out.hidden_states[LAYER + 1][mask.bool()]
        return sum(len(d.ids) - 1 for d in part)

    rates: dict[str, list[float]] = {"pvlens": [], "hf": []}
    for run in (ours, theirs):
        run(docs[:16])  # untimed warm-up
    for _ in range(rounds):
        for side, run in (("pvlens", ours), ("hf", theirs)):
            t0 = time.perf_counter()
            n = run(docs)
            rates[side].append(n / (time.perf_counter() - t0))
    print("activation passes, tokens/s per round: "
          + "; ".join(f"{k} " + ", ".join(f"{r:.0f}" for r in v) for k, v in rates.items()))
    return statistics.median(rates["pvlens"]), statistics.median(rates["hf"])


def bench_steps(d_in: int, steps: int = 10, batch: int = 2048) -> float:
    from pvlens.sae.train import SaeTrainConfig, _Trainer, build_sae, trainer_config

    class _M:  # build_sae needs only the config's sizes and names
        class cfg:
            d_model = d_in
            n_layers = LAYER + 1
            model_name = "bench"

    cfg = SaeTrainConfig(layer=LAYER, k=32, batch_size=batch, training_tokens=batch * steps,
                         n_checkpoints=0)
    sae = build_sae(cfg, _M())
    data = torch.randn(batch * 4, d_in) * 0.5
    tmp = Path(os.environ.get("TMPDIR", "/tmp")) / "pvlens-bench-sae"
    tmp.mkdir(exist_ok=True)
    trainer = _Trainer(cfg=trainer_config(cfg, tmp), sae=sae,
                       data_provider=iter(data[torch.randint(0, len(data), (batch,))] for _ in range(10**9)),
                       log_path=tmp / "log.jsonl", log_every=10**9, progress=False)
    trainer.activation_scaler.scaling_factor = 1.0
    t0 = time.perf_counter()
    trainer.fit()
    return batch * steps / (time.perf_counter() - t0)


def bench_end_to_end(model, corpus: Path, tmp: Path, n_tokens: int) -> float:
    from pvlens.sae.train import SaeTrainConfig, train_sae

    batch = 512
    cfg = SaeTrainConfig(layer=LAYER, k=32, batch_size=batch, training_tokens=n_tokens // batch * batch,
                         buffer_tokens=2048, scaling_tokens=1024, holdout_fraction=0.0,
                         n_checkpoints=0)
    t0 = time.perf_counter()
    train_sae(model, corpus, cfg, tmp / "sae", resume=False, progress=False)
    return cfg.training_tokens / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-prompts", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=None, help="also write the RESULT lines, machine and load as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    load0, t0 = os.getloadavg()[0], time.perf_counter()

    import tempfile

    import pvlens
    from pvlens.sae.corpus import read_documents
    from pvlens.sae.provider import sae_compute_dtype

    model = pvlens.load_model()
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        corpus = corpus_file(tmp, args.n_prompts)
        docs = read_documents(corpus, model.tokenizer)
        n_tokens = sum(len(x.ids) - 1 for x in docs)
        print(f"corpus: {len(docs)} conversations, {n_tokens} tokens after excluding position 0")
        dtype = sae_compute_dtype(model, "auto")  # what `layer_activations` runs in by default
        ours, hf = bench_activations(model, docs, dtype)
        steps = bench_steps(model.cfg.d_model)
        e2e = bench_end_to_end(model, corpus, tmp, n_tokens)
    lines = [f"RESULT sae_activations tokens_per_s={ours:.0f} hf_tokens_per_s={hf:.0f} ratio={ours / hf:.2f} "
             f"dtype={str(dtype).removeprefix('torch.')}",
             f"RESULT sae_step tokens_per_s={steps:.0f} d_sae={8 * model.cfg.d_model} batch=2048",
             f"RESULT sae_end_to_end tokens_per_s={e2e:.0f} (first epoch: activations + training)"]
    print("\n".join(lines))
    if args.out:
        write_results(args, lines, load0, time.perf_counter() - t0, n_tokens)


def write_results(args: argparse.Namespace, lines: list[str], load0: float, seconds: float, n_tokens: int) -> None:
    """The RESULT lines in the shape of a `pvlens replicate` benchmarks record (so the docs'
    `bench` renderer shows them), with the machine, the load around the run and the workload."""
    from pvlens.core.machine import machine_facts
    from pvlens.io.atomic import write_json_atomic
    from pvlens.replicate.benchmarks import parse_results

    script = {"args": ["--n-prompts", str(args.n_prompts), "--threads", str(args.threads)],
              "seconds": round(seconds, 1), "load_before": load0, "load_after": os.getloadavg()[0],
              "tokens_after_position_0": n_tokens, "results": parse_results("\n".join(lines))}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(args.out, {"results": {**machine_facts(), "threads": args.threads,
                                             "scripts": {"bench_sae": script}}})


if __name__ == "__main__":
    main()
