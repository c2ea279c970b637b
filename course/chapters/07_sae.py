# %% [markdown]
# # Chapter 7 — Decomposing a persona vector with a sparse autoencoder
#
# **Learning objectives**
# - Train a small **TopK SAE** on one layer's residual stream and check it on held-out tokens (FVU).
# - Rank features against a persona vector two ways — **decoder cosine** (what a feature writes)
#   and **encoder score** (what steering with the vector switches on) — and know why they differ.
# - Judge the top cosine against the **right null**: the *maximum* over all latents of |cos| with
#   a random direction, not the cosine of one random latent.
# - Fit the vector with **k decoder rows** (orthogonal matching pursuit) and steer with single
#   features against **random features** of the same norm.
#
# **Prerequisites**: chapters 1 (nulls), 2 (steering), 4 (projections).
#
# **About the SAE**: pvlens ships three trained SAEs for this model (`pvlens sae list`; notebook
# 06 and docs/sae.md use them). This chapter trains a small one itself in a few minutes, because
# training and checking one is part of what it teaches, on the model's own chat replies in
# `sae/corpus/`. It is far smaller and less trained than the shipped ones: read its features as a
# demonstration of the method.
#
# **Runtime**: measured: 15.2 min on a 2-core CPU (full size).
# Quick mode: 172 s on the loaded shared machine (42 s CPU).

# %%
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import torch

import pvlens
from pvlens.core.config import SamplingConfig, default_layer
from pvlens.core.steering import Steering
from pvlens.course import QUICK
from pvlens.course.checks import ch07
from pvlens.judges import load_judge
from pvlens.sae.corpus import read_documents
from pvlens.sae.provider import layer_activations
from pvlens.sae.ranking import promoted_tokens
from pvlens.traits import load_trait
from pvlens.vectors.coerce import direction
from pvlens.vectors.evaluate import evaluate_steered, mean_score
from pvlens.vectors.validate import random_directions

T0 = time.time()
torch.manual_seed(0)
N_DOCS = 40 if QUICK else 400  # corpus documents (≈ 130 tokens each)
D_SAE, K = (1152, 16) if QUICK else (2304, 32)
STEPS, BATCH = (100, 512) if QUICK else (1500, 1024)
N_NULL = 200 if QUICK else 2000  # random directions in the nulls
N_Q, N_RAND = (2, 2) if QUICK else (10, 6)  # steering: questions, random features
MAX_NEW = 16 if QUICK else 40
STEER_ALPHA = 4.0  # in units of ‖v‖ (features are scaled to the vector's norm)

model = pvlens.load_model()
LAYER = default_layer(model)
v = direction("evil", LAYER)

# %% [markdown]
# ## 1. Activations and a TopK SAE
#
# An SAE writes an activation $x\in\mathbb R^{d}$ as a sparse non-negative combination of
# $m \gg d$ learned directions: $f = \mathrm{TopK}(W_\text{enc}^\top(x - b_\text{dec}) + b_\text{enc})$,
# $\hat x = W_\text{dec}^\top f + b_\text{dec}$, where TopK keeps the k largest pre-activations
# (after a ReLU) and zeroes the rest — sparsity by construction, no L1 penalty to tune.
# The first token of every document is dropped: it is an attention sink whose norm is ~150×
# the others' and would dominate the squared error (docs/sae.md §2).

# %%
corpus = Path(pvlens.__path__[0]).parent / "sae" / "corpus" / "smollm2-chat.jsonl"
docs = read_documents(corpus, model.tokenizer, max_len=128)[:N_DOCS]
with torch.no_grad():
    x = torch.cat([c.acts.float() for c in layer_activations(model, docs, LAYER, dtype=torch.float32)])
