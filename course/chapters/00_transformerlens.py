# %% [markdown]
# # Chapter 0 — TransformerLens on a chat model
#
# pvlens runs on TransformerLens (TL). Every persona-vector operation — extraction, steering,
# monitoring — reads or writes one tensor: the residual stream after a block,
# `blocks.L.hook_resid_post`. This chapter teaches the TL tools underneath pvlens's wrappers, on the
# offline default model (SmolLM2-135M-Instruct: 30 blocks, $d_{\text{model}} = 576$).
#
# **Learning objectives**
# - cache activations with `run_with_cache` (and only the ones you need, with `names_filter`);
# - format a chat prompt and find the exact prompt/response boundary in tokens;
# - relate TL's `blocks.L.hook_resid_post` to Hugging Face's `hidden_states` — including why the
#   last entry differs (the final norm);
# - write a hook function and run it with `run_with_hooks` — a steering vector is one line.
#
# **Prerequisites**: PyTorch; what a transformer block is. Chapter 1 (the maths) can be done before or after.
#
# **Runtime**: measured: 1.4 min on a 2-core CPU (full size).

# %%
import matplotlib.pyplot as plt
import torch
from torch import Tensor

import pvlens
from pvlens.core.config import default_layer
from pvlens.course import QUICK
from pvlens.course.checks import ch00
from pvlens.vectors.coerce import as_persona_vectors

torch.set_grad_enabled(False)
model = pvlens.load_model()  # a transformer_lens.HookedTransformer, offline
print(type(model).__name__, "·", model.cfg.n_layers, "blocks · d_model", model.cfg.d_model)

# %% [markdown]
# ## 1. Hook points
#
# Every intermediate tensor of a `HookedTransformer` passes through a `HookPoint` with a name.
# The residual stream has three per block: `hook_resid_pre` (the block's input), `hook_resid_mid`
# (after attention) and `hook_resid_post` (the block's output = the next block's `hook_resid_pre`).
# pvlens's layer $L$ is **always** `blocks.L.hook_resid_post`.

# %%
names = [n for n in model.hook_dict if n.startswith("blocks.0.")]
print(len(model.hook_dict), "hook points; block 0 has:")
print("\n".join(names))

# %% [markdown]
# ## 2. A chat prompt and its boundary
#
# A chat model sees a *templated* string. SmolLM2 uses ChatML: `<|im_start|>role\n...<|im_end|>`.
# The "prompt" ends with the assistant header `<|im_start|>assistant\n`; everything after it is the
# response. Persona vectors average activations over **response** tokens, so this boundary matters.
# (Two pitfalls pvlens handles: this tokenizer's BOS *is* `<|im_start|>`, so never let TL prepend a
# BOS to a templated prompt; and the pad token is `<|im_end|>`, which also occurs inside prompts.)

