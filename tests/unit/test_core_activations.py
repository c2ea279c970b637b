"""Streaming per-layer reductions against `run_with_cache`, sample by sample (tiny model)."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.core.activations import collect, per_token, token_batches
from pvlens.core.chat import encode_conversation
from pvlens.core.steering import Steering

torch.set_num_threads(1)

QA = [
    ("Hi", "Hello! How can I help you today?"),
    ("What is 2+2?", "4."),
    ("Name a colour.", "Blue is a calm colour that many people like, as are green and teal."),
    ("Tell me a joke about cats.", "Why did the cat sit on the computer? To keep an eye on the mouse."),
    ("Summarise the plot of Hamlet in one sentence.",
     "A Danish prince avenges his father's murder and almost everyone dies."),
]
REDS = ("response_avg", "prompt_avg", "last_prompt", "all_avg")


def close(got, ref, tol: float = 1e-4) -> None:
    """max |Δ| ≤ tol × RMS of the reference. Residual entries of the tiny model are ~40
    (‖x‖ ≈ 300), where fp32 sums in a different order differ by ~1e-4 absolute."""
    got, ref = got.double(), ref.double()
    err = (got - ref).abs().max().item()
    scale = ref.pow(2).mean().sqrt().item()
    assert err <= tol * scale, f"max |Δ| {err:.3g} > {tol} × RMS {scale:.3g}"


@pytest.fixture(scope="module")
def chats(tiny):
    return [encode_conversation(tiny.tokenizer, [{"role": "user", "content": q},
                                                 {"role": "assistant", "content": a}])
            for q, a in QA]


def _reference(model, chat):
    """Reductions from the full per-token cache of one unpadded sample."""
    names = [f"blocks.{layer}.hook_resid_post" for layer in range(model.cfg.n_layers)]
    _, cache = model.run_with_cache(torch.tensor([chat.ids]), names_filter=names)
    x = torch.stack([cache[n][0] for n in names]).double()  # [layers, pos, d]
    p = chat.prompt_len
    return {
        "response_avg": x[:, p:].mean(1),
        "prompt_avg": x[:, :p].mean(1),
        "last_prompt": x[:, p - 1],
        "all_avg": x.mean(1),
    }


def test_collect_matches_run_with_cache_per_sample(tiny, chats):
    got = collect(tiny, chats, REDS, batch_size=3, dtype=torch.float32, progress=False)
    assert set(got) == set(REDS)
    for r in REDS:
        assert got[r].shape == (len(chats), tiny.cfg.n_layers, tiny.cfg.d_model)
        assert got[r].dtype == torch.float32
    for i, chat in enumerate(chats):
        ref = _reference(tiny, chat)
        for r in REDS:
            close(got[r][i].double(), ref[r])


def test_fallback_path_equals_engine_path(tiny, chats):
    fast = collect(tiny, chats, REDS, dtype=torch.float32, progress=False)
    # A hook the engine does not call forces the TransformerLens forward.
    with tiny.hooks(fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: z)]):
        slow = collect(tiny, chats, REDS, dtype=torch.float32, progress=False)
    for r in REDS:
        close(slow[r], fast[r])


def test_batching_does_not_change_results(tiny, chats):
    a = collect(tiny, chats, batch_size=1, dtype=torch.float32, progress=False)
    b = collect(tiny, chats, batch_size=16, max_tokens=10_000, dtype=torch.float32, progress=False)
    for r in a:
        close(a[r], b[r])


def test_layer_subset_and_order(tiny, chats):
    full = collect(tiny, chats, ["last_prompt"], dtype=torch.float32, progress=False)["last_prompt"]
    sub = collect(tiny, chats, ["last_prompt"], layers=[-1, 0], dtype=torch.float32,
                  progress=False)["last_prompt"]
    assert sub.shape[1] == 2
    close(sub[:, 0], full[:, 1])
    torch.testing.assert_close(sub[:, 1], full[:, 0])


def test_steering_during_collection_shifts_by_alpha_v(tiny, chats):
    v = torch.randn(tiny.cfg.d_model)
    base = collect(tiny, chats, ["response_avg", "prompt_avg"], layers=[0], dtype=torch.float32,
                   progress=False)
    steered = collect(tiny, chats, ["response_avg", "prompt_avg"], layers=[0], dtype=torch.float32,
                      steer=Steering(v, 0, 2.0, "response"), progress=False)
    torch.testing.assert_close(steered["response_avg"][:, 0], base["response_avg"][:, 0] + 2 * v)
    # "response" also steers the last prompt token: the prompt mean moves by 2v / prompt_len.
    shift = torch.stack([2 * v / c.prompt_len for c in chats])
    close(steered["prompt_avg"][:, 0], base["prompt_avg"][:, 0] + shift)
    assert not any(hp._forward_hooks for hp in tiny.hook_dict.values())


def test_per_token_matches_run_with_cache(tiny, chats):
    chat = chats[2]
    got = per_token(tiny, chat, layers=[1])
    _, cache = tiny.run_with_cache(torch.tensor([chat.ids]), names_filter="blocks.1.hook_resid_post")
    assert got.shape == (1, len(chat.ids), tiny.cfg.d_model)
    close(got[0], cache["blocks.1.hook_resid_post"][0])


def test_bad_input_is_explained(tiny, chats):
    with pytest.raises(ValueError, match="unknown reductions"):
        collect(tiny, chats, ["response_mean"], progress=False)
    prompt_only = pvlens.encode_prompt(tiny.tokenizer, "Hi")
    with pytest.raises(ValueError, match="no response tokens"):
        collect(tiny, [prompt_only], progress=False)
    out = collect(tiny, [prompt_only], ["last_prompt"], dtype=torch.float32, progress=False)
    assert out["last_prompt"].shape == (1, 2, tiny.cfg.d_model)


def test_token_batches_respect_limits():
    lengths = [5, 50, 7, 48, 6, 49, 100]
    batches = token_batches(lengths, max_tokens=120, max_batch=2)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= 2
        assert len(b) == 1 or max(lengths[i] for i in b) * len(b) <= 120
