"""Help texts of CLI options taken from config field docs, so a flag that sets a config field
says what the field's docstring says and defaults to the config's own default."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel


def field_help(config: type[BaseModel], name: str, extra: str = "") -> str:
    """`config.name`'s docstring plus its default, e.g. for `typer.Option(None, help=...)`."""
    info = config.model_fields[name]
    default = info.get_default(call_default_factory=True)
    shown = default.model_dump() if isinstance(default, BaseModel) else default
    return f"{info.description or name}{extra} (default: {shown})"


def given(**values: Any) -> dict[str, Any]:
    """The options the user set (None = not given), to override a config's defaults."""
    return {k: v for k, v in values.items() if v is not None}
