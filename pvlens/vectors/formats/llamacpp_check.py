"""The docs table of tools/llamacpp_check.py's results.json (pvlens steering vs llama.cpp's
`--control-vector`), rendered by pvlens.io.doctables so the numbers in docs/interop.md cannot
drift from the committed run."""

from __future__ import annotations

from typing import Any


def _cell(c: dict[str, float], spec: str) -> str:
    return f"{c['mean']:{spec}} [{c['lo']:{spec}}, {c['hi']:{spec}}]"


def _greedy_lines(g: dict[str, Any]) -> list[str]:
    lines = [f"Greedy, {g['n_tokens']} tokens, prompt “{g['prompt']}”:", ""]
    for name in ("unsteered", "steered"):
        r = g[name]
        same = "identical tokens" if r["identical_tokens"] else f"first different token: {r['first_difference']}"
        lines += [f"- {name}, pvlens: `{r['pvlens']!r}`",
                  f"- {name}, llama.cpp: `{r['llama_cpp']!r}` ({same})"]
    return lines


def llamacpp_check_table(result: dict[str, Any]) -> str:
    """Per pvlens block b: agreement of the log-prob change from `Steering(v[L], b, α)` with
    the change from llama.cpp's control vector `direction.L`; then the sanity checks."""
    s, v, u = result["setup"], result["versions"], result["unsteered"]
    n, layer, alpha = s["n_prompts"], s["layer"], s["alpha"]
    lines = [f"| pvlens `Steering(v[{layer}], b, {alpha:g}, \"all\")` | llama.cpp | n prompts | "
             "cosine of Δ log-prob [95 % CI] | relative error [95 % CI] |",
             "|---|---|---|---|---|"]
    for m in result["mapping"]:
        b = m["pvlens_block"]
        mark = " (the documented mapping)" if b == layer else ""
        lines.append(f"| b = {b}{mark} | `direction.{layer}` × {alpha:g} | {n} | "
                     f"{_cell(m['cosine'], '.6f')} | {_cell(m['rel_err'], '.2e')} |")
    wr = result["wrong_range"]
    lines += ["",
              f"Unsteered, pvlens vs llama.cpp: max |logit difference| {u['max_abs_logit_diff']:.2e}, "
              f"same top token on {u['top1_agree']}/{n} prompts; the difference is "
              f"{_cell(u['noise_over_effect'], '.2e')} of the steering effect's size "
              f"(‖Δ log-prob‖ = {_cell(u['effect_norm'], '.2f')}). "
              f"The same file with `--control-vector-layer-range {wr['llama_cpp_layer_range'][0]} "
              f"{wr['llama_cpp_layer_range'][1]}` (a range without `direction.{layer}`): max |logit change| "
              f"{wr['max_abs_logit_change']:.2e}.",
              "", *_greedy_lines(result["greedy"]), "",
              f"llama.cpp {v['llama_cpp_commit'][:12]}, pvlens {v['pvlens_commit'][:12]}, "
              f"trait `{s['trait']}` ({s['reduction']}), 1 thread."]
    return "\n".join(lines) + "\n"
