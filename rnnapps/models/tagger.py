"""Sequence tagging models: string tokens in, tag strings out, with a CRF or softmax decoder.

:class:`TokenFeatures` turns string tokens into the word strings, characters
and case categories that the lookups and embeddings need, inside the graph (so
an exported tagger takes raw tokens); :class:`SequenceTagger` wraps any
emission model with a :class:`~rnnapps.models.crf.CRF` (Viterbi decoding) or a
softmax decoder and owns the loss. The NER pipeline composes both.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf

from rnnapps import text_ops
from rnnapps.models.char_encoder import CharWordEncoder
from rnnapps.models.crf import CRF
from rnnapps.models.embedding import PartlyFrozenEmbedding
from rnnapps.models.recurrent import RecurrentStack
from rnnapps.models.word_dropout import UnknownWordDropout

DECODERS = ("crf", "softmax")


@keras.saving.register_keras_serializable(package="rnnapps")
class TokenFeatures(keras.layers.Layer):
    """String tokens to the strings and ids the lookups and embeddings need, in the graph.

    Args:
        max_chars: characters kept per token (None: all).

    Call arguments:
        tokens: string ``(batch, words)``, ``""`` = padding.

    Returns:
        ``(words, chars, case_ids)``: normalised words (string, same shape; see
        :func:`rnnapps.text_ops.normalise_word`), characters (string
        ``(batch, words, chars)``, ``""``-padded, at least one column) and case
        categories (int32, see :func:`rnnapps.text_ops.case_feature_ids`).

    Example:

    >>> words, chars, case = TokenFeatures(max_chars=4)(tf.constant([["EU", "1996"]]))
    >>> tuple(chars.shape), case.numpy().tolist()
    ((1, 2, 4), [[2, 5]])
    """

    def __init__(self, max_chars: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if max_chars is not None and (isinstance(max_chars, bool) or not isinstance(max_chars, int) or max_chars < 1):
            raise ValueError(f"Expected max_chars to be an integer >= 1 or None. Received: max_chars={max_chars!r}")
        self.max_chars = max_chars

    def call(self, tokens):
        tokens = tf.convert_to_tensor(tokens, tf.string)
        chars = tf.strings.unicode_split(tokens, "UTF-8", errors="replace").to_tensor(default_value=text_ops.PADDING)
        if self.max_chars is not None:
            chars = chars[..., : self.max_chars]
        # One column at least: the char encoder cannot reduce over zero characters.
        missing = tf.maximum(1 - tf.shape(chars)[-1], 0)
        chars = tf.pad(chars, [[0, 0], [0, 0], [0, missing]], constant_values=text_ops.PADDING)
        return text_ops.normalise_words(tokens), chars, text_ops.case_feature_ids(tokens)

    def compute_output_spec(self, tokens):
        shape = tuple(tokens.shape)
        return (
            keras.KerasTensor(shape, dtype="string"),
            keras.KerasTensor((*shape, self.max_chars), dtype="string"),
            keras.KerasTensor(shape, dtype="int32"),
        )

    def get_config(self):
        config = super().get_config()
        config.update(max_chars=self.max_chars)
        return config


@keras.saving.register_keras_serializable(package="rnnapps")
class SequenceTagger(keras.Model):
    """Tags string tokens: an emission model plus a CRF (Viterbi) or softmax (argmax) decoder.

    Calling the model returns the emission scores, which is what training needs;
    :meth:`tag_ids` and :meth:`tag` decode, :meth:`tag_with_confidence` adds each
    token's tag probability and :meth:`n_best` the k most probable tag sequences. The loss is computed in
    :meth:`compute_loss` from integer tags ``(batch, words)`` with 0 = padding:
    the CRF negative log-likelihood per sentence (``decoder="crf"``), or the
    mean cross-entropy over real tokens (``decoder="softmax"``). Tag strings
    travel in the config, so a reloaded model decodes without other files.

    Args:
        encoder: a model from string tokens ``(batch, words)`` to float
            emissions ``(batch, words, len(tags) + 1)``; id 0 is padding.
        tags: the tag strings of ids ``1..len(tags)``.
        decoder: ``"crf"`` or ``"softmax"``.

    Call arguments:
        tokens: string ``(batch, words)``, ``""`` = padding.
        training: whether dropout is active.

    Example:

    >>> tokens = keras.Input((None,), dtype="string")
    >>> ids = keras.layers.StringLookup(vocabulary=["a"], mask_token="")(tokens)
    >>> emissions = keras.layers.Embedding(3, 3)(ids)
    >>> tagger = SequenceTagger(keras.Model(tokens, emissions), tags=["O", "B-X"])
    >>> tagger.tag(tf.constant([["a", ""]])).numpy().shape
    (1, 2)
    """

    def __init__(self, encoder: keras.Model, tags, decoder: str = "crf", **kwargs):
        super().__init__(**kwargs)
        if decoder not in DECODERS:
            raise ValueError(f"Expected decoder to be one of {DECODERS}. Received: decoder={decoder!r}")
        tags = [str(tag) for tag in tags]
        if not tags:
            raise ValueError("Expected at least one tag. Received: tags=[]")
        width = encoder.outputs[0].shape[-1]
        if width != len(tags) + 1:
            raise ValueError(
                f"Expected an encoder with len(tags) + 1 = {len(tags) + 1} emission scores (id 0: padding). "
                f"Received: encoder output width {width}"
            )
        self.encoder = encoder
        self.tags = tags
        self.decoder = decoder
        self.num_tag_ids = len(tags) + 1
        self.crf = None
        if decoder == "crf":
            self.crf = CRF(self.num_tag_ids, name="crf")
            self.crf.build((None, None, self.num_tag_ids))
        # The encoder is built and so is the CRF: nothing is left for a deferred build.
        self.built = True

    def call(self, tokens, training=False):
        return self.encoder(tokens, training=training)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        tags = tf.cast(y, tf.int32)
        mask = tf.not_equal(tags, 0)
        if self.crf is not None:
            loss = -self.crf.log_likelihood(y_pred, tags, mask)
            if sample_weight is not None:
                loss = loss * tf.cast(tf.reshape(sample_weight, [-1]), loss.dtype)
            return tf.reduce_mean(loss)
        per_token = keras.losses.sparse_categorical_crossentropy(tags, tf.cast(y_pred, tf.float32), from_logits=True)
        weights = tf.cast(mask, tf.float32)
        if sample_weight is not None:
            weights = weights * tf.cast(tf.reshape(sample_weight, [-1, 1]), tf.float32)
        return tf.reduce_sum(per_token * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)

    def _emissions(self, tokens):
        """``(emissions, mask, width)``: float32 scores with the padding tag ruled out, for a request of ``width`` words.

        Id 0 is padding, never a real token's tag: a briefly trained CRF could otherwise give a real
        token the padding id, so its column is pushed to -1e4 for every decoder. Zero-width batches
        get one padded column, since the recurrent layers need a time step to exist.
        """
        tokens = tf.convert_to_tensor(tokens, tf.string)
        width = tf.shape(tokens)[1]
        padded = tf.pad(tokens, [[0, 0], [0, tf.maximum(1 - width, 0)]], constant_values=text_ops.PADDING)
        emissions = tf.cast(self.encoder(padded, training=False), tf.float32)
        padding_column = tf.fill(tf.shape(emissions[..., :1]), tf.constant(-1e4, tf.float32))
        return tf.concat([padding_column, emissions[..., 1:]], axis=-1), tf.not_equal(padded, text_ops.PADDING), width

    def _decode(self, emissions, mask):
        if self.crf is not None:
            ids, _ = self.crf.viterbi_decode(emissions, mask)
        else:
            ids = tf.argmax(emissions, axis=-1)
        return tf.where(mask, tf.cast(ids, tf.int32), 0)

    def tag_ids(self, tokens):
        """Integer tag ids ``(batch, words)``; 0 at padding. Handles zero-width batches."""
        emissions, mask, width = self._emissions(tokens)
        return self._decode(emissions, mask)[:, :width]

    def tag(self, tokens):
        """Tag strings ``(batch, words)``; ``""`` at padding."""
        return tf.gather(self._tag_names(), self.tag_ids(tokens))

    def tag_with_confidence(self, tokens):
        """``{"tags": string (batch, words), "confidence": float32 (batch, words)}``.

        The confidence of a token is the probability of the tag it was given: its CRF marginal
        ``p(y_t = tag | sentence)`` by forward-backward (the softmax probability without a CRF);
        0 at padding.
        """
        ids, confidence = self.tag_ids_with_confidence(tokens)
        return {"tags": tf.gather(self._tag_names(), ids), "confidence": confidence}

    def tag_ids_with_confidence(self, tokens):
        """:meth:`tag_ids` and the probability of each chosen tag (see :meth:`tag_with_confidence`)."""
        emissions, mask, width = self._emissions(tokens)
        ids = self._decode(emissions, mask)
        if self.crf is not None:
            probabilities = self.crf.marginals(emissions, mask)
        else:
            probabilities = tf.nn.softmax(emissions, axis=-1)
        chosen = tf.gather(probabilities, ids, axis=-1, batch_dims=2)
        return ids[:, :width], tf.where(mask, chosen, 0.0)[:, :width]

    def n_best(self, tokens, k: int):
        """The ``k`` most probable tag sequences by a k-best Viterbi, best first (``decoder="crf"`` only).

        Returns ``{"tags": string (batch, k, words), "log_probabilities": float32 (batch, k)}``;
        the log-probabilities do not increase along ``k``, the first row is :meth:`tag`'s answer,
        and sequences that do not exist (a two-word sentence has fewer than ``k`` paths over
        few tags) have ``-inf`` and empty tags.
        """
        if self.crf is None:
            raise ValueError("n-best tag sequences need a CRF decoder. Received: decoder='softmax'")
        emissions, mask, width = self._emissions(tokens)
        ids, log_probabilities = self.crf.k_best_decode(emissions, k, mask)
        missing = tf.math.is_inf(log_probabilities)[..., None]
        ids = tf.where(missing, 0, ids)
        return {"tags": tf.gather(self._tag_names(), ids[..., :width]), "log_probabilities": log_probabilities}

    def _tag_names(self):
        return tf.constant([text_ops.PADDING, *self.tags])

    def get_config(self):
        config = super().get_config()
        config.update(
            encoder=keras.saving.serialize_keras_object(self.encoder),
            tags=list(self.tags),
            decoder=self.decoder,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["encoder"] = keras.saving.deserialize_keras_object(config["encoder"])
        return cls(**config)


def build_ner_tagger(
    word_lookup: keras.layers.StringLookup,
    char_lookup: keras.layers.StringLookup,
    tags: list[str],
    *,
    word_embedding_dim: int = 100,
    word_vectors: np.ndarray | None = None,
    trained_word_rows: int | None = None,
    word_dropout: float = 0.0,
    char_embedding_dim: int = 25,
    char_encoder: str = "cnn",
    char_units: int = 25,
    char_filters: int = 30,
    char_kernel_size: int = 3,
    char_dropout: float = 0.0,
    case_embedding_dim: int = 8,
    max_chars: int | None = None,
    cell: str = "lstm",
    units: int = 100,
    depth: int = 1,
    dropout: float = 0.5,
    recurrent_dropout: float = 0.0,
    decoder: str = "crf",
    seed: int = 0,
    name: str = "ner",
) -> SequenceTagger:
    """The word + character BiLSTM tagger of ``rnnapps run ner``, uncompiled.

    Each token is its word embedding, a :class:`CharWordEncoder` of its characters and a case
    embedding, concatenated; dropout, a bidirectional :class:`RecurrentStack` and a dense layer
    give each token's tag scores, which a :class:`SequenceTagger` decodes (CRF or softmax).

    Args:
        word_lookup, char_lookup: ``StringLookup`` layers of normalised words and of characters
            (``""`` padding id 0, ``[UNK]`` id 1), e.g. ``rnnapps.data.conll.make_lookup_layers``.
        tags: the tag strings (id ``i + 1`` is ``tags[i]``; 0 is padding).
        word_vectors: pretrained word rows in ``word_lookup``'s order, or None.
        trained_word_rows: with ``word_vectors``, how many leading rows training updates
            (``Vocabularies.updated_word_rows``); the rest (words only the vector file has,
            and with ``keep_vectors_fixed`` every word that has a vector) are kept fixed in a
            :class:`PartlyFrozenEmbedding`, which also spares Adam a dense update of every
            pretrained row. None: all rows train.
        word_dropout: share of training words read as ``[UNK]`` (:class:`UnknownWordDropout`; 0: off).
        char_*: the character encoder (``char_encoder`` ``"cnn"`` or ``"lstm"``); ``max_chars`` per token.
        cell, units, depth, dropout, recurrent_dropout: the word-level encoder.
        decoder: ``"crf"`` or ``"softmax"``.

    Example:

    >>> words = keras.layers.StringLookup(vocabulary=["eu"], mask_token="", oov_token="[UNK]")
    >>> chars = keras.layers.StringLookup(vocabulary=list("eu"), mask_token="", oov_token="[UNK]")
    >>> tagger = build_ner_tagger(words, chars, ["O", "B-ORG"], word_embedding_dim=4, units=4)
    >>> tagger.tag(tf.constant([["EU", "rejects"]])).shape
    TensorShape([1, 2])
    """
    tokens = keras.Input(shape=(None,), dtype="string", name="tokens")
    words, chars, case_ids = TokenFeatures(max_chars=max_chars, name="token_features")(tokens)
    vocabulary_size = word_lookup.vocabulary_size()
    if word_vectors is not None and trained_word_rows is not None and trained_word_rows < vocabulary_size:
        word_embedding = PartlyFrozenEmbedding(vocabulary_size, word_embedding_dim, trained_word_rows,
                                               mask_zero=True, name="word_embedding")
    else:
        word_embedding = keras.layers.Embedding(vocabulary_size, word_embedding_dim, mask_zero=True,
                                                name="word_embedding")
    word_ids = word_lookup(words)
    if word_dropout:
        word_ids = UnknownWordDropout(word_dropout, unknown_id=1, seed=seed + 2, name="word_dropout")(word_ids)
    features = [
        word_embedding(word_ids),
        CharWordEncoder(
            char_lookup.vocabulary_size(),
            char_embedding_dim=char_embedding_dim,
            mode=char_encoder,
            units=char_units,
            filters=char_filters,
            kernel_size=char_kernel_size,
            dropout=char_dropout,
            seed=seed,
            name="char_encoder",
        )(char_lookup(chars)),
        keras.layers.Embedding(
            text_ops.NUM_CASE_CATEGORIES, case_embedding_dim, mask_zero=True, name="case_embedding"
        )(case_ids),
    ]
    x = keras.layers.Concatenate(name="token_representation")(features)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed, name="feature_dropout")(x)
    x = RecurrentStack(units, cell=cell, depth=depth, bidirectional=True, dropout=dropout,
                       recurrent_dropout=recurrent_dropout, return_sequences=True, seed=seed, name="encoder")(x)
    if dropout:
        x = keras.layers.Dropout(dropout, seed=seed + 1, name="output_dropout")(x)
    # float32 emissions: the CRF and the softmax loss both want full precision.
    emissions = keras.layers.Dense(len(tags) + 1, dtype="float32", name="emissions")(x)
    encoder = keras.Model(tokens, emissions, name="emission_model")
    if isinstance(word_embedding, PartlyFrozenEmbedding):
        word_embedding.set_embedding_matrix(word_vectors)
    elif word_vectors is not None:
        word_embedding.set_weights([word_vectors])
    return SequenceTagger(encoder, tags, decoder=decoder, name=name)


def predict_tags(model: SequenceTagger, dataset, with_confidence: bool = False):
    """Gold and predicted tag strings of every sentence of a ``(tokens, tag_ids)`` dataset.

    With ``with_confidence``, also each sentence's token confidences (the CRF marginals of the
    predicted tags, :meth:`SequenceTagger.tag_with_confidence`).
    """
    names = np.array([text_ops.PADDING, *model.tags], dtype=object)
    decode = model.tag_ids_with_confidence if with_confidence else model.tag_ids
    decode = tf.function(decode, reduce_retracing=True)
    gold, predicted, confidences = [], [], []
    for tokens, gold_ids in dataset:
        decoded = decode(tokens)
        predicted_ids, confidence = (decoded[0].numpy(), decoded[1].numpy()) if with_confidence else (decoded.numpy(), None)
        gold_ids = gold_ids.numpy()
        lengths = (tokens.numpy() != b"").sum(axis=1)
        for row, length in enumerate(lengths):
            gold.append(list(names[gold_ids[row, :length]]))
            predicted.append(list(names[predicted_ids[row, :length]]))
            if with_confidence:
                confidences.append(confidence[row, :length])
    return (gold, predicted, confidences) if with_confidence else (gold, predicted)
