# %% [markdown]
# # Chapter 4 — Monitoring: reading a persona before the model speaks
#
# **Learning objectives**
# - Project a residual-stream activation on a persona vector and read the number correctly
#   (scalar projection on the *unit* vector; raw projections carry an offset).
# - Use the **last prompt token** as a forecast of the reply, as the paper does.
# - Build a **prompt ladder** (system prompts from trait-suppressing to trait-eliciting), and
#   measure how well the projection predicts the judged trait score with **Pearson's r**
#   (with n and an interval).
# - Write a TransformerLens hook function that records activations, and draw a **per-token view**.
#
# **Prerequisites**: chapters 0 (TransformerLens, `run_with_cache`, the prompt/response boundary)
# and 2 (steering), or the same knowledge.
#
# **Runtime**: measured: 1.8 min on a 2-core CPU (full size).
# A script run of the full size took 872 s on the shared machine under load (~8 jobs on 2 cores); quick mode 59 s (23 s CPU). That run's result: r = 0.31 per prompt (95% CI 0.09..0.49, n = 80), r = 0.48 over the 8 rung means (95% CI −0.34..0.89).

# %%
import time

import matplotlib.pyplot as plt
import numpy as np
import torch
from scipy.stats import pearsonr

import pvlens
from pvlens.core.chat import EncodedChat, encode_messages
from pvlens.core.config import default_layer
from pvlens.course import QUICK
from pvlens.course.checks import ch04
from pvlens.judges import load_judge
from pvlens.traits import load_trait
from pvlens.traits.prompts import prompt_ladder
from pvlens.vectors.coerce import direction

T0 = time.time()
torch.manual_seed(0)
N_QUESTIONS = 2 if QUICK else 10  # evaluation questions per ladder rung
MAX_NEW = 24 if QUICK else 48  # tokens per reply

model = pvlens.load_model()  # SmolLM2-135M-Instruct, offline
LAYER = default_layer(model)  # 15: the middle of the 30 blocks
v = direction("evil", LAYER)  # the shipped evil vector at that block (raw, not unit)
print(f"layer {LAYER}, ‖v‖ = {v.norm():.2f}")

# %% [markdown]
# ## 1. The maths of a projection
#
# A persona vector $v_\ell$ is a difference of means of residual activations at block $\ell$.
# The **scalar projection** of an activation $x$ on it is
# $$p(x) = x \cdot \hat v, \qquad \hat v = v / \lVert v \rVert .$$
# It is in the units of the residual stream: $p$ grows by exactly $\alpha\lVert v\rVert$ when you
# steer with $\alpha v$ (chapter 2), which is why the paper's $\alpha$ is "in units of the raw vector".
#
# Two facts to keep in mind when reading projections:
#
# - **The offset.** $p(x)$ is not centred: the mean activation $\bar x$ itself has a projection
#   $\bar x\cdot\hat v \ne 0$. Only *differences* of projections (between prompts, models,
#   datasets) mean something; that is why chapter 5 subtracts the base model's projection, and
#   why the finetuning shift in chapter 6 is a difference.
# - **The position.** The **last prompt token** (the final token of the assistant header) is the
#   last state computed *before* the reply: its projection is a forecast, available before a
#   single token is generated. The paper finds it correlates with the trait of the reply that
#   follows (r ≈ 0.75–0.83 on 7B models).
#
# ### Exercise 4.1 — Last-prompt projection with `run_with_cache`
# Difficulty: ●●○○○ · Importance: ●●●●● · ~10 min
#
# Implement `last_prompt_projection(model, chats, v, layer)`: for each `EncodedChat`, run the
# model on its token ids with `model.run_with_cache` (keep only `blocks.{layer}.hook_resid_post`
# with `names_filter`, and stop early with `stop_at_layer=layer + 1`), take the activation at
# position `chat.prompt_len - 1`, and project it on $\hat v$. Return a float tensor `[n]`.
# (A chat may contain a reply: the last prompt token is *not* the last token then.)

