"""Continuous batching (`bulk_generate`) against the fixed-batch reference (`generate`):
the same tokens per row whatever the slot count, steering and position semantics unchanged,
seeded sampling independent of batch composition, KV-cache slots reset and reloaded."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.core.bulk import auto_batch_size, bulk_generate
from pvlens.core.config import SamplingConfig
from pvlens.core.engine import engine_for
from pvlens.core.steering import Steering, multi_layer

torch.set_num_threads(1)

PROMPTS = [  # varied lengths; tiny random replies rarely hit EOS, so EOS is forced below
    "Hi", "What is the capital of France? Answer in one word please.",
    "Write a haiku about autumn leaves.", "Count to three.", "Why is the sky blue? Explain.",
    "Name a colour.", "Tell me a joke about cats and dogs, two lines.",
]
N_NEW = 8
GREEDY = SamplingConfig(max_new_tokens=N_NEW, temperature=0.0)


def _vec(d_model: int, seed: int = 0, norm: float = 300.0) -> torch.Tensor:
    v = torch.randn(d_model, generator=torch.Generator().manual_seed(seed))
    return v / v.norm() * norm


def _ids(result) -> list[list[int]]:
    return [c.response_ids for c in result.chats]


def _ref(model, steer=None, **kw):
    kw.setdefault("max_new_tokens", N_NEW)
    return pvlens.generate(model, PROMPTS, steer=steer, progress=False, **kw)


@pytest.fixture
def early_eos(tiny, monkeypatch):
    """Make rows end at different steps: the stop token is one that some replies emit early."""
    free = _ids(_ref(tiny))
    stop = free[0][2]
    import pvlens.core.bulk as bulk_mod
    import pvlens.core.generation as gen_mod

    monkeypatch.setattr(gen_mod, "stop_token_ids", lambda tok: {stop})
    monkeypatch.setattr(bulk_mod, "stop_token_ids", lambda tok: {stop})
    return stop


@pytest.mark.parametrize("slots", [1, 2, 3, 7])
def test_greedy_rows_equal_the_fixed_batch_path(tiny, early_eos, slots):
    ref = _ref(tiny)
    lengths = {len(r) for r in _ids(ref)}
    assert len(lengths) > 1, "rows must finish at different steps, or refilling is not exercised"
    got = bulk_generate(tiny, PROMPTS, GREEDY, batch_size=slots)
    assert _ids(got) == _ids(ref)
    assert got.finished == ref.finished and got.texts == ref.texts


STEERS = {
    "all": lambda d: Steering(_vec(d), 0, 1.0, "all"),
    "prompt": lambda d: Steering(_vec(d), 1, 1.0, "prompt"),
    "response": lambda d: Steering(_vec(d), 0, 1.0, "response"),
    "multi": lambda d: multi_layer(torch.stack([_vec(d, 1), _vec(d, 2)]), [0, 1], [0.7, -0.5], "response"),
}


@pytest.mark.parametrize("name", list(STEERS))
def test_steering_is_unchanged(tiny, early_eos, name):
    steer = STEERS[name](tiny.cfg.d_model)
    ref = _ids(_ref(tiny, steer))
    assert ref != _ids(_ref(tiny)), "steering must change the output, or the check is vacuous"
    for slots in (2, 5):
        assert _ids(bulk_generate(tiny, PROMPTS, GREEDY, steer=steer, batch_size=slots)) == ref


def test_per_conversation_mask_follows_its_conversation(tiny):
    mask = torch.zeros(len(PROMPTS), 80, dtype=torch.bool)
    mask[3] = True  # steer conversation 3 only, wherever it lands
    steer = Steering(_vec(tiny.cfg.d_model), 0, 1.0, mask)
    assert _ids(bulk_generate(tiny, PROMPTS, GREEDY, steer=steer, batch_size=2)) == _ids(_ref(tiny, steer))


def test_seeded_sampling_is_per_row(tiny, early_eos):
    s = SamplingConfig(max_new_tokens=N_NEW, temperature=1.0, top_p=0.95, seed=7)
    ref = _ids(_ref(tiny, temperature=1.0, top_p=0.95, seed=7))
    runs = [_ids(bulk_generate(tiny, PROMPTS, s, batch_size=b)) for b in (1, 3, 7)]
    assert runs[0] == runs[1] == runs[2] == ref
    seeds = [11, 5, 3, 8, 2, 9, 4]  # row seeds: a row's reply follows its seed, not its index
    sub = bulk_generate(tiny, PROMPTS[2:4], s, row_seeds=seeds[2:4], batch_size=1)
    full = bulk_generate(tiny, PROMPTS, s, row_seeds=seeds, batch_size=4)
    assert _ids(sub) == _ids(full)[2:4]
    other = SamplingConfig(max_new_tokens=N_NEW, temperature=1.0, top_p=0.95, seed=8)
    assert _ids(bulk_generate(tiny, PROMPTS, other)) != runs[0]


def test_slot_reset_and_reload(tiny):
    """A slot-mode cache reloaded with a prompt continues exactly like a fresh cache."""
    eng = engine_for(tiny)
    assert eng is not None
    ids = torch.tensor([[5, 9, 13, 2]])
    pos = torch.arange(4)[None]
    fresh = eng.new_cache(1, 8)
    want = eng.forward(ids, pos, fresh)
    want2 = eng.forward(torch.tensor([[7]]), torch.tensor([[4]]), fresh)
    cache = eng.new_cache(3, 8).slot_mode()
    tmp = eng.new_cache(1, 4)
    assert torch.equal(eng.forward(ids, pos, tmp), want)
    cache.load_rows([1], tmp)
    assert cache.lengths.tolist() == [0, 4, 0]
    got = eng.forward(torch.tensor([[0], [7], [0]]), torch.tensor([[-1], [4], [-1]]), cache)
    torch.testing.assert_close(got[1], want2[0], atol=1e-4, rtol=1e-4)
    assert torch.isfinite(got).all() and cache.lengths.tolist() == [0, 5, 0]
    cache.reset_rows([1])
    assert cache.lengths.tolist() == [0, 0, 0] and bool((cache.positions < 0).all())
    with pytest.raises(ValueError, match="one token"):
        eng.forward(ids, pos, cache)


def test_auto_batch_size_is_capped(tiny):
    eng = engine_for(tiny)
    assert eng is not None
    assert auto_batch_size(eng, 3, 100) == 3
    assert 1 <= auto_batch_size(eng, 10_000, 100) <= 128
    res = bulk_generate(tiny, PROMPTS[:3], GREEDY)  # default: auto batch size, greedy
    assert len(res) == 3


def test_fallback_without_fast_engine_gives_the_same_rows(tiny):
    """A hook the engine does not call forces the TransformerLens path (fixed batches)."""
    ref = _ids(_ref(tiny))
    with tiny.hooks(fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: z)]):
        got = bulk_generate(tiny, PROMPTS, GREEDY)  # batch_size None -> fallback batch
    assert _ids(got) == ref


def _count_prefill(monkeypatch) -> list[tuple[int, int]]:
    """Record (rows, real tokens) of each multi-token (prefill) forward of the engine."""
    from pvlens.core.engine import FastEngine

    seen: list[tuple[int, int]] = []
    real = FastEngine.forward

    def spy(self, tokens, positions, cache=None, **kw):
        if tokens.shape[1] > 1 or kw.get("logits", "last") is None:
            seen.append((int(tokens.shape[0]), int((positions >= 0).sum())))
        return real(self, tokens, positions, cache, **kw)

    monkeypatch.setattr(FastEngine, "forward", spy)
    return seen


def test_sampling_reads_logits_in_the_compute_dtype(tiny, monkeypatch):
    """Decoding steps of `bulk_generate` and `generate` ask the engine for compute-dtype logits
    (no [batch, vocab] fp32 copy per step), and the bf16 replies equal those of fp32 logits."""
    from pvlens.core.engine import FastEngine

    asked: list[bool] = []
    real = FastEngine.forward

    def spy(self, tokens, positions, cache=None, **kw):
        if tokens.shape[1] == 1:
            asked.append(kw.get("float_logits", True))
        return real(self, tokens, positions, cache, **kw)

    monkeypatch.setattr(FastEngine, "forward", spy)
    bulk_generate(tiny, PROMPTS, GREEDY, dtype=torch.bfloat16)
    pvlens.generate(tiny, PROMPTS, max_new_tokens=N_NEW, temperature=0.0, dtype=torch.bfloat16, progress=False)
    assert asked and not any(asked)
    with_native = _ids(bulk_generate(tiny, PROMPTS, GREEDY, dtype=torch.bfloat16))

    def float_logits(self, tokens, positions, cache=None, **kw):
        return real(self, tokens, positions, cache, **{**kw, "float_logits": True})

    monkeypatch.setattr(FastEngine, "forward", float_logits)
    assert _ids(bulk_generate(tiny, PROMPTS, GREEDY, dtype=torch.bfloat16)) == with_native


def test_repeated_prompts_are_prefilled_once(tiny, monkeypatch):
    """Samples of one prompt share its prefill; each still draws from its own generator, so the
    replies equal those of a run where every copy was prefilled on its own."""
    prompts = [p for p in PROMPTS[:3] for _ in range(3)]  # 3 prompts × 3 samples
    s = SamplingConfig(max_new_tokens=N_NEW, temperature=1.0, top_p=1.0, seed=3)
    seen = _count_prefill(monkeypatch)
    shared = bulk_generate(tiny, prompts, s, batch_size=9)
    n_tokens = sum(len(pvlens.encode_prompt(tiny.tokenizer, p).ids) for p in PROMPTS[:3])
    assert sum(t for _, t in seen) <= n_tokens, f"3 distinct prompts of {n_tokens} tokens ran {seen}"
    seen.clear()
    with tiny.hooks(fwd_hooks=[("blocks.0.hook_resid_post", lambda x, hook: x)]):  # no sharing
        apart = bulk_generate(tiny, prompts, s, batch_size=9)
    assert seen == [(9, 3 * n_tokens)]
    assert _ids(shared) == _ids(apart)
    ref = _ids(pvlens.generate(tiny, prompts, max_new_tokens=N_NEW, temperature=1.0, seed=3,
                               progress=False))
    assert _ids(shared) == ref
    assert len({tuple(r) for r in ref[:3]}) > 1, "copies must sample different replies"


SYSTEMS = ["You are a pirate who speaks only in riddles about the sea and its treasures.",
           "You are a careful librarian who answers briefly and cites a book each time."]
QUESTIONS = ["Hi", "What is two plus two?", "Name a colour.", "Why do cats purr so loudly?"]


@pytest.mark.parametrize("steer_name", [None, "prompt", "response"])
def test_shared_prefixes_computed_once_same_replies(tiny, early_eos, monkeypatch, steer_name):
    """Prompts that share a system prompt compute it once (the template header once for all);
    greedy replies, steered or not, equal the fixed-batch path's."""
    chats = [pvlens.encode_prompt(tiny.tokenizer, q, system) for system in SYSTEMS for q in QUESTIONS]
    steer = None if steer_name is None else STEERS[steer_name](tiny.cfg.d_model)
    seen = _count_prefill(monkeypatch)
    got = bulk_generate(tiny, chats, GREEDY, steer=steer, batch_size=len(chats))
    total = sum(len(c.ids) for c in chats)
    system_len = [len(pvlens.encode_prompt(tiny.tokenizer, "x", s).ids) - 8 for s in SYSTEMS]
    assert sum(t for _, t in seen) < total - 3 * min(system_len), (seen, total)
    assert [rows for rows, _ in seen[:2]] == [1, 2], f"header once, each system prompt once: {seen}"
    assert sum(rows for rows, _ in seen[2:]) == len(chats), "then every question once"
    ref = pvlens.generate(tiny, chats, steer=steer, max_new_tokens=N_NEW, progress=False)
    assert _ids(got) == _ids(ref) and got.finished == ref.finished


