"""The review classifier: raw text → vectoriser → embedding → recurrent stack → one probability.

The network behind ``rnnapps run sentiment``, built from plain keyword arguments
by :func:`build_review_classifier`, and the functions its export serves besides
the model itself: integrated-gradients explanations (:func:`explain_function`)
and the batch sizes its XLA copy compiles (:func:`xla_batch_buckets`).
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from rnnapps.models.attribution import integrated_gradients
from rnnapps.models.recurrent import RecurrentStack, SequencePooling
from rnnapps.models.sequence import ClipSequenceLength
from rnnapps.text_ops import make_vectorizer


def build_review_classifier(
    vocabulary: list[str],
    *,
    max_length: int = 400,
    truncation: str = "head_tail",
    embedding_dim: int = 128,
    embedding_matrix: np.ndarray | None = None,
    embeddings_trainable: bool = True,
    cell: str = "lstm",
    units: int = 64,
    depth: int = 1,
    bidirectional: bool = True,
    pooling: str = "max,mean",
    embedding_dropout: float = 0.2,
    dropout: float = 0.3,
    recurrent_dropout: float = 0.0,
    residual: bool = False,
    seed: int | None = None,
) -> keras.Model:
    """An uncompiled ``keras.Model`` from a ``text`` string input to a sigmoid ``probability`` ``(batch, 1)``.

    Layer names are part of the contract: ``clip_length`` (the token ids), ``embedding``,
    ``encoder`` (a :class:`RecurrentStack`), ``pooling`` and ``probability`` are read by the
    explainer, the XLA and fused serving paths and ``rnnapps.transfer``.

    Args:
        vocabulary: the vectoriser's tokens, padding and ``[UNK]`` first.
        max_length: tokens read per text; ``truncation`` says which (``head``, ``tail``, ``head_tail``).
        embedding_dim: the embedding width when no ``embedding_matrix`` is given.
        embedding_matrix: pretrained rows ``(len(vocabulary), d)``; trainable only if ``embeddings_trainable``.
        cell, units, depth, bidirectional, recurrent_dropout, residual: the :class:`RecurrentStack`.
        pooling: ``"last"`` (the final states) or modes of :class:`SequencePooling`, e.g. ``"max,mean"``.
        embedding_dropout: spatial dropout on the embedded tokens; ``dropout``: between layers and before the head.
        seed: seed of every dropout.

    Example:

    >>> model = build_review_classifier(["", "[UNK]", "good", "bad"], embedding_dim=4, units=4)
    >>> tuple(model(keras.ops.convert_to_tensor(["good film"])).shape)
    (1, 1)
    """
    text = keras.Input(shape=(), dtype="string", name="text")
    token_ids = make_vectorizer(vocabulary)(text)
    token_ids = ClipSequenceLength(max_length, keep=truncation, name="clip_length")(token_ids)
    embedding = keras.layers.Embedding(
        len(vocabulary),
        embedding_dim if embedding_matrix is None else embedding_matrix.shape[1],
        mask_zero=True,
        trainable=embeddings_trainable or embedding_matrix is None,
        name="embedding",
    )
    x = embedding(token_ids)
    if embedding_dropout:
        x = keras.layers.SpatialDropout1D(embedding_dropout, seed=seed, name="embedding_dropout")(x)
    pooled = pooling != "last"
    x = RecurrentStack(
        units,
        cell=cell,
        depth=depth,
        bidirectional=bidirectional,
        dropout=dropout,
        recurrent_dropout=recurrent_dropout,
        residual=residual,
        return_sequences=pooled,
        seed=seed,
        name="encoder",
    )(x)
    if pooled:
        x = SequencePooling(tuple(pooling.split(",")), name="pooling")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed, name="dropout")(x)
    # float32 output keeps the loss numerically safe under mixed precision.
    probability = keras.layers.Dense(1, activation="sigmoid", dtype="float32", name="probability")(x)
    model = keras.Model(text, probability, name="sentiment")
    if embedding_matrix is not None:
        # set_weights, not a Constant initializer: that would copy the matrix into the config.
        embedding.set_weights([embedding_matrix])
    return model


def token_id_model(model: keras.Model) -> keras.Model:
    """The classifier's text → token ids part (its vectoriser and ``clip_length``)."""
    return keras.Model(model.input, model.get_layer("clip_length").output, name="to_ids")