# %%
def last_prompt_projection(model, chats: list[EncodedChat], v: torch.Tensor, layer: int) -> torch.Tensor:
    # BEGIN SOLUTION
    u = v.float() / v.float().norm()
    name = f"blocks.{layer}.hook_resid_post"
    out = []
    for chat in chats:
        tokens = torch.tensor([chat.ids])
        with torch.no_grad():
            _, cache = model.run_with_cache(tokens, names_filter=[name], stop_at_layer=layer + 1)
        out.append(cache[name][0, chat.prompt_len - 1].float() @ u)
    return torch.stack(out)
    # END SOLUTION


ch04.check_last_prompt_projection(last_prompt_projection)

# %% [markdown]
# ## 2. The prompt ladder
#
# `pvlens.traits.prompt_ladder("evil")` gives 8 hand-written system prompts ordered from
# trait-suppressing (rung 0, "caring") to trait-eliciting (rung 7, "evil"). For each rung and each
# of the trait's held-out evaluation questions we build the prompt, project its last token, then
# let the model answer and have the offline judge score the answer's trait expression (0–100).

# %%
spec = load_trait("evil")
ladder = prompt_ladder("evil")
questions = spec.evaluation_questions[:N_QUESTIONS]
rows = [(c, q) for c in ladder for q in questions]
chats = [encode_messages(model.tokenizer, c.messages(q)) for c, q in rows]
proj = last_prompt_projection(model, chats, v, LAYER)
levels = np.array([c.level for c, _ in rows])
for c in ladder:
    print(f"rung {c.level} {c.label:>13}: mean last-prompt projection {proj[levels == c.level].mean():7.2f}")
ch04.check_results_ladder(levels, proj.tolist())

# %% [markdown]
# Now the replies. Generation uses pvlens's KV-cached engine (chapter 2); the judge is pvlens's
# offline judge (a classifier fitted on the trait's exemplars — a stand-in for the paper's GPT-4.1
# judge, good at clear cases, blind to subtle ones).

# %%
judge = load_judge("offline", trait=spec)
replies = pvlens.generate(model, chats, max_new_tokens=MAX_NEW, temperature=0.0, batch_size=16,
                          progress=False).texts
scores = np.array(judge.score_many([(q, a) for (_, q), a in zip(rows, replies, strict=True)]), dtype=float)
for c in ladder:
    print(f"rung {c.level} {c.label:>13}: mean trait score {np.nanmean(scores[levels == c.level]):5.1f}")
print("example (top rung):", replies[-1][:200])

# %% [markdown]
# ### Exercise 4.2 — Pearson's r
# Difficulty: ●○○○○ · Importance: ●●●○○ · ~5 min
#
# $$ r = \frac{\sum_i (x_i-\bar x)(y_i-\bar y)}{\sqrt{\sum_i (x_i-\bar x)^2}\sqrt{\sum_i (y_i-\bar y)^2}} $$
# r is invariant to the offset and scale of either variable — exactly what the projection's
# offset needs. Implement `pearson_r(x, y)` with numpy (no scipy).

# %%
def pearson_r(x, y) -> float:
    # BEGIN SOLUTION
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    xc, yc = x - x.mean(), y - y.mean()
    return float((xc * yc).sum() / np.sqrt((xc**2).sum() * (yc**2).sum()))
    # END SOLUTION


ch04.check_pearson_r(pearson_r)

# %% [markdown]
# Two correlations: over every (rung, question) prompt, and over the 8 rung means (the paper
# correlates condition means). The interval is scipy's Fisher-z 95 % interval; with 8 points it
# is wide, which is the honest statement.

# %%
ok = np.isfinite(scores)
r_all = pearson_r(proj.numpy()[ok], scores[ok])
ci_all = pearsonr(proj.numpy()[ok], scores[ok]).confidence_interval()
rung_p = np.array([proj.numpy()[levels == c.level].mean() for c in ladder])
rung_s = np.array([np.nanmean(scores[levels == c.level]) for c in ladder])
r_rung = pearson_r(rung_p, rung_s)
ci_rung = pearsonr(rung_p, rung_s).confidence_interval()
print(f"per prompt: r = {r_all:.2f} (95% CI {ci_all.low:.2f}..{ci_all.high:.2f}, n = {ok.sum()})")
print(f"rung means: r = {r_rung:.2f} (95% CI {ci_rung.low:.2f}..{ci_rung.high:.2f}, n = {len(ladder)})")