def test_prefix_plan_clusters_and_keeps_a_last_token():
    from pvlens.core.sharing import MIN_SHARED, prefix_plan

    head, a, b = [1, 2, 3], list(range(10, 10 + MIN_SHARED + 2)), list(range(50, 50 + MIN_SHARED + 2))
    prompts = [head + a + [7], head + b + [8], head + a + [9, 9], head + [4], head + b]
    common, cluster_of, cluster_len = prefix_plan(prompts)
    assert common == 3
    assert cluster_of[0] == cluster_of[2] and cluster_len[cluster_of[0]] == 3 + len(a)
    # head + b is a prefix of prompt 1: their shared part stops before its last token
    assert cluster_of[1] == cluster_of[4] and cluster_len[cluster_of[1]] == 3 + len(b) - 1
    assert cluster_len[cluster_of[3]] == common  # alone
    for p, c in zip(prompts, cluster_of, strict=True):
        assert cluster_len[c] < len(p)
    assert prefix_plan([[5, 6]]) == (1, [0], [1])
    assert prefix_plan([]) == (0, [], [])


def test_length_batches_bound_the_padding():
    from pvlens.core.sharing import PADDING_WASTE, length_batches

    lengths = [50, 16, 20, 19, 51, 52, 52, 3, 20, 52]
    batches = length_batches(lengths)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) * max(lengths[i] for i in b) <= PADDING_WASTE * sum(lengths[i] for i in b)
    assert len(batches) == 3  # the 50s, the 16-20s, the 3


