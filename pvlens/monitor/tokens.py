"""The per-token view: every token of a conversation coloured by its projection on the trait
direction, rendered offline with circuitsvis (HTML) or matplotlib (PNG)."""

from __future__ import annotations

import html
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from transformer_lens import HookedTransformer

from pvlens.core.activations import per_token
from pvlens.core.chat import EncodedChat, Message, encode_conversation, encode_messages
from pvlens.monitor.projection import project
from pvlens.vectors.coerce import VectorsLike, unit_direction


@dataclass
class TokenProjections:
    """Each token of one conversation and its projection on the trait direction."""

    tokens: list[str]
    """Decoded tokens (one string per token id)."""
    values: list[float]
    """Projection of each token's residual at `layer`."""
    prompt_len: int
    """Tokens before the response."""
    layer: int
    """Block whose output was projected."""
    cosine: bool = False
    """Whether values are cosines instead of projections."""

    @property
    def response_mean(self) -> float:
        vals = self.values[self.prompt_len :]
        return float(np.mean(vals)) if vals else float("nan")


def encode_any(model: HookedTransformer, conversation: EncodedChat | Sequence[Message] | str) -> EncodedChat:
    """An EncodedChat from an EncodedChat, chat messages (ending with the assistant's reply or
    the user's turn), or plain text (tokenised as is, no chat template)."""
    tok = model.tokenizer
    if isinstance(conversation, EncodedChat):
        return conversation
    if isinstance(conversation, str):
        ids = tok(conversation, add_special_tokens=False)["input_ids"]
        return EncodedChat(ids=list(ids), prompt_len=len(ids), text=conversation)
    msgs = list(conversation)
    if msgs[-1]["role"] == "assistant":
        return encode_conversation(tok, msgs)
    return encode_messages(tok, msgs)


def token_projections(
    model: HookedTransformer,
    conversation: EncodedChat | Sequence[Message] | str,
    vectors: VectorsLike,
    layer: int,
    cosine: bool = False,
) -> TokenProjections:
    """Projection of every token's residual at `layer` for one conversation (see `encode_any`)."""
    chat = encode_any(model, conversation)
    resid = per_token(model, chat, layers=[layer])[0]  # [pos, d_model]
    vals = project(resid, unit_direction(vectors, layer), cosine)
    tokens = [str(model.tokenizer.decode([i])) for i in chat.ids]
    return TokenProjections(tokens, vals.tolist(), chat.prompt_len, layer, cosine)


class TokenView:
    """circuitsvis `colored_tokens` with the JavaScript inlined.

    circuitsvis's own object probes the internet before choosing between its inlined and CDN
    versions; this one always uses the inlined version, so it renders offline in notebooks
    and the saved file opens without a network.
    """

    def __init__(self, body: str, title: str) -> None:
        self.body, self.title = body, title

    def _repr_html_(self) -> str:
        return self.body

    def document(self) -> str:
        """A complete, self-contained HTML page."""
        return (
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(self.title)}</title></head>\n<body>\n{self.body}\n</body></html>\n"
        )

    def save(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.document(), encoding="utf-8")
        return path


def _colour_bound(values: Sequence[float]) -> float:
    """Symmetric colour scale; the first token (often an outlier) does not set it."""
    vals = np.abs(np.asarray(values[1:] if len(values) > 1 else values, dtype=float))
    return float(vals.max()) if vals.size and vals.max() > 0 else 1.0


def tokens_html(tp: TokenProjections, path: str | Path | None = None, title: str | None = None) -> TokenView:
    """Per-token colours (blue = against the trait, red = towards it), symmetric scale."""
    from circuitsvis.tokens import colored_tokens

    bound = _colour_bound(tp.values)
    rendered = colored_tokens(tp.tokens, tp.values, min_value=-bound, max_value=bound,
                              negative_color="blue", positive_color="red")
    kind = "cosine" if tp.cosine else "projection"
    title = title or f"{kind} on the persona vector, layer {tp.layer}"
    header = (f"<h3 style=\"font-family:sans-serif\">{html.escape(title)}</h3>"
              f"<p style=\"font-family:sans-serif;font-size:13px\">tokens 0–{tp.prompt_len - 1} are "
              f"the prompt; response mean {kind}: {tp.response_mean:.3f}. Hover a token for its value."
              "</p>")
    view = TokenView(header + rendered.local_src, title)
    if path is not None:
        view.save(path)
    return view


Line = list[tuple[str, float, bool]]
"""One wrapped line of the PNG view: (text, value, is_response) per piece."""


def wrap_tokens(tp: TokenProjections, width_chars: int) -> list[Line]:
    """Split tokens into lines of at most `width_chars` characters, breaking at newlines."""
    lines: list[Line] = [[]]
    used = 0
    for i, (t, v) in enumerate(zip(tp.tokens, tp.values, strict=True)):
        parts = t.split("\n")
        for j, part in enumerate(parts):
            if j > 0:
                lines.append([])
                used = 0
            text = part if part else ("⏎" if j < len(parts) - 1 else "")
            if not text:
                continue
            if used + len(text) > width_chars and lines[-1]:
                lines.append([])
                used = 0
            lines[-1].append((text, float(v), i >= tp.prompt_len))
            used += len(text)
    return lines


def tokens_png(tp: TokenProjections, path: str | Path, width_chars: int = 90,
               title: str | None = None) -> Path:
    """The same view as a PNG (matplotlib only): tokens as coloured boxes, wrapped."""
    from pvlens.io.viz import plt, save_figure

    bound = _colour_bound(tp.values)
    cmap, norm = plt.get_cmap("coolwarm"), plt.Normalize(-bound, bound)
    lines = wrap_tokens(tp, width_chars)
    fontsize, line_h = 8, 0.22
    width_in = width_chars * 0.6 * fontsize / 72 + 0.4  # monospace: 0.6 em per character
    fig = plt.figure(figsize=(width_in, 0.5 + line_h * (len(lines) + 1)))
    ax = fig.add_axes((0, 0, 1, 1))
    ax.set_axis_off()
    ax.set_xlim(-0.5, width_chars + 4)
    ax.set_ylim(len(lines) + 1.2, 0)
    ax.text(0, 0.5, title or f"{'cosine' if tp.cosine else 'projection'} on the persona vector, "
            f"layer {tp.layer} (blue ← → red; bold = response)", fontsize=fontsize + 1, va="center")
    for row, items in enumerate(lines, start=1):
        x = 0.0
        for text, v, is_resp in items:
            ax.text(x, row + 0.5, text.replace("$", r"\$"), family="monospace", fontsize=fontsize,
                    va="center", fontweight="bold" if is_resp else "normal",
                    bbox={"facecolor": cmap(norm(v)), "edgecolor": "none", "pad": 0.5})
            x += len(text)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tight_layout cannot handle the full-figure axes
        return save_figure(fig, path)
