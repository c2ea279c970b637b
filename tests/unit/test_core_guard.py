"""Capping and guarded generation on the tiny model: caps hold, untouched positions and rows
are bit-identical, triggers are where the unguarded projections first cross, and the KV
cache, recomputation and the TransformerLens forward agree."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.core.guard import Guard, GuardRule
from pvlens.core.hooks import PositionContext, current_context, position_context
from pvlens.core.steering import Capping

torch.set_num_threads(1)

PROMPTS = [
    "Hi",
    "What is the capital of France? Answer in one word please.",
    "Write a haiku about autumn leaves.",
    "Tell me a story about a dragon and a knight.",
]
N_NEW = 10


def _vec(d_model: int, norm: float = 300.0, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.randn(d_model, generator=g)
    return v / v.norm() * norm


class _Record:
    """Per conversation and position: the projection on `u` at a hook point (first sighting)."""

    def __init__(self, u: torch.Tensor) -> None:
        self.u, self.seen = u / u.norm(), {}
        self.resid: dict[tuple[int, int], torch.Tensor] = {}

    def hook(self, resid, hook=None):
        ctx = current_context()
        proj = resid @ self.u
        for b in range(resid.shape[0]):
            row = int(ctx.rows[b])
            for j in range(resid.shape[1]):
                p = int(ctx.positions[b, j])
                if p >= 0 and (row, p) not in self.seen:
                    self.seen[(row, p)] = float(proj[b, j])
                    self.resid[(row, p)] = resid[b, j].clone()
        return resid

    def max_from(self, row: int, start: int) -> float:
        return max(v for (r, p), v in self.seen.items() if r == row and p >= start)


def _run(model, hooks=(), **kw):
    kw.setdefault("max_new_tokens", N_NEW)
    with model.hooks(fwd_hooks=list(hooks)):
        return pvlens.generate(model, PROMPTS, progress=False, **kw)


@pytest.fixture(scope="module")
def direction(tiny):
    return _vec(tiny.cfg.d_model, seed=11)


@pytest.fixture(scope="module")
def unguarded(tiny, direction):
    rec = _Record(direction)
    result = _run(tiny, [("blocks.0.hook_resid_post", rec.hook)])
    return result, rec


def _mixed_threshold(unguarded) -> tuple[float, list[bool]]:
    """A threshold that some rows' responses cross and others' never do."""
    result, rec = unguarded
    peaks = [rec.max_from(i, len(c.ids) - len(c.response_ids) - 1) for i, c in enumerate(result.chats)]
    order = sorted(peaks)
    thr = (order[1] + order[2]) / 2
    return thr, [p > thr for p in peaks]


def test_capping_holds_the_cap_and_leaves_lower_positions_bit_identical(tiny, direction):
    u = direction / direction.norm()
    ids = tiny.tokenizer("The quick brown fox jumps over the lazy dog once again")["input_ids"]
    tokens = torch.tensor([ids])
    _, cache = tiny.run_with_cache(tokens, names_filter="blocks.0.hook_resid_post")
    raw = cache["blocks.0.hook_resid_post"][0]
    proj = raw @ u
    cap = float(proj.median())
    seen = {}
    capping = Capping(direction, [0], cap)

    def grab(resid, hook):
        seen["x"] = resid[0].clone()

    hooks = [("blocks.0.hook_resid_post", capping.hook), ("blocks.1.hook_resid_pre", grab)]
    tiny.run_with_hooks(tokens, fwd_hooks=hooks)
    after = seen["x"]
    below = proj <= cap
    assert 0 < int(below.sum()) < len(proj)
    assert torch.equal(after[below], raw[below])
    assert (after @ u <= cap + 1e-3).all()
    assert torch.allclose(after[~below] @ u, torch.full_like(after[~below] @ u, cap), atol=1e-3)
    orth = after[~below] - (after[~below] @ u)[:, None] * u
    assert torch.allclose(orth, raw[~below] - (raw[~below] @ u)[:, None] * u, atol=1e-3)


def test_capping_respects_positions(tiny, direction):
    resid = torch.randn(1, 6, tiny.cfg.d_model) * 50 + direction / direction.norm() * 500
    ctx = PositionContext(torch.arange(6)[None], torch.tensor([4]))
    with position_context(ctx):
        out = Capping(direction, [0], 0.0, "prompt").hook(resid)
    u = direction / direction.norm()
    assert torch.equal(out[0, 4:], resid[0, 4:])
    assert (out[0, :4] @ u <= 1e-3).all()


def test_capping_in_generation_cache_equals_recompute(tiny, direction):
    cap = Capping(direction, [0], 0.0, "response")
    cached = _run(tiny, steer=cap)
    assert [c.response_ids for c in cached.chats] != [c.response_ids for c in _run(tiny).chats]
    for kw in ({"use_cache": False}, {"engine": "hooked"}):
        assert [c.response_ids for c in _run(tiny, steer=cap, **kw).chats] == \
            [c.response_ids for c in cached.chats]


def test_guard_rows_that_never_cross_are_bit_identical(tiny, direction, unguarded):
    base, base_rec = unguarded
    thr, crosses = _mixed_threshold(unguarded)
    guard = Guard([GuardRule(direction, thr, "t")], layer=0, alpha=2.0)
    got = _run(tiny, guard=guard)
    changed = 0
    for i, cross in enumerate(crosses):
        if not cross:
            assert got.chats[i].response_ids == base.chats[i].response_ids
            assert got.guard_events[i] == [] and got.triggered[i] is None
        else:
            (event,) = got.guard_events[i]
            prompt_len = len(base.chats[i].ids) - len(base.chats[i].response_ids)
            first = min(p for (r, p), v in base_rec.seen.items()
                        if r == i and p >= prompt_len - 1 and v > thr)
            assert event.position == first and event.reply_index == first - prompt_len
            assert event.projection == pytest.approx(base_rec.seen[(i, first)], abs=1e-4)
            assert event.token == tiny.tokenizer.decode([base.chats[i].ids[first]])
            changed += got.chats[i].response_ids != base.chats[i].response_ids
    assert changed >= 1, "the guard must change a crossing row, or the test is vacuous"


def test_untouched_rows_have_identical_residuals(tiny, direction, unguarded):
    """Stronger than equal tokens: every residual of a non-crossing row equals the unguarded run."""
    thr, crosses = _mixed_threshold(unguarded)
    u = direction
    rec_plain, rec_guard = _Record(u), _Record(u)
    _run(tiny, [("blocks.1.hook_resid_pre", rec_plain.hook)])
    guard = Guard([GuardRule(direction, thr)], layer=0, alpha=2.0, action="ablate")
    _run(tiny, [("blocks.1.hook_resid_pre", rec_guard.hook)], guard=guard)
    for i, cross in enumerate(crosses):
        if not cross:
            keys = [k for k in rec_plain.resid if k[0] == i]
            assert all(torch.equal(rec_plain.resid[k], rec_guard.resid[k]) for k in keys)


@pytest.mark.parametrize("action", ["subtract", "ablate", "cap"])
@pytest.mark.parametrize("mode", ["latch", "while_above"])
def test_guard_cache_equals_recompute_equals_transformerlens(tiny, direction, unguarded, action, mode):
    thr, _ = _mixed_threshold(unguarded)
    guard = Guard([GuardRule(direction, thr)], layer=0, alpha=2.0, action=action, mode=mode)
    cached = _run(tiny, guard=guard)
    assert any(cached.triggered)
    for kw in ({"use_cache": False}, {"engine": "hooked"}):
        other = _run(tiny, guard=guard, **kw)
        assert [c.response_ids for c in other.chats] == [c.response_ids for c in cached.chats]
        assert _where(other) == _where(cached)
        got = [e.projection for ev in other.guard_events for e in ev]
        assert got == pytest.approx([e.projection for ev in cached.guard_events for e in ev], abs=1e-3)


def _where(result) -> list[list[tuple[str, int, int, str]]]:
    return [[(e.rule, e.position, e.reply_index, e.token) for e in ev] for ev in result.guard_events]


def test_guard_actions_after_the_trigger(tiny, direction, unguarded):
    thr, crosses = _mixed_threshold(unguarded)
    for action in ("ablate", "cap"):
        rec = _Record(direction)
        got = _run(tiny, [("blocks.1.hook_resid_pre", rec.hook)],
                   guard=Guard([GuardRule(direction, thr)], layer=0, action=action))
        for i, event in enumerate(got.triggered):
            if event is None:
                continue
            after = [v for (r, p), v in rec.seen.items() if r == i and p >= event.position]
            limit = 0.0 if action == "ablate" else thr
            assert after and max(after) <= limit + 1e-3
            if action == "ablate":
                assert max(abs(v) for v in after) < 1e-3
    assert any(crosses)


def test_latch_keeps_intervening_below_the_threshold(tiny, direction, unguarded):
    """latch subtracts at every position after the trigger; while_above only above it."""
    thr, _ = _mixed_threshold(unguarded)
    rule = GuardRule(direction, thr)
    rec_latch, rec_while = _Record(direction), _Record(direction)
    pre_latch, pre_while = _Record(direction), _Record(direction)
    for guard, rec, pre in ((Guard([rule], 0, alpha=1.0), rec_latch, pre_latch),
                            (Guard([rule], 0, alpha=1.0, mode="while_above"), rec_while, pre_while)):
        _run(tiny, [("blocks.0.hook_resid_post", pre.hook), ("blocks.1.hook_resid_pre", rec.hook)],
             guard=guard)
    shift = float(direction.norm())
    latch_moved = [k for k in rec_latch.seen
                   if abs(pre_latch.seen[k] - rec_latch.seen[k] - shift) < 1e-2]
    assert any(pre_latch.seen[k] <= thr for k in latch_moved)
    while_moved = [k for k, v in rec_while.seen.items() if abs(pre_while.seen[k] - v - shift) < 1e-2]
    assert while_moved and all(pre_while.seen[k] > thr for k in while_moved)


def test_guard_as_intervention_and_multiple_rules(tiny, direction, unguarded):
    thr, _ = _mixed_threshold(unguarded)
    other = _vec(tiny.cfg.d_model, seed=12)
    g1 = Guard([GuardRule(direction, thr, "a"), GuardRule(other, 1e9, "never")], 0)
    via_steer = _run(tiny, steer=g1)
    via_arg = _run(tiny, guard=Guard([GuardRule(direction, thr, "a")], 0))
    assert [c.response_ids for c in via_steer.chats] == [c.response_ids for c in via_arg.chats]
    assert all(e.rule == "a" for ev in via_steer.guard_events for e in ev)
    assert _run(tiny).guard_events == []


def test_guard_validates():
    with pytest.raises((ValueError, TypeError), match="action"):  # TypeError: runtime type check
        Guard([GuardRule(torch.ones(4), 1.0)], 0, action="nope")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-zero"):
        GuardRule(torch.zeros(4), 1.0)
    with pytest.raises(ValueError, match="at least one"):
        Guard([], 0)


def test_window_means_full_windows_only():
    from pvlens.core.guard import window_means

    v = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert window_means(v, 2).tolist() == [-float("inf"), 1.5, 2.5, 3.5]
    assert window_means(v, 5).tolist() == [-float("inf")] * 4
    assert torch.equal(window_means(v, 1), v)


def test_windowed_guard_triggers_on_the_window_mean(tiny, direction, unguarded):
    """With window 3 the trigger is the first full window whose mean (of the unguarded
    projections) exceeds the threshold; cache and recomputation agree."""
    base, rec = unguarded
    w = 3
    means = {}
    for i, c in enumerate(base.chats):
        start = len(c.ids) - len(c.response_ids) - 1
        vals = [rec.seen[(i, p)] for p in range(start, len(c.ids) - 1)]
        means[i] = {start + j + w - 1: sum(vals[j:j + w]) / w for j in range(len(vals) - w + 1)}
    peaks = sorted(max(m.values()) for m in means.values())
    thr = (peaks[1] + peaks[2]) / 2
    guard = Guard([GuardRule(direction, thr)], layer=0, alpha=2.0, window=w)
    got = _run(tiny, guard=guard)
    for i, events in enumerate(got.guard_events):
        crossing = [p for p, m in sorted(means[i].items()) if m > thr]
        if not crossing:
            assert events == [] and got.chats[i].response_ids == base.chats[i].response_ids
        else:
            assert events[0].position == crossing[0]
            assert events[0].projection == pytest.approx(means[i][crossing[0]], abs=1e-3)
    assert _where(_run(tiny, guard=guard, use_cache=False)) == _where(got)
    assert _where(_run(tiny, guard=guard, engine="hooked")) == _where(got)
