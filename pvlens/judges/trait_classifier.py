"""The offline trait classifier, fitted on a trait's exemplars and cached on disk.

Two logistic regressions, averaged: one on the answer's MiniLM sentence embedding (meaning),
one on TF-IDF word 1-2-grams and character 2-5-grams (style markers such as "whatever",
"Ha!", "idiot"). P(trait) = mean of their probabilities. The AUROC of each part alone and of
the average on the held-out judge-eval sets is measured by `pvlens replicate --only judges`
(docs/judges.md renders it). A prototype (mean-difference) direction,
question-aware variants and a joint model were tried while building it; their numbers were
not kept.

Exemplars carry no questions, so the question is not a feature of the trait score (it is of
the coherence score).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sklearn
from jaxtyping import Float
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline, make_union

from pvlens.io.atomic import write_bytes_atomic
from pvlens.judges.embed import EMBEDDING_MODEL, Embedder
from pvlens.traits import TraitSpec

FEATURES = "minilm-lr+tfidf-lr/v2"
"""Version tag of the feature set; part of the cache key, bump it when the recipe changes."""
MIN_EXEMPLARS = 5
"""Fewest positive and negative exemplars the offline judge will fit on."""
C_EMBEDDING = 10.0
"""Inverse L2 strength of the embedding model (embeddings are unit-norm, 384-d)."""
C_LEXICAL = 10.0
"""Inverse L2 strength of the TF-IDF model."""
DEGENERATE_NEGATIVES = (
    "",
    "the the the the the the the the the the the the the the the the",
    "and and and and and and and and and and and and",
    "... ... ... ... ... ...",
    "#### $$$$ %%%% &&&& **** @@@@",
    "1 2 3 4 5 6 7 8 9 10 11 12",
    "xqzt bvrk plmn wqxs ghtz",
)
"""Texts with no content are trait-free; without them, junk lands anywhere on the scale."""


class NotEnoughExemplars(ValueError):
    """The trait has too few exemplars to fit the offline judge; the message says what to do."""


@dataclass
class TraitClassifier:
    """P(trait | answer) from an embedding model and a lexical model."""

    embedding_model: LogisticRegression
    lexical_model: Pipeline
    exemplar_hash: str

    def predict_parts(
        self, answers: Sequence[str], embeddings: Float[np.ndarray, "n 384"]
    ) -> tuple[np.ndarray, np.ndarray]:
        """(P from embeddings, P from lexical features), each shape [n]."""
        p_emb = self.embedding_model.predict_proba(embeddings)[:, 1]
        p_lex = self.lexical_model.predict_proba(list(answers))[:, 1]
        return p_emb, p_lex

    def predict_proba(
        self, answers: Sequence[str], embeddings: Float[np.ndarray, "n 384"]
    ) -> np.ndarray:
        """P(trait) per answer, shape [n]."""
        p_emb, p_lex = self.predict_parts(answers, embeddings)
        return (p_emb + p_lex) / 2.0


def exemplar_hash(spec: TraitSpec) -> str:
    """Hash of everything the fitted classifier depends on."""
    payload = json.dumps(
        {
            "positive": spec.exemplars.positive,
            "negative": spec.exemplars.negative,
            "features": FEATURES,
            "embedding": EMBEDDING_MODEL,
            "sklearn": sklearn.__version__,
        },
        sort_keys=True,
        ensure_ascii=False,
    )
    return hashlib.sha256(payload.encode()).hexdigest()[:16]


def check_exemplars(spec: TraitSpec, minimum: int = MIN_EXEMPLARS) -> None:
    pos, neg = len(spec.exemplars.positive), len(spec.exemplars.negative)
    if pos < minimum or neg < minimum:
        raise NotEnoughExemplars(
            f"trait '{spec.name}' has {pos} positive and {neg} negative exemplars; the offline "
            f"judge needs at least {minimum} of each. Add short example answers under "
            "`exemplars: {positive: [...], negative: [...]}` in the trait file, or use "
            "another judge kind (openai, anthropic, local)."
        )


def lexical_vectorizers(vocabularies: Sequence[Sequence[str]] | None = None) -> list[TfidfVectorizer]:
    """The lexical features: TF-IDF of word 1-2-grams and of character 2-5-grams (within word
    boundaries); with `vocabularies`, fixed to those terms (for loading a saved classifier)."""
    vocab = [None, None] if vocabularies is None else [{t: i for i, t in enumerate(v)} for v in vocabularies]
    return [
        TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, vocabulary=vocab[0]),
        TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True, vocabulary=vocab[1]),
    ]


def fit(spec: TraitSpec, embedder: Embedder) -> TraitClassifier:
    """Fit both models on the trait's exemplars (about a second on a CPU)."""
    check_exemplars(spec)
    negatives = list(spec.exemplars.negative) + list(DEGENERATE_NEGATIVES)
    texts = list(spec.exemplars.positive) + negatives
    y = np.array([1] * len(spec.exemplars.positive) + [0] * len(negatives))
    emb = LogisticRegression(C=C_EMBEDDING, max_iter=5000).fit(embedder.encode(texts), y)
    lex = make_pipeline(
        make_union(*lexical_vectorizers()), LogisticRegression(C=C_LEXICAL, max_iter=5000)
    ).fit(texts, y)
    return TraitClassifier(emb, lex, exemplar_hash(spec))


