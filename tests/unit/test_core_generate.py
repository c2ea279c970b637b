"""Generation on the tiny model: KV cache vs recomputation vs TransformerLens, batching,
padding, seeds. Every equivalence is checked on runs where steering changes the output."""

from __future__ import annotations

import pytest
import torch

import pvlens
import pvlens.core.generation as gen_mod
from pvlens.core.hooks import current_context
from pvlens.core.steering import Steering, incremental, multi_layer

torch.set_num_threads(1)

PROMPTS = [  # different lengths: batches are left-padded
    "Hi",
    "What is the capital of France? Answer in one word please.",
    "Write a haiku about autumn leaves.",
]
N_NEW = 8


def _vec(d_model: int, norm: float = 300.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d_model, generator=g)
    return v / v.norm() * norm  # resid norms in the tiny model are ~200-450


def _ids(result) -> list[list[int]]:
    return [c.response_ids for c in result.chats]


def _run(model, steer=None, **kw):
    kw.setdefault("max_new_tokens", N_NEW)
    return pvlens.generate(model, PROMPTS, steer=steer, progress=False, **kw)


def _explicit_mask() -> torch.Tensor:
    mask = torch.zeros(80, dtype=torch.bool)  # over each conversation's own token indices
    mask[5:12] = True  # inside every prompt
    mask[33:36] = True  # last prompt tokens / first replies of the shorter prompts
    mask[44] = True  # a reply token of the longest prompt
    return mask


STEERS = {
    "all": lambda d: Steering(_vec(d), 0, 1.0, "all"),
    "prompt": lambda d: Steering(_vec(d), 1, 1.0, "prompt"),
    "response": lambda d: Steering(_vec(d), 0, 1.0, "response"),
    "explicit": lambda d: Steering(_vec(d), 0, 1.5, _explicit_mask()),
    "multi": lambda d: multi_layer(torch.stack([_vec(d, seed=1), _vec(d, seed=2)]), [0, 1],
                                   [0.7, -0.5], "response"),
    "incremental": lambda d: incremental(torch.stack([_vec(d, seed=5), _vec(d, seed=6)]), 1.0),
    "multi-mixed": lambda d: [Steering(_vec(d, seed=3), 1, 1.0, "prompt"),
                              Steering(_vec(d, seed=4), 0, -1.0, "all")],
}


@pytest.fixture(scope="module")
def base(tiny):
    return _ids(_run(tiny))


@pytest.mark.parametrize("name", list(STEERS))
def test_kv_cache_equals_recomputation_equals_transformerlens(tiny, base, name):
    steer = STEERS[name](tiny.cfg.d_model)
    cached = _ids(_run(tiny, steer))
    assert cached != base, "steering must change the output, or the equivalence is vacuous"
    assert _ids(_run(tiny, steer, use_cache=False)) == cached
    assert _ids(_run(tiny, steer, engine="hooked")) == cached


def test_incremental_at_alpha_zero_is_a_no_op(tiny, base):
    vecs = torch.stack([_vec(tiny.cfg.d_model, seed=7), _vec(tiny.cfg.d_model, seed=8)])
    assert _ids(_run(tiny, incremental(vecs, 0.0))) == base
    assert _ids(_run(tiny, incremental(vecs, 0.0), use_cache=False)) == base


def test_unsteered_paths_agree(tiny, base):
    assert _ids(_run(tiny, engine="hooked")) == base
    assert _ids(_run(tiny, use_cache=False)) == base


@pytest.mark.parametrize("name", ["all", "response", "explicit", "multi"])
def test_batch_equals_each_prompt_alone(tiny, name):
    steer = STEERS[name](tiny.cfg.d_model)
    batched = _ids(_run(tiny, steer, batch_size=8))
    alone = [pvlens.generate(tiny, p, steer=steer, max_new_tokens=N_NEW, progress=False)
             .chats[0].response_ids for p in PROMPTS]
    assert batched == alone


def test_alpha_zero_generation_is_unsteered(tiny, base):
    steer = [Steering(_vec(tiny.cfg.d_model), 0, 0.0), Steering(_vec(tiny.cfg.d_model), 1, 0.0)]
    assert _ids(_run(tiny, steer)) == base


def test_per_conversation_mask_follows_its_conversation(tiny, base):
    """A [n_prompts, pos] mask row belongs to that prompt, whatever batch/order it runs in."""
    mask = torch.zeros(len(PROMPTS), 80, dtype=torch.bool)
    mask[1] = True  # steer only prompt 1 (the longest: it runs last after length sorting)
    steer = Steering(_vec(tiny.cfg.d_model), 0, 1.0, mask)
    alone = pvlens.generate(tiny, PROMPTS[1], steer=Steering(_vec(tiny.cfg.d_model), 0, 1.0),
                            max_new_tokens=N_NEW, progress=False).chats[0].response_ids
    for batch_size in (8, 2):
        got = _ids(_run(tiny, steer, batch_size=batch_size))
        assert got[0] == base[0] and got[2] == base[2]
        assert got[1] == alone != base[1]
    with pytest.raises(ValueError, match="rows"):  # a user forward has no conversation index
        from pvlens.core.hooks import plain_context, position_context

        with position_context(plain_context(torch.ones(2, 4, dtype=torch.long))):
            steer.hook(torch.zeros(2, 4, tiny.cfg.d_model))


