# %% [markdown]
# # Chapter 5 — Screening training data by projection difference
#
# **Learning objectives**
# - Compute the paper's **sample-level projection difference** ΔPᵢ: the projection of a training
#   sample's response minus the projection of the base model's *own* reply to the same prompt.
# - Compute the cheap **prompt-only approximation** (no generation) and know what it loses.
# - Measure separation with **AUROC** and read it against a **random-direction null**.
# - Run a **circularity control**: the Level II sets were made *by steering along the very vector*
#   we screen with; the hand-written evaluation set was not made by any model or vector.
#
# **Prerequisites**: chapter 4 (projections, the last prompt token), chapter 1 (nulls).
#
# **Runtime**: measured: 3.5 min on a 2-core CPU (full size).
# (Built with `pvlens course build` on a shared machine under load, ~8 jobs on 2 cores; quick mode: 102 s, 35 s CPU.)

# %%
import json
import time
from importlib import resources

import matplotlib.pyplot as plt
import numpy as np
import torch

import pvlens
from pvlens.core.activations import collect
from pvlens.core.chat import EncodedChat, encode_conversation
from pvlens.core.config import default_layer
from pvlens.course import QUICK
from pvlens.course.checks import ch05
from pvlens.io.stats import bootstrap_ci
from pvlens.monitor.projection import project
from pvlens.vectors.coerce import direction
from pvlens.vectors.validate import bootstrap_auroc, load_eval_set, percentile_in

T0 = time.time()
N_SAMPLES = 6 if QUICK else 40  # samples per dataset level
N_EVAL = 10 if QUICK else 107  # rows of the hand-written evil evaluation set (107 in all)
N_DIRS = 50 if QUICK else 500  # random directions in the null
MAX_NEW = 24 if QUICK else 64  # base-reply tokens

model = pvlens.load_model()
LAYER = default_layer(model)
v = direction("evil", LAYER)
tok = model.tokenizer

# %% [markdown]
# ## 1. ΔP, the maths
#
# For a training sample $(q_i, a_i)$ let $\bar x(q, a)$ be the residual at block ℓ averaged over the
# response tokens. With $y_i$ the base model's own reply to $q_i$:
# $$\Delta P_i = \bar x(q_i, a_i)\cdot\hat v - \bar x(q_i, y_i)\cdot\hat v .$$
# Subtracting the base reply removes the offset of raw projections *and* whatever the prompt
# itself contributes: ΔPᵢ > 0 means "this answer is further along the persona direction than
# what the model would have said anyway" — a sample that would *teach* the trait. The dataset-level
# ΔP (the mean) is what the paper correlates with the trait expression after finetuning.
#
# ### Exercise 5.1 — Response-average projection
# Difficulty: ●●○○○ · Importance: ●●●●○ · ~10 min
#
# Implement `response_avg_projection(model, chat, v, layer)`: one `run_with_cache` on the chat's
# ids, the mean of `blocks.{layer}.hook_resid_post` over positions `prompt_len:` , projected on $\hat v$.
# Return a 0-d tensor.

# %%
def response_avg_projection(model, chat: EncodedChat, v: torch.Tensor, layer: int) -> torch.Tensor:
    # BEGIN SOLUTION
    name = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([chat.ids]), names_filter=[name], stop_at_layer=layer + 1)
    u = v.float() / v.float().norm()
    return cache[name][0, chat.prompt_len:].float().mean(0) @ u
    # END SOLUTION


ch05.check_response_avg_projection(response_avg_projection)

# %% [markdown]
# ## 2. The trait datasets and the base model's replies
#
# `pvlens/data/datasets/evil/` has three levels (normal, Level I, Level II). Read its README:
# **Level I/II answers were generated with steering along this same evil vector at layer 15**
# (α = 3 and 6). Keep that in mind — it is the circularity section 4 controls for.

# %%
def read_set(level: str, n: int) -> list[list[dict]]:
    path = resources.files("pvlens") / "data" / "datasets" / "evil" / f"{level}.jsonl"
    lines = path.read_text().splitlines()[:n]
    return [json.loads(line)["messages"] for line in lines]


data = {lv: read_set(lv, N_SAMPLES) for lv in ("normal", "level_ii")}
base_prompts = {lv: [m[:-1] for m in msgs] for lv, msgs in data.items()}
base_replies = {lv: pvlens.generate(model, p, max_new_tokens=MAX_NEW, temperature=0.0, batch_size=16,
                                    progress=False).texts for lv, p in base_prompts.items()}
