# %% [markdown]
# # Chapter 1 — The maths of persona vectors (no model)
#
# A persona vector is a direction in the residual stream. Before touching a model, this chapter
# builds the three classic ways of finding a direction that separates two sets of activations,
# and the geometry you need to read a projection or a cosine honestly — on synthetic data where
# the true answer is known.
#
# **Learning objectives**
# - compute a difference of means, a logistic probe and a PCA direction, and say when each one
#   points the wrong way;
# - project activations onto a direction, and explain the offset of raw projections;
# - say what the steering strength α means relative to the vector's norm and the residual norm;
# - build a null distribution for a cosine by simulation and compare it with $1/\sqrt{d}$.
#
# **Prerequisites**: linear algebra (dot products, covariance), PyTorch tensors. No model.
#
# **Runtime**: measured: 1.1 min on a 2-core CPU (full size).

# %%
import math

import matplotlib.pyplot as plt
import torch
from torch import Tensor

from pvlens.course import QUICK
from pvlens.course.checks import ch01

torch.manual_seed(0)
N = 500 if QUICK else 4000  # samples per class
D = 64

# %% [markdown]
# ## 1. Synthetic "activations"
#
# We draw two clouds in $\mathbb{R}^{d}$: the *positive* class (the model showing the trait) and
# the *negative* class. They differ by a shift $\mu$ along a true direction $u$ (axis 0), and both
# have a large **nuisance** variance along axis 1 (think of "sentence length" or "topic") that has
# nothing to do with the trait:
#
# $$x^{+} = \mu\, u + \Sigma^{1/2} z,\qquad x^{-} = \Sigma^{1/2} z,\qquad z \sim \mathcal{N}(0, I),
# \qquad \Sigma = \mathrm{diag}(1, \sigma_{\text{nuis}}^2, 1, \dots, 1).$$
#
# Real residual streams also have a large **common offset** $c$ shared by every token (the mean
# activation is far from zero). We add it to both classes.

# %%
mu, sigma_nuis = 1.5, 6.0
scale = torch.ones(D)
scale[1] = sigma_nuis
true_u = torch.zeros(D)
true_u[0] = 1.0
offset = torch.randn(D) * 3  # the common mean every activation shares ...
offset[0] = 8.0  # ... with a component along the trait axis, as real ones have
pos = torch.randn(N, D) * scale + mu * true_u + offset
neg = torch.randn(N, D) * scale + offset
print(f"‖offset‖ = {offset.norm():.1f}, class shift μ = {mu}, nuisance std = {sigma_nuis}")

# %% [markdown]
# ### Exercise 1.1 — Difference of means
# Difficulty: ●○○○○ · Importance: ●●●●● · ~5 min
#
# The paper's persona vector is the difference of the class means,
# $$v = \frac{1}{n_+}\sum_i x_i^{+} - \frac{1}{n_-}\sum_j x_j^{-}.$$
# Implement it for `pos` of shape `[n_pos, d]` and `neg` of shape `[n_neg, d]` (sizes may differ).

# %%
def diff_of_means(pos: Tensor, neg: Tensor) -> Tensor:
    # BEGIN SOLUTION
    return pos.mean(0) - neg.mean(0)
    # END SOLUTION


ch01.check_diff_of_means(diff_of_means)

# %% [markdown]
# Note what the offset $c$ does: nothing. It appears in both means and cancels. That is why the
# difference of means needs no centring.

# %% [markdown]
# ### Exercise 1.2 — A logistic probe
# Difficulty: ●●○○○ · Importance: ●●●○○ · ~15 min
#
# A probe fits $p(y{=}1\mid x) = \sigma(w^\top x + b)$ by minimising the mean binary cross-entropy
# $L = -\frac1n\sum_i \big[y_i\log p_i + (1-y_i)\log(1-p_i)\big]$, whose gradient is
# $$\nabla_w L = \tfrac1n X^\top(p - y),\qquad \partial_b L = \tfrac1n\sum_i (p_i - y_i).$$
# Implement **full-batch gradient descent** from $w=0, b=0$ for `steps` steps with learning rate `lr`
# (no autograd needed; work in float64 for stability), and return `(w, b)`.
#
# For Gaussian classes with a shared covariance the optimal linear discriminant is
# $w^\star \propto \Sigma^{-1}(\mu_+ - \mu_-)$: the probe *down-weights* high-variance directions. The
# difference of means is $\mu_+ - \mu_-$ itself. They agree only when $\Sigma \propto I$.

# %%
def logistic_probe(x: Tensor, y: Tensor, steps: int, lr: float) -> tuple[Tensor, Tensor]:
    # BEGIN SOLUTION
    w = torch.zeros(x.shape[1], dtype=torch.float64)
    b = torch.zeros((), dtype=torch.float64)
    xd, yd = x.double(), y.double()
    for _ in range(steps):
        p = torch.sigmoid(xd @ w + b)
        w = w - lr * xd.T @ (p - yd) / len(yd)
        b = b - lr * (p - yd).mean()
    return w.float(), b.float()
    # END SOLUTION


