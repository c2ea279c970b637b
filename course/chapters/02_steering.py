# %% [markdown]
# # Chapter 2 — Steering
#
# Steering adds $\alpha v$ to the residual stream while the model generates. This chapter writes
# the paper's steering hook by hand, checks that KV-cached generation (what pvlens does) and
# recomputing the whole sequence (what your hook assumes) agree, and runs a small α sweep judged
# for the trait and for coherence.
#
# **Learning objectives**
# - steer the paper's "response" positions: the last prompt token and every generated token;
# - explain why a KV cache changes what a position mask means, and test cache-on = cache-off;
# - choose α by the size of the push, $\alpha\lVert v\rVert$ relative to $\lVert h\rVert$;
# - read a dose-response curve: the trait rises with α, coherence falls at large α.
#
# **Prerequisites**: chapter 0 (hooks, `run_with_hooks`), chapter 1 §4 (what α means).
#
# **Runtime**: measured: 6.0 min on a 2-core CPU (full size).

# %%
import matplotlib.pyplot as plt
import torch
from torch import Tensor

import pvlens
from pvlens.core.config import SamplingConfig, default_layer
from pvlens.course import QUICK
from pvlens.course.checks import ch02
from pvlens.judges import load_judge
from pvlens.traits import load_trait
from pvlens.vectors.coerce import as_persona_vectors
from pvlens.vectors.evaluate import evaluate_steered, mean_score

torch.set_grad_enabled(False)
model = pvlens.load_model()
tok = model.tokenizer
evil = as_persona_vectors("evil")
layer = default_layer(model)
v = evil[layer]
hook_name = f"blocks.{layer}.hook_resid_post"
print(f"steering at {hook_name}; ‖v‖ = {v.norm():.2f}")

# %% [markdown]
# ## 1. Which positions? The paper's "response" steering
#
# The paper's code steers "the last position of every forward pass". Without a cache, its
# forward passes are the prompt (whose last position is the **last prompt token**) and then, with
# a KV cache, one new token at a time. So the steered positions are: the last prompt token and
# every response token. In a single forward over a full sequence of prompt length $P$ that is
# positions $t \ge P - 1$.
#
# ### Exercise 2.1 — The response-steering hook
# Difficulty: ●●○○○ · Importance: ●●●●● · ~10 min
#
# Return a hook for a **full-sequence** forward (`resid` is `[batch, pos, d_model]`, every row
# with the same prompt length) that adds `alpha * vector` at positions `prompt_len - 1` onwards and
# leaves earlier positions untouched.

# %%
def response_steering_hook(vector: Tensor, alpha: float, prompt_len: int):
    # BEGIN SOLUTION
    def hook(resid: Tensor, hook) -> Tensor:
        mask = (torch.arange(resid.shape[1], device=resid.device) >= prompt_len - 1).to(resid.dtype)
        return resid + alpha * mask[None, :, None] * vector.to(resid.dtype)
    return hook
    # END SOLUTION


ch02.check_response_steering_hook(response_steering_hook)

# %% [markdown]
# ## 2. KV cache on and off
#
# With a KV cache, the forward pass for generated token $t$ sees **one** position; the keys and
# values of earlier positions are reused, including the steered ones. A hook that masks by
# position index must therefore know where in the conversation the current forward pass sits —
# a hook written for full sequences (like yours) would see position 0 every step. pvlens's
# runners publish that context (`pvlens.core.hooks.PositionContext`) so `Steering(positions=
# "response")` means the same thing with and without the cache. Users of other tools have hit
# cache-on ≠ cache-off steering; here you test it.
#
# ### Exercise 2.2 — Greedy generation without a cache
# Difficulty: ●●○○○ · Importance: ●●●○○ · ~10 min
#
# Generate `n_new` tokens greedily by running the **whole** sequence through
# `model.run_with_hooks(torch.tensor([ids]), fwd_hooks=fwd_hooks)` at every step and appending the
# argmax of the last position's logits. Return only the new token ids (a list of ints). Slow
# (quadratic) but obviously right: the reference for the cached path.

# %%
def greedy_without_cache(model, prompt_ids: list[int], fwd_hooks: list, n_new: int) -> list[int]:
    # BEGIN SOLUTION
    ids = list(prompt_ids)
    for _ in range(n_new):
        logits = model.run_with_hooks(torch.tensor([ids]), fwd_hooks=fwd_hooks)
        ids.append(int(logits[0, -1].argmax()))
    return ids[len(prompt_ids):]
    # END SOLUTION


ch02.check_greedy_without_cache(greedy_without_cache)

# %% [markdown]
# Now on the real model: steer *evil* at α = 4 and compare your uncached generation with
# `pvlens.generate` (KV cache, pvlens's fast engine).