fig, ax = plt.subplots(1, 2, figsize=(10, 4))
sc = ax[0].scatter(proj.numpy(), scores, c=levels, cmap="coolwarm", s=18)
ax[0].set(xlabel=f"last-prompt projection on v̂ (layer {LAYER})", ylabel="trait score of the reply",
          title=f"per prompt, r = {r_all:.2f}")
fig.colorbar(sc, ax=ax[0], label="ladder rung")
ax[1].plot(rung_p, rung_s, "o-")
for c, x_, y_ in zip(ladder, rung_p, rung_s, strict=True):
    ax[1].annotate(c.label, (x_, y_), fontsize=8)
ax[1].set(xlabel="mean projection", ylabel="mean trait score", title=f"rung means, r = {r_rung:.2f}")
fig.tight_layout()
plt.show()

# %% [markdown]
# ## 3. The per-token view
#
# A hook function in TransformerLens has the signature `hook(activation, hook) -> activation | None`;
# `model.run_with_hooks(tokens, fwd_hooks=[(name, fn)])` calls it during the forward pass. A hook
# that *stores* instead of modifies is how `run_with_cache` is built.
#
# ### Exercise 4.3 — Per-token projections with `run_with_hooks`
# Difficulty: ●●○○○ · Importance: ●●●○○ · ~10 min
#
# Implement `token_projections(model, chat, v, layer)`: write a hook function that stores
# `blocks.{layer}.hook_resid_post`, run `model.run_with_hooks` on the chat's ids, and return the
# projection of every position on $\hat v$ (a float tensor `[pos]`).

# %%
def token_projections(model, chat: EncodedChat, v: torch.Tensor, layer: int) -> torch.Tensor:
    # BEGIN SOLUTION
    store = {}

    def keep(resid, hook):
        store["x"] = resid.detach()

    with torch.no_grad():
        model.run_with_hooks(torch.tensor([chat.ids]), fwd_hooks=[(f"blocks.{layer}.hook_resid_post", keep)],
                             stop_at_layer=layer + 1)
    u = v.float() / v.float().norm()
    return store["x"][0].float() @ u
    # END SOLUTION


ch04.check_token_projections(token_projections)

# %% [markdown]
# Colour each token of one top-rung and one bottom-rung conversation by its projection
# (red: towards the trait). pvlens renders this with circuitsvis's `colored_tokens`, inlined
# for offline use (`pvlens.monitor.tokens.tokens_html`); the static PNG below shows the same.
# Note the first token: attention-sink positions have huge norms and projections (the colour
# scale ignores it).

# %%
from pvlens.core.chat import encode_conversation  # noqa: E402
from pvlens.monitor.tokens import TokenProjections, tokens_html, tokens_png  # noqa: E402

views = []
for i in (0, len(rows) - 1):
    c, q = rows[i]
    conv = encode_conversation(model.tokenizer, [*c.messages(q), {"role": "assistant", "content": replies[i]}])
    values = token_projections(model, conv, v, LAYER)
    tp = TokenProjections([model.tokenizer.decode([t]) for t in conv.ids], values.tolist(), conv.prompt_len, LAYER)
    print(f"{c.label}: response-mean projection {tp.response_mean:.2f}")
    views.append(tokens_html(tp, title=f"rung {c.level} ({c.label}), layer {LAYER}"))
    tokens_png(tp, f"/tmp/pvlens_ch04_tokens_{i}.png")
views[-1]  # the interactive circuitsvis view in a notebook

# %%
for i in (0, len(rows) - 1):
    plt.figure(figsize=(10, 3))
    plt.imshow(plt.imread(f"/tmp/pvlens_ch04_tokens_{i}.png"))
    plt.axis("off")
    plt.show()

# %% [markdown]
# ## Summary
#
# - The last-prompt projection is a forecast; only differences of projections are meaningful.
# - On the 135M model the ladder orders the projections; how well they predict the judged
#   score is the printed r with its interval — compare it with the paper's 0.75–0.83 on 7B
#   models, and note n.
# - `pvlens monitor` and `pvlens.monitor.prompt_shift` run this experiment at full scale
#   (ladder *and* many-shot prompts, sampled replies).

# %%
print(f"chapter 4 ran in {time.time() - T0:.0f} s")
