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


def token_id_dataset(
    texts, vocabulary: list[str], batch_size: int, max_length: int, bucket_width: int, shuffle: bool, seed: int
) -> tf.data.Dataset:
    """Batches of int32 token ids ``(batch, time)`` of ``texts`` (a model's input and target), bucketed by length."""
    vectorizer = make_vectorizer(vocabulary)

    def clip(ids):
        # The model's own ClipSequenceLength(max_length): the head, and at least one step.
        ids = ids[:, :max_length]
        return tf.pad(ids, [[0, 0], [0, tf.maximum(1 - tf.shape(ids)[1], 0)]])
    dataset = text_label_dataset(texts, np.zeros(len(texts), "int32"), batch_size, max_length, bucket_width, shuffle,
                                 seed)
    return dataset.map(lambda text, _: tf.cast(clip(vectorizer(text)), tf.int32), tf.data.AUTOTUNE).prefetch(
        tf.data.AUTOTUNE
    )


def pair_id_dataset(
    pairs: Sequence[tuple[str, str]],
    source_vectorizer,
    target_vectorizer,
    batch_size: int,
    max_source_length: int,
    max_target_length: int,
    bucket_width: int,
    training: bool,
    seed: int,
) -> tf.data.Dataset:
    """``(source_ids, target_ids)`` batches of sentence pairs of similar length: cache → shuffle → bucket → vectorise.

    In training, pairs with more than ``max_source_length`` source or ``max_target_length``
    target tokens are dropped (long pairs cost the most padded steps and teach the least);
    otherwise sources are cut at ``max_source_length``. Source rows get at least one step.
    Targets come whole: the caller makes the teacher-forcing pairs of them.
    """
    dataset = (
        tf.data.Dataset.from_tensor_slices(([source for source, _ in pairs], [target for _, target in pairs]))
        .batch(1024)
        .map(lambda s, t: (s, t, token_counts(s), token_counts(t)), tf.data.AUTOTUNE)
        .unbatch()
    )
    if training:
        dataset = dataset.filter(lambda s, t, ls, lt: (ls <= max_source_length) & (lt <= max_target_length))
    dataset = dataset.cache()
    if training:
        dataset = dataset.shuffle(len(pairs), seed=seed, reshuffle_each_iteration=True)
    boundaries = bucket_boundaries(max(max_source_length, max_target_length), bucket_width)
    dataset = dataset.bucket_by_sequence_length(
        element_length_func=lambda s, t, ls, lt: tf.maximum(ls, lt),
        bucket_boundaries=boundaries,
        bucket_batch_sizes=[batch_size] * (len(boundaries) + 1),
        no_padding=True,
    )

    def vectorize(source, target, source_length, target_length):
        source_ids = tf.cast(source_vectorizer(source)[:, :max_source_length], tf.int32)
        source_ids = tf.pad(source_ids, [[0, 0], [0, tf.maximum(1 - tf.shape(source_ids)[1], 0)]])
        return source_ids, target_vectorizer(target)

    return dataset.map(vectorize, tf.data.AUTOTUNE)