def explain_function(model: keras.Model, explain_steps: int):
    """``explain(text) -> {probability, tokens, attributions, logit, baseline_logit}`` for a classifier.

    Each token's integrated-gradients attribution (``explain_steps`` points) to the review's
    logit. The baseline is the padding token's embedding at every position the review fills,
    read under the review's own mask, so the attributions of a review add up to
    ``logit - baseline_logit`` (completeness) and padding gets none. Request limits are the
    caller's (the export guards ``text`` before calling it).
    """
    embedding, encoder, output = (model.get_layer(name) for name in ("embedding", "encoder", "probability"))
    pooling = next((layer for layer in model.layers if layer.name == "pooling"), None)
    vectorizer = next(layer for layer in model.layers if isinstance(layer, keras.layers.TextVectorization))
    vocabulary = tf.constant(vectorizer.get_vocabulary())
    to_ids = token_id_model(model)

    def logit_from_embedded(embedded, mask):
        # The model after its embedding at inference (its dropout layers are the identity then).
        hidden = encoder(embedded, mask=mask, training=False)
        if pooling is not None:
            hidden = pooling(hidden, mask=mask)
        return tf.squeeze(tf.matmul(tf.cast(hidden, tf.float32), output.kernel) + output.bias, axis=-1)

    def explain(text):
        ids = to_ids(text, training=False)
        mask = tf.not_equal(ids, 0)
        embedded, baseline = embedding(ids), embedding(tf.zeros_like(ids))
        path_mask = tf.tile(mask, [explain_steps, 1])
        attributions = integrated_gradients(
            lambda points: logit_from_embedded(points, path_mask), embedded, baseline, explain_steps
        )
        logit = logit_from_embedded(embedded, mask)
        return {
            "probability": tf.sigmoid(logit),
            "tokens": tf.where(mask, tf.gather(vocabulary, ids), ""),
            "attributions": tf.where(mask, attributions, 0.0),
            "logit": logit,
            "baseline_logit": logit_from_embedded(baseline, mask),
        }

    return explain


def xla_batch_buckets(max_request_batch: int) -> list[int]:
    """The batch sizes an XLA serving copy compiles: powers of two up to the first that holds ``max_request_batch``."""
    buckets = [1]
    while buckets[-1] < max_request_batch:
        buckets.append(buckets[-1] * 2)
    return buckets


def xla_classifier(model: keras.Model, max_request_batch: int, max_length: int):
    """``ids -> probability`` through an XLA-compiled copy of the classifier after its ``clip_length``.

    XLA compiles once per input shape, so steps are padded to ``max_length`` (masked, so the
    results are unchanged) and the batch to the next power of two; batches over
    ``max_request_batch`` are refused before this runs, so at most
    ``ceil(log2(max_request_batch)) + 1`` programs are ever compiled.
    """
    from_ids = keras.Model(model.get_layer("clip_length").output, model.output, name="from_ids")
    batch_buckets = tf.constant(xla_batch_buckets(max_request_batch), tf.int32)

    @tf.function(jit_compile=True)
    def compiled(ids):
        return from_ids(ids, training=False)

    def classify(ids):
        batch, steps = tf.shape(ids)[0], tf.shape(ids)[1]
        padded_batch = tf.gather(batch_buckets, tf.searchsorted(batch_buckets, tf.reshape(batch, [1]))[0])
        return compiled(tf.pad(ids, [[0, padded_batch - batch], [0, max_length - steps]]))[:batch]

    return classify
