"""Chat formatting: the prompt/response boundary, BOS/pad pitfalls, system-less templates."""

from __future__ import annotations

import pytest
from transformers import AutoTokenizer

from pvlens.core.chat import (
    build_messages,
    encode_conversation,
    encode_prompt,
    stop_token_ids,
    strip_end_of_turn,
    supports_system_role,
)
from pvlens.core.model import ensure_default_model_dir

REPLIES = [
    "Hello there! How can I help?",
    " leading space and trailing space ",
    "Line one.\n\nLine two, with émojis 🎉 and 中文.",
    "x",
]


@pytest.fixture(scope="module")
def tok():
    return AutoTokenizer.from_pretrained(ensure_default_model_dir())


@pytest.fixture
def no_system_tok():
    """A fresh tokenizer whose template raises on a system message, like Gemma's."""
    t = AutoTokenizer.from_pretrained(ensure_default_model_dir())
    t.chat_template = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System role not supported') }}{% endif %}"
        "{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )
    return t


@pytest.mark.parametrize("reply", REPLIES)
def test_response_boundary_is_exact(tok, reply):
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say something."},
            {"role": "assistant", "content": reply}]
    chat = encode_conversation(tok, msgs)
    assert tok.decode(chat.response_ids) == reply + "<|im_end|>\n"
    assert tok.decode(strip_end_of_turn(tok, chat.response_ids[:-1])) == reply
    # The prompt part is token-for-token what generation sees.
    prompt = encode_prompt(tok, "Say something.", system="Be brief.")
    assert chat.prompt_ids == prompt.ids and chat.text == prompt.text
    assert tok.decode(chat.prompt_ids) == prompt.text
    assert prompt.text.endswith("<|im_start|>assistant\n")


def test_no_extra_bos_and_pad_inside_prompts(tok):
    chat = encode_prompt(tok, "Hi")
    bos = tok.convert_tokens_to_ids("<|im_start|>")
    assert chat.ids[0] == bos and chat.ids[1] != bos  # the template's own marker, no added BOS
    assert tok.pad_token_id in chat.ids  # why masks come from lengths, never from pad ids
    assert tok.pad_token_id in stop_token_ids(tok)


def test_history_and_default_system(tok):
    history = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"}]
    chat = encode_prompt(tok, "And now?", history=history)
    assert "SmolLM" in chat.text  # the template's default system prompt when none is given
    assert chat.text.index("Hello!") < chat.text.index("And now?")
    assert build_messages("u", "s", history)[0] == {"role": "system", "content": "s"}


def test_system_is_merged_when_the_template_has_no_system_role(no_system_tok):
    t = no_system_tok
    assert not supports_system_role(t)
    chat = encode_prompt(t, "What now?", system="You are evil.")
    assert "<|im_start|>system" not in chat.text
    assert "<|im_start|>user\nYou are evil.\n\nWhat now?<|im_end|>" in chat.text
    conv = encode_conversation(t, [{"role": "system", "content": "You are evil."},
                                   {"role": "user", "content": "What now?"},
                                   {"role": "assistant", "content": "Chaos."}])
    assert conv.prompt_ids == chat.ids
    assert t.decode(conv.response_ids) == "Chaos.<|im_end|>\n"


def test_bad_conversations_are_explained(tok):
    with pytest.raises(ValueError, match="assistant"):
        encode_conversation(tok, [{"role": "user", "content": "Hi"}])
    t = AutoTokenizer.from_pretrained(ensure_default_model_dir())
    t.chat_template = None
    with pytest.raises(ValueError, match="chat template"):
        encode_prompt(t, "Hi")


def test_with_response_keeps_the_prompt(tok):
    prompt = encode_prompt(tok, "Hi")
    full = prompt.with_response([1, 2, 3])
    assert full.prompt_ids == prompt.ids and full.response_ids == [1, 2, 3]
    assert full.response_len == 3 and prompt.response_len == 0
