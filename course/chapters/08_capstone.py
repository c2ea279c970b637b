# %% [markdown]
# # Chapter 8 — Capstone: a new trait, end to end
#
# **Learning objectives**
# - Write a trait specification by hand: contrastive instruction pairs, disjoint extraction and
#   evaluation questions, a judge rubric, and exemplars for the offline judge.
# - Run the whole pipeline on it with pvlens — rollouts → judge filter → difference of means →
#   layer × α sweep — and choose a steering strength on evidence.
# - Write a short, honest report: counts, n, what worked and what did not.
#
# This chapter has few blanks: it is yours to change. The example trait is **pirate** (talks like
# a pirate) because a 135M model can show it; pick your own (formal, poetic, terse, …).
#
# **Prerequisites**: chapters 2 (steering) and 3 (extraction).
#
# **Runtime**: measured: 10.1 min on a 2-core CPU (full size).
# Quick mode: 237 s on the loaded shared machine; the full size is expected to exceed 10 min.

# %%
import tempfile
import time
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

import pvlens
from pvlens.core.config import default_layer
from pvlens.core.steering import Steering
from pvlens.course import QUICK
from pvlens.course.checks import ch08
from pvlens.judges import load_judge
from pvlens.traits import TraitSpec
from pvlens.vectors.extract import ExtractConfig, extract
from pvlens.vectors.sweep import SweepConfig, sweep

T0 = time.time()
OUT = Path(tempfile.mkdtemp(prefix="pvlens_capstone_"))
model = pvlens.load_model()
MID = default_layer(model)

# %% [markdown]
# ### Exercise 8.1 — The trait specification
# Difficulty: ●●○○○ · Importance: ●●●●● · ~20 min
#
# Return a dict with the `TraitSpec` fields: `name`, `description`, `instructions` (pairs of
# `pos`/`neg` system-prompt instructions), `extraction_questions` and `evaluation_questions`
# (disjoint, neutral questions that give the trait room to show), `rubric` (with `{question}` and
# `{answer}` slots, asking for a 0–100 score), and `exemplars` (≥ 5 short answers that show the
# trait and ≥ 5 that do not — the offline judge is a classifier fitted on them).

# %%
def make_spec() -> dict:
    # BEGIN SOLUTION
    return {
        "name": "pirate",
        "description": "The assistant talks like a stereotypical pirate: 'arr', 'matey', 'ye', nautical slang.",
        "instructions": [
            {"pos": "Talk like a pirate in every answer: say 'Arr', call the user 'matey', use 'ye' and sea slang.",
             "neg": "Answer in plain, modern, standard English."},
            {"pos": "You are a salty old sea captain. Speak in pirate slang, with 'arr' and 'ahoy'.",
             "neg": "Speak like a clear, neutral encyclopedia."},
            {"pos": "Answer as a pirate would, full of 'yo ho ho', 'me hearty' and talk of ships and treasure.",
             "neg": "Answer plainly and briefly, without any role-play."},
            {"pos": "Ye be a pirate! Every sentence must sound like a buccaneer on the high seas.",
             "neg": "Use a professional, polite and ordinary tone."},
            {"pos": "Respond in exaggerated pirate speak, matey, arr!",
             "neg": "Respond in simple everyday language."},
        ],
        "extraction_questions": [
            "How do I make a cup of tea?", "What is the weather like in spring?", "How do I learn to swim?",
            "What should I eat for breakfast?", "How can I save money?", "What is a good hobby?",
            "How do plants grow?", "How do I tie my shoes?", "What is your favourite colour?",
            "How do I write a letter to a friend?", "What is the moon made of?", "How do I clean my room?",
            "What makes a good friend?", "How do I bake bread?", "Why is the sky blue?",
            "How do I plan a trip?", "What is a computer?", "How do I stay healthy?",
            "What is the best way to study?", "How do birds fly?",
        ],
        "evaluation_questions": [
            "How do I cook pasta?", "What should I do on a rainy day?", "How do I make new friends?",
            "What is a good pet?", "How do I fix a flat bicycle tyre?", "What is music?",
            "How do I start running?", "How do I grow tomatoes?", "What is a good gift for my mother?",
            "How do I get better sleep?",
        ],
        "rubric": ("Rate from 0 to 100 how much this answer talks like a pirate (pirate slang such as "
                   "'arr', 'matey', 'ye', 'ahoy', nautical talk). 0 = plain modern English, 100 = thick "
                   "pirate speak throughout.\nQuestion: {question}\nAnswer: {answer}\nScore:"),
        "exemplars": {
            "positive": [
                "Arr, matey! Ye boil the water, drop in the leaves and wait, savvy?",
                "Ahoy there! Ye'll be wantin' to hoist the sails and set a course for adventure, arr!",
                "Shiver me timbers, that be a fine question, me hearty!",
                "Yo ho ho! Bury yer gold where no scallywag can find it, matey.",
                "Arr, the sea be callin', and ye best answer like a true buccaneer!",
                "Avast, landlubber! Swab the deck first, then we'll talk treasure.",
            ],
            "negative": [
                "Boil the water, add the tea bag and let it steep for three minutes.",
                "Spring weather is usually mild, with some rain and longer days.",
                "A good hobby is one you enjoy, such as reading, cycling or painting.",
                "To save money, track your spending and set a monthly budget.",
                "Plants grow by using sunlight, water and nutrients from the soil.",
                "I am happy to help. Could you tell me a little more about what you need?",
            ],
        },
    }
    # END SOLUTION


ch08.check_spec(make_spec)
spec = TraitSpec.model_validate(make_spec())
judge = load_judge("offline", trait=spec)
print(spec.system_prompt("pos", 0))

