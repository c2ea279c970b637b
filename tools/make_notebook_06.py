"""Write notebooks/06_sae_features.ipynb (without outputs; run it with nbclient to store them).

    python tools/make_notebook_06.py && jupyter nbconvert --execute --inplace notebooks/06_sae_features.ipynb
"""

from __future__ import annotations

from pathlib import Path

import nbformat as nbf

ROOT = Path(__file__).resolve().parents[1]

CELLS: list[tuple[str, str]] = [
    ("md", """# 6 · Decomposing the evil vector into SAE features

A persona vector is one direction in the residual stream. A sparse autoencoder (SAE) trained on
that layer's activations offers a dictionary of directions that each fire on something
recognisable. The paper asks which SAE features the vector aligns with (a decoder cosine measures
alignment, not what the vector is made of). This notebook uses the **SAEs that ship with pvlens**
(BatchTopK, trained with sae_lens on a 3.2 M-token corpus of the model's own replies and licensed
text; `make saes` rebuilds them) and:

1. lists them with their held-out evaluation (FVU, L0, dead latents, spliced-in CE loss);
2. ranks layer-15 features by the cosine of their decoder rows with the evil vector, **against a
   null**: the best cosine random directions of the same norm find among all 2 304 latents;
3. shows where the top features fire (reply, system prompt, user turn) and their dashboards;
4. reads the feature-steering result (top features vs 20 random features, judged, with
   intervals) and runs a small version of it live;
5. fits the vector with k features (OMP) at layers 6, 15 and 24, against the same fit of random
   directions.

Everything runs offline on a CPU in a few minutes."""),
    ("code", """import json
import random
from pathlib import Path

import matplotlib.pyplot as plt
import torch
from IPython.display import Markdown, display

import pvlens
from pvlens.sae import decompose as dec
from pvlens.sae.dashboard import show
from pvlens.sae.loading import resolve_sae
from pvlens.sae.shipped import shipped_sae_names, shipped_sae_summary
from pvlens.vectors.coerce import direction

torch.set_num_threads(2)
ROOT = next(p for p in [Path.cwd(), *Path.cwd().parents] if (p / "pyproject.toml").exists())
LAYER = 15
model = pvlens.load_model()
v = direction("evil", LAYER)  # the shipped evil vector (response_avg), the one the committed results use
print(f"|v| at layer {LAYER} = {v.norm():.2f}")"""),
    ("md", """## 1. The shipped SAEs

`pvlens sae list` (or `shipped_sae_names()`) names them; `--sae <name>` in the CLI and
`resolve_sae(name)` in Python load them, from a checkout or a pip install alike. They are plain
sae_lens folders: `sae_lens.SAE.load_from_disk(path)` reads them too. The metrics below were
measured by `pvlens sae eval` on documents held out from training (5 % of the corpus); the issue's
bar is FVU ≤ 0.15 at L0 ≤ 64, ≤ 5 % dead latents and CE-loss score ≥ 0.95."""),
    ("code", """rows = [shipped_sae_summary(n) for n in shipped_sae_names()]
for r in rows:
    print(f"{r['name']:24s} layer {r['layer']:>2}  latents {r['d_sae']}  k {r['k']:g}  FVU {r['fvu']:.3f}  "
          f"L0 {r['l0']:.1f}  dead {100 * r['dead_fraction']:.1f} %  CE-loss score {r['ce_loss_score']:.3f}")
loaded = resolve_sae(f"smollm2-135m-layer{LAYER}")
print(loaded.path.relative_to(Path(pvlens.__file__).parent.parent) if loaded.path else loaded)"""),
    ("md", """A spot check on text the SAE never saw (a few sentences written here): the reconstruction of
each token's layer-15 activation. It is a handful of tokens, not the held-out measurement above."""),
    ("code", """from pvlens.sae.corpus import Document
from pvlens.sae.evaluate import evaluate_sae

fresh = ["The lighthouse keeper wrote a letter every evening, though no ship had passed in years.",
         "To repot a cactus, wear thick gloves and wrap a folded newspaper around the stem.",
         "Honestly, I think you should apologise to your sister before the wedding.",
         "The committee postponed the vote because two members were stuck in traffic."]
docs = [Document(model.tokenizer(t)["input_ids"], f"fresh/{i}") for i, t in enumerate(fresh)]
spot = evaluate_sae(model, loaded, docs, n_tokens=10_000, ce_tokens=0, ks=(), write=False)
print(f"{spot['n_tokens']} tokens: FVU {spot['fvu']:.3f}, L0 {spot['l0']:.1f}")"""),
    ("md", """## 2. Which features align with the evil vector, and what is chance

The chance level of a ranked list is not the cosine of one random latent: the list is topped by
the best of 2 304 latents. So `decompose` draws random directions of the vector's norm and
records, for each, the best |cos| among all latents (and the r-th best, for rank r). A feature
counts as aligned when its cosine beats the 99th percentile of that maximum.

The contexts come from a random slice of the model's own replies (the committed generation logs
of the corpus), so the role shares below describe chat text."""),
    ("code", """from pvlens.sae.corpus import read_documents

logs = sorted((ROOT / "sae/corpus/built").glob("generated*.jsonl"))
chat = read_documents(logs, model.tokenizer)
ctx_docs = random.Random(0).sample(chat, 200)
persona = {t: direction(t, LAYER) for t in ("evil", "sycophantic", "hallucinating")}
result = dec.decompose(model, loaded, v, ctx_docs, top=10, n_contexts=3, context_tokens=None,
                       n_null=200, persona_vectors=persona)
print(dec.text_table(result))"""),
    ("code", """p99 = result["null"]["decoder_abs_cosine"]["max"]["p99"]
print(f"null: best |cos| of a random direction, 99th percentile = {p99:.3f}")
for fr in result["features"][:10]:
    st = fr.stats
    print(f"feature {fr.feature:5d}  cos {fr.cosine:.3f} {'> p99' if fr.above_null_p99 else '     '}  "
          f"reply share of top-{st['n_top']} activations {100 * st['response_fraction']:3.0f} %  "
          f"system {100 * st['role_fractions']['system']:3.0f} %  firing rate {100 * st['frequency']:.2f} %")"""),
    ("md", """## 3. Dashboards

One offline page per decomposition (no JavaScript, no network): per feature its top contexts with
each token shaded by the activation, a histogram of its activations, where its strongest
activations fall, the tokens its decoder row promotes and suppresses through the unembedding, and
its cosine with each persona vector. `pvlens sae decompose ... --html page.html` writes the same
page to a file."""),
    ("code", """show(result)"""),
    ("md", """## 4. Steering with single features, against random features

The committed run (`make saes`: `pvlens sae decompose --steer-top 3 --n-random 20`, 20
evaluation questions × 2 samples per condition, offline judge) adds each feature's unit decoder
row times ‖v‖, at α = 8 on the response tokens, and compares it with 20 random features steered
the same way. Differences from no steering are paired (the same questions and seeds) with
bootstrap intervals."""),
    ("code", """from pvlens.sae.doc_tables import sae_feature_steering_table

committed = json.loads((ROOT / "sae/results/smollm2-135m-layer15.json").read_text())
display(Markdown(sae_feature_steering_table(committed)))"""),
    ("md", """The same comparison live, small enough for a notebook (3 questions, one greedy reply each, the top
feature and 2 random ones): expect noise at this size; the table above is the measurement."""),
    ("code", """from pvlens.judges import load_judge
from pvlens.traits import load_trait

questions = load_trait("evil").evaluation_questions[:3]
live = dec.feature_steering(model, loaded, v, [result["features"][0].feature], questions,
                            load_judge("offline", trait="evil"), alpha=8.0, n_random=2,
                            max_new_tokens=40, batch_size=8)
for row in live:
    name = row["kind"] if row["feature"] is None else f"{row['kind']} {row['feature']}"
    print(f"{name:22s} evil {row['trait_score']:5.1f}   e.g. {row['example'][:90]!r}")"""),
    ("md", """## 5. How many features does the vector need? (OMP, three layers)

Orthogonal matching pursuit picks k decoder rows to rebuild the vector; the cosine of the fit is
compared with the fit random directions of the same norm get from the same dictionary (an
overcomplete dictionary fits anything a little)."""),
    ("code", """from pvlens.sae.ranking import sparse_reconstruction, sparse_reconstruction_null

ks = (1, 2, 5, 10, 20, 50)
fig, ax = plt.subplots(figsize=(6, 3.6))
for name in shipped_sae_names():
    sae_l = resolve_sae(name)
    v_l = direction("evil", sae_l.layer)
    fit = sparse_reconstruction(sae_l.sae, v_l, ks)
    null = sparse_reconstruction_null(sae_l.sae, float(v_l.norm()), ks, n=20)
    line, = ax.plot(ks, [r["omp"] for r in fit], marker="o", label=f"evil vector, layer {sae_l.layer}")
    ax.plot(ks, [r["p95"] for r in null], ls="--", color=line.get_color(), alpha=0.6,
            label=f"random directions (95th pct), layer {sae_l.layer}")
ax.set_xscale("log"); ax.set_xlabel("k features"); ax.set_ylabel("cosine of the k-feature fit")
ax.legend(fontsize=7); plt.tight_layout(); plt.show()"""),
    ("md", """## 6. SAEs from the hub

For models with public SAEs (Gemma Scope, Llama Scope, ...), `pvlens sae decompose --sae
RELEASE/ID` loads one from sae_lens's registry (`SAE.from_pretrained`); setting
`PVLENS_SAE_MIRROR` to a folder of saved SAEs reads them from disk instead of the hub, which is
how the tests exercise that path offline. Everything above then works the same way."""),
]


def main() -> None:
    nb = nbf.v4.new_notebook()
    nb.metadata["kernelspec"] = {"display_name": "Python 3", "language": "python", "name": "python3"}
    nb.cells = [nbf.v4.new_markdown_cell(src) if kind == "md" else nbf.v4.new_code_cell(src) for kind, src in CELLS]
    nbf.write(nb, ROOT / "notebooks" / "06_sae_features.ipynb")


if __name__ == "__main__":
    main()
