"""Sparse autoencoders on one layer's residual stream: corpus, activations, BatchTopK training
(sae_lens), evaluation of the loaded inference SAE, and persona-vector decomposition."""

from pvlens.sae.contexts import top_contexts
from pvlens.sae.corpus import (
    CorpusConfig,
    Document,
    build_corpus,
    read_documents,
    split_documents,
)

# `pvlens.sae.decompose` stays the module (its main function is `decompose.decompose`)
from pvlens.sae.decompose import load_vector
from pvlens.sae.evaluate import evaluate_sae
from pvlens.sae.loading import LoadedSae, heldout_documents, load_sae
from pvlens.sae.provider import ActivationProvider, ProviderStats, layer_activations
from pvlens.sae.ranking import (
    decoder_cosines,
    encoder_scores,
    promoted_tokens,
    sparse_reconstruction,
)
from pvlens.sae.steering import feature_steering
from pvlens.sae.train import SaeTrainConfig, train_sae

__all__ = [
    "ActivationProvider",
    "CorpusConfig",
    "Document",
    "LoadedSae",
    "ProviderStats",
    "SaeTrainConfig",
    "build_corpus",
    "decoder_cosines",
    "encoder_scores",
    "evaluate_sae",
    "feature_steering",
    "heldout_documents",
    "layer_activations",
    "load_sae",
    "load_vector",
    "promoted_tokens",
    "read_documents",
    "sparse_reconstruction",
    "split_documents",
    "top_contexts",
    "train_sae",
]
