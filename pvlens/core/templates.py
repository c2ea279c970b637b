"""Chat templates of the model families, written in the project (pvlens/data/chat_templates/),
and template options (e.g. Qwen3's `enable_thinking`).

A template is used when a tokenizer has none (`load_model` installs its family's), or when asked
for by name (`template="qwen3"`) or as Jinja text. Options reach the template as variables:
per call (`encode_prompt(..., template_kwargs={"enable_thinking": False})`) or as the tokenizer's
default for every pipeline (`use_template(tokenizer, enable_thinking=False)`).
"""

from __future__ import annotations

from importlib import resources
from typing import Any

from pvlens.errors import InputError

TEMPLATE_NAMES = ("llama3", "mistral", "qwen2", "qwen3", "gemma2")
"""Templates shipped with pvlens (the names are the families' names in pvlens.core.families)."""

TEMPLATE_OPTIONS_ATTR = "pvlens_template_kwargs"
"""Tokenizer attribute holding the default template options set by `use_template`."""


def template_source(template: str) -> str:
    """The Jinja text of a shipped template name, or `template` itself if it is Jinja text."""
    if template in TEMPLATE_NAMES:
        path = resources.files("pvlens") / "data" / "chat_templates" / f"{template}.jinja"
        return path.read_text(encoding="utf-8")
    if "{{" in template or "{%" in template:
        return template
    raise InputError(
        f"chat template {template!r} is neither a pvlens template name "
        f"({', '.join(TEMPLATE_NAMES)}) nor Jinja text"
    )


def resolve_template(tokenizer: Any, template: str | None = None) -> str:
    """The template to render with: `template` if given, else the tokenizer's own."""
    if template is not None:
        return template_source(template)
    own = tokenizer.chat_template
    if own is None:
        raise ValueError(
            f"tokenizer {tokenizer.name_or_path!r} has no chat template; pvlens needs a chat model "
            f"(an *-Instruct / *-chat checkpoint), or pass template=<one of {', '.join(TEMPLATE_NAMES)}>"
        )
    return own


def template_options(tokenizer: Any, overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The tokenizer's default template options updated with `overrides`."""
    return {**getattr(tokenizer, TEMPLATE_OPTIONS_ATTR, {}), **(overrides or {})}


def use_template(tokenizer: Any, template: str | None = None, **options: Any) -> None:
    """Make `template` (name or Jinja; None keeps the current one) the tokenizer's chat template
    and `options` its default template options for every pvlens call."""
    if template is not None:
        tokenizer.chat_template = template_source(template)
    setattr(tokenizer, TEMPLATE_OPTIONS_ATTR, dict(options))