class _Capture:
    """Records each forward's residual around block 0's steering hook, with its positions."""

    def __init__(self):
        self.before, self.after, self.positions = [], [], []

    def hooks(self):
        def pre(resid, hook):
            self.before.append(resid.detach().clone())
            self.positions.append(current_context().positions.clone())

        def post(resid, hook):
            self.after.append(resid.detach().clone())

        # Registered before generate adds its steering hook, so `pre` sees the unsteered value;
        # block 1's input is block 0's output after every hook.
        return [("blocks.0.hook_resid_post", pre), ("blocks.1.hook_resid_pre", post)]


@pytest.mark.parametrize("engine,use_cache", [("auto", True), ("auto", False), ("hooked", False)])
def test_padding_is_never_steered(tiny, monkeypatch, engine, use_cache):
    v = _vec(tiny.cfg.d_model)
    steer = Steering(v, 0, 1.0, "all")
    # Make row 0 finish early, so finished rows are padded mid-generation as well.
    free = _ids(_run(tiny, steer, max_new_tokens=6))
    others = {t for row in free[1:] for t in row}
    at = next(i for i in range(1, 4) if free[0][i] not in others and free[0][i] not in free[0][:i])
    monkeypatch.setattr(gen_mod, "stop_token_ids", lambda tok: {free[0][at]})

    cap = _Capture()
    with tiny.hooks(fwd_hooks=cap.hooks()):
        res = _run(tiny, steer, max_new_tokens=6, engine=engine, use_cache=use_cache)
    assert res.finished == [True, False, False] and res.chats[0].response_ids == free[0][:at]
    assert len(cap.before) == 6
    n_pad = 0
    for before, after, pos in zip(cap.before, cap.after, cap.positions, strict=True):
        delta = after - before
        pad = pos < 0
        n_pad += int(pad.sum())
        assert torch.equal(delta[pad], torch.zeros_like(delta[pad]))
        torch.testing.assert_close(delta[~pad], v.expand_as(delta[~pad]), atol=1e-3, rtol=1e-4)
    assert n_pad > 0
    assert not any(hp._forward_hooks for hp in tiny.hook_dict.values())


def test_seeded_sampling_is_reproducible_and_batch_independent(tiny):
    kw = dict(temperature=1.0, top_p=0.95, seed=7)
    first = _ids(_run(tiny, **kw))
    assert _ids(_run(tiny, **kw)) == first
    assert _ids(_run(tiny, batch_size=1, **kw)) == first
    assert _ids(_run(tiny, use_cache=False, **kw)) == first
    for i, p in enumerate(PROMPTS):
        alone = pvlens.generate(tiny, p, max_new_tokens=N_NEW, progress=False, row_seeds=[i], **kw)
        assert alone.chats[0].response_ids == first[i]
    assert _ids(_run(tiny, temperature=1.0, top_p=0.95, seed=8)) != first
    assert first != _ids(_run(tiny))  # sampling is not greedy


def test_top_p_keeps_only_the_nucleus():
    logits = torch.tensor([[2.0, 1.5, 1.0, -3.0]])  # probabilities ≈ .505, .306, .186, .003
    gens = [torch.Generator().manual_seed(0)]

    def draws(top_p):
        return {int(gen_mod.sample_next(logits, 1.0, top_p, gens)) for _ in range(300)}

    assert draws(0.5) == {0}  # token 0 alone holds > 50 % of the mass
    assert draws(0.8) == {0, 1}  # token 2 (19 % of the mass) lies outside the 0.8 nucleus
    assert draws(1.0) >= {0, 1, 2}
    assert int(gen_mod.sample_next(logits, 0.0, 0.5, None)) == 0  # temperature 0: greedy


@pytest.mark.parametrize("vocab", [49152, 151936, 9000, 2050, 100])
def test_greedy_argmax_is_torch_argmax(vocab):
    gen = torch.Generator().manual_seed(vocab)
    logits = torch.randn(12, vocab, generator=gen)
    logits[0, [5, vocab - 1]] = 1e4  # a tie across blocks: the first wins
    logits[1, vocab - 1] = 1e4  # the maximum in the remainder block
    logits[2] = float("-inf")
    logits[3] = 0.0  # all tied
    logits[4, [vocab // 2, vocab // 3]] = float("nan")  # NaN counts as the maximum
    logits[5, [2047 % vocab, 2048 % vocab]] = 1e4  # a tie on a block border
    assert torch.equal(gen_mod.greedy_argmax(logits), logits.argmax(-1))
    half = logits.bfloat16()
    assert torch.equal(gen_mod.greedy_argmax(half), half.argmax(-1))


def test_result_fields_and_stop_at_eos(tiny, monkeypatch):
    res = _run(tiny)
    assert len(res) == len(PROMPTS) and res.finished == [False] * len(PROMPTS)
    for chat, text in zip(res.chats, res.texts, strict=True):
        assert chat.response_len == N_NEW
        assert text == tiny.tokenizer.decode(chat.response_ids, skip_special_tokens=True).strip()
        assert chat.prompt_ids == pvlens.encode_prompt(tiny.tokenizer, PROMPTS[res.chats.index(chat)]).ids
    stop = res.chats[0].response_ids[1]
    monkeypatch.setattr(gen_mod, "stop_token_ids", lambda tok: {stop})
    short = _run(tiny)
    assert short.finished[0] and short.chats[0].response_ids == res.chats[0].response_ids[:1]
    full = _run(tiny, stop_at_eos=False)
    assert _ids(full) == _ids(res) and full.finished == [False] * len(PROMPTS)
    with pytest.raises(ValueError, match="engine"):
        _run(tiny, engine="turbo")
