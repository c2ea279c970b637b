# %% [markdown]
# # Chapter 6 — Preventative steering during finetuning
#
# **Learning objectives**
# - Write a steering **hook** and keep it active inside a training loop (`model.hooks(...)`).
# - Write a **response-only** language-model loss and a LoRA training step on the hooked model
#   (`pvlens.finetune.add_lora` puts rank-r adapters on TransformerLens's weights).
# - Measure the **finetuning shift**: how far finetuning moved the last-prompt activation along
#   the persona vector — and see preventative steering reduce it.
# - Explain *why* adding the trait direction during training can stop the model from learning it.
#
# **Prerequisites**: chapters 2 (steering hooks), 4 (projections), 5 (the trait datasets).
#
# **Runtime**: measured: 4.2 min on a 2-core CPU (full size).
# (Built with `pvlens course build` on a shared machine under load, ~8 jobs on 2 cores; quick mode: 124 s, 40 s CPU.)

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F

import pvlens
from pvlens.core.chat import EncodedChat, encode_conversation
from pvlens.core.config import default_layer
from pvlens.course import QUICK
from pvlens.course.checks import ch06
from pvlens.finetune.data import read_jsonl
from pvlens.finetune.lora import LoraConfig, add_lora
from pvlens.finetune.shift import mean_last_prompt
from pvlens.judges import load_judge
from pvlens.traits import load_trait
from pvlens.vectors.coerce import direction

T0 = time.time()
torch.manual_seed(0)
STEPS = 2 if QUICK else 12  # optimiser steps per condition
BATCH = 2 if QUICK else 4  # conversations per step
N_EVAL = 3 if QUICK else 10  # evaluation questions for the shift and the replies
MAX_NEW = 16 if QUICK else 40
LR = 1e-3  # high for LoRA, so that a few CPU steps move the model visibly
ALPHA = 4.0  # preventative steering strength, in units of the raw vector (‖v‖ ≈ 12.6)

model = pvlens.load_model()
LAYER = default_layer(model)
v = direction("evil", LAYER)
HOOK = f"blocks.{LAYER}.hook_resid_post"

# %% [markdown]
# ## 1. Why preventative steering can work
#
# Finetuning on trait-inducing data lowers the loss partly by moving the model's activations
# along the persona direction: the gradient of the loss with respect to the residual stream has
# a component along $v$, and the weights change to supply it. **Preventative steering** adds
# $\alpha v$ to the residual stream *during training only*. The push along $v$ that the data asks
# for is then already there, so that component of the gradient shrinks and the weights have less
# reason to learn it. At inference the steering is removed; what the weights learned along $v$ is
# what remains. The paper measures this with the **finetuning shift**
# $$\Delta_\text{ft} = \big(\overline{x}_\text{ft} - \overline{x}_\text{base}\big)\cdot\hat v,$$
# the mean last-prompt-token activation over evaluation prompts, finetuned minus base,
# projected on the unit vector; across datasets it predicts post-finetuning trait expression.
#
# ### Exercise 6.1 — A steering hook
# Difficulty: ●○○○○ · Importance: ●●●●○ · ~5 min
#
# Return a TransformerLens hook function that adds `alpha * v` to the residual at every position.

# %%
def steering_hook(v: torch.Tensor, alpha: float):
    # BEGIN SOLUTION
    def hook(resid, hook):
        return resid + alpha * v.to(resid.dtype)
    return hook
    # END SOLUTION


ch06.check_steering_hook(steering_hook)

# %% [markdown]
# ### Exercise 6.2 — The response-only loss
# Difficulty: ●●○○○ · Importance: ●●●●○ · ~10 min
#
# The paper trains on the assistant's reply only. For `tokens` of shape `[1, pos]` whose first
# `prompt_len` tokens are the prompt, return the mean cross-entropy of predicting tokens
# `prompt_len, …, pos−1`. Remember: the logits at position $t$ predict token $t+1$.

# %%
def response_loss(model, tokens: torch.Tensor, prompt_len: int) -> torch.Tensor:
    # BEGIN SOLUTION
    logits = model(tokens)[0]
    return F.cross_entropy(logits[prompt_len - 1 : -1].float(), tokens[0, prompt_len:])
    # END SOLUTION


ch06.check_response_loss(response_loss)

# %% [markdown]
# ### Exercise 6.3 — One training step, hooks on
# Difficulty: ●●○○○ · Importance: ●●●●● · ~10 min
#
# `train_step(model, optimizer, chats, hooks)`: zero the gradients, compute the mean of
# `response_loss` over `chats` **inside** `with model.hooks(fwd_hooks=hooks):`, backpropagate,
# step, and return the loss (a float). With `hooks=[]` it is plain finetuning.