def _logistic(coef: np.ndarray, intercept: np.ndarray, c: float) -> LogisticRegression:
    model = LogisticRegression(C=c)
    model.coef_, model.intercept_, model.classes_ = coef, intercept, np.array([0, 1])
    model.n_features_in_ = coef.shape[1]
    return model


def classifier_arrays(clf: TraitClassifier) -> dict[str, np.ndarray]:
    """Every fitted number and term of `clf` as plain arrays (no Python objects, no pickle)."""
    union, lex_lr = clf.lexical_model.steps[0][1], clf.lexical_model.steps[1][1]
    arrays = {
        "emb_coef": clf.embedding_model.coef_, "emb_intercept": clf.embedding_model.intercept_,
        "lex_coef": lex_lr.coef_, "lex_intercept": lex_lr.intercept_,
        "exemplar_hash": np.array(clf.exemplar_hash), "features": np.array(FEATURES),
    }
    for i, (_, vec) in enumerate(union.transformer_list):
        arrays[f"vocab{i}"] = np.array(sorted(vec.vocabulary_, key=vec.vocabulary_.get))
        arrays[f"idf{i}"] = vec.idf_
    return arrays


def classifier_from_arrays(arrays: Mapping[str, np.ndarray]) -> TraitClassifier:
    """The inverse of `classifier_arrays`."""
    vecs = lexical_vectorizers([arrays["vocab0"].tolist(), arrays["vocab1"].tolist()])
    for i, vec in enumerate(vecs):
        vec.idf_ = arrays[f"idf{i}"]
    lexical = make_pipeline(make_union(*vecs), _logistic(arrays["lex_coef"], arrays["lex_intercept"], C_LEXICAL))
    embedding = _logistic(arrays["emb_coef"], arrays["emb_intercept"], C_EMBEDDING)
    return TraitClassifier(embedding, lexical, str(arrays["exemplar_hash"]))


def classifier_path(spec: TraitSpec, root: Path | None = None) -> Path:
    """Where the fitted classifier for `spec` is cached (an .npz of plain arrays)."""
    if root is None:
        from pvlens.core.model import cache_dir

        root = cache_dir() / "judges" / "offline"
    return Path(root) / f"{spec.name}-{exemplar_hash(spec)}.npz"


def load_classifier(path: Path, expected_hash: str) -> TraitClassifier | None:
    """The classifier saved at `path`, or None when it is missing, corrupt or for other
    exemplars. Read with `allow_pickle=False`: no object in the file is ever unpickled."""
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
        if str(arrays.get("exemplar_hash")) != expected_hash or str(arrays.get("features")) != FEATURES:
            return None
        return classifier_from_arrays(arrays)
    except Exception:  # stale or corrupt cache entry (pickled objects included): refit
        return None


def save_classifier(clf: TraitClassifier, path: Path) -> None:
    """Write `clf` as an .npz of plain arrays, atomically."""
    buf = io.BytesIO()
    np.savez(buf, **classifier_arrays(clf))  # type: ignore[arg-type]  # numpy stubs: **arrays
    write_bytes_atomic(path, buf.getvalue())


def load_or_fit(spec: TraitSpec, embedder: Embedder, root: Path | None = None) -> TraitClassifier:
    """The cached classifier for these exemplars, fitting and saving it on a miss.

    The cache holds plain arrays (.npz read with allow_pickle=False), so a planted file can
    never run code; a corrupt or unreadable one is refitted. Writes are atomic, so parallel
    processes never read half a file.
    """
    path = classifier_path(spec, root)
    clf = load_classifier(path, exemplar_hash(spec))
    if clf is None:
        clf = fit(spec, embedder)
        save_classifier(clf, path)
    return clf
