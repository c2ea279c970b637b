"""LoRA on the HookedTransformer: identities, files, agreement with peft, training loop."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
import torch

import pvlens
from pvlens import tl_speedups
from pvlens.core.chat import encode_conversation
from pvlens.core.model import _hooked_from_local, ensure_default_model_dir, tiny_model
from pvlens.finetune import checkpoint
from pvlens.finetune.data import collate, read_jsonl
from pvlens.finetune.lora import (
    LoraConfig,
    add_lora,
    export_peft,
    get_handle,
    load_adapter,
    lora_from_peft_modules,
    save_adapter,
)
from pvlens.finetune.penalty import ProjectionPenalty
from pvlens.finetune.train import FinetuneConfig, batch_loss_terms, finetune, lr_factor
from pvlens.io.runs import StaleRunError

torch.set_num_threads(1)
PEFT_MODULES = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

CONVS = [
    [{"role": "user", "content": f"What is {a} plus {b}?"},
     {"role": "assistant", "content": f"{a} plus {b} is {a + b}."}]
    for a, b in [(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4), (6, 1), (8, 3), (9, 9), (5, 2),
                 (3, 3), (7, 1)]
]


def _randomise_b(handle, std=0.3, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for s in handle.sites:
            s.lora.lora_B.copy_(torch.randn(s.lora.lora_B.shape, generator=g) * std)


def _tokens(model, text="The quick brown fox jumps over the lazy dog."):
    return torch.tensor([model.tokenizer(text, add_special_tokens=False)["input_ids"]])


@pytest.fixture(scope="module")
def hf_pair():
    """A tiny random HF Llama (GQA) and the HookedTransformer built from it, same weights."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(ensure_default_model_dir())
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False)
    hf = LlamaForCausalLM(cfg).eval()
    with torch.no_grad():
        for p in hf.parameters():
            if p.dim() == 2:
                p.mul_(4.0)  # default init gives near-uniform logits; widen so outputs vary
    folder = Path(tempfile.mkdtemp())
    hf.save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def _load_pair(folder):
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    tl = tl_speedups.apply(_hooked_from_local(folder, "cpu", torch.float32, n_ctx=256)).eval()
    return hf, tl


# --- identities ----------------------------------------------------------------------------

def test_zero_b_adapter_is_a_no_op():
    model = tiny_model()
    ids = _tokens(model)
    with torch.no_grad():
        before = model(ids)
        handle = add_lora(model, LoraConfig(r=4, alpha=8))
        after = model(ids)
        with handle.factored():
            factored = model(ids)
    assert handle.n_parameters > 0
    assert torch.equal(before, after)
    assert torch.allclose(before, factored, atol=1e-6)


def test_weights_and_factored_modes_agree_and_disable_restores_base():
    model = tiny_model()
    ids = _tokens(model)
    with torch.no_grad():
        base = model(ids)
        handle = add_lora(model, LoraConfig(r=4, alpha=8))
        _randomise_b(handle)
        adapted = model(ids)
        with handle.factored():
            factored = model(ids)
        with handle.disabled():
            disabled = model(ids)
    assert (adapted - base).abs().max() > 1e-2  # the adapter matters
    assert torch.allclose(adapted, factored, atol=1e-4)
    assert torch.allclose(disabled, base, atol=1e-5)