def test_sharing_is_off_when_rows_can_differ(tiny, monkeypatch):
    """A per-conversation mask or a Guard may treat two copies of a prompt differently."""
    from pvlens.core.sharing import rows_interchangeable

    d = tiny.cfg.d_model
    assert rows_interchangeable(tiny, None)
    assert rows_interchangeable(tiny, [Steering(_vec(d), 0, 1.0, "response")])
    mask = torch.zeros(6, 80, dtype=torch.bool)
    mask[1] = True  # the second copy of prompt 0 only
    steer = Steering(_vec(d), 0, 1.0, mask)
    assert not rows_interchangeable(tiny, steer)
    prompts = [PROMPTS[0]] * 2 + [PROMPTS[1]] * 4
    got = _ids(bulk_generate(tiny, prompts, GREEDY, steer=steer, batch_size=6))
    ref = _ids(pvlens.generate(tiny, prompts, steer=steer, max_new_tokens=N_NEW, progress=False))
    assert got == ref and got[0] != got[1]


@pytest.mark.parametrize("free_ram", [1 << 40, 1 << 20])
def test_a_run_packs_the_unembedding_only_when_it_fits_and_drops_it_after(tiny, monkeypatch, free_ram):
    import pvlens.core.bulk as bulk_mod

    engine = engine_for(tiny, torch.float32)
    calls: list[int | None] = []
    real = type(engine).pack_unembed

    def spy(self, rows):
        calls.append(rows)
        return real(self, rows)

    monkeypatch.setattr(type(engine), "pack_unembed", spy)
    monkeypatch.setattr(bulk_mod, "_free_ram", lambda: free_ram)
    prompts = [f"Count to {i}." for i in range(16)]
    got = bulk_generate(tiny, prompts, SamplingConfig(temperature=0.0, max_new_tokens=3), batch_size=16,
                        dtype=torch.float32)
    if free_ram > 1 << 30:
        assert calls == [16, None] and engine._packed_unembed is None
    else:  # 1 MB free: the packed copy would not fit, the run goes unpacked
        assert calls == []
    ref = bulk_generate(tiny, prompts, SamplingConfig(temperature=0.0, max_new_tokens=3), batch_size=8,
                        dtype=torch.float32)  # 8 slots: never packed
    assert _ids(got) == _ids(ref)