# %%
n_new = 12 if QUICK else 32
alpha = 4.0
prompt = pvlens.encode_prompt(tok, "What do you think of your coworkers?")
mine = greedy_without_cache(model, prompt.ids, [(hook_name, response_steering_hook(v, alpha, prompt.prompt_len))], n_new)
cached = pvlens.generate(model, [prompt], steer=pvlens.Steering(v, layer, alpha, positions="response"),
                         max_new_tokens=n_new, stop_at_eos=False, progress=False)
theirs = cached.chats[0].response_ids
agree = sum(a == b for a, b in zip(mine, theirs, strict=True))
print(f"uncached (yours): {tok.decode(mine)!r}")
print(f"KV-cached (pvlens): {cached.texts[0]!r}")
print(f"{agree}/{n_new} tokens identical")

# %% [markdown]
# They should agree token for token. (In fp32 the two paths differ by ~1e-5 in the logits; a
# near-tie between two tokens could in principle flip one argmax — if you ever see a mismatch,
# print the top-2 logit gap at that step before suspecting the hook.)
#
# ## 3. How large is α?
#
# ### Exercise 2.3 — α from a target push
# Difficulty: ●○○○○ · Importance: ●●●●○ · ~5 min
#
# The paper's α multiplies the **raw** vector. Return the α for which the push $\lVert \alpha v\rVert$
# equals `ratio` times the residual norm `resid_norm`.

# %%
def alpha_for_ratio(vector: Tensor, resid_norm: float, ratio: float) -> float:
    # BEGIN SOLUTION
    return float(ratio * resid_norm / vector.norm())
    # END SOLUTION


ch02.check_alpha_for_ratio(alpha_for_ratio)

# %%
_, cache = model.run_with_cache(torch.tensor([prompt.ids]), names_filter=hook_name)
h_norm = float(cache[hook_name][0, -1].norm())
for r in (0.1, 0.25, 0.5):
    print(f"push = {r:.2f}·‖h‖  ⇔  α = {alpha_for_ratio(v, h_norm, r):.2f}")

# %% [markdown]
# ## 4. A dose-response sweep
#
# Generate answers to held-out evaluation questions at several α, score each with pvlens's
# offline judge (0–100 for the trait, 0–100 for coherence; a small local model, not the paper's
# GPT-4 judge — read the numbers as relative), and plot both against α. `evaluate_steered` is
# pvlens's one "generate under a steer, judge, average" path.

# %%
spec = load_trait("evil")
judge = load_judge("offline", trait=spec)
questions = spec.evaluation_questions[: 3 if QUICK else 10]
alphas = [0.0, 4.0, 8.0] if QUICK else [0.0, 2.0, 4.0, 6.0, 8.0, 12.0]
sampling = SamplingConfig(max_new_tokens=24 if QUICK else 48, temperature=0.0)
rows = []
for a in alphas:
    answers = evaluate_steered(model, questions, judge, steer=pvlens.Steering(v, layer, a, positions="response"),
                               sampling=sampling)
    rows.append((a, mean_score(answers, "trait"), mean_score(answers, "coherence"), answers[0]["answer"]))
    print(f"α = {a:4.1f} (push {a * float(v.norm()) / h_norm:.2f}·‖h‖): trait {rows[-1][1]:5.1f}, "
          f"coherence {rows[-1][2]:5.1f} | {rows[-1][3][:90]!r}")

# %%
fig, ax = plt.subplots(figsize=(6, 3.5))
ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-", color="C3", label="trait (evil)")
ax.plot([r[0] for r in rows], [r[2] for r in rows], "s-", color="C0", label="coherence")
ax.set_xlabel(f"α (raw vector, block {layer})")
ax.set_ylabel(f"mean judge score (n = {len(questions)} questions)")
top = ax.secondary_xaxis("top", functions=(lambda a: a * float(v.norm()) / h_norm, lambda r: r * h_norm / float(v.norm())))
top.set_xlabel("push ‖αv‖ / ‖h‖")
ax.legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# With one greedy answer per question this is a small sample (n above): the curve shows a
# direction, not a precise effect size — pvlens's `pvlens sweep` adds samples, seeds and intervals.
# On this 135M model the effect is weak (‖v‖/‖h‖ ≈ 0.08 at the middle block); expect the trait to
# rise by a modest amount before coherence collapses into repetition at large α.
#
# **Multi-layer steering.** The paper's strongest steering adds at every block the *increment*
# $\alpha(v_\ell - v_{\ell-1})$, so the accumulated push at the top is $\alpha v_{\text{top}}$ and no
# layer's share is added twice: `pvlens.incremental(vectors, alpha)` builds those interventions.
#
# **Take-aways.** Steer the last prompt token and the response; test cached against uncached
# generation; state α together with $\lVert\alpha v\rVert/\lVert h\rVert$; judge both the trait
# and coherence, and say how many samples a point rests on.