def test_merge_unmerge_round_trip_and_remove():
    model = tiny_model()
    ids = _tokens(model)
    w_q = model.blocks[0].attn.W_Q.detach().clone()
    handle = add_lora(model, LoraConfig(r=4, alpha=8))
    _randomise_b(handle)
    with torch.no_grad():
        adapted = model(ids)
        handle.merge()
        merged = model(ids)
        stored = model.blocks[0].attn.parametrizations.W_Q.original.detach().clone()
        with handle.disabled():
            base_while_merged = model(ids)
        handle.unmerge()
        unmerged = model(ids)
    assert torch.allclose(adapted, merged, atol=1e-5)
    assert not torch.allclose(stored, w_q, atol=1e-3)  # merge really wrote into the weight
    assert torch.allclose(model.blocks[0].attn.parametrizations.W_Q.original, w_q, atol=1e-6)
    assert torch.allclose(adapted, unmerged, atol=1e-6)
    with torch.no_grad():
        base = tiny_model()(ids)
    assert torch.allclose(base_while_merged, base, atol=1e-4)  # (W + d) - d: float rounding
    handle.remove(merge=True)
    assert get_handle(model) is None
    with torch.no_grad():
        assert torch.allclose(model(ids), adapted, atol=1e-5)
    assert not any(p.requires_grad for p in model.parameters())


def test_save_load_round_trip(tmp_path):
    model = tiny_model()
    ids = _tokens(model)
    handle = add_lora(model, LoraConfig(r=4, alpha=8, targets=("q", "v", "down")))
    _randomise_b(handle)
    save_adapter(handle, tmp_path / "ad")
    meta = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert meta["lora"]["targets"] == ["q", "v", "down"]
    other = tiny_model()
    loaded = load_adapter(other, tmp_path / "ad")
    with torch.no_grad():
        assert torch.allclose(model(ids), other(ids), atol=1e-6)
    assert len(loaded.sites) == len(handle.sites) == 2 * 3
    with pytest.raises(ValueError, match="layers"):
        load_adapter(tiny_model(n_layers=3), tmp_path / "ad")


def test_only_lora_parameters_get_gradients():
    model = tiny_model()
    handle = add_lora(model, LoraConfig(r=4, alpha=8))
    _randomise_b(handle)
    ids = _tokens(model)
    for mode in ("weights", "factored"):
        with handle.factored() if mode == "factored" else torch.enable_grad():
            model(ids).logsumexp(-1).sum().backward()
        lora_ids = {id(p) for p in handle.parameters()}
        for name, p in model.named_parameters():
            if id(p) in lora_ids:
                assert p.grad is not None and p.grad.abs().sum() > 0, name
            else:
                assert p.grad is None and not p.requires_grad, name
        for p in handle.parameters():
            p.grad = None


# --- agreement with peft --------------------------------------------------------------------

def _hf_response_loss(pm, chat):
    ids = torch.tensor([chat.ids])
    labels = ids.clone()
    labels[:, : chat.prompt_len] = -100
    return pm(input_ids=ids, labels=labels).loss


@pytest.mark.parametrize("rslora", [True, False])
def test_matches_peft_loss_and_gradients(hf_pair, rslora):
    import peft

    hf, tl = _load_pair(hf_pair)
    pm = peft.get_peft_model(hf, peft.LoraConfig(r=4, lora_alpha=8, use_rslora=rslora,
                                                 target_modules=PEFT_MODULES, lora_dropout=0.0))
    torch.manual_seed(3)
    for name, p in pm.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.2)  # non-zero B: the adapter changes the output
    handle = add_lora(tl, LoraConfig(r=4, alpha=8, rslora=rslora))
    lora_from_peft_modules(handle, pm)
    chat = encode_conversation(tl.tokenizer, CONVS[0])

    hf_loss = _hf_response_loss(pm, chat)
    hf_loss.backward()
    batch = collate([chat], [0], 0, "right")
    for mode in ("weights", "factored"):
        for p in handle.parameters():
            p.grad = None
        with handle.factored() if mode == "factored" else torch.enable_grad():
            ce, _ = batch_loss_terms(tl, batch, "right")
            loss = ce / batch.n_targets
        loss.backward()
        assert abs(float(loss) - float(hf_loss)) < 1e-5, mode
        layers = pm.base_model.model.model.layers
        for s in handle.sites:
            mod = layers[s.layer].get_submodule(
                {"q": "self_attn.q_proj", "k": "self_attn.k_proj", "v": "self_attn.v_proj",
                 "o": "self_attn.o_proj", "gate": "mlp.gate_proj", "up": "mlp.up_proj",
                 "down": "mlp.down_proj"}[s.target])
            for ab in "AB":
                g_hf = getattr(mod, f"lora_{ab}")["default"].weight.grad
                g_tl = getattr(s.lora, f"lora_{ab}").grad
                assert g_tl is not None and g_hf.abs().max() > 0
                # Relative to the gradient's norm, not per element: both sides sum the same
                # float32 terms in different orders (TL einsums vs nn.Linear, and AVX-512 vs
                # AVX2 kernels), which leaves errors of ~1e-6 of the gradient's scale (seen:
                # <= 4.4e-6). An element near zero (e.g. -6.7e-4 in a gradient whose largest
                # entry is 0.24) then fails any per-element rtol. A real mistake (scale,
                # transpose, wrong site) is an O(1) relative error.
                err = float((g_tl - g_hf).norm() / g_hf.norm())
                assert err < 1e-4, (mode, s.target, ab, err)