chats = {lv: [encode_conversation(tok, m) for m in msgs] for lv, msgs in data.items()}
base_chats = {lv: [encode_conversation(tok, [*p, {"role": "assistant", "content": r}])
                   for p, r in zip(base_prompts[lv], base_replies[lv], strict=True)] for lv in data}

dp = {}
for lv in data:
    p_data = torch.stack([response_avg_projection(model, c, v, LAYER) for c in chats[lv]])
    p_base = torch.stack([response_avg_projection(model, c, v, LAYER) for c in base_chats[lv]])
    dp[lv] = (p_data - p_base).numpy()
    m, lo, hi = bootstrap_ci(dp[lv].tolist())
    print(f"{lv:>8}: dataset ΔP = {m:+.2f} (95% bootstrap CI {lo:+.2f}..{hi:+.2f}, n = {len(dp[lv])})")

# %% [markdown]
# ## 3. AUROC
#
# AUROC = P(score of a random positive > score of a random negative), ties counting ½ — the
# Mann–Whitney U statistic divided by $n_+ n_-$. 0.5 is chance; it only depends on the ranking, so
# the projection's offset and scale do not matter.
#
# ### Exercise 5.2 — AUROC
# Difficulty: ●●○○○ · Importance: ●●●●○ · ~5 min
#
# Implement `auroc(pos, neg)` by comparing every pair (broadcasting), ties counting ½.

# %%
def auroc(pos, neg) -> float:
    # BEGIN SOLUTION
    pos, neg = torch.as_tensor(pos, dtype=torch.float64), torch.as_tensor(neg, dtype=torch.float64)
    diff = pos[:, None] - neg[None, :]
    return float(((diff > 0).double() + 0.5 * (diff == 0).double()).mean())
    # END SOLUTION


ch05.check_auroc(auroc)
print(f"sample-level ΔP, Level II vs normal: AUROC = {auroc(dp['level_ii'], dp['normal']):.3f} "
      f"(n = {len(dp['level_ii'])} + {len(dp['normal'])})")

# %% [markdown]
# ### Exercise 5.3 — The prompt-only approximation
# Difficulty: ●●○○○ · Importance: ●●●○○ · ~10 min
#
# Generating base replies is the expensive part. Replace the base reply's projection by the
# projection of the **last prompt token** of the same forward pass (chapter 4's forecast):
# $$\Delta P_i \approx \bar x(q_i, a_i)\cdot\hat v - x_{\text{last prompt}}(q_i)\cdot\hat v .$$
# Implement `prompt_only_delta(model, chat, v, layer)` with a single `run_with_cache`. Its offset
# differs from ΔP (a prompt token is not a reply), so compare it only with itself.

# %%
def prompt_only_delta(model, chat: EncodedChat, v: torch.Tensor, layer: int) -> torch.Tensor:
    # BEGIN SOLUTION
    name = f"blocks.{layer}.hook_resid_post"
    with torch.no_grad():
        _, cache = model.run_with_cache(torch.tensor([chat.ids]), names_filter=[name], stop_at_layer=layer + 1)
    x = cache[name][0].float()
    u = v.float() / v.float().norm()
    return x[chat.prompt_len:].mean(0) @ u - x[chat.prompt_len - 1] @ u
    # END SOLUTION


ch05.check_prompt_only_delta(prompt_only_delta)
approx = {lv: torch.stack([prompt_only_delta(model, c, v, LAYER) for c in chats[lv]]).numpy() for lv in data}
pooled_dp = np.concatenate([dp["normal"], dp["level_ii"]])
pooled_ap = np.concatenate([approx["normal"], approx["level_ii"]])
rho = np.corrcoef(np.argsort(np.argsort(pooled_dp)), np.argsort(np.argsort(pooled_ap)))[0, 1]
print(f"prompt-only approximation: AUROC Level II vs normal = {auroc(approx['level_ii'], approx['normal']):.3f}; "
      f"Spearman ρ with ΔP (pooled, n = {len(pooled_dp)}) = {rho:.2f}")

fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
for lv, colour in (("normal", "tab:blue"), ("level_ii", "tab:red")):
    ax[0].hist(dp[lv], bins=15, alpha=0.6, color=colour, label=lv)
