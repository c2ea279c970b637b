"""The fast engine against the TransformerLens forward it replaces (tiny model, fp32)."""

from __future__ import annotations

import pytest
import torch

import pvlens
from pvlens.core.batching import left_pad
from pvlens.core.engine import engine_for, unsupported_reason
from pvlens.core.model import tiny_model

torch.set_num_threads(1)

PROMPTS = ["Hi", "What is the capital of France? Answer in one word please.", "Write a haiku."]


def _batch(model):
    chats = [pvlens.encode_prompt(model.tokenizer, p) for p in PROMPTS]
    return left_pad(chats, model.tokenizer.pad_token_id, "cpu")


def test_engine_logits_match_transformerlens_with_left_padding(tiny):
    tokens, positions = _batch(tiny)
    valid = positions >= 0
    assert not valid.all()  # the batch is padded
    engine = engine_for(tiny, torch.float32)
    assert engine is not None
    got = engine.forward(tokens, positions, logits="all")
    with torch.no_grad():
        ref = tiny(tokens, attention_mask=valid.long(), padding_side="left")
    torch.testing.assert_close(got[valid], ref[valid], atol=1e-4, rtol=0)
    last = engine.forward(tokens, positions, logits="last")
    torch.testing.assert_close(last, ref[:, -1], atol=1e-4, rtol=0)
    # ... and each row alone, unpadded, through TransformerLens.
    for i in range(len(PROMPTS)):
        with torch.no_grad():
            alone = tiny(tokens[i][valid[i]][None])[0]
        torch.testing.assert_close(got[i][valid[i]], alone, atol=1e-4, rtol=0)


def test_kv_cache_prefill_then_steps_equals_full_forward(tiny):
    tokens, positions = _batch(tiny)
    engine = engine_for(tiny, torch.float32)
    full = engine.forward(tokens, positions, logits="all")
    cut = tokens.shape[1] - 3
    cache = engine.new_cache(tokens.shape[0], tokens.shape[1])
    outs = [engine.forward(tokens[:, :cut], positions[:, :cut], cache, logits="last")]
    for t in range(cut, tokens.shape[1]):
        outs.append(engine.forward(tokens[:, t : t + 1], positions[:, t : t + 1], cache))
    assert cache.length == tokens.shape[1]
    torch.testing.assert_close(torch.stack(outs, 1), full[:, cut - 1 :], atol=1e-4, rtol=0)