def test_export_peft_loads_into_hf(hf_pair, tmp_path):
    from peft import PeftModel

    hf, tl = _load_pair(hf_pair)
    handle = add_lora(tl, LoraConfig(r=4, alpha=8, targets=("q", "o", "up", "down"), layers=(1,)))
    _randomise_b(handle)
    export_peft(handle, tmp_path / "peft")
    pm = PeftModel.from_pretrained(hf, tmp_path / "peft").eval()
    ids = _tokens(tl)
    with torch.no_grad():
        assert torch.allclose(pm(ids).logits, tl(ids), atol=1e-4)


# --- padding --------------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["right", "left"])
def test_padded_forward_matches_unpadded(side):
    model = tiny_model()
    chats = [encode_conversation(model.tokenizer, c) for c in CONVS[:3]]
    chats[1] = chats[1].with_response(chats[1].response_ids + chats[1].response_ids)  # longer
    batch = collate(chats, [0, 1, 2], model.tokenizer.pad_token_id, side)
    with torch.no_grad():
        padded = model(batch.tokens, attention_mask=batch.attention_mask, padding_side=side)
        for i, c in enumerate(chats):
            alone = model(torch.tensor([c.ids]))[0]
            cols = batch.positions[i] >= 0
            assert torch.allclose(padded[i, cols], alone, atol=1e-4), (side, i)


# --- training loop --------------------------------------------------------------------------

def _tiny_cfg(**kw):
    base = dict(lora=LoraConfig(r=4, alpha=8, dropout=0.1), lr=1e-2, batch_size=4,
                micro_batch_size=2, warmup_steps=1, eval_fraction=0.2, save_every=2, max_steps=6,
                epochs=3)
    return FinetuneConfig(**{**base, **kw})


def test_lr_schedule():
    assert lr_factor(0, 2, 10, "linear") == pytest.approx(1 / 3)
    assert lr_factor(2, 2, 10, "linear") == 1.0
    assert lr_factor(9, 2, 10, "linear") == pytest.approx(1 / 8)
    assert lr_factor(6, 2, 10, "cosine") == pytest.approx(0.5)
    assert lr_factor(7, 2, 10, "constant") == 1.0


