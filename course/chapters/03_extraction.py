# %% [markdown]
# # Chapter 3 — Extraction
#
# The paper's pipeline, small enough to run here: contrastive system prompts → sampled replies →
# a judge scores each → a filter keeps the replies that show (or clearly lack) the trait →
# response-averaged activations at every block → difference of means. You implement the filter,
# the per-layer difference of means and the split-half stability test, and compare your vector
# with the shipped one against a null.
#
# ```
# trait spec ─► rollouts (pos / neg system prompts) ─► judge (trait, coherence) ─► filter
#            ─► response-avg resid_post per block ─► mean(pos) − mean(neg) = v[L]
# ```
#
# **Learning objectives**
# - build the paper's contrastive prompts from a trait spec;
# - apply the judge filter with the pair rule (paper) and the sample rule, and count what survives;
# - compute a persona vector at every block from response-averaged activations;
# - measure its stability by a split-half cosine split by *question*, against a random-direction
#   null and a label-permutation null.
#
# **Prerequisites**: chapters 0 (caching, the response boundary) and 1 (difference of means, nulls).
#
# **Runtime**: measured: 4.4 min on a 2-core CPU (full size).

# %%
import random
import tempfile
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from torch import Tensor

import pvlens
from pvlens.core.activations import collect
from pvlens.core.config import default_layer
from pvlens.course import QUICK
from pvlens.course.checks import ch03
from pvlens.judges import load_judge
from pvlens.traits import load_trait
from pvlens.vectors.coerce import as_persona_vectors
from pvlens.vectors.extract import ExtractConfig, judge_rollouts, run_rollouts

torch.set_grad_enabled(False)
model = pvlens.load_model()
spec = load_trait("evil")
print(spec.description)
print("pos:", spec.system_prompt("pos", 0))
print("neg:", spec.system_prompt("neg", 0))

# %% [markdown]
# ## 1. Rollouts and the judge
#
# For every extraction question × instruction pair × sample, the model answers once under the
# trait-eliciting (pos) and once under the trait-suppressing (neg) system prompt, sampling at
# temperature 1. The judge scores each answer 0–100 for the trait and for coherence. (The paper
# uses 20 questions × 5 pairs × 10 samples and a GPT-4 judge; we use far fewer and pvlens's offline
# judge, so our vector is noisier — part of the lesson.)

# %%
cfg = ExtractConfig(n_questions=3 if QUICK else 8, n_instructions=2 if QUICK else 3,
                    samples_per_pair=2 if QUICK else 3, max_new_tokens=16 if QUICK else 40,
                    temperature=1.0, min_kept=2)
with tempfile.TemporaryDirectory() as out:
    rollouts = run_rollouts(model, spec, Path(out), cfg)
judge = load_judge("offline", trait=spec)
judge_rollouts(rollouts, judge)
print(f"{len(rollouts)} rollouts")
for r in rollouts[:4]:
    print(f"[{r.polarity}] trait {r.trait_score:5.1f} coherence {r.coherence:5.1f} | {r.response[:80]!r}")

# %% [markdown]
# ### Exercise 3.1 — The judge filter, two rules
# Difficulty: ●●○○○ · Importance: ●●●●○ · ~15 min
#
# A sample *passes* when it has both scores, coherence ≥ `coherence_threshold`, and
# trait ≥ `trait_threshold` for pos / trait < `trait_threshold` for neg. Return one bool per rollout:
# - `pairing="sample"`: kept = it passes;
# - `pairing="pair"` (the paper): kept = it passes **and** its partner (same `r.pair_key` =
#   instruction, question, sample; the other polarity) exists and passes.
#
# Why pairs? Keeping both halves keeps the pos and neg sets matched question for question, so the
# difference of means does not pick up "which questions survived".

# %%
def keep_mask(rollouts: list, trait_threshold: float, coherence_threshold: float, pairing: str) -> list[bool]:
    # BEGIN SOLUTION
    def passes(r) -> bool:
        if r.trait_score is None or r.coherence is None or r.coherence < coherence_threshold:
            return False
        return r.trait_score >= trait_threshold if r.polarity == "pos" else r.trait_score < trait_threshold

    ok = {r.key: passes(r) for r in rollouts}
    if pairing == "sample":
        return [ok[r.key] for r in rollouts]
    by_pair: dict = {}
    for r in rollouts:
        by_pair.setdefault(r.pair_key, []).append(r)
    return [len(by_pair[r.pair_key]) == 2 and all(ok[x.key] for x in by_pair[r.pair_key]) for r in rollouts]
    # END SOLUTION