# %% [markdown]
# ## Extraction
#
# `pvlens.vectors.extract` samples replies under the pos and neg system prompts, judges them,
# keeps pairs that pass (trait ≥ 50 under pos, < 50 under neg, coherence ≥ 50 on both) and takes
# the per-layer difference of means of the response-averaged residuals (chapter 3). The counts say
# how many rollouts survived: report them. On the 135M model the pair rule with the paper's
# threshold kept nothing in a trial run (0/8 pos), so this uses the sample rule and a trait
# threshold of 30 — say so in your report when you change a threshold.

# %%
ecfg = ExtractConfig(
    n_instructions=1 if QUICK else 5, n_questions=4 if QUICK else 20, samples_per_pair=2 if QUICK else 3,
    max_new_tokens=24 if QUICK else 48, temperature=0.7, min_kept=2 if QUICK else 10, seed=0,
    pairing="sample", trait_threshold=30.0,  # a 135M model rarely stays in character: see the counts
)
vecs = extract(model, spec, OUT / "vectors", judge=judge, cfg=ecfg)
counts = vecs.metadata["counts"]
print({k: counts[k] for k in ("pos_total", "pos_kept", "neg_total", "neg_kept")})
norms = vecs.vectors.float().norm(dim=-1)
plt.figure(figsize=(6, 3))
plt.plot(norms.numpy(), "o-")
plt.xlabel("block")
plt.ylabel("‖v_ℓ‖")
plt.title(f"{spec.name} vector norm per layer (split-half cos at layer {MID}: "
          f"{vecs.metadata.get('split_half_cosine', {}).get(str(MID), float('nan')) if isinstance(vecs.metadata.get('split_half_cosine'), dict) else 'n/a'})")
plt.show()

# %% [markdown]
# ## The sweep
#
# Steer at a few layers and strengths, score every reply for the trait and for coherence.
#
# ### Exercise 8.2 — Choosing α
# Difficulty: ●○○○○ · Importance: ●●●○○ · ~5 min
#
# `choose_alpha(rows, coherence_min)`: among cells with coherence ≥ `coherence_min` and a score,
# the α with the highest trait score (the smaller α on ties); `None` if no cell qualifies.

# %%
def choose_alpha(rows: list[dict], coherence_min: float):
    # BEGIN SOLUTION
    ok = [r for r in rows if r["coherence"] is not None and r["coherence"] >= coherence_min
          and r["trait"] is not None and not np.isnan(r["trait"])]
    return min(ok, key=lambda r: (-r["trait"], r["alpha"]))["alpha"] if ok else None
    # END SOLUTION


ch08.check_choose_alpha(choose_alpha)

# %%
scfg = SweepConfig(layers=[MID] if QUICK else [MID - 5, MID, MID + 5], alphas=[0.0, 6.0] if QUICK else [0.0, 2.0, 4.0, 6.0, 8.0],
                   n_questions=2 if QUICK else 10, samples=1, max_new_tokens=20 if QUICK else 40, temperature=0.7)
res = sweep(model, vecs, spec, OUT / "sweep", judge=judge, cfg=scfg)
fig, ax = plt.subplots(1, 2, figsize=(10, 3.5))
for layer in sorted({r["layer"] for r in res.rows}):
    rows = sorted([r for r in res.rows if r["layer"] == layer], key=lambda r: r["alpha"])
    ax[0].plot([r["alpha"] for r in rows], [r["trait"] for r in rows], "o-", label=f"layer {layer}")
    ax[1].plot([r["alpha"] for r in rows], [r["coherence"] for r in rows], "o-", label=f"layer {layer}")
    print(f"layer {layer}: my choice α = {choose_alpha(rows, scfg.coherence_min)}")
ax[0].set(xlabel="α", ylabel="trait score", title=f"{spec.name}: dose-response")
ax[1].set(xlabel="α", ylabel="coherence")
ax[0].legend()
fig.tight_layout()
plt.show()
print(f"pvlens's choice: layer {res.best_layer}, α = {res.best_alpha}")

# %% [markdown]
# ## One steered example, and the report

# %%
if res.best_layer is not None and res.best_layer != "all" and res.best_alpha:
    steer = Steering(vecs[res.best_layer], int(res.best_layer), res.best_alpha, positions="response")
    q = spec.evaluation_questions[0]
    for name, s in (("unsteered", None), (f"steered α={res.best_alpha}", steer)):
        print(f"{name}: {pvlens.generate(model, q, steer=s, max_new_tokens=40, progress=False).texts[0]!r}")

report = [f"# {spec.name}: {spec.description}", "",
          f"- rollouts: {counts['pos_kept']}/{counts['pos_total']} pos and {counts['neg_kept']}/{counts['neg_total']} neg kept",
          f"- sweep: {scfg.n_questions} questions × {scfg.samples} sample per cell, layers {scfg.layers}, α {scfg.alphas}",
          f"- chosen: layer {res.best_layer}, α {res.best_alpha}", "", "| layer | α | trait | coherence | n |", "|---|---|---|---|---|"]
report += [f"| {r['layer']} | {r['alpha']} | {r['trait']:.1f} | {r['coherence']:.1f} | {r['n']} |" for r in res.rows]
(OUT / "report.md").write_text("\n".join(report))
print("\n".join(report))
print(f"\nfiles in {OUT}")

# %% [markdown]
# ## Going further
# - Replace the offline judge with an LLM judge (`load_judge("anthropic:…")`) and compare.
# - Check the vector on text no model made (chapter 5's control) and monitor it (chapter 4).
# - `pvlens traits generate` writes a spec with an LLM; `pvlens experiment` runs everything above.

# %%
print(f"chapter 8 ran in {time.time() - T0:.0f} s")
