"""A sequence autoencoder: text → one dense vector → the same text.

The model behind ``rnnapps run autoencoder`` and the pretraining of the
sentiment encoder (Dai & Le 2015, "Semi-supervised Sequence Learning").
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from rnnapps.models.decoding import beam_search_decode, greedy_decode
from rnnapps.models.distribute import scale_loss_for_replicas
from rnnapps.models.recurrent import CELL_TYPES, RecurrentStack, recurrent_layer
from rnnapps.models.seq2seq import (
    END_ID,
    PAD_ID,
    START_ID,
    UNKNOWN_ID,
    check_markers,
    teacher_forcing_pairs,
)
from rnnapps.models.sequence import ClipSequenceLength
from rnnapps.text_ops import make_vectorizer

# Texts reconstructed per call by reconstruction_metrics and encode_texts.
EVALUATION_BATCH = 128
# Reconstructions that reconstruction_metrics returns as samples.
SAMPLE_RECONSTRUCTIONS = 50
# How the code reads the encoder: its final states only, or those and its pooled outputs.
POOLING_TYPES = ("none", "max", "mean")


def _check_positive(name, value):
    if int(value) < 1:
        raise ValueError(f"Expected {name} >= 1. Received: {name}={value}")
    return int(value)


def _check_rate(name, value):
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"Expected 0 <= {name} < 1. Received: {name}={value}")
    return float(value)


@keras.saving.register_keras_serializable(package="rnnapps")
class Seq2SeqAutoencoder(keras.Model):
    """Sequence autoencoder: embedding → recurrent encoder → dense code → recurrent decoder.

    The encoder is a :class:`~rnnapps.models.recurrent.RecurrentStack` (named
    ``"encoder"``, like the sentiment model's, so its weights transfer); its
    final states (forward and backward, ``h`` and ``c`` for an LSTM) go through
    a tanh ``Dense`` bottleneck to the code of ``code_size`` numbers, the only
    thing the decoder learns about the input. With ``pooling="max"`` (or
    ``"mean"``) the bottleneck also reads the encoder's outputs pooled over the
    text's steps: every word then reaches the code along as short a path as the
    first and last ones do, not only through the final states. One tanh bridge
    per decoder state maps the code to the decoder's initial state; the decoder
    (GRU/LSTM) then predicts ``w1..wn </s>`` from ``<s> w1..wn`` (teacher
    forcing). With ``code_at_every_step`` the code is also concatenated to the
    decoder's input at every step (Cho et al. 2014's decoder), a short path
    from every target token back to the code instead of one through the whole
    recurrence. With
    ``word_dropout`` some decoder inputs become ``[UNK]`` during training, so
    the decoder cannot lean on the previous word and the code has to carry the
    content (Bowman et al. 2016). With ``tie_embeddings`` the output layer
    reuses the embedding: a linear map takes the decoder's output to the
    embedding's width and the logits are its dot products with every word's
    embedding (Press & Wolf 2017; Inan et al. 2017). Reading a word and writing
    it then use the same vector, a bias towards copying that helps the rare
    words most, and the output layer shrinks from ``decoder_units`` to
    ``embedding_dim`` numbers per word. Inference decodes greedily from the
    code, in the graph, or with a beam search (``reconstruct_ids``). The
    embedding is shared by encoder and decoder. The vocabulary travels in the
    config, so the model reads raw strings after a reload.

    ``fit(token_ids)`` trains it (the input is its own target): the loss is the
    mean cross-entropy per target token, padding masked; ``token_accuracy``
    (teacher-forced) is logged beside it.

    References: Dai & Le 2015, "Semi-supervised Sequence Learning" (sequence
    autoencoder pretraining); Sutskever et al. 2014 (encoder–decoder); Bowman
    et al. 2016, "Generating Sentences from a Continuous Space" (word dropout);
    Press & Wolf 2017, "Using the Output Embedding to Improve Language Models"
    (tied embeddings).

    Args:
        vocabulary: tokens, ``""``, ``[UNK]``, ``<s>``, ``</s>`` first (see
            :func:`rnnapps.models.seq2seq.with_markers`).
        embedding_dim: width of the token embedding.
        cell: encoder cell, one of ``"lstm"``, ``"gru"``, ``"simple_rnn"``.
        units: encoder units per direction and layer.
        depth: encoder layers.
        bidirectional: bidirectional encoder.
        code_size: size of the code (the sentence embedding).
        decoder_cell: decoder cell (default: ``cell``).
        decoder_units: decoder units.
        code_at_every_step: also feed the code to the decoder at every step,
            concatenated to the input word's embedding.
        pooling: ``"none"`` (the code reads the final states only), ``"max"`` or
            ``"mean"`` (it also reads the encoder's outputs pooled over the
            real steps).
        tie_embeddings: compute the logits with the (shared) embedding matrix
            instead of a separate ``decoder_units x vocabulary`` projection.
        embedding_dropout: dropout on the embedded tokens (encoder and decoder).
        dropout: dropout between encoder layers and before the output projection.
        word_dropout: probability of replacing a decoder input token by
            ``[UNK]`` during training.
        max_length: tokens read per text (the head); decoding emits at most
            ``max_length + 1`` tokens (``</s>`` included).
        seed: seed of the dropout masks and the word dropout.

    Call arguments:
        token_ids: int ``(batch, time)``, 0 = padding at the end.
        training: whether the dropouts are active.

    Returns (call):
        float32 logits ``(batch, time + 1, vocabulary_size)`` for ``w1..wn </s>``.

    Example:

    >>> model = Seq2SeqAutoencoder(with_markers(["", "[UNK]", "a", "dog"]), embedding_dim=4, units=4, code_size=3,
    ...                            decoder_units=4)
    >>> tuple(model.encode_text(tf.constant(["A dog!", ""])).shape)
    (2, 3)
    >>> model.reconstruct_text(tf.constant(["a dog"]))["text"].shape
    TensorShape([1])
    """

    def __init__(
        self,
        vocabulary,
        embedding_dim: int = 128,
        cell: str = "lstm",
        units: int = 64,
        depth: int = 1,
        bidirectional: bool = True,
        code_size: int = 256,
        decoder_cell: str | None = None,
        decoder_units: int = 256,
        code_at_every_step: bool = False,
        pooling: str = "none",
        tie_embeddings: bool = False,
        embedding_dropout: float = 0.0,
        dropout: float = 0.0,
        word_dropout: float = 0.0,
        max_length: int = 50,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.vocabulary = [str(token) for token in vocabulary]
        check_markers(self.vocabulary)
        decoder_cell = cell if decoder_cell is None else decoder_cell
        for name, value in (("cell", cell), ("decoder_cell", decoder_cell)):
            if value not in CELL_TYPES:
                raise ValueError(f"Expected {name} to be one of {CELL_TYPES}. Received: {name}={value!r}")
        self.cell = cell
        self.decoder_cell = decoder_cell
        self.embedding_dim = _check_positive("embedding_dim", embedding_dim)
        self.units = _check_positive("units", units)
        self.depth = _check_positive("depth", depth)
        self.bidirectional = bool(bidirectional)
        self.code_size = _check_positive("code_size", code_size)
        self.decoder_units = _check_positive("decoder_units", decoder_units)
        self.code_at_every_step = bool(code_at_every_step)
        if pooling not in POOLING_TYPES:
            raise ValueError(f"Expected pooling to be one of {POOLING_TYPES}. Received: pooling={pooling!r}")
        self.pooling = pooling
        self.tie_embeddings = bool(tie_embeddings)
        self.embedding_dropout_rate = _check_rate("embedding_dropout", embedding_dropout)
        self.dropout = _check_rate("dropout", dropout)
        self.word_dropout = _check_rate("word_dropout", word_dropout)
        self.max_length = _check_positive("max_length", max_length)
        self.seed = seed
        vocabulary_size = len(self.vocabulary)

        self.vectorizer = make_vectorizer(self.vocabulary, name="vectorizer")
        self.clip = ClipSequenceLength(self.max_length, name="clip_length")
        self.embedding = keras.layers.Embedding(vocabulary_size, self.embedding_dim, name="embedding")
        self.embedding_dropout = keras.layers.Dropout(self.embedding_dropout_rate, seed=seed, name="embedding_dropout")
        self.encoder = RecurrentStack(
            self.units, cell=cell, depth=self.depth, bidirectional=self.bidirectional, dropout=self.dropout,
            return_sequences=pooling != "none", return_state=True, seed=seed, name="encoder",
        )
        self.bottleneck = keras.layers.Dense(self.code_size, activation="tanh", name="bottleneck")
        self.bridges = [
            keras.layers.Dense(self.decoder_units, activation="tanh", name=f"bridge_{index}")
            for index in range(2 if decoder_cell == "lstm" else 1)
        ]
        self.decoder = recurrent_layer(decoder_cell, self.decoder_units, return_sequences=True, name="decoder")
        self.output_dropout = keras.layers.Dropout(
            self.dropout, seed=None if seed is None else seed + 1, name="output_dropout"
        )
        # float32 logits keep the softmax and the loss numerically safe under mixed precision.
        if self.tie_embeddings:
            self.output_to_embedding = keras.layers.Dense(self.embedding_dim, name="output_to_embedding")
            self.output_bias = self.add_weight(
                shape=(vocabulary_size,), initializer="zeros", dtype="float32", autocast=False, name="output_bias"
            )
        else:
            self.projection = keras.layers.Dense(vocabulary_size, dtype="float32", name="projection")
        self.word_dropout_seed = keras.random.SeedGenerator(None if seed is None else seed + 2)
        self.token_accuracy_tracker = keras.metrics.Mean(name="token_accuracy")

        self.embedding.build((None, None))
        self.encoder.build((None, None, self.embedding_dim))
        # Final states: h (and c for an LSTM) per direction.
        states = (2 if cell == "lstm" else 1) * (2 if self.bidirectional else 1)
        pooled = 0 if pooling == "none" else self.encoder.output_width
        self.bottleneck.build((None, states * self.units + pooled))
        for bridge in self.bridges:
            bridge.build((None, self.code_size))
        self.decoder.build((None, None, self.decoder_input_dim))
        if self.tie_embeddings:
            self.output_to_embedding.build((None, self.decoder_units))
        else:
            self.projection.build((None, self.decoder_units))
        # Every weight exists now: a reloaded model restores them without a forward pass.
        self.built = True

    # -- the parts ----------------------------------------------------------------------------

    @property
    def decoder_input_dim(self) -> int:
        return self.embedding_dim + (self.code_size if self.code_at_every_step else 0)

    def decoder_inputs(self, embedded, code):
        """The decoder's input: embedded words ``(batch, [time,] embedding_dim)``, with the code when fed every step."""
        if not self.code_at_every_step:
            return embedded
        code = ops.cast(code, embedded.dtype)
        if len(embedded.shape) == 3:
            code = ops.broadcast_to(ops.expand_dims(code, 1), (*ops.shape(embedded)[:2], self.code_size))
        return ops.concatenate([embedded, code], axis=-1)

    def token_ids(self, text):
        """The int32 ids ``(batch, time >= 1)`` the model reads from raw strings ``(batch,)``."""
        text = tf.reshape(tf.convert_to_tensor(text, tf.string), [-1])
        return tf.cast(self.clip(self.vectorizer(text)), tf.int32)

    def encode(self, token_ids, training=False):
        """The code ``(batch, code_size)`` of token ids ``(batch, time)``."""
        token_ids = ops.cast(token_ids, "int32")
        mask = ops.not_equal(token_ids, PAD_ID)
        embedded = self.embedding_dropout(self.embedding(token_ids), training=training)
        outputs, *states = self.encoder(embedded, mask=mask, training=training)
        if self.pooling != "none":
            states.append(self.pool(outputs, mask))
        return self.bottleneck(ops.concatenate(states, axis=-1))

    def pool(self, outputs, mask):
        """Max or mean of ``outputs`` ``(batch, time, width)`` over the steps where ``mask`` is true; 0 for none."""
        real = ops.expand_dims(ops.cast(mask, outputs.dtype), -1)
        count = ops.sum(real, axis=1)
        if self.pooling == "mean":
            return ops.sum(outputs * real, axis=1) / ops.maximum(count, 1)
        # -1e4 rather than -inf: float16-safe, and far below any recurrent output.
        pooled = ops.max(ops.where(real > 0, outputs, ops.cast(-1e4, outputs.dtype)), axis=1)
        return ops.where(count > 0, pooled, ops.zeros_like(pooled))

    def logits(self, outputs):
        """float32 logits ``(..., vocabulary)`` of decoder outputs ``(..., decoder_units)``."""
        if not self.tie_embeddings:
            return self.projection(outputs)
        projected = ops.cast(self.output_to_embedding(outputs), "float32")
        return ops.matmul(projected, ops.transpose(ops.cast(self.embedding.embeddings, "float32"))) + ops.cast(
            self.output_bias, "float32"
        )

    def initial_decoder_states(self, code):
        """The decoder's initial state list from codes ``(batch, code_size)``."""
        return [bridge(code) for bridge in self.bridges]

    def decode_teacher_forced(self, code, token_ids, training=False):
        """Logits ``(batch, time + 1, vocabulary)`` of ``w1..wn </s>`` given the code and ``<s> w1..wn``."""
        decoder_inputs, _ = teacher_forcing_pairs(token_ids)
        if training and self.word_dropout > 0:
            drop = keras.random.uniform(ops.shape(decoder_inputs), seed=self.word_dropout_seed) < self.word_dropout
            # <s> (position 0) and padding stay; any other input may become [UNK].
            positions = ops.expand_dims(ops.arange(ops.shape(decoder_inputs)[1]), 0)
            drop = drop & (positions > 0) & ops.not_equal(decoder_inputs, PAD_ID)
            decoder_inputs = ops.where(drop, UNKNOWN_ID, decoder_inputs)
        embedded = self.embedding_dropout(self.embedding(decoder_inputs), training=training)
        outputs = self.decoder(
            self.decoder_inputs(embedded, code),
            initial_state=self.initial_decoder_states(code),
            mask=ops.not_equal(decoder_inputs, PAD_ID),
            training=training,
        )
        return self.logits(self.output_dropout(outputs, training=training))

    def call(self, token_ids, training=False):
        return self.decode_teacher_forced(self.encode(token_ids, training=training), token_ids, training=training)

    # -- training -----------------------------------------------------------------------------

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        _, labels = teacher_forcing_pairs(x)
        log_probs = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        nll = -ops.squeeze(ops.take_along_axis(log_probs, ops.expand_dims(labels, -1), axis=-1), -1)
        weights = ops.cast(ops.not_equal(labels, PAD_ID), "float32")
        if sample_weight is not None:
            weights = weights * ops.reshape(ops.cast(sample_weight, "float32"), (-1, 1))
        total = ops.maximum(ops.sum(weights), 1.0)
        correct = ops.cast(ops.equal(ops.argmax(y_pred, axis=-1), ops.cast(labels, "int64")), "float32")
        self.token_accuracy_tracker.update_state(ops.sum(correct * weights) / total, sample_weight=total)
        loss = ops.sum(nll * weights) / total
        for extra in self.losses:
            loss = loss + ops.cast(ops.sum(extra), "float32")
        return scale_loss_for_replicas(loss)

    # -- inference ----------------------------------------------------------------------------

    def reconstruct_ids(self, code, max_length: int | None = None, beam_width: int = 1, length_penalty: float = 0.6):
        """Decoding from codes ``(batch, code_size)``: a :class:`~rnnapps.models.decoding.DecodeResult`.

        Greedy with ``beam_width=1``, else beam search keeping ``beam_width``
        hypotheses ranked with GNMT's ``length_penalty`` (see
        :func:`~rnnapps.models.decoding.beam_search_decode`). ``ids`` is
        ``(batch, max_length + 1)`` and ends with ``</s>`` then 0; ``<s>`` is
        never emitted.
        """
        steps = self.max_length + 1 if max_length is None else int(max_length)
        code = tf.convert_to_tensor(code)
        cell = self.decoder.cell
        banned = tf.equal(tf.range(len(self.vocabulary)), START_ID)

        def step_fn(tokens, states):
            # The code travels in the states so that beam search tiles and reorders it with them.
            outputs, new_states = cell(
                self.decoder_inputs(self.embedding(tokens), states["code"]), states["decoder"], training=False
            )
            new_states = list(new_states) if isinstance(new_states, (list, tuple)) else [new_states]
            logits = tf.where(banned, -1e9, tf.cast(self.logits(outputs), tf.float32))
            return tf.nn.log_softmax(logits), {"decoder": new_states, "code": states["code"]}, None

        states = {"decoder": self.initial_decoder_states(code), "code": code}
        if int(beam_width) == 1:
            return greedy_decode(step_fn, states, START_ID, END_ID, steps, batch_size=tf.shape(code)[0])
        return beam_search_decode(step_fn, states, START_ID, END_ID, steps, int(beam_width), length_penalty)

    def greedy_reconstruct(self, code, max_length: int | None = None):
        """Greedy decoding from codes ``(batch, code_size)``: ``reconstruct_ids(code, max_length)``."""
        return self.reconstruct_ids(code, max_length)

    def encode_text(self, text):
        """Codes ``(batch, code_size)`` (float32) of raw strings ``(batch,)``."""
        return tf.cast(self.encode(self.token_ids(text)), tf.float32)

    def ids_to_text(self, ids):
        """Space-joined tokens of id rows ``(batch, time)``, stopping at ``</s>`` and padding."""
        ids = tf.convert_to_tensor(ids)
        ends = tf.cumsum(tf.cast(tf.equal(ids, END_ID), tf.int32), axis=1) > 0
        tokens = tf.gather(tf.constant(self.vocabulary), ids)
        words = tf.ragged.boolean_mask(tokens, tf.logical_not(ends) & tf.not_equal(ids, PAD_ID))
        return tf.strings.reduce_join(words, axis=1, separator=" ")

    def reconstruct_text(self, text, max_length: int | None = None, beam_width: int = 1):
        """``{"text", "ids", "lengths"}``: reconstructions of raw strings ``(batch,)`` (greedy, or a beam search).

        ``text`` is the standardised tokens joined by spaces (``</s>`` excluded);
        ``ids`` int32 ``(batch, steps)``; ``lengths`` counts ``</s>``.
        """
        result = self.reconstruct_ids(self.encode(self.token_ids(text)), max_length, beam_width)
        return {"text": self.ids_to_text(result.ids), "ids": result.ids, "lengths": result.lengths}

    def get_config(self):
        config = super().get_config()
        config.update(
            vocabulary=list(self.vocabulary),
            embedding_dim=self.embedding_dim,
            cell=self.cell,
            units=self.units,
            depth=self.depth,
            bidirectional=self.bidirectional,
            code_size=self.code_size,
            decoder_cell=self.decoder_cell,
            decoder_units=self.decoder_units,
            code_at_every_step=self.code_at_every_step,
            pooling=self.pooling,
            tie_embeddings=self.tie_embeddings,
            embedding_dropout=self.embedding_dropout_rate,
            dropout=self.dropout,
            word_dropout=self.word_dropout,
            max_length=self.max_length,
            seed=self.seed,
        )
        return config


