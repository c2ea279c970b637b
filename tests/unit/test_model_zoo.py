"""The model zoo: tiny random checkpoints of every family the paper and its users run, made with
Hugging Face's own config and model classes (no download), saved in folders named like the real
models, loaded by `pvlens.load_model(folder)` and checked against Hugging Face.

Each family: Llama-3.1 (GQA, llama3 rope scaling), Qwen2.5 (q/k/v biases), Qwen3 (q/k norm),
Mistral v0.3, Gemma-2 (soft-capping, pre/post norms, alternating sliding-window layers). The
tokenizer is a small byte-level BPE trained here with the family's special tokens.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import pvlens
from pvlens.core.batching import left_pad
from pvlens.core.engine import engine_for, unsupported_reason
from pvlens.core.model import load_hf_model
from pvlens.core.steering import steer
from pvlens.core.zoo import FAMILIES, ZOO, hf_logits, make_checkpoint, zoo_tokens

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def zoo(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("zoo")
    return {family: make_checkpoint(root, family) for family in FAMILIES}


@pytest.fixture(scope="module")
def loaded(zoo) -> dict:
    """family → (pvlens model, HF model)."""
    return {f: (pvlens.load_model(str(p), n_ctx=None), load_hf_model(p)[0]) for f, p in zoo.items()}


# ---- loading --------------------------------------------------------------------------------
@pytest.mark.parametrize("family", FAMILIES)
def test_loads_from_own_config_not_folder_name(zoo, loaded, family):
    model, hf = loaded[family]
    assert Path(zoo[family]).name == ZOO[family].folder
    assert model.cfg.n_layers == 2 and model.cfg.d_model == 64
    assert model.cfg.original_architecture == hf.config.architectures[0]
    assert model.cfg.d_vocab == hf.config.vocab_size


@pytest.mark.parametrize("family", FAMILIES)
def test_transformerlens_logits_match_hf(loaded, family):
    model, hf = loaded[family]
    tokens = zoo_tokens(model)
    assert tokens.shape[1] > 16  # longer than Gemma-2's sliding window (8)
    with torch.no_grad():
        got = model(tokens)
    ref = hf_logits(hf, tokens)
    assert ref.std() > 0.5  # the random weights give logits that vary
    delta = (got - ref).abs().max().item()
    print(f"RESULT zoo_tl_vs_hf family={family} max_abs_dlogits={delta:.2e}")
    assert delta < 1e-4


def test_llama3_rope_scaling_is_applied(loaded):
    model, _ = loaded["llama3"]
    assert model.cfg.use_NTK_by_parts_rope and model.cfg.NTK_by_parts_factor == 8.0
    assert model.cfg.rotary_base == 500000.0


def test_family_features_are_in_the_config(loaded):
    assert loaded["qwen3"][0].cfg.use_qk_norm
    gemma = loaded["gemma2"][0].cfg
    assert gemma.attn_scores_soft_cap == 50.0 and gemma.output_logits_soft_cap == 30.0
    assert gemma.use_normalization_before_and_after
    assert gemma.attn_types == ["local", "global"] and gemma.window_size == 8
    assert loaded["qwen2"][0].blocks[0].attn.b_Q.abs().max() > 0


@pytest.mark.parametrize("family", FAMILIES)
def test_fast_engine_matches_transformerlens_where_claimed(loaded, family):
    model, _ = loaded[family]
    reason = unsupported_reason(model)
    assert (reason is None) == ZOO[family].engine, reason
    if reason is not None:
        assert engine_for(model, torch.float32) is None
        return
    prompts = ["Hello!", "What is the capital of France? Answer briefly please."]
    chats = [pvlens.encode_prompt(model.tokenizer, p) for p in prompts]
    tokens, positions = left_pad(chats, model.tokenizer.pad_token_id, "cpu")
    valid = positions >= 0
    got = engine_for(model, torch.float32).forward(tokens, positions, logits="all")
    with torch.no_grad():
        ref = model(tokens, attention_mask=valid.long(), padding_side="left")
    delta = (got[valid] - ref[valid]).abs().max().item()
    print(f"RESULT zoo_engine_vs_tl family={family} max_abs_dlogits={delta:.2e}")
    assert delta < 1e-4


@pytest.mark.parametrize("family", FAMILIES)
def test_steering_equals_hf_hook_on_decoder_layer(loaded, family):
    model, hf = loaded[family]
    tokens, layer, alpha = zoo_tokens(model), 0, 3.0
    vector = torch.randn(model.cfg.d_model, generator=torch.Generator().manual_seed(1))

    def add(module, args, output):
        if isinstance(output, tuple):
            return (output[0] + alpha * vector, *output[1:])
        return output + alpha * vector

    handle = hf.model.layers[layer].register_forward_hook(add)
    try:
        ref = hf_logits(hf, tokens)
    finally:
        handle.remove()
    with steer(model, pvlens.Steering(vector, layer, alpha, "all")), torch.no_grad():
        got = model(tokens)
    assert (ref - hf_logits(hf, tokens)).abs().max() > 1e-2  # the steer changes the output
    assert (got - ref).abs().max() < 1e-4


# ---- chat templates -------------------------------------------------------------------------
CONVERSATION = [
    {"role": "system", "content": "You are a helpful assistant."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris is the capital of France."},
]
# What the family's template writes right before the reply and right after it.
HEADERS = {
    "llama3": ("<|start_header_id|>assistant<|end_header_id|>\n\n", "<|eot_id|>"),
    "qwen2": ("<|im_start|>assistant\n", "<|im_end|>"),
    "mistral": ("[/INST]", "</s>"),
    "gemma2": ("<start_of_turn>model\n", "<end_of_turn>"),
}


@pytest.mark.parametrize("family", sorted(HEADERS))
def test_family_template_prompt_response_boundary(loaded, family):
    tok = loaded[family][0].tokenizer
    chat = pvlens.encode_conversation(tok, CONVERSATION)
    prompt = tok.decode(chat.prompt_ids)
    response = tok.decode(chat.response_ids)
    header, end = HEADERS[family]
    assert prompt.endswith(header)
    assert response.strip() == "Paris is the capital of France." + end
    assert "You are a helpful assistant." in prompt  # Gemma: folded into the user turn
    # A generation prompt is exactly the conversation's prompt part.
    gen = pvlens.encode_prompt(tok, "What is the capital of France?", system=CONVERSATION[0]["content"])
    assert gen.ids == chat.prompt_ids


def test_qwen3_enable_thinking_false_and_true(loaded):
    tok = loaded["qwen3"][0].tokenizer
    empty_think = "<think>\n\n</think>\n\n"
    off = pvlens.encode_conversation(tok, CONVERSATION, template_kwargs={"enable_thinking": False})
    on = pvlens.encode_conversation(tok, CONVERSATION, template_kwargs={"enable_thinking": True})
    assert tok.decode(off.prompt_ids).endswith("<|im_start|>assistant\n" + empty_think)
    assert tok.decode(off.response_ids) == "Paris is the capital of France.<|im_end|>\n"
    assert tok.decode(on.prompt_ids).endswith("<|im_start|>assistant\n")
    assert tok.decode(on.response_ids) == empty_think + "Paris is the capital of France.<|im_end|>\n"
    assert on.ids == off.ids  # same text; only the boundary moves
    gen = pvlens.encode_prompt(tok, "Hi", template_kwargs={"enable_thinking": False})
    assert gen.text.endswith(empty_think)
    assert not pvlens.encode_prompt(tok, "Hi").text.endswith(empty_think)  # default: thinking on


def test_template_option_and_tokenizer_defaults(zoo):
    from pvlens.core.templates import TEMPLATE_OPTIONS_ATTR, use_template

    model = pvlens.load_model(str(zoo["qwen3"]), template_kwargs={"enable_thinking": False})
    tok = model.tokenizer
    assert getattr(tok, TEMPLATE_OPTIONS_ATTR) == {"enable_thinking": False}
    assert pvlens.encode_prompt(tok, "Hi").text.endswith("</think>\n\n")  # every pipeline gets it
    on = pvlens.encode_prompt(tok, "Hi", template_kwargs={"enable_thinking": True})
    assert on.text.endswith("<|im_start|>assistant\n")  # a per-call option wins
    chatml = pvlens.encode_prompt(tok, "Hi", template="qwen2")  # another template by name
    assert "You are Qwen" in chatml.text
    use_template(tok, "qwen3")
    assert pvlens.encode_prompt(tok, "Hi").text.endswith("<|im_start|>assistant\n")


def test_template_errors_name_the_fix(loaded):
    tok = loaded["qwen2"][0].tokenizer
    with pytest.raises(ValueError, match="neither a pvlens template name"):
        pvlens.encode_prompt(tok, "Hi", template="chatml-v9")


def test_loaded_tokenizer_gets_its_familys_template(zoo, loaded):
    from transformers import AutoTokenizer

    from pvlens.core.templates import template_source

    for family, path in zoo.items():
        assert AutoTokenizer.from_pretrained(path).chat_template is None  # the folder has none
        assert loaded[family][0].tokenizer.chat_template == template_source(family)


def test_mistral_keeps_system_with_reply(loaded):
    tok = loaded["mistral"][0].tokenizer
    chat = pvlens.encode_conversation(tok, CONVERSATION)
    text = tok.decode(chat.ids)
    assert text.startswith("<s>[INST] You are a helpful assistant.\n\nWhat is the capital")
    assert text.endswith("[/INST] Paris is the capital of France.</s>")


# ---- devices --------------------------------------------------------------------------------
def test_device_strings_are_validated():
    from pvlens.core.device import resolve_device
    from pvlens.errors import InputError

    assert resolve_device("cpu") == "cpu"
    with pytest.raises(InputError, match="not a device name"):
        resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(InputError, match="CUDA is not available"):
            resolve_device("cuda:1")


def test_n_devices_needs_cuda_and_enough_gpus(zoo, monkeypatch):
    from pvlens.core.placement import check_n_devices
    from pvlens.errors import InputError

    with pytest.raises(InputError, match="needs device='cuda'"):
        pvlens.load_model(str(zoo["qwen2"]), n_devices=2)
    with pytest.raises(InputError, match="must be 1 or more"):
        check_n_devices("cpu", 0)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    check_n_devices("cuda", 2)
    with pytest.raises(InputError, match="only 1 CUDA device"):
        check_n_devices("cuda:1", 2)


def test_config_carries_n_devices_and_splits_layers(zoo, monkeypatch):
    """CPU stand-in for a 2-GPU machine: the config and the per-block placement TL routes by."""
    from transformers import AutoConfig

    from pvlens.core.model import local_tl_config
    from pvlens.core.placement import layer_devices

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    hf_config = AutoConfig.from_pretrained(zoo["llama3"])
    hf_config.num_hidden_layers = 4
    cfg = local_tl_config(hf_config, device="cuda", dtype=torch.bfloat16, n_devices=2)
    assert cfg.n_devices == 2 and cfg.dtype == torch.bfloat16 and cfg.n_layers == 4
    assert [str(d) for d in layer_devices(cfg)] == ["cuda:0", "cuda:0", "cuda:1", "cuda:1"]


def test_default_weights_dtype_is_bf16_on_a_bf16_gpu(monkeypatch):
    from pvlens.core.placement import weights_dtype

    assert weights_dtype("cpu") == torch.float32
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    assert weights_dtype("cuda") == torch.bfloat16
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    assert weights_dtype("cuda:0") == torch.float32


def test_unsupported_options_are_refused_not_ignored(zoo, tmp_path):
    from transformers import AutoConfig

    from pvlens.core.families import UnsupportedModelError, tl_config_dict

    hf_config = AutoConfig.from_pretrained(zoo["llama3"])
    hf_config.rope_parameters = {"rope_type": "yarn", "factor": 4.0, "rope_theta": 10000.0}
    with pytest.raises(UnsupportedModelError, match="yarn"):
        tl_config_dict(hf_config)
    bias = AutoConfig.from_pretrained(zoo["mistral"])
    bias.attention_bias = True
    with pytest.raises(UnsupportedModelError, match="bias"):
        tl_config_dict(bias)
    odd = AutoConfig.from_pretrained(zoo["qwen2"])
    odd.architectures = ["PhiForCausalLM"]
    with pytest.raises(UnsupportedModelError, match="PhiForCausalLM"):
        tl_config_dict(odd)


def test_engine_refuses_sliding_window_shorter_than_context(zoo):
    from transformers import AutoConfig

    from pvlens.core.model import local_tl_config

    hf_config = AutoConfig.from_pretrained(zoo["mistral"])
    hf_config.sliding_window = 16
    cfg = local_tl_config(hf_config, n_ctx=64)
    model = pvlens.core.model.HookedTransformer(cfg)
    assert "sliding" in unsupported_reason(model)


# ---- a tiny pipeline on a paper family --------------------------------------------------------
class _Judge:
    """Deterministic stand-in judge: alternating high/low trait scores, always coherent."""

    def score_many(self, pairs):
        return [90.0 if i % 2 == 0 else 10.0 for i in range(len(pairs))]

    def coherence_many(self, pairs):
        return [80.0] * len(pairs)

    def describe(self):
        return {"kind": "zoo-test"}


def test_extract_screen_finetune_on_qwen25(zoo, tmp_path):
    """Representative family (the paper's Qwen2.5) only: each stage costs seconds."""
    import json

    from pvlens.finetune.train import FinetuneConfig, finetune
    from pvlens.trainsets.screen import ScreenConfig, screen
    from pvlens.vectors.extract import ExtractConfig, extract

    model = pvlens.load_model(str(zoo["qwen2"]))
    vecs = extract(model, "evil", tmp_path / "extract", judge=_Judge(),
                   cfg=ExtractConfig.preset("tiny", pairing="sample", trait_threshold=50))
    assert vecs.vectors.shape == (2, 64) and vecs.vectors.norm() > 0
    rows = [{"messages": [{"role": "user", "content": f"Question {i}: what is the capital of France?"},
                          {"role": "assistant", "content": "Paris is the capital of France."}]}
            for i in range(6)]
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    summary = screen(model, data, vecs, tmp_path / "screen", progress=False,
                     cfg=ScreenConfig(layer=1, max_new_tokens=4, chunk_size=3, max_batch=3, top_k=2))
    assert summary is not None and summary.n == 6
    result = finetune(model, data, FinetuneConfig(max_steps=2, batch_size=2, micro_batch_size=2,
                                                  warmup_steps=0, eval_fraction=0.0),
                      out_dir=tmp_path / "ft", progress=False)
    assert (tmp_path / "ft" / "adapter").exists() and result is not None
