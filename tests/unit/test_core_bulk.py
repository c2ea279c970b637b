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
    assert 1 <= auto_batch_size(eng, 10_000, 100) <= 64
    res = bulk_generate(tiny, PROMPTS[:3], GREEDY)  # default: auto batch size, greedy
    assert len(res) == 3


def test_fallback_without_fast_engine_gives_the_same_rows(tiny):
    """A hook the engine does not call forces the TransformerLens path (fixed batches)."""
    ref = _ids(_ref(tiny))
    with tiny.hooks(fwd_hooks=[("blocks.0.attn.hook_z", lambda z, hook: z)]):
        got = bulk_generate(tiny, PROMPTS, GREEDY)  # batch_size None -> fallback batch
    assert _ids(got) == ref