# --- batched inference for evaluation ------------------------------------------------------

def reconstruction_metrics(
    model: Seq2SeqAutoencoder, texts, batch_size: int = EVALUATION_BATCH, beam_width: int = 1
) -> dict:
    """Reconstruction of ``texts`` (greedy, or a beam search): token accuracy and exact match, with samples.

    The reference is the tokens the model reads (standardised, cut at
    ``max_length``, ``[UNK]`` for unknown words) followed by ``</s>``; a token
    counts as right when the decoder emits it at the same position, and a text
    matches exactly when every position (``</s>`` included) is right.
    ``unknown_share`` is the share of reference tokens that are ``[UNK]``: the
    part of the accuracy that an out-of-vocabulary word gives away.
    """

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def score(text):
        ids = model.token_ids(text)
        result = model.reconstruct_ids(model.encode(ids), beam_width=beam_width)
        _, labels = teacher_forcing_pairs(ids)
        hypotheses = result.ids[:, : tf.shape(labels)[1]]
        hypotheses = tf.pad(hypotheses, [[0, 0], [0, tf.shape(labels)[1] - tf.shape(hypotheses)[1]]])
        real = tf.not_equal(labels, PAD_ID)
        right = tf.equal(hypotheses, labels) & real
        counts = tf.reduce_sum(tf.cast(right, tf.int64), axis=1)
        totals = tf.reduce_sum(tf.cast(real, tf.int64), axis=1)
        unknowns = tf.reduce_sum(tf.cast(tf.equal(labels, UNKNOWN_ID) & real, tf.int64), axis=1)
        return counts, totals, unknowns, model.ids_to_text(result.ids)

    right = total = exact = unknown = 0
    samples = []
    for start in range(0, len(texts), batch_size):
        batch = list(texts[start : start + batch_size])
        counts, totals, unknowns, reconstructions = (value.numpy() for value in score(tf.constant(batch)))
        right += int(counts.sum())
        total += int(totals.sum())
        unknown += int(unknowns.sum())
        exact += int((counts == totals).sum())
        for text, reconstruction in zip(batch, reconstructions, strict=True):
            if len(samples) < SAMPLE_RECONSTRUCTIONS:
                samples.append({"text": text, "reconstruction": reconstruction.decode("utf-8")})
    return {
        "token_accuracy": right / max(total, 1),
        "exact_match": exact / max(len(texts), 1),
        "examples": len(texts),
        "tokens": total,
        "unknown_share": unknown / max(total, 1),
        "samples": samples,
    }


def encode_texts(model: Seq2SeqAutoencoder, texts, batch_size: int = EVALUATION_BATCH) -> np.ndarray:
    """Codes ``(len(texts), code_size)`` as float32 NumPy."""
    encode = tf.function(model.encode_text, input_signature=[tf.TensorSpec([None], tf.string)])
    blocks = [encode(tf.constant(list(texts[start : start + batch_size]))).numpy()
              for start in range(0, len(texts), batch_size)]
    return np.concatenate(blocks) if blocks else np.zeros((0, model.code_size), "float32")
