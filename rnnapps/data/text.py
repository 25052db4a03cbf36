"""Vocabularies and length-bucketed ``tf.data`` input for the word-level text pipelines.

The graph-side text operations (standardiser, vectoriser, tokeniser) live in
:mod:`rnnapps.text_ops`, shared with the models.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from rnnapps.text_ops import make_vectorizer, token_counts


def build_vocabulary(texts: Sequence[str], max_tokens: int, batch_size: int = 1024) -> list[str]:
    """Vocabulary of the ``max_tokens`` most frequent tokens (incl. padding and OOV)."""
    if len(texts) == 0:
        raise ValueError("cannot build a vocabulary from no texts")
    vectorizer = make_vectorizer(max_tokens=max_tokens)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(list(texts)).batch(batch_size))
    return vectorizer.get_vocabulary()


def bucket_boundaries(max_length: int, width: int) -> list[int]:
    """Upper bounds (exclusive) of length buckets: width, 2·width, ... up to max_length."""
    if width < 1:
        raise ValueError(f"bucket width must be >= 1, got {width}")
    return list(range(width, max_length + 1, width))


def text_label_dataset(
    texts: Sequence[str],
    labels: np.ndarray,
    batch_size: int,
    max_length: int,
    bucket_width: int,
    shuffle: bool,
    seed: int,
) -> tf.data.Dataset:
    """``(text, label)`` batches grouped by token count: cache → shuffle → bucket → prefetch.

    Lengths are computed once, batched (``batch → map`` is ~5× faster than a
    per-example map, MEASUREMENTS.md), and cached with the texts.
    """
    if len(texts) != len(labels):
        raise ValueError(f"{len(texts)} texts but {len(labels)} labels")
    dataset = tf.data.Dataset.from_tensor_slices((list(texts), np.asarray(labels)))
    dataset = (
        dataset.batch(1024)
        .map(lambda text, label: (text, label, tf.minimum(token_counts(text), max_length)), tf.data.AUTOTUNE)
        .unbatch()
        .cache()
    )
    if shuffle:
        dataset = dataset.shuffle(len(texts), seed=seed, reshuffle_each_iteration=True)
    boundaries = bucket_boundaries(max_length, bucket_width)
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda text, label, length: length,
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        no_padding=True,
    )
    return dataset.map(lambda text, label, length: (text, label), tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)
