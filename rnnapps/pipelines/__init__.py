"""The pipeline registry the CLI is generic over.

Names map to module paths so that ``rnnapps list`` and ``--help`` answer
without importing TensorFlow; a pipeline module is imported only when used.
Each module defines ``PIPELINE``, an instance of
:class:`rnnapps.pipelines.base.Pipeline`.
"""

from __future__ import annotations

import importlib

from rnnapps.errors import ConfigError

REGISTRY: dict[str, tuple[str, str]] = {
    "sentiment": ("rnnapps.pipelines.sentiment", "IMDB review sentiment: embedding → (bi)LSTM/GRU stack → sigmoid"),
    "textgen": ("rnnapps.pipelines.textgen", "Character language model (Tiny Shakespeare): truncated BPTT, temperature sampling"),
    "pixelrnn": ("rnnapps.pipelines.pixelrnn", "PixelRNN Row LSTM on binarized MNIST: likelihood and inpainting"),
    "ner": ("rnnapps.pipelines.ner", "CoNLL-2003 named entities: word+char BiLSTM-CRF, span F1"),
    "draw": ("rnnapps.pipelines.draw", "DRAW recurrent VAE with read/write attention (SVHN, binarized MNIST)"),
    "translate": ("rnnapps.pipelines.translate", "Multi30k de→en (or Anki es→en): attention encoder–decoder, beam search, BLEU"),
    "autoencoder": ("rnnapps.pipelines.autoencoder", "Sequence autoencoder: text → one vector → text; pre-trains sentiment"),
}


def names() -> list[str]:
    return list(REGISTRY)


def describe(name: str) -> str:
    return REGISTRY[name][1]


def get_pipeline(name: str):
    if name not in REGISTRY:
        raise ConfigError(f"unknown pipeline {name!r}; choose one of {', '.join(REGISTRY)}")
    return importlib.import_module(REGISTRY[name][0]).PIPELINE