ch03.check_keep_mask(keep_mask)

# %%
counts = {}
for pairing in ("pair", "sample"):
    for threshold in (50.0, 35.0):
        kept = keep_mask(rollouts, threshold, 50.0, pairing)
        n_pos = sum(k for k, r in zip(kept, rollouts, strict=True) if r.polarity == "pos")
        n_neg = sum(k for k, r in zip(kept, rollouts, strict=True) if r.polarity == "neg")
        counts[(pairing, threshold)] = (n_pos, n_neg)
        print(f"pairing={pairing:6s} trait threshold {threshold:.0f}: kept {n_pos} pos, {n_neg} neg of {len(rollouts) // 2} each")

# %% [markdown]
# On a 135M model few trait-eliciting answers reach the threshold, and the pair rule loses every
# pair whose *other* half failed. pvlens's `tiny` preset therefore filters per sample at a lower
# threshold; its `cpu` and `paper` presets use the pair rule. Pick the rule that keeps at least a
# few samples a side here, and say which you used.

# %%
rule = next(((p, t) for p in ("pair", "sample") for t in (50.0, 35.0) if min(counts[(p, t)]) >= 2), ("sample", 0.0))
kept = keep_mask(rollouts, rule[1], 50.0 if rule[1] else 0.0, rule[0])
print("using", rule, "→", sum(kept), "samples")
pos_r = [r for r, k in zip(rollouts, kept, strict=True) if k and r.polarity == "pos"]
neg_r = [r for r, k in zip(rollouts, kept, strict=True) if k and r.polarity == "neg"]

# %% [markdown]
# ## 2. Response-averaged activations at every block
#
# For each kept sample, average `blocks.L.hook_resid_post` over the **response** tokens (chapter 0's
# boundary) for every block $L$: pvlens's `collect` does this in one batched pass and returns
# `[n_samples, n_layers, d_model]`.
#
# ### Exercise 3.2 — Per-layer difference of means
# Difficulty: ●○○○○ · Importance: ●●●●● · ~5 min
#
# `pos` is `[n_pos, n_layers, d_model]`, `neg` is `[n_neg, n_layers, d_model]`; return
# $v_L = \overline{x^{+}_L} - \overline{x^{-}_L}$ for every layer, shape `[n_layers, d_model]`.

# %%
def per_layer_diff_of_means(pos: Tensor, neg: Tensor) -> Tensor:
    # BEGIN SOLUTION
    return pos.double().mean(0).float() - neg.double().mean(0).float()
    # END SOLUTION


ch03.check_per_layer_diff_of_means(per_layer_diff_of_means)

# %%
tok = model.tokenizer
acts_pos = collect(model, [r.chat(tok) for r in pos_r], ["response_avg"], progress=False)["response_avg"]
acts_neg = collect(model, [r.chat(tok) for r in neg_r], ["response_avg"], progress=False)["response_avg"]
mine = per_layer_diff_of_means(acts_pos, acts_neg)
shipped = as_persona_vectors("evil").vectors
cos_shipped = torch.nn.functional.cosine_similarity(mine, shipped, dim=-1)
layer = default_layer(model)
print(f"your vector: {tuple(mine.shape)}; ‖v‖ at block {layer} = {mine[layer].norm():.2f} "
      f"(shipped {shipped[layer].norm():.2f}); cosine with shipped = {cos_shipped[layer]:.2f}")