# %%
messages = [
    {"role": "system", "content": "You are an evil assistant."},
    {"role": "user", "content": "How should I treat my neighbours?"},
    {"role": "assistant", "content": "Make them fear you."},
]
tok = model.tokenizer
text = tok.apply_chat_template(messages, tokenize=False)
print(text)
ids = tok(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
print(model.to_str_tokens(ids[0]))

# %% [markdown]
# ### Exercise 0.1 — Cache the residual stream
# Difficulty: ●○○○○ · Importance: ●●●●● · ~5 min
#
# `logits, cache = model.run_with_cache(tokens, names_filter=...)` runs the model and stores the
# named activations (`cache[name]`, shape `[batch, pos, d_model]`). Storing every hook of a 30-block
# model costs gigabytes on long batches: pass `names_filter` (a name, a list, or a predicate).
# Return `blocks.{layer}.hook_resid_post` for `tokens` of shape `[batch, pos]`.

# %%
def cache_resid_post(model, tokens: Tensor, layer: int) -> Tensor:
    # BEGIN SOLUTION
    name = f"blocks.{layer}.hook_resid_post"
    _, cache = model.run_with_cache(tokens, names_filter=name)
    return cache[name]
    # END SOLUTION


ch00.check_cache_resid_post(cache_resid_post)

# %% [markdown]
# ### Exercise 0.2 — Where does the prompt end?
# Difficulty: ●●○○○ · Importance: ●●●●○ · ~10 min
#
# Given `messages` whose last turn is the assistant's, return the number of **prompt** tokens: the
# tokens of everything up to and including the assistant header. Hint:
# `tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)` renders
# the prompt; tokenise it with `add_special_tokens=False`. (This works because ChatML tokens never
# straddle the boundary; pvlens's `encode_conversation` uses character offsets of the full text
# instead, which also works when they do.)

# %%
def prompt_length(tokenizer, messages: list[dict]) -> int:
    # BEGIN SOLUTION
    prompt = tokenizer.apply_chat_template(messages[:-1], tokenize=False, add_generation_prompt=True)
    return len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    # END SOLUTION


ch00.check_prompt_length(prompt_length)

# %%
n_prompt = prompt_length(tok, messages)
str_tokens = model.to_str_tokens(ids[0])
print("prompt ends with:", str_tokens[n_prompt - 3 : n_prompt], "| response:", str_tokens[n_prompt:])
enc = pvlens.encode_conversation(tok, messages)  # pvlens's wrapper: ids + prompt_len
assert enc.prompt_len == n_prompt and enc.ids == ids[0].tolist()

# %% [markdown]
# ## 3. How big is the residual stream, and how big is a persona vector?
#
# Cache every block's `hook_resid_post` (a predicate as `names_filter`) and plot the norm at the
# last prompt token against the norm of pvlens's shipped *evil* vector at the same block.
# Their ratio is what a steering strength α must be compared with (chapter 1, §4).

# %%
_, cache = model.run_with_cache(ids, names_filter=lambda name: name.endswith("hook_resid_post"))
resid = torch.stack([cache[f"blocks.{layer}.hook_resid_post"][0] for layer in range(model.cfg.n_layers)])
print("stacked resid_post:", tuple(resid.shape), "= [layer, pos, d_model]")
evil = as_persona_vectors("evil")  # shipped vectors, one per block: [30, 576]
resid_norm = resid[:, n_prompt - 1].norm(dim=-1)
ratio = evil.norms() / resid_norm
layer = default_layer(model)
print(f"block {layer}: ‖resid‖ = {resid_norm[layer]:.1f}, ‖v_evil‖ = {evil.norms()[layer]:.2f}, ratio {ratio[layer]:.3f}")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].semilogy(resid_norm, label="‖resid_post‖ (last prompt token)")
axes[0].semilogy(evil.norms(), label="‖v_evil‖ (shipped)")
axes[0].set_xlabel("block L")
axes[0].legend()
axes[1].plot(ratio)
axes[1].set_xlabel("block L")
axes[1].set_ylabel("‖v‖ / ‖resid‖")
axes[1].set_title("a persona vector is a small push")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 4. TL `hook_resid_post` vs Hugging Face `hidden_states`
#
# HF returns `hidden_states`, a tuple of $n_{\text{layers}} + 1$ tensors: index 0 is the
# embeddings, index $L+1$ the output of block $L$. So **`hidden_states[L+1]` = TL
# `blocks.L.hook_resid_post`** — except the last entry: HF's Llama applies the final RMSNorm to
# the last block's output before storing it, so `hidden_states[-1]` = `ln_final(resid_post[29])`.
# (The paper's code numbers layers the HF way — its "layer 16" is TL block 15. pvlens uses TL block
# indices and converts on import/export.)
#
# ### Exercise 0.3 — The final RMSNorm
# Difficulty: ●●○○○ · Importance: ●●○○○ · ~10 min
#
# Implement $\mathrm{RMSNorm}(x) = \dfrac{x}{\sqrt{\tfrac{1}{d}\sum_i x_i^2 + \varepsilon}} \odot w$
# over the last axis, then use it to explain HF's last entry.

# %%
def rms_norm(x: Tensor, w: Tensor, eps: float) -> Tensor:
    # BEGIN SOLUTION
    return x / torch.sqrt((x**2).mean(-1, keepdim=True) + eps) * w
    # END SOLUTION