def test_engine_calls_the_models_resid_hook_points(tiny):
    tokens, positions = _batch(tiny)
    seen = []
    hooks = [(f"blocks.{i}.{n}", lambda x, hook: seen.append(hook.name))
             for i in range(2) for n in ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")]
    with tiny.hooks(fwd_hooks=hooks):
        assert unsupported_reason(tiny) is None
        engine_for(tiny).forward(tokens, positions)
    assert seen == [name for name, _ in hooks]
    # A hook the engine does not call forces the TransformerLens forward.
    with tiny.hooks(fwd_hooks=[("blocks.0.attn.hook_z", lambda x, hook: x)]):
        assert "blocks.0.attn.hook_z" in unsupported_reason(tiny)
        assert engine_for(tiny) is None
    assert engine_for(tiny) is not None


def test_on_resid_and_stop_at_layer_match_run_with_cache(tiny):
    tokens, positions = _batch(tiny)
    valid = positions >= 0
    got = {}
    out = engine_for(tiny).forward(tokens, positions, stop_at_layer=1, logits="all",
                                   on_resid=lambda i, x: got.__setitem__(i, x.clone()))
    assert out is None and list(got) == [0]
    _, cache = tiny.run_with_cache(tokens, attention_mask=valid.long(), padding_side="left",
                                   names_filter="blocks.0.hook_resid_post")
    ref = cache["blocks.0.hook_resid_post"][valid]
    # The residual stream reaches ~150 here, so fp32 summation order (which differs between
    # CPUs' matmul kernels) moves it by up to ~2e-4 (seen on an AMD EPYC); a real mistake
    # (rotary, mask, weights) moves it by whole units. Tolerance: 2e-6 of its largest value.
    torch.testing.assert_close(got[0][valid], ref, atol=2e-6 * float(ref.abs().max()), rtol=1e-5)


def test_engine_repacks_after_weights_change():
    model = tiny_model(seed=3)
    tokens, positions = _batch(model)
    first = engine_for(model)
    assert engine_for(model) is first  # packed once
    with torch.no_grad():
        model.blocks[1].mlp.W_out.mul_(-1.0)
    second = engine_for(model)
    assert second is not first
    with torch.no_grad():
        ref = model(tokens, attention_mask=(positions >= 0).long(), padding_side="left")[:, -1]
    torch.testing.assert_close(second.forward(tokens, positions), ref, atol=1e-4, rtol=0)


def _tl_last(model, tokens, positions):
    with torch.no_grad():
        return model(tokens, attention_mask=(positions >= 0).long(), padding_side="left")[:, -1]


def test_lora_model_is_packed_once_per_weight_version():
    """A LoRA (parametrized weights) is packed once; an A/B update, an in-place change of an
    original weight or switching the adapter off repacks, and each engine matches TL."""
    from pvlens.finetune.lora import LoraConfig, add_lora

    model = tiny_model(seed=6)
    tokens, positions = _batch(model)
    handle = add_lora(model, LoraConfig(r=4, targets=("q", "v", "down")))
    first = engine_for(model)
    assert engine_for(model) is first  # no weight change: the packed engine is reused
    pvlens.generate(model, "Hi", max_new_tokens=2, progress=False)
    assert engine_for(model) is first
    with torch.no_grad():
        for p in handle.parameters():
            if p.dim() == 2 and p.abs().sum() == 0:  # lora_B starts at zero
                p.normal_(0.0, 0.1)
    second = engine_for(model)
    assert second is not first
    torch.testing.assert_close(second.forward(tokens, positions),
                               _tl_last(model, tokens, positions), atol=1e-4, rtol=0)
    assert not torch.allclose(first.forward(tokens, positions), second.forward(tokens, positions))
    with handle.disabled():  # a switch, not a parameter: still a new version
        off = engine_for(model)
        assert off is not second
        torch.testing.assert_close(off.forward(tokens, positions),
                                   _tl_last(model, tokens, positions), atol=1e-4, rtol=0)
    assert engine_for(model) is not off
    orig = model.blocks[0].attn.parametrizations["W_Q"].original
    with torch.no_grad():
        orig.mul_(0.5)
    third = engine_for(model)
    torch.testing.assert_close(third.forward(tokens, positions),
                               _tl_last(model, tokens, positions), atol=1e-4, rtol=0)


def test_model_fingerprint_sees_a_disabled_adapter():
    from pvlens.core.fingerprint import model_fingerprint
    from pvlens.finetune.lora import LoraConfig, add_lora

    model = tiny_model(seed=6)
    handle = add_lora(model, LoraConfig(r=4, targets=("q", "v")))
    on = model_fingerprint(model)
    with handle.disabled():
        assert model_fingerprint(model) != on
    assert model_fingerprint(model) == on


def test_generate_is_the_function_whatever_was_imported_first(tiny):
    """The module is `pvlens.core.generation`, so importing it never rebinds `pvlens.generate`."""
    import pvlens.core.activations  # noqa: F401  (imports pvlens.core.generation internally)
    import pvlens.core.generation

    assert pvlens.generate is pvlens.core.generation.generate
    assert pvlens.generate(tiny, "Hi", max_new_tokens=2, progress=False).chats[0].response_len == 2


def test_tl_speedups_keep_results():
    """The copy-free MLP/unembed swap gives the stock TransformerLens results."""
    from transformer_lens.components import Unembed
    from transformer_lens.components.mlps.gated_mlp import GatedMLP

    from pvlens import tl_speedups

    model = tiny_model(seed=4)
    assert type(model.blocks[0].mlp) is tl_speedups.FastGatedMLP
    assert type(model.unembed) is tl_speedups.FastUnembed
    tokens = torch.tensor([pvlens.encode_prompt(model.tokenizer, "Hello there").ids])
    with torch.no_grad():
        fast = model(tokens)
        for b in model.blocks:
            b.mlp.__class__ = GatedMLP
        model.unembed.__class__ = Unembed
        stock = model(tokens)
    torch.testing.assert_close(fast, stock, atol=1e-4, rtol=1e-5)


@pytest.mark.parametrize("bad", [{"positional_embedding_type": "standard"}])
def test_unsupported_configs_fall_back(bad):
    model = tiny_model(seed=5)
    for k, v in bad.items():
        setattr(model.cfg, k, v)
    assert "rotary" in unsupported_reason(model)
    assert engine_for(model) is None


def test_packed_unembedding_gives_the_same_logits(tiny):
    tokens, positions = _batch(tiny)
    engine = engine_for(tiny, torch.float32)
    plain = engine.forward(tokens, positions, logits="last")
    try:
        # on: an fp32 CPU engine with MKL; the packing is for exactly this many rows
        assert engine.pack_unembed(tokens.shape[0]) == torch._C.has_mkl
        torch.testing.assert_close(engine.forward(tokens, positions, logits="last"), plain, atol=0, rtol=0)
        # another row count takes the unpacked path
        torch.testing.assert_close(engine.forward(tokens[:2], positions[:2], logits="last"), plain[:2],
                                   atol=1e-5, rtol=0)
    finally:
        assert engine.pack_unembed(None) is False
    assert engine._packed_unembed is None
    bf16 = engine_for(tiny, torch.bfloat16)
    assert bf16.pack_unembed(3) is False  # MKL packs fp32 only
    engine_for(tiny, torch.float32)  # leave the fp32 engine cached for the other tests


def test_bf16_engine_on_cpu_packs_weights_out_in_and_agrees_with_fp32(tiny):
    tokens, positions = _batch(tiny)
    ref = engine_for(tiny, torch.float32).forward(tokens, positions, logits="all")
    bf16 = engine_for(tiny, torch.bfloat16)
    try:
        assert bf16.out_in and len(bf16.W_U) == 1
        assert bf16.layers[0]["w_gate"].shape == (tiny.cfg.d_mlp, tiny.cfg.d_model)  # [out, in]
        valid = positions >= 0
        got = bf16.forward(tokens, positions, logits="all")
        # bf16 weights and activations (random tiny model): logits off by ~2 % of their spread
        # on average, the top token the same at most positions
        assert (got[valid] - ref[valid]).abs().mean() < 0.05 * ref[valid].std()
        assert (got[valid].argmax(-1) == ref[valid].argmax(-1)).float().mean() > 0.85
        cache = bf16.new_cache(tokens.shape[0], tokens.shape[1])
        bf16.forward(tokens[:, :-1], positions[:, :-1], cache, logits="last")
        step = bf16.forward(tokens[:, -1:], positions[:, -1:], cache)  # one-token decoding path
        assert (step - got[:, -1]).abs().mean() < 0.05 * ref[valid].std()
    finally:
        engine_for(tiny, torch.float32)


def test_bf16_decoding_attention_kernels_agree(tiny, monkeypatch):
    """CPU decoding in bf16 runs SDPA on AMX CPUs and two batched matmuls elsewhere
    (`sdpa_decode`, chosen from the CPU's flags); each setting takes its kernel, and both give
    the same step on a left-padded batch (the cache longer than the step reads, so its slices are
    strided) within bf16 rounding, as close to fp32 as the prefill is."""
    import torch.nn.functional as F

    from pvlens.core.device import cpu_has_amx

    calls = {"sdpa": 0}
    sdpa = F.scaled_dot_product_attention

    def counted(*args, **kwargs):
        calls["sdpa"] += 1
        return sdpa(*args, **kwargs)

    monkeypatch.setattr(F, "scaled_dot_product_attention", counted)
    tokens, positions = _batch(tiny)
    ref = engine_for(tiny, torch.float32).forward(tokens, positions, logits="all")[:, -1]
    assert engine_for(tiny, torch.float32).sdpa_decode is False
    bf16 = engine_for(tiny, torch.bfloat16)
    try:
        assert bf16.sdpa_decode == cpu_has_amx()
        pad = positions[:, :-1] < 0  # left padding: the cache columns a step must not read
        assert pad.any()
        steps = {}
        for use_sdpa in (True, False):
            bf16.sdpa_decode = use_sdpa
            cache = bf16.new_cache(tokens.shape[0], tokens.shape[1] + 4)
            bf16.forward(tokens[:, :-1], positions[:, :-1], cache, logits="last")
            for kv in (*cache.k, *cache.v):  # poison them: a step that reads them changes a lot
                kv.permute(0, 2, 1, 3)[:, : pad.shape[1]][pad] = 30.0
            calls["sdpa"] = 0
            steps[use_sdpa] = bf16.forward(tokens[:, -1:], positions[:, -1:], cache)
            assert calls["sdpa"] == (tiny.cfg.n_layers if use_sdpa else 0)
        spread = ref.std()
        assert (steps[True] - steps[False]).abs().mean() < 0.02 * spread
        for got in steps.values():
            assert torch.isfinite(got).all() and (got - ref).abs().mean() < 0.05 * spread
    finally:
        monkeypatch.undo()
        tiny.__dict__["_pvlens_engines"].clear()
        engine_for(tiny, torch.float32)


def test_bf16_slot_decoding_reads_the_whole_cache_with_the_same_result(tiny, monkeypatch):
    """Without SDPA, a bf16 decoding step over a slot-mode cache reads the whole cache (no copy
    of a strided slice) when it needs at least half of it, and a contiguous copy of the slice
    otherwise. Both give the same step: slots past a row's length (here poisoned) weigh 0."""
    from pvlens.core.engine import FastEngine

    bf16 = engine_for(tiny, torch.bfloat16)
    ids = torch.tensor([[5, 9, 13, 2, 11, 4]])
    fp32_ref = engine_for(tiny, torch.float32).forward(
        torch.cat([ids, torch.tensor([[7]])], 1), torch.arange(7)[None])
    decided: list[bool] = []
    real = FastEngine._reads_full_cache

    def spy(self, cache, mask):
        decided.append(real(self, cache, mask))
        return decided[-1]

    monkeypatch.setattr(FastEngine, "_reads_full_cache", spy)
    try:
        bf16.sdpa_decode = False
        steps = {}
        for max_len, force_copy in ((10, False), (40, False), (10, True)):
            if force_copy:
                monkeypatch.setattr(FastEngine, "_reads_full_cache", lambda self, cache, mask: False)
            prefill = bf16.new_cache(1, ids.shape[1])
            bf16.forward(ids, torch.arange(ids.shape[1])[None], prefill)
            cache = bf16.new_cache(3, max_len)
            for kv in (*cache.k, *cache.v):  # what uninitialised memory may hold
                kv.fill_(float("nan"))
            cache.slot_mode()
            cache.load_rows([1], prefill)
            for kv in (*cache.k, *cache.v):  # some stale slots (others left as slot_mode made them)
                kv[[0, 2], :, :3] = 30.0
                kv[1, :, ids.shape[1] : ids.shape[1] + 2] = 30.0
            decided.clear()
            got = bf16.forward(torch.tensor([[0], [7], [0]]), torch.tensor([[-1], [6], [-1]]), cache)
            steps[(max_len, force_copy)] = got[1]
            assert torch.isfinite(got).all()
            if not force_copy:  # 7 keys of a 10-slot cache: whole; of a 40-slot one: a copy
                assert decided == [max_len == 10]
                # a compacted cache (`select`, as bulk generation shrinks it) continues the same
                tail = bf16.forward(torch.tensor([[3], [0]]), torch.tensor([[7], [-1]]), cache.select([1, 0]))
                assert torch.isfinite(tail).all()
                steps[(max_len, "tail")] = tail[0]
        torch.testing.assert_close(steps[(10, False)], steps[(10, True)], atol=1e-2, rtol=0)
        torch.testing.assert_close(steps[(40, False)], steps[(10, True)], atol=0, rtol=0)
        torch.testing.assert_close(steps[(10, "tail")], steps[(40, "tail")], atol=1e-2, rtol=0)
        spread = fp32_ref.std()
        assert (steps[(10, False)] - fp32_ref[0]).abs().mean() < 0.05 * spread
    finally:
        monkeypatch.undo()
        tiny.__dict__["_pvlens_engines"].clear()
        engine_for(tiny, torch.float32)


def test_logits_in_the_compute_dtype_are_the_fp32_logits_rounded(tiny):
    """`float_logits=False` skips only the final conversion (sampling reads them as they are)."""
    tokens, positions = _batch(tiny)
    try:
        for dtype in (torch.bfloat16, torch.float32):
            engine = engine_for(tiny, dtype)
            native = engine.forward(tokens, positions, float_logits=False)
            assert native.dtype == dtype
            torch.testing.assert_close(native.float(), engine.forward(tokens, positions), atol=0, rtol=0)
    finally:
        tiny.__dict__["_pvlens_engines"].clear()


def test_fp16_decoding_scores_do_not_overflow_before_scaling():
    """fp16 decoding without SDPA scales q before q.k: with raw scores above fp16's range
    (65504) and scaled ones inside it, the step stays finite and near fp32."""
    model = tiny_model()
    tokens, positions = _batch(model)

    def largest_score() -> float:  # over every layer; TransformerLens's are q.k / attn_scale
        _, cache = model.run_with_cache(tokens, attention_mask=(positions >= 0).long(),
                                        padding_side="left", names_filter=lambda n: "attn_scores" in n)
        return max(float(x[torch.isfinite(x)].abs().max()) for x in cache.values())

    with torch.no_grad():
        grow = (30000 / largest_score()) ** 0.5  # scaled scores up to ~30000
        for block in model.blocks:
            block.attn.W_Q.mul_(grow)
            block.attn._W_K.mul_(grow)  # grouped-query attention: W_K repeats _W_K
        scaled = largest_score()
    assert scaled < 65504 < scaled * model.blocks[0].attn.attn_scale
    ref = engine_for(model, torch.float32).forward(tokens, positions, logits="all")[:, -1]
    fp16 = engine_for(model, torch.float16)
    fp16.sdpa_decode = False
    cache = fp16.new_cache(tokens.shape[0], tokens.shape[1])
    fp16.forward(tokens[:, :-1], positions[:, :-1], cache)
    step = fp16.forward(tokens[:, -1:], positions[:, -1:], cache)
    assert torch.isfinite(step).all()
    assert (step - ref).abs().mean() < 0.05 * ref.std()


def test_onednn_packed_bf16_weights_give_the_plain_bf16_results(tiny, monkeypatch):
    """The oneDNN weight reorder is a layout change only: logits of a prefill and of a
    decoding step equal those of the same bf16 engine with plain [out, in] weights."""
    import pvlens.core.engine as engine_module

    tokens, positions = _batch(tiny)
    try:
        packed = engine_for(tiny, torch.bfloat16)
        assert packed.mkldnn == engine_module.mkldnn_bf16_packing()
        runs = []
        for engine in (packed, None):
            if engine is None:
                monkeypatch.setattr(engine_module, "mkldnn_bf16_packing", lambda: False)
                tiny.__dict__["_pvlens_engines"].clear()
                engine = engine_for(tiny, torch.bfloat16)
                assert not engine.mkldnn and isinstance(engine.layers[0]["w_up"], torch.Tensor)
            cache = engine.new_cache(tokens.shape[0], tokens.shape[1])
            first = engine.forward(tokens[:, :-1], positions[:, :-1], cache, logits="all")
            runs.append((first, engine.forward(tokens[:, -1:], positions[:, -1:], cache)))
        valid = positions[:, :-1] >= 0
        torch.testing.assert_close(runs[0][0][valid], runs[1][0][valid], atol=0, rtol=0)
        torch.testing.assert_close(runs[0][1], runs[1][1], atol=0, rtol=0)
    finally:
        monkeypatch.undo()
        tiny.__dict__["_pvlens_engines"].clear()
        engine_for(tiny, torch.float32)


def test_bf16_engine_falls_back_where_onednn_cannot_pack_bf16(tmp_path):
    """On a CPU without AVX512-BW/VL/DQ or AVX-NE-CONVERT oneDNN's bf16 reorder raises; the
    engine must then keep plain weights (emulated here by capping oneDNN at AVX2)."""
    import os
    import subprocess
    import sys

    code = (
        "import torch, pvlens.core.engine as e\n"
        "from pvlens.core.model import tiny_model\n"
        "m = tiny_model()\n"
        "eng = e.engine_for(m, torch.bfloat16)\n"
        "t = torch.tensor([[1, 2, 3]]); p = torch.arange(3)[None]\n"
        "out = eng.forward(t, p)\n"
        "print(e.mkldnn_bf16_packing(), eng.mkldnn, bool(torch.isfinite(out).all()))\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["False", "False", "True"]