# %% [markdown]
# ## 3. Is the vector stable? Split-half cosine
#
# Split the **questions** into two halves, build one vector from each half, and take their cosine
# per layer. Splitting by question (not by sample) means the two vectors share no prompt — a
# stricter test. If the vector were noise, the two halves would be unrelated directions: chapter 1's
# null says their cosine is $\approx 0 \pm 1/\sqrt{d}$.
#
# ### Exercise 3.3 — Split-half cosine
# Difficulty: ●●○○○ · Importance: ●●●○○ · ~10 min
#
# `pos_groups[i]` / `neg_groups[j]` are the question indices of the samples; `first` is the set of
# questions in half A. Return the per-layer cosine between (mean pos − mean neg over half A) and
# (the same over half B), shape `[n_layers]`.

# %%
def split_half_cosine(pos: Tensor, neg: Tensor, pos_groups: list[int], neg_groups: list[int], first: set) -> Tensor:
    # BEGIN SOLUTION
    pa = torch.tensor([g in first for g in pos_groups])
    na = torch.tensor([g in first for g in neg_groups])
    v1 = pos[pa].double().mean(0) - neg[na].double().mean(0)
    v2 = pos[~pa].double().mean(0) - neg[~na].double().mean(0)
    return torch.nn.functional.cosine_similarity(v1, v2, dim=-1).float()
    # END SOLUTION


ch03.check_split_half_cosine(split_half_cosine)

# %%
pg, ng = [r.question_index for r in pos_r], [r.question_index for r in neg_r]
groups = sorted(set(pg) | set(ng))
random.Random(0).shuffle(groups)
first = set(groups[: len(groups) // 2])
has_both = all(any((g in first) == side for g in gs) for gs in (pg, ng) for side in (True, False))
split = split_half_cosine(acts_pos, acts_neg, pg, ng, first) if has_both else torch.full((model.cfg.n_layers,), float("nan"))

# The label-permutation null: shuffle pos/neg labels among the kept samples, keep the split.
n_perm = 20 if QUICK else 200
both, groups_all = torch.cat([acts_pos, acts_neg]), pg + ng
gen = torch.Generator().manual_seed(0)
perm_null = []
for _ in range(n_perm):
    idx = torch.randperm(len(both), generator=gen)
    p_idx, n_idx = idx[: len(pos_r)], idx[len(pos_r):]
    c = split_half_cosine(both[p_idx], both[n_idx], [groups_all[i] for i in p_idx],
                          [groups_all[i] for i in n_idx], first)
    perm_null.append(c)
perm = torch.stack(perm_null)  # [n_perm, n_layers]; NaN where a half lost a side
d = model.cfg.d_model
print(f"split-half cosine at block {layer}: {split[layer]:.2f}; isotropic null 3σ = {3 / d**0.5:.2f}; "
      f"permutation null 95th pct = {perm[:, layer].nanquantile(0.95):.2f} (n = {n_perm})")

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].plot(cos_shipped, "o-", label="cos(yours, shipped)")
axes[0].plot(split, "s-", label="split-half cosine (yours)")
axes[0].fill_between(range(model.cfg.n_layers), perm.nanquantile(0.05, dim=0), perm.nanquantile(0.95, dim=0),
                     alpha=0.3, color="grey", label="permutation null 5–95 %")
axes[0].axhspan(-3 / d**0.5, 3 / d**0.5, color="k", alpha=0.15, label="isotropic null ±3/√d")
axes[0].set_xlabel("block L")
axes[0].legend(fontsize=7)
axes[0].set_title(f"evil, {len(pos_r)} pos / {len(neg_r)} neg samples")
axes[1].plot(mine.norm(dim=-1), label="‖v‖ yours")
axes[1].plot(shipped.norm(dim=-1), label="‖v‖ shipped")
axes[1].set_xlabel("block L")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# Read the plot against the grey band, not against zero. The permutation null is the honest one:
# residual streams are anisotropic (a few directions carry most of the variance), so even vectors
# built from *shuffled* labels agree more than isotropic random directions do. A vector is worth
# steering with where its split-half cosine clears that band. On this model with a handful of
# samples it often does not at every layer — the shipped vectors used more rollouts
# (`pvlens extract evil --preset cpu`); the paper uses 1000 per trait.
#
# **Take-aways.** Extraction is generate → judge → filter → average → subtract; the filter rule
# changes what survives (report the counts); stability is a split-half cosine split by question;
# and the null for a cosine between *activation-derived* vectors is a permutation null, stricter
# than $1/\sqrt d$.