ch01.check_logistic_probe(logistic_probe)

# %% [markdown]
# ### Exercise 1.3 — The first principal component
# Difficulty: ●●○○○ · Importance: ●●●○○ · ~10 min
#
# PCA on the pooled activations finds the direction of **largest variance**:
# the top right-singular vector of the *centred* data matrix $X - \bar{x}$. Return it as a unit
# vector (`torch.linalg.svd(..., full_matrices=False).Vh[0]`). Its sign is arbitrary.

# %%
def pca_direction(x: Tensor) -> Tensor:
    # BEGIN SOLUTION
    centred = x - x.mean(0)
    return torch.linalg.svd(centred, full_matrices=False).Vh[0]
    # END SOLUTION


ch01.check_pca_direction(pca_direction)

# %% [markdown]
# ## 2. Which one finds the trait?
#
# Fit all three on the same data and measure the cosine with the true direction $u$.

# %%
x_all = torch.cat([pos, neg])
y_all = torch.cat([torch.ones(N), torch.zeros(N)])
centred = x_all - x_all.mean(0)  # centring helps the probe's gradient descent converge
w_probe, _ = logistic_probe(centred / centred.std(), y_all, 300, 1.0)
directions = {
    "difference of means": diff_of_means(pos, neg),
    "logistic probe": w_probe,
    "PCA (pooled)": pca_direction(x_all),
}
cosines = {k: abs(float(torch.nn.functional.cosine_similarity(v, true_u, dim=0))) for k, v in directions.items()}
for k, c in cosines.items():
    print(f"{k:>20}: |cos(v, u)| = {c:.3f}")

# %% [markdown]
# PCA finds the nuisance axis: the class shift ($\mu=1.5$) is small next to the nuisance variance
# ($\sigma^2=36$), so the pooled variance is largest along axis 1. The difference of means and the
# probe come close to $u$ (the rest is sampling noise: it shrinks like $1/\sqrt{n}$, so the
# quick build's smaller $n$ shows lower cosines); the probe reweights by $\Sigma^{-1}$, which here is diagonal and leaves $u$
# alone. When nuisance and trait are *correlated* they part ways: the mean difference then also
# carries the nuisance, while the probe tries to cancel it.
#
# Why does the paper use the difference of means? It needs no training, no regularisation and no
# held-out data; it is what *adding* to the residual stream should use (it is the average
# displacement from "not trait" to "trait"), while a probe is optimised to *read* the trait and may
# weigh directions the model never moves along.

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 4))
axes[0].scatter(neg[:300, 0], neg[:300, 1], s=5, alpha=0.5, label="neg")
axes[0].scatter(pos[:300, 0], pos[:300, 1], s=5, alpha=0.5, label="pos")
for (name, v), colour in zip(directions.items(), ["k", "C2", "C3"], strict=True):
    u2 = v[:2] / v[:2].norm() * 12
    axes[0].arrow(float(offset[0]), float(offset[1]), float(u2[0]), float(u2[1]), color=colour,
                  width=0.15, label=name)
axes[0].set_xlabel("axis 0 (trait)")
axes[0].set_ylabel("axis 1 (nuisance)")
axes[0].legend(fontsize=7)
axes[0].set_title("the two clouds and three directions")
axes[1].bar(list(cosines), list(cosines.values()), color=["k", "C2", "C3"])
axes[1].set_ylabel("|cos with the true direction|")
axes[1].set_title("who finds the trait?")
plt.tight_layout()
plt.show()

# %% [markdown]
# ## 3. Projections, and the offset of raw projections
#
# The **scalar projection** of an activation $x$ onto a direction $v$ is
# $$p(x) = x \cdot \hat v,\qquad \hat v = v / \lVert v\rVert .$$
# It is the length of $x$'s shadow on the line spanned by $v$: $x = p(x)\,\hat v + x_\perp$.
#
# ### Exercise 1.4 — Projection on the unit direction
# Difficulty: ●○○○○ · Importance: ●●●●● · ~5 min
#
# `acts` has shape `[..., d]`; return the projection of every activation, shape `[...]`.
# Normalise `v` first: a projection must not change when $v$ is rescaled.

# %%
def projection(acts: Tensor, v: Tensor) -> Tensor:
    # BEGIN SOLUTION
    return acts @ (v / v.norm())
    # END SOLUTION


ch01.check_projection(projection)

# %% [markdown]
# Raw projections carry an **offset**: every activation includes the common mean $c$, so
# $$p(x) = (x - c)\cdot\hat v + c\cdot\hat v .$$
# The second term is the same for every sample. It says nothing about the trait, yet it can be
# larger than the class separation. Only *differences* of projections (trait − baseline, finetuned
# − base, response − the model's own response) are meaningful; that is why the paper's monitoring
# compares conditions and its screening uses a projection **difference** $\Delta P$.