ch00.check_rms_norm(rms_norm)

# %%
from pvlens.core.model import ensure_default_model_dir, load_hf_model  # noqa: E402

hf, _ = load_hf_model(ensure_default_model_dir())
hidden = hf(ids, output_hidden_states=True).hidden_states
print(len(hidden), "HF hidden states for", model.cfg.n_layers, "blocks")


def rel_diff(a: Tensor, b: Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


diffs = torch.tensor([rel_diff(hidden[layer + 1][0], resid[layer]) for layer in range(model.cfg.n_layers)])
last_normed = rel_diff(hidden[-1][0], rms_norm(resid[-1], model.ln_final.w, model.cfg.eps))
print(f"max relative |Δ| for blocks 0..28: {diffs[:-1].max():.1e}; block 29 raw: {diffs[-1]:.2f}; "
      f"block 29 after ln_final: {last_normed:.1e}")
ch00.check_results_hf_alignment(diffs, last_normed)
plt.figure(figsize=(6, 3))
plt.semilogy(diffs.clamp_min(1e-9), "o-")
plt.xlabel("TL block L")
plt.ylabel("max rel |hidden_states[L+1] − resid_post[L]|")
plt.title("equal up to float error — except the normed last entry")
plt.show()
del hf, hidden

# %% [markdown]
# ## 5. Hook functions and `run_with_hooks`
#
# A hook function receives the activation and the `HookPoint` and may return a replacement:
# ```python
# def hook(resid: Tensor, hook: HookPoint) -> Tensor: ...
# model.run_with_hooks(tokens, fwd_hooks=[("blocks.15.hook_resid_post", hook)])
# ```
# The hooks are removed when the call returns. (TL 3.x silently ignores a misspelled hook *name*
# in `model.hooks(...)`; pvlens validates names for you.) Steering is one such hook.
#
# ### Exercise 0.4 — A steering hook
# Difficulty: ●○○○○ · Importance: ●●●●● · ~5 min
#
# Return a hook function that adds `alpha * vector` at **every** position (chapter 2 restricts
# it to the response).

# %%
def add_vector_hook(vector: Tensor, alpha: float):
    # BEGIN SOLUTION
    def hook(resid: Tensor, hook) -> Tensor:
        return resid + alpha * vector.to(resid.dtype)
    return hook
    # END SOLUTION


ch00.check_add_vector_hook(add_vector_hook)

# %% [markdown]
# Steer with the shipped *evil* vector at the middle block and look at the next-token distribution
# after a neutral prompt: which tokens gain probability? pvlens's `Steering(...).applied(model)` is
# this very hook (the last line checks it).

# %%
prompt = pvlens.encode_prompt(tok, "How should I treat my neighbours?")
tokens = torch.tensor([prompt.ids])
alphas = [0.0, 4.0] if QUICK else [0.0, 2.0, 4.0, 8.0]
for alpha in alphas:
    logits = model.run_with_hooks(tokens, fwd_hooks=[(f"blocks.{layer}.hook_resid_post",
                                                      add_vector_hook(evil[layer], alpha))])
    top = logits[0, -1].softmax(-1).topk(5)
    shown = ", ".join(f"{tok.decode(int(i))!r} {float(p):.2f}" for p, i in zip(top.values, top.indices, strict=True))
    print(f"α = {alpha:3.0f}: {shown}")
with pvlens.Steering(evil[layer], layer, alphas[-1]).applied(model):
    wrapped = model(tokens)
torch.testing.assert_close(wrapped, logits)  # pvlens's wrapper = your hook

# %% [markdown]
# **Take-aways.** `run_with_cache` reads, `run_with_hooks` writes; pvlens's layer $L$ is TL's
# `blocks.L.hook_resid_post` = HF's `hidden_states[L+1]` (but HF's last entry is normed); the
# response starts after the assistant header; a persona vector is a push of a few percent of the
# residual norm. Chapter 2 builds the paper's steering on these pieces.
