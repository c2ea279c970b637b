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


SYSTEMS = ["You are a pirate who speaks only in riddles about the sea and its treasures.",
           "You are a careful librarian who answers briefly and cites a book each time."]


def _clustered(tiny):
    """Two system prompts × two questions × two different replies: clusters at every level."""
    out = []
    for system in SYSTEMS:
        for q, a in QA[:2]:
            for reply in (a, a + " Anything else?"):
                out.append(encode_conversation(tiny.tokenizer, [
                    {"role": "system", "content": system}, {"role": "user", "content": q},
                    {"role": "assistant", "content": reply}]))
    return out


def _forwards(monkeypatch) -> list[tuple[int, int]]:
    from pvlens.core.engine import FastEngine

    seen: list[tuple[int, int]] = []
    real = FastEngine.forward

    def spy(self, tokens, positions, *a, **kw):
        seen.append((int(tokens.shape[0]), int((positions >= 0).sum())))
        return real(self, tokens, positions, *a, **kw)

    monkeypatch.setattr(FastEngine, "forward", spy)
    return seen


@pytest.mark.parametrize("steer_positions", [None, "prompt", "response"])
def test_shared_prefixes_give_the_unshared_reductions(tiny, monkeypatch, steer_positions):
    """System prompts and repeated prompts are computed once; every reduction (and a layer
    subset, and named-position steering) equals the pass that computes every token."""
    chats = _clustered(tiny)
    steer = None
    if steer_positions is not None:
        v = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(0))
        steer = Steering(v / v.norm() * 200, 0, 1.0, steer_positions)
    seen = _forwards(monkeypatch)
    got = collect(tiny, chats, REDS, layers=[1, 0], dtype=torch.float32, steer=steer, progress=False)
    computed = sum(t for _, t in seen)
    assert computed < 0.7 * sum(len(c.ids) for c in chats), seen
    seen.clear()
    with tiny.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", lambda x, hook: x)]):  # sharing off
        ref = collect(tiny, chats, REDS, layers=[1, 0], dtype=torch.float32, steer=steer, progress=False)
    assert sum(t for _, t in seen) == sum(len(c.ids) for c in chats)
    for r in REDS:
        close(got[r], ref[r])
    if steer is not None:  # the steering acted (else equality would be vacuous)
        plain = collect(tiny, chats, ["response_avg"], layers=[1, 0], dtype=torch.float32, progress=False)
        assert (plain["response_avg"] - got["response_avg"]).abs().max() > 1.0


def test_per_conversation_mask_turns_sharing_off(tiny, monkeypatch):
    chats = _clustered(tiny)
    mask = torch.zeros(len(chats), 200, dtype=torch.bool)
    mask[0, :5] = True  # steer conversation 0's first tokens only: its prefix is its own
    v = torch.randn(tiny.cfg.d_model, generator=torch.Generator().manual_seed(1))
    steer = Steering(v / v.norm() * 200, 0, 1.0, mask)
    seen = _forwards(monkeypatch)
    got = collect(tiny, chats, ["prompt_avg"], dtype=torch.float32, steer=steer, progress=False)
    assert sum(t for _, t in seen) == sum(len(c.ids) for c in chats)
    plain = collect(tiny, chats, ["prompt_avg"], dtype=torch.float32, progress=False)
    moved = (got["prompt_avg"] - plain["prompt_avg"]).abs().amax(dim=(1, 2))
    assert moved[0] > 1.0 and moved[1:].max() < 1e-3


def test_shared_pass_plans_bounded_windows(tiny, monkeypatch):
    """However many conversations, the shared pass plans at most SHARE_WINDOW_BATCHES batches'
    worth at a time (its prefix caches and sums stay bounded), with the unshared results."""
    from pvlens.core import activations as acts

    chats = _clustered(tiny) * 3  # 24 conversations, every prompt repeated
    sizes: list[int] = []
    real = acts._SharedPrefixPass.__init__

    def spy(self, engine, group, *a, **kw):
        sizes.append(len(group))
        real(self, engine, group, *a, **kw)

    monkeypatch.setattr(acts._SharedPrefixPass, "__init__", spy)
    got = collect(tiny, chats, REDS, batch_size=2, dtype=torch.float32, progress=False)
    assert len(sizes) == 3 and max(sizes) == acts.SHARE_WINDOW_BATCHES * 2
    with tiny.hooks(fwd_hooks=[("blocks.1.hook_resid_pre", lambda x, hook: x)]):  # sharing off
        ref = collect(tiny, chats, REDS, batch_size=2, dtype=torch.float32, progress=False)
    for r in REDS:
        close(got[r], ref[r])
