"""Chat formatting: messages → token ids through the model's chat template, with the exact
prompt/response boundary.

Pitfalls handled: the template already contains the special tokens, so the
tokenizer never adds a BOS of its own; the pad token may occur inside prompts, so lengths,
never pad ids, say where a sequence ends; the boundary comes from character offsets of the
tokenised full text, never from re-tokenising the two parts separately.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from transformers import PreTrainedTokenizerBase

from pvlens.core.templates import resolve_template, template_options

Message = dict[str, str]
TemplateKwargs = dict[str, Any] | None


@dataclass
class EncodedChat:
    """One tokenised conversation: `ids[:prompt_len]` is the prompt, the rest the response."""

    ids: list[int]
    """Token ids of prompt followed by response (no padding)."""
    prompt_len: int
    """Number of prompt tokens (the prompt ends with the assistant header)."""
    text: str = ""
    """The exact chat-templated prompt string the model saw."""
    meta: dict = field(default_factory=dict)
    """Free-form labels carried along (question, polarity, ...)."""

    @property
    def response_len(self) -> int:
        return len(self.ids) - self.prompt_len

    @property
    def prompt_ids(self) -> list[int]:
        return self.ids[: self.prompt_len]

    @property
    def response_ids(self) -> list[int]:
        return self.ids[self.prompt_len :]

    def with_response(self, response_ids: Sequence[int]) -> EncodedChat:
        """A copy whose response is `response_ids` (the prompt is kept)."""
        return EncodedChat(
            list(self.prompt_ids) + list(response_ids), self.prompt_len, self.text, dict(self.meta)
        )


def build_messages(
    user: str, system: str | None = None, history: Sequence[Message] | None = None
) -> list[Message]:
    """[system?] + history + user, as chat messages."""
    messages: list[Message] = []
    if system is not None:
        messages.append({"role": "system", "content": system})
    messages.extend(history or [])
    messages.append({"role": "user", "content": user})
    return messages


def supports_system_role(tokenizer: PreTrainedTokenizerBase, template: str | None = None) -> bool:
    """Whether the chat template (default: the tokenizer's) accepts a system message
    (Gemma's, for one, raises)."""
    template = template or tokenizer.chat_template
    cache = getattr(tokenizer, "_pvlens_system_ok", None)
    if not isinstance(cache, dict):
        cache = tokenizer._pvlens_system_ok = {}
    if template not in cache:
        try:
            tokenizer.apply_chat_template(
                [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
                tokenize=False, chat_template=template,
            )
            cache[template] = True
        except Exception:  # templates raise their own exception types
            cache[template] = False
    return cache[template]


def _merge_system(messages: list[Message]) -> list[Message]:
    """Fold a system message into the first user turn, for templates without a system role."""
    if not messages or messages[0]["role"] != "system":
        return messages
    system, rest = messages[0]["content"], [dict(m) for m in messages[1:]]
    for m in rest:
        if m["role"] == "user":
            m["content"] = f"{system}\n\n{m['content']}"
            break
    return rest


def template_text(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    add_generation_prompt: bool,
    template: str | None = None,
    template_kwargs: TemplateKwargs = None,
) -> str:
    """The chat-templated string for `messages`.

    `template`: a pvlens template name (llama3, mistral, qwen2, qwen3, gemma2) or Jinja text
    instead of the tokenizer's own; `template_kwargs`: template options (e.g.
    `{"enable_thinking": False}`) over the tokenizer's defaults (`templates.use_template`).
    """
    chat_template = resolve_template(tokenizer, template)
    msgs = list(messages)
    if not supports_system_role(tokenizer, chat_template):
        msgs = _merge_system(msgs)
    return str(tokenizer.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=add_generation_prompt,
        chat_template=chat_template, **template_options(tokenizer, template_kwargs),
    ))


def encode_prompt(
    tokenizer: PreTrainedTokenizerBase,
    user: str,
    system: str | None = None,
    history: Sequence[Message] | None = None,
    template: str | None = None,
    template_kwargs: TemplateKwargs = None,
) -> EncodedChat:
    """A prompt ready for generation: ends with the assistant header (see `template_text` for
    `template` and `template_kwargs`)."""
    return encode_messages(tokenizer, build_messages(user, system, history), template, template_kwargs)


def encode_messages(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    template: str | None = None,
    template_kwargs: TemplateKwargs = None,
) -> EncodedChat:
    """Messages whose last turn is the user's → a prompt ending with the assistant header."""
    text = template_text(tokenizer, messages, True, template, template_kwargs)
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    return EncodedChat(ids=list(ids), prompt_len=len(ids), text=text)


def encode_conversation(
    tokenizer: PreTrainedTokenizerBase,
    messages: Sequence[Message],
    template: str | None = None,
    template_kwargs: TemplateKwargs = None,
) -> EncodedChat:
    """Messages whose last turn is the assistant's → ids with the prompt/response boundary.

    The response span covers the assistant's content and the end-of-turn token(s) the template
    writes after it.
    """
    if not messages or messages[-1]["role"] != "assistant":
        raise ValueError("encode_conversation needs the last message to be the assistant's reply")
    prompt_text = template_text(tokenizer, messages[:-1], True, template, template_kwargs)
    full_text = template_text(tokenizer, messages, False, template, template_kwargs)
    if not full_text.startswith(prompt_text):
        raise ValueError(
            "this chat template renders the prompt differently with and without the reply; "
            "pvlens cannot locate the response boundary for it"
        )
    enc = tokenizer(full_text, add_special_tokens=False, return_offsets_mapping=True)
    boundary = len(prompt_text)
    # Tokens starting before the boundary belong to the prompt (a token straddling it, which
    # ChatML templates never produce, is counted as prompt).
    prompt_len = sum(1 for start, _ in enc["offset_mapping"] if start < boundary)
    return EncodedChat(ids=list(enc["input_ids"]), prompt_len=prompt_len, text=prompt_text)


def strip_end_of_turn(tokenizer: PreTrainedTokenizerBase, ids: Sequence[int]) -> list[int]:
    """Response ids without the trailing end-of-turn / eos tokens."""
    stops = stop_token_ids(tokenizer)
    out = list(ids)
    while out and out[-1] in stops:
        out.pop()
    return out


def stop_token_ids(tokenizer: PreTrainedTokenizerBase) -> set[int]:
    """Tokens that end an assistant turn: eos plus the template's end-of-turn markers."""
    cached = getattr(tokenizer, "_pvlens_stops", None)
    if cached is not None:
        return cached
    stops = set()
    if tokenizer.eos_token_id is not None:
        stops.add(int(tokenizer.eos_token_id))
    vocab = tokenizer.get_vocab()
    for marker in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>", "</s>"):
        if marker in vocab:
            stops.add(int(vocab[marker]))
    tokenizer._pvlens_stops = stops
    return stops
