"""Capability checks, MMLU loading and the finetuning shift, on the tiny model."""

from __future__ import annotations

import json
import math

import pytest
import torch

from pvlens.core.model import tiny_model
from pvlens.finetune import (
    LoraConfig,
    add_lora,
    builtin_mc,
    finetuning_shift,
    load_mmlu,
    mc_accuracy,
    perplexity,
)
from pvlens.finetune.capability import MCQuestion, _option_chats, response_logprobs

torch.set_num_threads(1)

MMLU_ROWS = [
    {"question": "What is 2 + 2?", "subject": "elementary_mathematics",
     "choices": ["3", "4", "5", "6"], "answer": 1},
    {"question": "Which gas do plants absorb?", "subject": "biology",
     "choices": ["Oxygen", "Nitrogen", "Carbon dioxide", "Helium"], "answer": 2},
    {"question": "H2O is?", "subject": "chemistry", "choices": ["Water", "Salt", "Gold", "Air"],
     "answer": "A"},
]


def test_builtin_mc_set_is_well_formed():
    qs = builtin_mc()
    assert len(qs) >= 200
    assert all(len(q.choices) == 4 and 0 <= q.answer < 4 for q in qs)
    assert len({q.question for q in qs}) == len(qs)  # no duplicate questions
    assert all(len(set(q.choices)) == 4 for q in qs)  # no duplicate options
    counts = [sum(q.answer == k for q in qs) for k in range(4)]
    assert max(counts) - min(counts) <= 2  # correct position balanced
    assert len({q.subject for q in qs}) >= 8


def test_mmlu_loader_reads_a_local_copy(tmp_path):
    path = tmp_path / "mmlu.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in MMLU_ROWS))
    qs = load_mmlu(path)
    assert [q.answer for q in qs] == [1, 2, 0]  # the letter answer is mapped to an index
    assert qs[1].subject == "biology" and qs[1].choices[2] == "Carbon dioxide"
    assert len(load_mmlu(path, limit=2)) == 2
    # the hub's layout: {subject}/{split}-*.parquet
    import datasets

    (tmp_path / "repo" / "all").mkdir(parents=True)
    rows = [dict(r, answer=r["answer"] if isinstance(r["answer"], int) else 0) for r in MMLU_ROWS]
    datasets.Dataset.from_list(rows).to_parquet(str(tmp_path / "repo/all/test-00000-of-00001.parquet"))
    assert [q.question for q in load_mmlu(tmp_path / "repo")] == [r["question"] for r in MMLU_ROWS]
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": 5}) + "\n")
    with pytest.raises(ValueError, match="answer 5"):
        load_mmlu(bad)


def test_option_scoring_matches_a_manual_forward():
    model = tiny_model()
    q = MCQuestion("What colour is the sky?", ["Blue", "A green elephant"], 0)
    chats = _option_chats(model.tokenizer, q, None)
    lps = response_logprobs(model, chats)
    for c, lp in zip(chats, lps, strict=True):
        assert len(lp) == c.response_len  # option tokens only (no end-of-turn)
        with torch.no_grad():
            logp = torch.log_softmax(model(torch.tensor([c.ids]))[0], -1)
        manual = [float(logp[t - 1, c.ids[t]]) for t in range(c.prompt_len, len(c.ids))]
        assert lp.tolist() == pytest.approx(manual, abs=1e-4)


def test_shared_prompt_scoring_matches_full_sequences():
    from pvlens.core.engine import engine_for
    from pvlens.finetune.capability import _shared_prompt_logprobs

    model = tiny_model()
    qs = builtin_mc()[:5] + [MCQuestion("Pick one.", ["Yes", "No, definitely not that one"], 1)]
    chats, spans = [], []
    for q in qs:
        cs = _option_chats(model.tokenizer, q, None)
        spans.append((len(chats), len(chats) + len(cs)))
        chats.extend(cs)
    full = response_logprobs(model, chats, batch_size=7)
    shared = _shared_prompt_logprobs(engine_for(model), chats, spans, batch_size=4, progress=False)
    for a, b in zip(full, shared, strict=True):
        assert torch.allclose(a, b, atol=1e-4)


def test_mc_accuracy_picks_the_most_likely_option():
    model = tiny_model()
    qs = builtin_mc()[:6]
    res = mc_accuracy(model, qs, progress=False)
    assert res.n == 6 and res.chance == 0.25
    assert res.predictions == [max(range(4), key=s.__getitem__) for s in res.scores]
    assert res.accuracy == sum(p == q.answer for p, q in zip(res.predictions, qs, strict=True)) / 6


def test_perplexity_is_exp_of_mean_nll():
    model = tiny_model()
    text = "The cat sat on the mat. The dog slept by the door."
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        logp = torch.log_softmax(model(torch.tensor([ids]))[0], -1)
    nll = -torch.stack([logp[t - 1, ids[t]] for t in range(1, len(ids))]).mean()
    assert perplexity(model, text) == pytest.approx(math.exp(float(nll)), rel=1e-4)


def test_finetuning_shift_is_zero_for_a_no_op_adapter_and_matches_manual_means():
    model = tiny_model()
    vecs = torch.randn(model.cfg.n_layers, model.cfg.d_model)
    prompts = ["Hello there", "What is the weather like?", "Tell me a joke"]
    handle = add_lora(model, LoraConfig(r=4, alpha=8))
    zero = finetuning_shift(model, prompts, vecs)
    assert zero.projection.abs().max() < 1e-5
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for s in handle.sites:
            s.lora.lora_B.copy_(torch.randn(s.lora.lora_B.shape, generator=g) * 0.3)
    res = finetuning_shift(model, prompts, vecs)
    base = tiny_model()  # the same weights without an adapter
    res2 = finetuning_shift(model, prompts, vecs, base=base)
    assert res.projection.abs().max() > 1e-3
    assert torch.allclose(res.projection, res2.projection, atol=1e-4)
    # manual: last prompt token through the TL forward
    from pvlens.core.chat import encode_prompt

    def mean_last(m):
        rows = []
        for p in prompts:
            ids = torch.tensor([encode_prompt(m.tokenizer, p).ids])
            _, cache = m.run_with_cache(ids, names_filter=lambda n: n.endswith("resid_post"))
            rows.append(torch.stack([cache[f"blocks.{layer}.hook_resid_post"][0, -1]
                                     for layer in range(m.cfg.n_layers)]))
        return torch.stack(rows).mean(0)

    with torch.no_grad():
        manual_shift = mean_last(model) - mean_last(base)
    unit = vecs / vecs.norm(dim=-1, keepdim=True)
    assert torch.allclose(res.projection, (manual_shift * unit).sum(-1), atol=1e-4)