ax[0].set(xlabel=f"sample ΔP (layer {LAYER})", ylabel="samples", title="ΔP by level")
ax[0].legend()
ax[1].scatter(pooled_dp, pooled_ap, s=12)
ax[1].set(xlabel="ΔP (with base replies)", ylabel="prompt-only approximation", title=f"ρ = {rho:.2f}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 4. The circularity control
#
# The Level II answers were *selected and produced by steering along v*. A direction that
# separates them is partly separating "text steered by v" from "text not steered" — a test the
# vector was built to pass. Two controls:
#
# 1. **Data not made by the vector**: `pvlens/data/eval/evil.jsonl` has, for each question, a
#    hand-written trait answer and a clean answer. No model or vector produced them.
# 2. **A null for the direction**: how often does a *random* unit direction separate the two sets
#    as well? In $d = 576$ dimensions random directions are nearly orthogonal to everything, but
#    a real stylistic difference between two sets of texts can still be visible along many of
#    them — the null measures that.
#
# ### Exercise 5.4 — The random-direction null
# Difficulty: ●●○○○ · Importance: ●●●●○ · ~10 min
#
# Implement `random_direction_aurocs(trait_acts, clean_acts, n_dirs, seed)`: draw directions with
# `pvlens.vectors.validate.random_directions(n_dirs, d_model, seed)`, project both sets on each,
# and return the AUROC per direction (a tensor `[n_dirs]`). Vectorise: one matrix product per set.

# %%
from pvlens.vectors.validate import random_directions  # noqa: E402


def random_direction_aurocs(trait_acts, clean_acts, n_dirs: int, seed: int) -> torch.Tensor:
    # BEGIN SOLUTION
    dirs = random_directions(n_dirs, trait_acts.shape[-1], seed)
    pt, pc = dirs @ trait_acts.double().T, dirs @ clean_acts.double().T  # [k, n], [k, m]
    diff = pt[:, :, None] - pc[:, None, :]
    return ((diff > 0).double() + 0.5 * (diff == 0).double()).mean(dim=(1, 2))
    # END SOLUTION


ch05.check_random_direction_aurocs(random_direction_aurocs)

# %%
rows = load_eval_set("evil")[:N_EVAL]
def conv(q: str, a: str) -> EncodedChat:
    return encode_conversation(tok, [{"role": "user", "content": q}, {"role": "assistant", "content": a}])


def response_acts(chs: list[EncodedChat]) -> torch.Tensor:
    return collect(model, chs, ("response_avg",), layers=[LAYER], dtype=torch.float32,
                   progress=False)["response_avg"][:, 0]


sets = {
    "hand-written (not made by v)": (response_acts([conv(r.question, r.trait_answer) for r in rows]),
                                     response_acts([conv(r.question, r.clean_answer) for r in rows])),
    "Level II vs normal (made by steering with v)": (response_acts(chats["level_ii"]), response_acts(chats["normal"])),
}
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for ax, (name, (trait_a, clean_a)) in zip(axes, sets.items(), strict=True):
    real = auroc(project(trait_a, v), project(clean_a, v))
    paired = name.startswith("hand")  # hand-written rows answer the same question; the levels do not
    groups = {} if paired else {"pos_groups": list(range(len(trait_a))),
                                "neg_groups": list(range(len(trait_a), len(trait_a) + len(clean_a)))}
    lo, hi = bootstrap_auroc(project(trait_a, v), project(clean_a, v), n_boot=1000, seed=0, **groups)
    null = random_direction_aurocs(trait_a, clean_a, N_DIRS, seed=0)
    null_max = null.abs().max().item()
    pct = percentile_in(real, null)
    print(f"{name}: AUROC of v = {real:.3f} (95% CI {lo:.3f}..{hi:.3f}, n = {len(trait_a)}+{len(clean_a)}); "
          f"random directions: median {null.median():.3f}, 95th pct {null.quantile(0.95):.3f}, "
          f"max {null_max:.3f} over {N_DIRS}; v beats {pct:.1f} % of them")
    ax.hist(null.numpy(), bins=30, color="grey", label=f"{N_DIRS} random directions")
    ax.axvline(real, color="red", label="persona vector")
    ax.set(title=name, xlabel="AUROC", xlim=(0, 1))
    ax.legend(fontsize=8)
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Summary
#
# - Read each AUROC next to its null: a separation random directions also achieve is not
#   evidence for the persona vector.
# - The steered Level II set is the easy, circular case; the hand-written set is the fair test.
#   `pvlens validate` runs the fair test for all shipped vectors (docs/validation.md);
#   `pvlens screen` runs ΔP on a whole dataset with cached base replies.

# %%
print(f"chapter 5 ran in {time.time() - T0:.0f} s")
