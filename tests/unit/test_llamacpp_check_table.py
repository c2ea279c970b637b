"""The docs table of the llama.cpp control-vector check renders every row of its results file."""

from __future__ import annotations

from pvlens.io.doctables import renderers


def _cell(m: float) -> dict[str, float]:
    return {"mean": m, "lo": m - 0.01, "hi": m + 0.01}


def _result() -> dict:
    mapping = [{"pvlens_block": b, "cosine": _cell(c), "rel_err": _cell(r)}
               for b, c, r in ((14, 0.5, 0.9), (15, 0.999999, 0.001), (16, 0.4, 1.1))]
    greedy = {name: {"pvlens": "a b", "llama_cpp": "a c", "identical_tokens": False, "first_difference": 1}
              for name in ("unsteered", "steered")}
    return {"setup": {"n_prompts": 8, "layer": 15, "alpha": 4.0, "trait": "evil", "reduction": "response_avg"},
            "versions": {"llama_cpp_commit": "0" * 40, "pvlens_commit": "1" * 40},
            "unsteered": {"max_abs_logit_diff": 1e-4, "top1_agree": 8, "noise_over_effect": _cell(0.02),
                          "effect_norm": _cell(30.0)},
            "mapping": mapping, "wrong_range": {"llama_cpp_layer_range": [16, 16], "max_abs_logit_change": 0.0},
            "greedy": {"prompt": "hi?", "n_tokens": 2, **greedy}}


def test_one_row_per_block_and_the_mapping_marked():
    text = renderers()["llamacpp_check"](_result())
    rows = [line for line in text.splitlines() if line.startswith("| b = ")]
    assert [r.split("|")[1].strip()[:6] for r in rows] == ["b = 14", "b = 15", "b = 16"]
    assert "documented mapping" in rows[1] and "documented mapping" not in rows[0] + rows[2]
    assert "0.999999 [0.989999, 1.009999]" in rows[1] and "`direction.15` × 4" in rows[1]
    assert "same top token on 8/8 prompts" in text and "--control-vector-layer-range 16 16` (a range" in text
    assert "first different token: 1" in text
