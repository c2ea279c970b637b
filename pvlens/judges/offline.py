"""The offline judge (pvlens's default): no API key, no network, about a second to set up.

Trait score = 100 · P(trait | answer) from a classifier fitted on the trait's exemplars
(`pvlens.judges.trait_classifier`). Coherence = the measured formula in
`pvlens.judges.coherence`, optionally with an LM's fluency. Both are stand-ins for an LLM
judge: good at the clear cases the extraction filter needs, blind to what needs world
knowledge (a confident wrong fact reads like a confident right one to it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pvlens.judges import coherence as coh
from pvlens.judges.base import Aspect, Judge, PendingBatch, text_hash
from pvlens.judges.cache import Judgement
from pvlens.judges.embed import EMBEDDING_MODEL, Embedder, shared_embedder
from pvlens.judges.trait_classifier import FEATURES, TraitClassifier, check_exemplars, load_or_fit
from pvlens.traits import TraitSpec

COHERENCE_FORMULA = "coherence/v1"
"""Version tag of the offline coherence formula; part of the cache key."""


class OfflineJudge(Judge):
    """Exemplar-fitted classifier for the trait, a measured formula for coherence."""

    kind = "offline"

    def __init__(
        self,
        trait: str | TraitSpec,
        *,
        embedder: Embedder | None = None,
        fluency_model: Any = None,
        fluency_tokenizer: Any = None,
        classifier_dir: str | Path | None = None,
        **kwargs: Any,
    ) -> None:
        """
        Args:
            embedder: sentence embedder (default: the shared bundled all-MiniLM-L6-v2).
            fluency_model: optional HookedTransformer / HF causal LM whose per-token NLL of the
                answer adds the fluency factor to coherence (catches word salad).
            fluency_tokenizer: tokenizer for an HF `fluency_model`.
            classifier_dir: where fitted classifiers are cached (default: the pvlens cache).
        """
        super().__init__(trait, **kwargs)
        check_exemplars(self.trait)  # fail at construction, not at the first score
        self.embedder = embedder or shared_embedder()
        self.fluency_model = fluency_model
        self.fluency_tokenizer = fluency_tokenizer or getattr(fluency_model, "tokenizer", None)
        if fluency_model is not None and self.fluency_tokenizer is None:
            raise ValueError("an HF fluency_model needs fluency_tokenizer=...")
        self.classifier_dir = Path(classifier_dir) if classifier_dir is not None else None
        self._classifier: TraitClassifier | None = None

    @property
    def model(self) -> str:
        return f"{EMBEDDING_MODEL}+{FEATURES}"

    @property
    def classifier(self) -> TraitClassifier:
        if self._classifier is None:
            self._classifier = load_or_fit(self.trait, self.embedder, self.classifier_dir)
        return self._classifier

    @property
    def _fluency_id(self) -> str | None:
        """The fluency model's name and weight fingerprint now (memoised until a weight changes):
        a fluency model finetuned after the judge was made must not reuse the older scores."""
        if self.fluency_model is None:
            return None
        from pvlens.judges.local import judge_model_id

        return judge_model_id(self.fluency_model)

    def settings(self) -> dict[str, Any]:
        return {"fluency_model": self._fluency_id}

    def rubric_hash(self, aspect: Aspect) -> str:
        """The exemplars define the trait scale; the formula version defines coherence."""
        if aspect == "trait":
            from pvlens.judges.trait_classifier import exemplar_hash

            return exemplar_hash(self.trait)
        return text_hash(COHERENCE_FORMULA)

    def _judge_uncached(self, batch: PendingBatch) -> None:
        pairs, store = batch.pairs, batch.store
        answers = [a for _, a in pairs]
        if batch.aspect == "trait":
            emb = self.embedder.encode(answers)
            p_emb, p_lex = self.classifier.predict_parts(answers, emb)
            for i in range(len(pairs)):
                p = (p_emb[i] + p_lex[i]) / 2.0
                store(
                    i,
                    Judgement(
                        100.0 * float(p),
                        detail={
                            "p_embedding": round(float(p_emb[i]), 6),
                            "p_lexical": round(float(p_lex[i]), 6),
                        },
                    ),
                )
            return
        q_vecs = self.embedder.encode([q for q, _ in pairs])
        a_vecs = self.embedder.encode(answers)
        nlls: list[float | None] = [None] * len(pairs)
        if self.fluency_model is not None:
            nlls = coh.answer_nll(self.fluency_model, self.fluency_tokenizer, pairs)
        tokenize = self.embedder.tokenizer.tokenize
        for i, answer in enumerate(answers):
            f = coh.factors(q_vecs[i], a_vecs[i], answer, tokenize, nll=nlls[i])
            detail = {k: round(v, 4) if isinstance(v, float) else v for k, v in f.__dict__.items()}
            store(i, Judgement(f.score, detail=detail))
