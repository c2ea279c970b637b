"""Hook names, the layer convention, hook clean-up, α=0 and ablation on the tiny model."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.core.chat import encode_prompt
from pvlens.core.hooks import (
    HookNameError,
    check_layer,
    checked_hooks,
    plain_context,
    position_context,
    resid_hook_name,
    validate_hook_names,
)
from pvlens.core.steering import (
    Ablation,
    Steering,
    fwd_hooks,
    incremental,
    multi_layer,
    position_mask,
)

torch.set_num_threads(1)


def _all_hooks_empty(model) -> bool:
    return all(not hp._forward_hooks and not hp._backward_hooks for hp in model.hook_dict.values())


def _ids(model, text="Tell me about the sea."):
    return torch.tensor([encode_prompt(model.tokenizer, text).ids])


def test_wrong_hook_name_lists_close_names(tiny):
    with pytest.raises(HookNameError) as err:
        validate_hook_names(tiny, ["blocks.0.hook_resid_pots"])
    msg = str(err.value)
    assert "blocks.0.hook_resid_pots" in msg and "blocks.0.hook_resid_post" in msg
    assert "2 layers" in msg
    # A block the model does not have: still an error, and the hint stays on valid names.
    with pytest.raises(HookNameError, match=r"blocks\.\d\.hook_resid_post"):
        validate_hook_names(tiny, ["blocks.7.hook_resid_post"])
    # checked_hooks validates before attaching anything.
    with pytest.raises(HookNameError):
        with checked_hooks(tiny, [("blocks.1.hook_resid_psot", lambda x, hook: x)]):
            pass
    assert _all_hooks_empty(tiny)
    assert validate_hook_names(tiny, ["blocks.1.hook_resid_post"]) == ["blocks.1.hook_resid_post"]


def test_layer_out_of_range_names_the_convention(tiny):
    with pytest.raises(IndexError, match="TransformerLens block indices 0..1"):
        check_layer(tiny, 2)
    with pytest.raises(IndexError, match="paper"):
        with pvlens.steer(tiny, Steering(torch.zeros(tiny.cfg.d_model), layer=5)):
            pass
    assert check_layer(tiny, -1) == 1
    assert resid_hook_name(1) == "blocks.1.hook_resid_post"
    hooks = fwd_hooks(tiny, Steering(torch.zeros(tiny.cfg.d_model), layer=-1))
    assert hooks[0][0] == "blocks.1.hook_resid_post"
    with pytest.raises(ValueError, match="d_model"):
        fwd_hooks(tiny, Steering(torch.zeros(tiny.cfg.d_model + 1), layer=0))
    with pytest.raises(ValueError, match="1-D"):
        Steering(torch.zeros(2, tiny.cfg.d_model), layer=0)


def test_steering_adds_at_resid_post_of_its_block(tiny):
    v = torch.randn(tiny.cfg.d_model)
    tokens = _ids(tiny)
    _, base = tiny.run_with_cache(tokens, names_filter=lambda n: "resid" in n)
    with pvlens.steer(tiny, Steering(v, layer=0, alpha=2.0)):
        _, steered = tiny.run_with_cache(tokens, names_filter=lambda n: "resid" in n)
    # The cache records hook_resid_post before later hooks; block 1's input shows the sum.
    torch.testing.assert_close(steered["blocks.1.hook_resid_pre"], base["blocks.0.hook_resid_post"] + 2.0 * v)
    torch.testing.assert_close(steered["blocks.0.hook_resid_pre"], base["blocks.0.hook_resid_pre"])


def test_alpha_zero_is_a_no_op(tiny):
    tokens = _ids(tiny)
    base = tiny(tokens)
    v = torch.randn(tiny.cfg.d_model) * 1e3
    with pvlens.steer(tiny, [Steering(v, 0, 0.0), Steering(v, 1, 0.0, positions="response")]):
        same = tiny(tokens)
    assert torch.equal(base, same)
    resid = torch.randn(1, 3, tiny.cfg.d_model)
    assert Steering(v, 0, 0.0).hook(resid) is resid


def test_hooks_removed_after_use_and_on_exception(tiny):
    v = torch.randn(tiny.cfg.d_model)
    with pvlens.steer(tiny, multi_layer(torch.stack([v, v]), [0, 1], [1.0, 2.0])):
        assert tiny.hook_dict["blocks.0.hook_resid_post"]._forward_hooks
        assert tiny.hook_dict["blocks.1.hook_resid_post"]._forward_hooks
    assert _all_hooks_empty(tiny)

    with pytest.raises(RuntimeError, match="boom"):
        with pvlens.steer(tiny, Steering(v, 1)):
            tiny(_ids(tiny))
            raise RuntimeError("boom")
    assert _all_hooks_empty(tiny)

    class Exploding(Steering):
        def hook(self, resid, hook=None):
            raise RuntimeError("hook exploded")

    for engine in ("auto", "hooked"):
        with pytest.raises(RuntimeError, match="hook exploded"):
            pvlens.generate(tiny, "Hi", steer=Exploding(v, 0), max_new_tokens=3, progress=False,
                            engine=engine)
        assert _all_hooks_empty(tiny)


def test_multi_layer_builds_one_steering_per_layer(tiny):
    vecs = torch.randn(2, tiny.cfg.d_model)
    steers = multi_layer(vecs, [0, 1], [0.5, -1.0], positions="response")
    assert [(s.layer, s.alpha, s.positions) for s in steers] == [(0, 0.5, "response"), (1, -1.0, "response")]
    assert torch.equal(steers[1].vector, vecs[1])
    with pytest.raises(ValueError, match="alphas"):
        multi_layer(vecs, [0, 1], [1.0])


def test_incremental_pushes_sum_to_alpha_times_the_top_vector():
    vecs = torch.randn(5, 16, generator=torch.Generator().manual_seed(0))
    steers = incremental(vecs, 2.5)
    assert [(s.layer, s.alpha, s.positions) for s in steers] == [(i, 2.5, "response") for i in range(5)]
    assert torch.equal(steers[0].vector, vecs[0].double())  # v_{-1} = 0
    assert torch.equal(steers[3].vector, (vecs[3].double() - vecs[2].double()))
    assert torch.equal(sum(s.vector for s in steers), vecs[-1].double())  # telescopes exactly
    torch.testing.assert_close(sum(s.alpha * s.vector for s in steers), 2.5 * vecs[-1].double())
    # A contiguous range: its first block gets its full vector, the top push is α·v_top.
    part = incremental(vecs, 1.0, positions="all", layers=[1, 2, 3])
    assert [s.layer for s in part] == [1, 2, 3]
    assert torch.equal(part[0].vector, vecs[1].double())
    assert torch.equal(sum(s.vector for s in part), vecs[3].double())
    assert [s.layer for s in incremental(vecs, 1.0, layers=[-2, -1])] == [3, 4]
    with pytest.raises(ValueError, match="contiguous"):
        incremental(vecs, 1.0, layers=[1, 3])
    with pytest.raises(ValueError, match="contiguous"):
        incremental(vecs, 1.0, layers=[2, 1])
    assert pvlens.incremental is incremental


def test_incremental_residual_push_at_the_top_equals_alpha_v_top():
    """With blocks that are the identity (no attention or MLP output), the residual after the
    last block moves by exactly the accumulated push: α·v_L, not Σ α·v_ℓ."""
    from pvlens.core.activations import per_token

    model = pvlens.tiny_model(n_layers=4, seed=1)
    with torch.no_grad():
        for block in model.blocks:
            for w in (block.attn.W_O, block.attn.b_O, block.mlp.W_out, block.mlp.b_out):
                w.zero_()
    vecs = torch.randn(4, model.cfg.d_model, generator=torch.Generator().manual_seed(1)) * 3
    chat = pvlens.encode_conversation(model.tokenizer, [{"role": "user", "content": "Hi"},
                                                        {"role": "assistant", "content": "Hello"}])
    base = per_token(model, chat, layers=[3])[0]
    for engine_off in (False, True):
        hooks = [("blocks.0.attn.hook_z", lambda x, hook: x)] if engine_off else []
        with model.hooks(fwd_hooks=hooks), pvlens.steer(model, incremental(vecs, 1.5, "all")):
            pushed = per_token(model, chat, layers=[3])[0]
        torch.testing.assert_close(pushed - base, (1.5 * vecs[3]).expand_as(base),
                                   atol=1e-4, rtol=0)
    with pvlens.steer(model, multi_layer(vecs, [0, 1, 2, 3], 1.5, "all")):
        summed = per_token(model, chat, layers=[3])[0]
    torch.testing.assert_close(summed - base, (1.5 * vecs.sum(0)).expand_as(base),
                               atol=1e-4, rtol=0)


def test_position_mask_semantics():
    # Two left-padded rows: lengths 4 and 6, prompt lengths 3 and 4.
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    ctx = plain_context(mask, torch.tensor([3, 4]))
    assert ctx.positions.tolist() == [[-1, -1, 0, 1, 2, 3], [0, 1, 2, 3, 4, 5]]
    got = {p: position_mask(p, ctx, 2, 6, "cpu").int().tolist() for p in ("all", "prompt", "response")}
    assert got["all"] == mask.tolist()
    assert got["prompt"] == [[0, 0, 1, 1, 1, 0], [1, 1, 1, 1, 0, 0]]
    assert got["response"] == [[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]]  # from the last prompt token
    explicit = torch.tensor([True, False, False, True])  # indices 0 and 3 of each conversation
    assert position_mask(explicit, ctx, 2, 6, "cpu").int().tolist() == [
        [0, 0, 1, 0, 0, 1], [1, 0, 0, 1, 0, 0]]
    # Without a runner's context: "response" is the last position of the forward pass.
    assert position_mask("response", None, 1, 3, "cpu").tolist() == [[False, False, True]]
    assert position_mask("all", None, 1, 3, "cpu") is None
    with pytest.raises(ValueError, match="runner"):
        position_mask(explicit, None, 1, 3, "cpu")


def test_ablation_removes_the_component(tiny):
    torch.manual_seed(1)
    u = torch.randn(tiny.cfg.d_model)
    unit = u / u.norm()
    tokens = _ids(tiny)
    _, base = tiny.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
    before = base["blocks.1.hook_resid_pre"] @ unit
    assert before.abs().max() > 1.0  # there is something to remove
    with pvlens.steer(tiny, Ablation(u * 7.0, layers=[0])):
        _, cache = tiny.run_with_cache(tokens, names_filter="blocks.1.hook_resid_pre")
    after = cache["blocks.1.hook_resid_pre"]
    assert (after @ unit).abs().max() < 1e-3
    # Only the component along u changed.
    torch.testing.assert_close(after, base["blocks.1.hook_resid_pre"] - before[..., None] * unit)
    assert _all_hooks_empty(tiny)


def test_ablation_respects_positions_and_padding():
    u = torch.tensor([1.0, 0.0, 0.0])
    resid = torch.ones(2, 3, 3)
    ctx = plain_context(torch.tensor([[0, 1, 1], [1, 1, 1]]), torch.tensor([1, 2]))
    with position_context(ctx):
        out = Ablation(u, [0], positions="prompt").hook(resid)
    assert out[..., 0].tolist() == [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
    assert torch.equal(out[..., 1:], resid[..., 1:])