# %%
v_hat = diff_of_means(pos, neg)
p_pos, p_neg = projection(pos, v_hat), projection(neg, v_hat)
print(f"offset term c·v̂ = {float(offset @ (v_hat / v_hat.norm())):+.2f}")
print(f"mean projection: pos {float(p_pos.mean()):+.2f}, neg {float(p_neg.mean()):+.2f}, "
      f"difference {float(p_pos.mean() - p_neg.mean()):+.2f} (≈ ‖v‖ = {float(v_hat.norm()):.2f})")
plt.figure(figsize=(6, 3))
plt.hist(p_neg, bins=40, alpha=0.6, label="neg")
plt.hist(p_pos, bins=40, alpha=0.6, label="pos")
plt.axvline(float(offset @ (v_hat / v_hat.norm())), color="k", ls="--", label="offset c·v̂")
plt.xlabel("raw projection on v̂")
plt.legend()
plt.show()

# %% [markdown]
# Notice: the difference of the mean projections equals $\lVert v\rVert$ exactly — projecting the
# two means onto $\hat v$ gives $(\bar x^{+} - \bar x^{-})\cdot \hat v = v\cdot\hat v = \lVert v\rVert$.
#
# ## 4. What does α mean?
#
# Steering adds $\alpha v$ to the residual stream $h$. Its effect depends on the size of the push
# relative to what is already there, $\alpha\lVert v\rVert / \lVert h\rVert$, and on the projection it
# produces: after steering, $p(h + \alpha v) = p(h) + \alpha\lVert v\rVert$. So with the paper's **raw**
# (unnormalised) vectors, α = 1 moves the projection by one "trait gap" — the distance between the
# mean trait and mean non-trait activation. A unit-normalised vector would make α a distance in
# activation units instead, which changes meaning from layer to layer because $\lVert h\rVert$
# grows with depth. Chapter 2 measures these ratios on the real model.
#
# ## 5. Is a cosine large? A null by simulation
#
# Two unrelated directions in high dimension are nearly orthogonal: for $r$ uniformly random on
# the sphere in $\mathbb{R}^d$ and any fixed $v$, $\cos(r, v)$ has mean 0 and standard deviation
# $1/\sqrt{d}$ (each coordinate of a unit vector has variance $1/d$). A cosine of 0.1 is
# meaningless at $d = 64$ and highly significant at $d = 4096$ — so every cosine needs a null.
#
# ### Exercise 1.5 — A random-direction null
# Difficulty: ●●○○○ · Importance: ●●●●○ · ~10 min
#
# Return the cosines between `v` and `n` isotropic random directions (standard Gaussian vectors are
# isotropic), drawn from a `torch.Generator` seeded with `seed` so the null is reproducible.

# %%
def random_cosine_null(v: Tensor, n: int, seed: int) -> Tensor:
    # BEGIN SOLUTION
    g = torch.Generator().manual_seed(seed)
    r = torch.randn(n, v.shape[0], generator=g)
    return torch.nn.functional.cosine_similarity(r, v[None, :], dim=-1)
    # END SOLUTION


ch01.check_random_cosine_null(random_cosine_null)

# %% [markdown]
# Compare the simulated null with $1/\sqrt d$ in several dimensions, and place the difference
# of means' cosine with the truth (from two independent halves of the data) against it.

# %%
n_null = 500 if QUICK else 5000
dims = [16, 64, 256, 576, 2048]
sds = [float(random_cosine_null(torch.randn(d), n_null, 0).std()) for d in dims]
for d, sd in zip(dims, sds, strict=True):
    print(f"d = {d:5d}: simulated std {sd:.4f}   1/sqrt(d) = {1 / math.sqrt(d):.4f}")
half = N // 2
v1 = diff_of_means(pos[:half], neg[:half])
v2 = diff_of_means(pos[half:], neg[half:])
split_cos = float(torch.nn.functional.cosine_similarity(v1, v2, dim=0))
null = random_cosine_null(v1, n_null, 1)
pct = float((null < split_cos).double().mean() * 100)
print(f"split-half cosine {split_cos:.3f}; null 99th percentile {float(null.quantile(0.99)):.3f}; "
      f"percentile in the null {pct:.1f}")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
axes[0].loglog(dims, sds, "o-", label="simulated")
axes[0].loglog(dims, [1 / math.sqrt(d) for d in dims], "k--", label="1/√d")
axes[0].set_xlabel("d")
axes[0].set_ylabel("std of the random cosine")
axes[0].legend()
axes[1].hist(null, bins=50, alpha=0.7, label=f"null (d={D})")
axes[1].axvline(split_cos, color="C3", label="split-half cosine")
axes[1].legend()
plt.tight_layout()
plt.show()

# %% [markdown]
# **Take-aways.** The difference of means is the estimator steering wants; PCA finds variance,
# not the trait; projections need a baseline because of the offset; α is in units of the raw
# vector, so compare $\alpha\lVert v\rVert$ with $\lVert h\rVert$; and a cosine means something only
# against its null ($\approx 1/\sqrt d$). Chapter 3 uses exactly this null for the split-half
# cosine of real persona vectors.