def test_resume_after_interrupt_matches_uninterrupted_run(tmp_path):
    cfg = _tiny_cfg()
    full = finetune(tiny_model(), CONVS, cfg, tmp_path / "full", progress=False)
    assert full.steps == 6 and len(full.train_losses) == 6

    class Killed(Exception):
        pass

    def kill_at_3(record):
        if record["step"] == 3:
            raise Killed

    model = tiny_model()
    with pytest.raises(Killed):
        finetune(model, CONVS, cfg, tmp_path / "cut", progress=False, callback=kill_at_3)
    assert get_handle(model) is None  # an interrupted run leaves the model clean
    resumed = finetune(model, CONVS, cfg, tmp_path / "cut", progress=False)  # from step 2
    a, b = full.handle.state_dict(), resumed.handle.state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k], b[k], atol=1e-7), k
    assert resumed.train_losses == pytest.approx(full.train_losses, abs=1e-6)
    log = [json.loads(x) for x in (tmp_path / "cut" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3, 4, 5, 6]
    with pytest.raises(StaleRunError, match="config.lr"):
        finetune(tiny_model(), CONVS, cfg.model_copy(update={"lr": 1e-3}), tmp_path / "cut",
                 progress=False)


class _Payload:
    """Unpickling this writes a marker file: proof that a checkpoint ran code."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (Path(self.marker), "pwned"))


def test_planted_pickle_checkpoint_is_refused_not_executed(tmp_path):
    cfg = _tiny_cfg(max_steps=2)
    out = tmp_path / "run"
    (out / "checkpoint").mkdir(parents=True)
    marker = tmp_path / "marker.txt"
    torch.save({"step": 1, "x": _Payload(str(marker))}, out / "checkpoint" / "trainer_state.pt")
    model = tiny_model()
    with pytest.raises(checkpoint.UnsafeCheckpointError, match="pickle"):
        finetune(model, CONVS, cfg, out, progress=False)
    assert not marker.exists()
    assert get_handle(model) is None
    # starting over discards the planted folder without reading it
    res = finetune(model, CONVS, cfg, out, resume=False, progress=False)
    assert res.steps == 2 and not marker.exists()
    assert not (out / "checkpoint" / "trainer_state.pt").exists()


def test_checkpoint_round_trips_optimizer_and_rng_without_pickle(tmp_path):
    import random

    import numpy as np

    p = torch.nn.Parameter(torch.randn(3, 2))
    opt = torch.optim.AdamW([p], lr=1e-3, betas=(0.8, 0.9))
    p.grad = torch.randn(3, 2)
    opt.step()
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.5)
    state = {"step": 3, "losses": [1.5, 1.25], "optimizer": opt.state_dict(),
             "scheduler": sched.state_dict(), "rng": checkpoint.rng_state()}
    checkpoint.save(tmp_path / "ck", {"a": torch.ones(2)}, state)
    assert not list((tmp_path / "ck").glob("*.pt"))
    found = checkpoint.find(tmp_path / "ck")
    adapter, back = checkpoint.load(found)
    assert torch.equal(adapter["a"], torch.ones(2))
    assert back["step"] == 3 and back["losses"] == [1.5, 1.25]
    assert back["optimizer"]["param_groups"] == state["optimizer"]["param_groups"]
    assert back["optimizer"]["param_groups"][0]["betas"] == (0.8, 0.9)
    for k, v in state["optimizer"]["state"][0].items():
        assert torch.equal(back["optimizer"]["state"][0][k], v), k
    assert back["scheduler"] == state["scheduler"]
    expected = (torch.rand(2), random.random(), np.random.rand())
    checkpoint.set_rng_state(back["rng"])
    assert (torch.rand(2), random.random(), np.random.rand())[1:] == expected[1:]
    checkpoint.set_rng_state(back["rng"])
    assert torch.equal(torch.rand(2), expected[0])


def test_training_lowers_loss_and_writes_files(tmp_path):
    path = tmp_path / "data.jsonl"
    path.write_text("".join(json.dumps({"messages": c}) + "\n" for c in CONVS))
    model = tiny_model()
    res = finetune(model, path, _tiny_cfg(lora=LoraConfig(r=4, alpha=8), max_steps=8),
                   tmp_path / "run", progress=False)
    assert res.train_losses[-1] < res.train_losses[0]
    assert res.eval_loss is not None and res.tokens_per_s > 0
    for name in ("adapter/adapter.safetensors", "adapter/adapter_config.json", "summary.json",
                 "log.jsonl", "run.json", "inputs.json", "checkpoint/trainer_state.json"):
        assert (tmp_path / "run" / name).exists(), name
    other = tiny_model()
    load_adapter(other, tmp_path / "run" / "adapter")
    ids = _tokens(model)
    with torch.no_grad():
        assert torch.allclose(model(ids), other(ids), atol=1e-6)


def test_preventative_steering_active_in_training_only(tmp_path):
    model = tiny_model()
    v = torch.randn(model.cfg.d_model)
    hook = model.hook_dict["blocks.0.hook_resid_post"]
    seen = []

    def spy(record):
        seen.append(len(hook._forward_hooks))

    cfg = _tiny_cfg(lora=LoraConfig(r=4, alpha=8), max_steps=2, save_every=10)
    steered = finetune(model, CONVS, cfg, tmp_path / "s", steer=[pvlens.Steering(v, 0, 4.0)],
                       progress=False, callback=spy)
    plain = finetune(tiny_model(), CONVS, cfg, tmp_path / "p", progress=False)
    assert seen == [0, 0]  # the callback runs between steps: hooks are only on within a step
    assert all(not hp._forward_hooks for hp in model.hook_dict.values())  # gone at inference
    assert steered.train_losses[0] != pytest.approx(plain.train_losses[0], abs=1e-4)
    assert steered.eval_loss_intervened is not None
    assert steered.eval_loss != pytest.approx(steered.eval_loss_intervened, abs=1e-4)
    run = json.loads((tmp_path / "s" / "run.json").read_text())
    assert run["interventions"][0]["alpha"] == 4.0


def test_steering_hook_fires_during_training_forward(tmp_path):
    model = tiny_model()
    calls = []

    class Counting(pvlens.Steering):
        def hook(self, resid, hook=None):
            calls.append(resid.requires_grad)
            return super().hook(resid, hook)

    cfg = _tiny_cfg(lora=LoraConfig(r=4, alpha=8), max_steps=1, eval_fraction=0.0)
    finetune(model, CONVS, cfg, tmp_path / "c", progress=False,
             steer=[Counting(torch.randn(model.cfg.d_model), 1, 2.0)])
    n_train_micro = 2  # batch 4 / micro 2
    assert len(calls) == n_train_micro and all(calls)  # training forwards, with gradients
    ids = _tokens(model)
    with torch.no_grad():
        model(ids)
    assert len(calls) == n_train_micro  # not at inference


def test_caft_and_l2_penalty_run(tmp_path):
    model = tiny_model()
    v = torch.randn(model.cfg.n_layers, model.cfg.d_model)
    cfg = _tiny_cfg(lora=LoraConfig(r=4, alpha=8), max_steps=3, save_every=10)
    res = finetune(model, CONVS, cfg, tmp_path / "caft", steer=[pvlens.Ablation(v[1], [0, 1])],
                   progress=False)
    assert res.steps == 3
    pen = ProjectionPenalty(v, layers=[0, 1], weight=10.0, reduction="response_avg")
    res = finetune(tiny_model(), CONVS, cfg, tmp_path / "l2", penalty=pen, progress=False)
    log = [json.loads(x) for x in (tmp_path / "l2" / "log.jsonl").read_text().splitlines()]
    assert log[0]["penalty"] < 1e-6  # B = 0 at step 1: the model is the base model
    assert log[-1]["penalty"] > log[0]["penalty"]
    assert (tmp_path / "l2" / "penalty_base.pt").exists()


def test_bad_data_is_rejected_clearly(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"messages": [{"role": "user", "content": "hi"}]}) + "\n")
    with pytest.raises(ValueError, match="last message must be the assistant"):
        read_jsonl(bad)
    bad.write_text("{not json\n")
    with pytest.raises(ValueError, match="bad.jsonl:1"):
        read_jsonl(bad)
    model = tiny_model()
    add_lora(model, LoraConfig(r=2))
    with pytest.raises(RuntimeError, match="already carries"):
        finetune(model, CONVS, _tiny_cfg(), tmp_path / "x", progress=False)