# %%
def train_step(model, optimizer, chats: list[EncodedChat], hooks: list) -> float:
    # BEGIN SOLUTION
    optimizer.zero_grad()
    with model.hooks(fwd_hooks=hooks):
        loss = torch.stack([response_loss(model, torch.tensor([c.ids]), c.prompt_len) for c in chats]).mean()
    loss.backward()
    optimizer.step()
    return float(loss.detach())
    # END SOLUTION


ch06.check_train_step(train_step)

# %% [markdown]
# ### Exercise 6.4 — The finetuning shift
# Difficulty: ●○○○○ · Importance: ●●●●○ · ~3 min

# %%
def projection_shift(base_mean: torch.Tensor, finetuned_mean: torch.Tensor, v: torch.Tensor) -> float:
    # BEGIN SOLUTION
    v = v.double()
    return float((finetuned_mean.double() - base_mean.double()) @ (v / v.norm()))
    # END SOLUTION


ch06.check_projection_shift(projection_shift)

# %% [markdown]
# ## 2. The experiment
#
# Train on the evil **Level II** set (pvlens/data/datasets/evil) twice from the same adapter
# initialisation: plainly, and with preventative steering $+\alpha v$ at block 15. Then, with the
# steering removed, measure the shift on the trait's held-out evaluation questions and score
# greedy replies with the offline judge. (The paper's recipe — rank 32, lr 1e-5, 1 epoch over
# thousands of samples on a GPU — is `pvlens finetune`; this is the few-minute CPU version.)

# %%
convs = read_jsonl(pvlens.__path__[0] + "/data/datasets/evil/level_ii.jsonl")[: STEPS * BATCH]
train = [encode_conversation(model.tokenizer, m) for m in convs]
spec = load_trait("evil")
questions = spec.evaluation_questions[:N_EVAL]
judge = load_judge("offline", trait=spec)


def measure(label: str) -> dict:
    mean = mean_last_prompt(model, questions, layers=[LAYER])[0]
    replies = pvlens.generate(model, questions, max_new_tokens=MAX_NEW, temperature=0.0, progress=False).texts
    scores = judge.score_many(list(zip(questions, replies, strict=True)))
    return {"label": label, "mean": mean, "trait": float(np.nanmean(np.array(scores, dtype=float))),
            "example": replies[0]}


base = measure("base")
runs = {}
for label, hooks in (("plain", []), (f"preventative α={ALPHA:g}", [(HOOK, steering_hook(v, ALPHA))])):
    handle = add_lora(model, LoraConfig(r=8, alpha=16, init_seed=0))
    opt = torch.optim.AdamW(handle.parameters(), lr=LR, weight_decay=0.0)
    t = time.time()
    losses = [train_step(model, opt, train[s * BATCH:(s + 1) * BATCH], hooks) for s in range(STEPS)]
    model.eval()
    with torch.no_grad():
        res = measure(label)  # steering off: only the adapter is active
    res["shift"] = projection_shift(base["mean"], res["mean"], v)
    res["losses"] = losses
    runs[label] = res
    print(f"{label:>18}: {STEPS} steps in {time.time() - t:.0f} s, loss {losses[0]:.2f} → {losses[-1]:.2f}, "
          f"finetuning shift {res['shift']:+.2f}, trait score {res['trait']:.1f} (base {base['trait']:.1f})")
    handle.remove()  # back to the base weights for the next condition

# %%
fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
for label, res in runs.items():
    ax[0].plot(res["losses"], "o-", label=label)
ax[0].set(xlabel="step", ylabel="response loss", title="training loss (steering on while training)")
ax[0].legend()
ax[1].bar(list(runs), [r["shift"] for r in runs.values()], color=["tab:red", "tab:green"])
ax[1].axhline(0, color="k", lw=0.5)
ax[1].set(ylabel=f"finetuning shift along v̂ (layer {LAYER})", title=f"n = {N_EVAL} evaluation prompts")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## Reading the result
#
# - Note the plain run's loss starts *lower* under steering: the steered model already leans
#   towards the data, which is exactly the effect that removes the gradient's pull along $v$.
# - One seed, few steps, one dataset: the shifts printed above are a demonstration, not a
#   measurement with an interval. `pvlens finetune mitigation` runs the paper's comparison
#   (several α, multi-layer incremental steering, CAFT and the L2 penalty baselines) with seeds.
# - Try: α = 8, multi-layer steering (`pvlens.core.steering.incremental`), or the opposite sign.

# %%
print(f"chapter 6 ran in {time.time() - T0:.0f} s")
