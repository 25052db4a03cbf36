"""The one text standardiser, word tokeniser, vectoriser and length bucketing every text pipeline uses.

All of it runs in the TensorFlow graph (``tf.strings``), so the same code runs
in ``Dataset.map`` and inside exported models that take raw strings.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf

# Anything that is not a letter, a digit, whitespace or an apostrophe becomes its own token
# ("great!" → "great !"), so punctuation carries signal without inflating the vocabulary.
_SPLIT_SYMBOLS = r"([^\pL\pN\s'])"


@keras.saving.register_keras_serializable(package="rnnapps")
def standardize_text(text):
    """Lowercase (Unicode-aware), drop HTML line breaks, split punctuation off words."""
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"<br\s*/?>", " ")
    text = tf.strings.regex_replace(text, _SPLIT_SYMBOLS, r" \1 ")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def tokenize_words(text):
    """CoNLL-style tokens of raw strings, in the graph: ``string[batch] -> string[batch, words]`` (``""``-padded).

    Unlike :func:`standardize_text`, which lowercases for the vectoriser of
    classifiers and language models, this keeps the case: a tagger (NER)
    reads capitalisation as one of its strongest cues and scores tokens cut
    the way its training corpus (CoNLL-2003) was, so it needs its own
    case-preserving tokeniser.

    Splits on whitespace, and splits off brackets, quotes, ``!?;``, a trailing
    ``.,:`` after a lowercase letter or digit (``lamb.`` but not ``U.S.``), a
    comma before a space, and ``'s``.
    """
    text = tf.convert_to_tensor(text, tf.string)
    text = tf.strings.regex_replace(text, r"([\"()\[\]{}!?;])", r" \1 ")
    text = tf.strings.regex_replace(text, r"([\p{Ll}\pN%])([.,:]+)(\s|$)", r"\1 \2\3")
    text = tf.strings.regex_replace(text, r"([^\s,]),(\s|$)", r"\1 ,\2")
    text = tf.strings.regex_replace(text, r"(\pL)('[sS])(\s|$)", r"\1 \2\3")
    tokens = tf.strings.split(text).to_tensor(default_value="")
    # A batch of empty texts still gets one (padding) column.
    missing = tf.maximum(1 - tf.shape(tokens)[1], 0)
    return tf.pad(tokens, [[0, 0], [0, missing]], constant_values="")


def token_counts(texts):
    """Number of tokens after :func:`standardize_text`, for a batch of strings."""
    return tf.cast(tf.strings.split(standardize_text(texts)).row_lengths(), tf.int32)


def make_vectorizer(vocabulary: Sequence[str] | None = None, max_tokens: int | None = None, name: str = "vectorizer"):
    """A ``TextVectorization`` (ids, 0 = padding, 1 = OOV) using :func:`standardize_text`.

    Without ``output_sequence_length`` each batch is padded only to its longest
    member; pair it with :class:`rnnapps.models.ClipSequenceLength`.
    """
    return keras.layers.TextVectorization(
        max_tokens=max_tokens,
        standardize=standardize_text,
        split="whitespace",
        output_mode="int",
        vocabulary=list(vocabulary) if vocabulary is not None else None,
        name=name,
    )


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


def detokenize(text):
    """Undo the standardiser's spacing where English writes none, in the graph.

    ``"bike ."`` → ``"bike."``, ``"( fast )"`` → ``"(fast)"``, ``"t - shirt"`` →
    ``"t-shirt"``. Works on a string tensor of any shape; used on decoded
    token sequences before they are shown or scored.
    """
    text = tf.strings.regex_replace(text, r" ([.,!?;:%)\]])", r"\1")
    text = tf.strings.regex_replace(text, r"([(\[]) ", r"\1")
    return tf.strings.regex_replace(text, r"(\w) - (\w)", r"\1-\2")