perm = torch.randperm(len(x))
x_test, x_train = x[perm[: len(x) // 10]], x[perm[len(x) // 10:]]
scale = (model.cfg.d_model ** 0.5) / x_train.norm(dim=-1).mean()  # inputs scaled to norm √d
print(f"{len(docs)} documents, {len(x_train)} training / {len(x_test)} held-out tokens at layer {LAYER}")

# %% [markdown]
# ### Exercise 7.1 — TopK
# Difficulty: ●○○○○ · Importance: ●●●○○ · ~5 min
#
# `topk(pre, k)`: for each row keep the k largest entries, apply a ReLU to them, zero the rest.
# (`torch.topk` and `scatter`.)

# %%
def topk(pre: torch.Tensor, k: int) -> torch.Tensor:
    # BEGIN SOLUTION
    vals, idx = pre.topk(k, dim=-1)
    return torch.zeros_like(pre).scatter(-1, idx, vals.relu())
    # END SOLUTION


ch07.check_topk(topk)


# %%
class TopKSAE(torch.nn.Module):
    def __init__(self, d: int, m: int, k: int):
        super().__init__()
        self.k = k
        W = torch.randn(m, d) / d**0.5
        self.W_dec = torch.nn.Parameter(W / W.norm(dim=-1, keepdim=True))
        self.W_enc = torch.nn.Parameter(self.W_dec.data.T.clone())  # tied init
        self.b_enc = torch.nn.Parameter(torch.zeros(m))
        self.b_dec = torch.nn.Parameter(torch.zeros(d))

    def encode(self, x):
        return topk((x - self.b_dec) @ self.W_enc + self.b_enc, self.k)

    def forward(self, x):
        return self.encode(x) @ self.W_dec + self.b_dec


def fvu(sae, xs) -> float:
    with torch.no_grad():
        err = (sae(xs * scale) - xs * scale).pow(2).sum()
        return float(err / (xs * scale - (xs * scale).mean(0)).pow(2).sum())


sae = TopKSAE(model.cfg.d_model, D_SAE, K)
opt = torch.optim.Adam(sae.parameters(), lr=1e-3)
t = time.time()
for step in range(STEPS):
    batch = x_train[torch.randint(len(x_train), (BATCH,))] * scale
    loss = (sae(batch) - batch).pow(2).sum(-1).mean()
    opt.zero_grad()
    loss.backward()
    opt.step()
    with torch.no_grad():  # unit-norm decoder rows: feature directions, scale lives in f
        sae.W_dec /= sae.W_dec.norm(dim=-1, keepdim=True)
    if step % max(STEPS // 5, 1) == 0 or step == STEPS - 1:
        print(f"step {step:4d}: train loss {loss.item():.1f}, held-out FVU {fvu(sae, x_test):.3f}")
with torch.no_grad():
    fired = (sae.encode(x_test * scale) > 0).float()
print(f"trained in {time.time() - t:.0f} s; L0 = {fired.sum(-1).mean():.1f}, "
      f"dead latents on held-out tokens: {(fired.sum(0) == 0).sum()} / {D_SAE}")
W_dec, W_enc = sae.W_dec.detach(), sae.W_enc.detach() * scale  # W_enc reads raw activations

# %% [markdown]
# ## 2. Two rankings
#
# **Decoder cosine** $\cos(W_\text{dec}[i], v)$: latent i, when it fires, writes along $v$.
# **Encoder score** $v\cdot W_\text{enc}[:, i]$: how much latent i's pre-activation rises when $v$
# is added to the stream — which features steering with $v$ switches on. Encoder rows are tuned to
# *detect* a feature while ignoring overlapping ones, so the rankings differ. (`sae.encode(v)` is
# meaningless: v is a difference of means, not an activation.)
#
# ### Exercise 7.2 — Decoder cosines and encoder scores
# Difficulty: ●○○○○ · Importance: ●●●●○ · ~5 min

# %%
def decoder_cosines(W_dec: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION
    return (W_dec @ v) / (W_dec.norm(dim=-1) * v.norm())
    # END SOLUTION


def encoder_scores(W_enc: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    # BEGIN SOLUTION
    return v @ W_enc
    # END SOLUTION


ch07.check_decoder_cosines(decoder_cosines)
ch07.check_encoder_scores(encoder_scores)
cos = decoder_cosines(W_dec, v)
enc = encoder_scores(W_enc, v)
top_dec = cos.abs().argsort(descending=True)[:5]
top_enc = enc.argsort(descending=True)[:5]
for i in top_dec.tolist():
    toks = ", ".join(t for t, _ in promoted_tokens(model, W_dec[i] * cos[i].sign(), 6))
    print(f"latent {i:5d}: cos {cos[i]:+.3f}, encoder rank {int((enc > enc[i]).sum())}, promotes: {toks}")
print("top-5 by encoder score:", top_enc.tolist(), "overlap with top-5 by cosine:",
      len(set(top_dec.tolist()) & set(top_enc.tolist())))

# %% [markdown]
# ## 3. The right null
#
# Is a top cosine of, say, 0.3 high? The *wrong* comparison is with the cosine of v and **one**
# random latent (≈ N(0, 1/d), |cos| ~ 0.03 at d = 576). We looked at the **best of m latents**,
# so the null must do the same: for random directions r, the maximum over all m latents of
# $|\cos(W_\text{dec}[i], r)|$. With m = 2304 rows that maximum is far above a single cosine — and
# a trained dictionary is not uniform on the sphere, so simulate it rather than use a formula.
#
# ### Exercise 7.3 — The max-over-latents null
# Difficulty: ●●○○○ · Importance: ●●●●● · ~10 min
#
# `max_cos_null(W_dec, n_dirs, seed)`: draw `random_directions(n_dirs, d_in, seed)` and return,
# for each, the maximum over latents of |cos| (a tensor `[n_dirs]`).

# %%
def max_cos_null(W_dec: torch.Tensor, n_dirs: int, seed: int) -> torch.Tensor:
    # BEGIN SOLUTION
    dirs = random_directions(n_dirs, W_dec.shape[-1], seed)
    W = W_dec.double() / W_dec.double().norm(dim=-1, keepdim=True)
    return (dirs @ W.T).abs().max(dim=-1).values
    # END SOLUTION


ch07.check_max_cos_null(max_cos_null)
null = max_cos_null(W_dec, N_NULL, seed=0)
wrong = (random_directions(N_NULL, W_dec.shape[-1], seed=1) @ (W_dec[0] / W_dec[0].norm()).double()).abs()
real = cos.abs().max().item()
print(f"top |cos| with v: {real:.3f}; right null (max over {D_SAE} latents, {N_NULL} random directions): "
      f"median {null.median():.3f}, 95th pct {null.quantile(0.95):.3f}; v beats "
      f"{100 * (null < real).double().mean():.1f} % of it. Wrong null (one latent): 95th pct {wrong.quantile(0.95):.3f}")
enc_null = (random_directions(N_NULL, W_dec.shape[-1], seed=2).float() * v.norm()) @ W_enc
print(f"top encoder score {enc.max():.2f}; null (max over latents, random directions of norm ‖v‖): "
      f"95th pct {enc_null.max(-1).values.quantile(0.95):.2f}")
plt.figure(figsize=(6, 3))
plt.hist(null.numpy(), bins=40, color="grey", label="max over latents (right null)")
plt.hist(wrong.numpy(), bins=40, color="lightblue", label="one latent (wrong null)")
plt.axvline(real, color="red", label="persona vector")
plt.xlabel("|cosine| with a decoder row")
plt.legend(fontsize=8)
plt.show()

# %% [markdown]
# ## 4. k-sparse fit (orthogonal matching pursuit)
#
# How many features does it take to rebuild v? OMP is greedy: start with residual $r = y$; pick
# the unit column of $D$ with the largest $|D^\top r|$; refit **all** chosen columns by least
# squares; set $r = y - D_S c_S$; repeat k times. Coefficients are signed, so this is an upper
# bound on what non-negative feature activations could do. Compare with random directions:
# any vector can be fit somewhat by 20 of 2304 atoms.
#
# ### Exercise 7.4 — OMP
# Difficulty: ●●●○○ · Importance: ●●●○○ · ~15 min
#
# `omp(D, y, k)` with numpy: `D` `[d, m]` (unit columns), `y` `[d]`; return the coefficient
# vector `[m]` with k non-zeros (scikit-learn's `orthogonal_mp` is the reference).

# %%
def omp(D: np.ndarray, y: np.ndarray, k: int) -> np.ndarray:
    # BEGIN SOLUTION
    chosen: list[int] = []
    r = y.copy()
    coef = np.zeros(D.shape[1])
    for _ in range(k):
        chosen.append(int(np.argmax(np.abs(D.T @ r))))
        sol, *_ = np.linalg.lstsq(D[:, chosen], y, rcond=None)
        r = y - D[:, chosen] @ sol
    coef[chosen] = sol
    return coef
    # END SOLUTION


ch07.check_omp(omp)
D = (W_dec / W_dec.norm(dim=-1, keepdim=True)).T.double().numpy()
rand = random_directions(20 if QUICK else 100, D.shape[0], seed=3).numpy()
for k in (1, 5, 20):
    fit = D @ omp(D, v.double().numpy(), k)
    c = fit @ v.double().numpy() / (np.linalg.norm(fit) * v.norm().item())
    cr = [float((D @ omp(D, r, k)) @ r / np.linalg.norm(D @ omp(D, r, k))) for r in rand]
    print(f"k = {k:2d}: cos(v, fit) = {c:.3f}; random directions {np.mean(cr):.3f} ± {np.std(cr):.3f} (n = {len(cr)})")

# %% [markdown]
# ## 5. Steering with single features
#
# Steer at block 15 with the top feature's unit decoder direction (signed by its cosine) times
# ‖v‖, against the persona vector itself and random features of the same norm; score the replies
# with the offline judge. If a single feature carries a facet of the trait, it beats the random
# features; if it does not, it looks like them.

# %%
spec = load_trait("evil")
judge = load_judge("offline", trait=spec)
questions = spec.evaluation_questions[:N_Q]
g = torch.Generator().manual_seed(0)
rand_feats = torch.randint(D_SAE, (N_RAND,), generator=g).tolist()
conds = {"none": None, "persona vector": v,
         f"top feature {int(top_dec[0])}": W_dec[top_dec[0]] * cos[top_dec[0]].sign() * v.norm()}
conds.update({f"random feature {i}": W_dec[i] * v.norm() for i in rand_feats})
sampling = SamplingConfig(max_new_tokens=MAX_NEW, temperature=0.0)
results = {}
for name, d in conds.items():
    steer = None if d is None else Steering(d, LAYER, STEER_ALPHA, positions="response")
    ans = evaluate_steered(model, questions, judge, steer, sampling)
    results[name] = (mean_score(ans), mean_score(ans, "coherence"))
    print(f"{name:>22}: trait {results[name][0]:5.1f}, coherence {results[name][1]:5.1f}  | {ans[0]['answer'][:80]!r}")
rand_scores = [results[n][0] for n in results if n.startswith("random")]
print(f"random features: trait {np.mean(rand_scores):.1f} ± {np.std(rand_scores):.1f} (n = {len(rand_scores)} features × {N_Q} questions)")

# %% [markdown]
# ## Summary
#
# - Compare the top cosine with the max-over-latents null, never with one random latent.
# - Decoder and encoder rankings answer different questions; report both.
# - `pvlens sae decompose` does all of this on a properly trained SAE, with top-activating
#   contexts rendered with circuitsvis (docs/sae.md).

# %%
print(f"chapter 7 ran in {time.time() - T0:.0f} s")
