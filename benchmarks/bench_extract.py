"""Extraction end-to-end time, split by stage: `pvlens.vectors.extract` vs a paper-code-style pipeline.

Both sides run the same small plan on the default model (SmolLM2-135M-Instruct): the trait's
first --questions extraction questions × --instructions instruction pairs × --samples samples,
pos and neg, --new-tokens tokens per reply, sampled at temperature 1.0 / top_p 1.0, judged by
the same offline judge (disk cache off, so every run pays), filtered by the same rule, reduced
to the three per-layer reductions and a difference of means.

- pvlens: `pvlens.vectors.extract.extract` as the CLI runs it (KV-cached fast engine with
  continuous batching at its default slot count, repeated prompts and shared system prompts
  prefilled once; batched activation pass in `pvlens.core.device.fast_dtype`, no unembedding). Stage times come from its
  manifest; "other" = filter + difference of means + split-half + writing files.
- Paper-code style on CPU: the public persona_vectors code samples with vLLM (GPU only, not
  installable here), so plain batched Hugging Face `generate` (sampling, top_k off) stands in
  for it, given the whole plan as one batch as vLLM would schedule it (the fastest of batch 32,
  40 and 80 in one uncommitted fp32 measurement on an AMX Xeon; `--hf-batch-size` tries others); the judge is the same offline judge (the paper's is an OpenAI API call, which has no
  meaningful CPU timing); activations as `generate_vec.py` does them: one unbatched fp32 HF
  forward per kept sample with `output_hidden_states=True`, gradients on.

So the ratio measures pvlens's generation and activation engineering against stock HF on the
same CPU, not against the paper's GPU setup. The two sides draw different samples (different
samplers), so their kept counts can differ; both are printed.

    python benchmarks/bench_extract.py [--trait evil] [--questions 4] [--instructions 5]
        [--samples 2] [--new-tokens 48] [--no-baseline]

Ends with `RESULT extract_generate_vs_hf ratio=<paper-style generate s / pvlens generate s>` (the
bulk-generation stage alone) and `RESULT extract_end_to_end ratio=<paper-style s / pvlens s>
target=1.5` (or, with --no-baseline, `RESULT extract_generate_share ratio=<share> target=none`).
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
STAGES = ("generate", "judge", "activations", "other")


def paper_style(hf, tok, spec, judge, cfg, batch: int | None) -> tuple[dict[str, float], dict[str, int]]:
    """Stage seconds and kept counts of the paper-code-style pipeline."""
    from pvlens.core.batching import left_pad
    from pvlens.core.chat import encode_prompt
    from pvlens.vectors.extract import filter_rollouts
    from pvlens.vectors.rollouts import Rollout, plan

    times: dict[str, float] = {}
    todo = plan(spec, cfg.n_questions, cfg.n_instructions, cfg.samples_per_pair)
    prompts = [encode_prompt(tok, spec.extraction_questions[q], spec.system_prompt(pol, i))
               for pol, i, q, _ in todo]
    pad = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id
    batch = batch or len(prompts)  # vLLM, the paper's sampler, schedules the whole plan at once

    t = time.perf_counter()
    torch.manual_seed(cfg.seed)
    texts: list[str] = []
    for start in range(0, len(prompts), batch):
        ids, positions = left_pad(prompts[start : start + batch], pad, "cpu")
        mask, width = (positions >= 0).long(), ids.shape[1]
        with torch.inference_mode():
            out = hf.generate(ids, attention_mask=mask, max_new_tokens=cfg.max_new_tokens,
                              do_sample=True, temperature=cfg.temperature, top_p=cfg.top_p,
                              top_k=0, pad_token_id=pad)
        texts += tok.batch_decode(out[:, width:], skip_special_tokens=True)
    times["generate"] = time.perf_counter() - t

    rollouts = [Rollout(pol, i, q, s, spec.extraction_questions[q], spec.system_prompt(pol, i),
                        c.text, text.strip())
                for (pol, i, q, s), c, text in zip(todo, prompts, texts, strict=True)]
    t = time.perf_counter()
    pairs = [(r.question, r.response) for r in rollouts]
    for r, ts, co in zip(rollouts, judge.score_many(pairs), judge.coherence_many(pairs),
                         strict=True):
        r.trait_score, r.coherence = ts, co
    times["judge"] = time.perf_counter() - t

    t = time.perf_counter()
    counts = filter_rollouts(rollouts, cfg)
    times["other"] = time.perf_counter() - t

    t = time.perf_counter()
    acts: dict[str, list[torch.Tensor]] = {"pos": [], "neg": []}
    for r in rollouts:
        if not r.kept:
            continue
        chat = r.chat(tok)
        res = hf(torch.tensor([chat.ids]), output_hidden_states=True)
        hs = torch.stack(res.hidden_states[1:])[:, 0]  # [n_layers, seq, d]; 0 = embeddings
        p = chat.prompt_len
        acts[r.polarity].append(torch.stack(
            [hs[:, p:].mean(1), hs[:, :p].mean(1), hs[:, p - 1]]).detach())
    times["activations"] = time.perf_counter() - t

    t = time.perf_counter()
    if acts["pos"] and acts["neg"]:
        _ = torch.stack(acts["pos"]).double().mean(0) - torch.stack(acts["neg"]).double().mean(0)
    times["other"] += time.perf_counter() - t
    return times, {"pos_kept": counts["pos_kept"], "neg_kept": counts["neg_kept"],
                   "total": len(rollouts)}


def pvlens_side(model, spec, judge, cfg) -> tuple[dict[str, float], dict[str, int]]:
    """Stage seconds and kept counts of `pvlens.vectors.extract` in a fresh folder."""
    from pvlens.vectors.extract import extract

    with tempfile.TemporaryDirectory() as out:
        t = time.perf_counter()
        extract(model, spec, out, judge=judge, cfg=cfg)
        total = time.perf_counter() - t
        manifest = json.loads((Path(out) / "manifest.json").read_text())
    tm = manifest["timings"]
    times = {"generate": tm["generate_s"], "judge": tm["judge_s"],
             "activations": tm["activations_s"]}
    times["other"] = max(total - sum(times.values()), 0.0)
    c = manifest["counts"]
    return times, {"pos_kept": c["pos_kept"], "neg_kept": c["neg_kept"],
                   "total": c["pos_total"] + c["neg_total"]}


def show(name: str, times: dict[str, float], counts: dict[str, int]) -> None:
    total = sum(times.values())
    parts = ", ".join(f"{k} {times[k]:.1f} s ({100 * times[k] / total:.0f} %)" for k in STAGES)
    print(f"{name}: end-to-end {total:.1f} s = {parts}; kept {counts['pos_kept']} pos / "
          f"{counts['neg_kept']} neg of {counts['total']}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trait", default="evil")
    ap.add_argument("--questions", type=int, default=4, help="extraction questions")
    ap.add_argument("--instructions", type=int, default=5, help="instruction pairs")
    ap.add_argument("--samples", type=int, default=2, help="samples per question × instruction")
    ap.add_argument("--new-tokens", type=int, default=48)
    ap.add_argument("--batch-size", type=int, default=None,
                    help="pvlens's generation slots (default: its own choice, as the CLI runs it)")
    ap.add_argument("--hf-batch-size", type=int, default=None,
                    help="HF generate batch (default: the whole plan in one batch, HF's fastest here)")
    ap.add_argument("--no-baseline", action="store_true", help="time pvlens's stages only")
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks/results/bench_extract.json")
    args = ap.parse_args()

    import pvlens
    from pvlens.judges import load_judge
    from pvlens.traits import load_trait
    from pvlens.vectors.extract import ExtractConfig

    spec = load_trait(args.trait)
    # pairing "sample", min_kept 2: a plan this small keeps few pairs on a 135M model, and the
    # benchmark times the stages; it does not need a usable vector.
    cfg = ExtractConfig(n_questions=args.questions, n_instructions=args.instructions,
                        samples_per_pair=args.samples, max_new_tokens=args.new_tokens,
                        batch_size=args.batch_size, pairing="sample", min_kept=2)
    t = time.perf_counter()
    model = pvlens.load_model()
    judge = load_judge("offline", trait=spec, cache=False)
    judge.score_many([("Hi", "Hello!")]), judge.coherence_many([("Hi", "Hello!")])  # warm-up
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}; trait {spec.name}; "
          f"{2 * args.questions * args.instructions * args.samples} rollouts × "
          f"{args.new_tokens} tokens; setup (model + judge, not timed) "
          f"{time.perf_counter() - t:.1f} s")

    results: dict = {"config": cfg.model_dump(mode="json"), "threads": torch.get_num_threads(),
                     "hf_batch_size": args.hf_batch_size}
    ours, ours_counts = pvlens_side(model, spec, judge, cfg)
    show("pvlens     ", ours, ours_counts)
    results["pvlens"] = {"seconds": ours, "counts": ours_counts}
    if not args.no_baseline:
        from pvlens.core.model import ensure_default_model_dir, load_hf_model

        hf, tok = load_hf_model(ensure_default_model_dir())
        ref, ref_counts = paper_style(hf, tok, spec, judge, cfg, args.hf_batch_size)
        show("paper-style", ref, ref_counts)
        results["paper_style"] = {"seconds": ref, "counts": ref_counts}
        for k in STAGES:
            print(f"  {k:12s} paper-style {ref[k]:7.1f} s   pvlens {ours[k]:7.1f} s")
        n_ref = ref_counts["pos_kept"] + ref_counts["neg_kept"]
        n_ours = ours_counts["pos_kept"] + ours_counts["neg_kept"]
        if n_ref and n_ours:
            print(f"  activations per kept sample: paper-style {ref['activations'] / n_ref:.3f} s,"
                  f" pvlens {ours['activations'] / n_ours:.3f} s")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    total = sum(ours.values())
    if args.no_baseline:
        print(f"RESULT extract_generate_share ratio={ours['generate'] / total:.2f} target=none")
    else:
        print(f"RESULT extract_generate_vs_hf ratio={ref['generate'] / ours['generate']:.2f}")
        print(f"RESULT extract_end_to_end ratio={sum(ref.values()) / total:.2f} target=1.5")


if __name__ == "__main__":
    main()
