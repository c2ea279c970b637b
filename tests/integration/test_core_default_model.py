"""The default model (SmolLM2-135M-Instruct, offline) against Hugging Face: logits, greedy
replies, bf16 closeness, and steering at a mid-stack layer."""

from __future__ import annotations

import pytest
import torch

import pvlens
import pvlens.core.activations
import pvlens.core.chat
from pvlens.core.engine import engine_for
from pvlens.core.model import ensure_default_model_dir, load_hf_model

pytestmark = pytest.mark.integration

PROMPTS = [
    "What is the capital of France?",
    "Give me one tip for staying focused while studying.",
    "Write a short poem about the sea.",
]


@pytest.fixture(scope="module")
def models():
    torch.set_num_threads(1)  # the suite runs single-threaded (unit modules set it at import)
    model = pvlens.load_model()
    hf, _ = load_hf_model(ensure_default_model_dir())
    return model, hf


@pytest.fixture(scope="module")
def conversation(models):
    model, _ = models
    return pvlens.encode_conversation(model.tokenizer, [
        {"role": "user", "content": PROMPTS[1]},
        {"role": "assistant", "content": "Put your phone in another room and work in 25-minute blocks."},
    ])


def test_shape_and_layer_convention(models):
    model, hf = models
    assert (model.cfg.n_layers, model.cfg.d_model) == (30, 576)
    assert model.cfg.original_architecture == "LlamaForCausalLM"
    ids = torch.tensor([pvlens.encode_prompt(model.tokenizer, PROMPTS[0]).ids])
    _, cache = model.run_with_cache(ids, names_filter="blocks.15.hook_resid_post")
    with torch.no_grad():
        hidden = hf(ids, output_hidden_states=True).hidden_states
    # pvlens layer 15 == blocks.15.hook_resid_post == HF hidden_states[16] (paper layer 16).
    torch.testing.assert_close(cache["blocks.15.hook_resid_post"], hidden[16], atol=1e-3, rtol=1e-4)


def test_transformerlens_logits_match_hf_fp32(models, conversation):
    model, hf = models
    ids = torch.tensor([conversation.ids])
    with torch.no_grad():
        tl = model(ids)
        ref = hf(ids).logits
    err = (tl - ref).abs().max().item()
    print(f"\nTL vs HF fp32: max |Δ logits| = {err:.2e} over {ids.shape[1]} positions")
    assert err < 1e-3
    fast = engine_for(model, torch.float32).forward(ids, torch.arange(ids.shape[1])[None], logits="all")
    err_fast = (fast - ref).abs().max().item()
    print(f"fast engine vs HF fp32: max |Δ logits| = {err_fast:.2e}")
    assert err_fast < 1e-3


def test_greedy_replies_token_identical_to_hf_generate(models):
    model, hf = models
    n_new = 32
    ours = pvlens.generate(model, PROMPTS, max_new_tokens=n_new, progress=False)
    stops = pvlens.core.chat.stop_token_ids(model.tokenizer)
    for prompt, chat, finished in zip(PROMPTS, ours.chats, ours.finished, strict=True):
        ids = torch.tensor([pvlens.encode_prompt(model.tokenizer, prompt).ids])
        with torch.no_grad():
            out = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n_new,
                              do_sample=False, eos_token_id=sorted(stops),
                              pad_token_id=model.tokenizer.pad_token_id)
        theirs = out[0, ids.shape[1]:].tolist()
        if theirs and theirs[-1] in stops:  # pvlens reports the reply without end-of-turn
            assert finished
            theirs = theirs[:-1]
        assert chat.response_ids == theirs, (prompt, ours.texts)
    assert any(len(c.response_ids) > 5 for c in ours.chats)


def test_bf16_closeness(models):
    """bf16 is not exact; report how close it is (bf16 matmuls are slow on CPUs without
    AMX/avx512-bf16, so this uses one short conversation)."""
    model, hf = models
    short = pvlens.encode_conversation(model.tokenizer, [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "What is the capital of France?"},
        {"role": "assistant", "content": "Paris is the capital of France."},
    ])
    ids = torch.tensor([short.ids])
    pos = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        ref = hf(ids).logits[0].float()
    got = engine_for(model, torch.bfloat16).forward(ids, pos, logits="all")[0]
    agree = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    err = (got - ref).abs().max().item()
    kl = torch.nn.functional.kl_div(got.log_softmax(-1), ref.log_softmax(-1), log_target=True,
                                    reduction="none").sum(-1)
    print(f"\nbf16 fast engine vs HF fp32 over {ids.shape[1]} positions: argmax agreement "
          f"{agree:.3f}, max |Δ logits| {err:.3f}, mean KL(fp32‖bf16) {kl.mean().item():.2e}")
    assert agree >= 0.9
    assert kl.mean().item() < 0.05
    engine_for(model, torch.float32)  # keep one packed copy: the fp32 one used elsewhere


def test_random_vector_at_layer_15_changes_the_reply_and_alpha_zero_does_not(models):
    model, _ = models
    prompt = pvlens.encode_prompt(model.tokenizer, PROMPTS[1])
    resid = pvlens.core.activations.per_token(model, prompt, layers=[15])[0]
    norm = resid[1:].norm(dim=-1).median().item()  # skip the first token's outlier norm
    v = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(0))
    v = v / v.norm() * norm
    kw = dict(max_new_tokens=24, progress=False)
    base = pvlens.generate(model, PROMPTS[:2], **kw)
    zero = pvlens.generate(model, PROMPTS[:2], steer=pvlens.Steering(v, 15, 0.0), **kw)
    steered = pvlens.generate(model, PROMPTS[:2], steer=pvlens.Steering(v, 15, 1.0, "response"), **kw)
    print(f"\n‖resid‖ at layer 15 ≈ {norm:.1f}\nunsteered: {base.texts}\nsteered:   {steered.texts}")
    assert [c.response_ids for c in zero.chats] == [c.response_ids for c in base.chats]
    assert all(s.response_ids != b.response_ids for s, b in zip(steered.chats, base.chats, strict=True))
