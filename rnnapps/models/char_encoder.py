"""Character-level word representations for taggers."""

from __future__ import annotations

import keras
from keras import ops

MODES = ("lstm", "cnn")


@keras.saving.register_keras_serializable(package="rnnapps")
class CharWordEncoder(keras.layers.Layer):
    """Encodes each word from its characters into one vector.

    Characters are embedded, then either read by a bidirectional LSTM whose two
    final states are concatenated (Lample et al. 2016, "Neural Architectures for
    Named Entity Recognition") or convolved and max-pooled over the word
    (Ma & Hovy 2016, "End-to-end Sequence Labeling via Bi-directional
    LSTM-CNNs-CRF"). Either way prefixes, suffixes and capitalisation reach the
    tagger for words the word vocabulary has never seen.

    Char id 0 is padding: padded characters are ignored and padded words (all
    ids 0) encode to zeros. The layer emits a word mask (a word is real when it
    has a character), so it can be concatenated with a masked word embedding.

    Args:
        num_chars: size of the char vocabulary, padding id 0 included.
        char_embedding_dim: width of a character embedding.
        mode: ``"lstm"`` (char BiLSTM) or ``"cnn"`` (convolution + max-pool).
        units: LSTM units per direction (``mode="lstm"``); output is ``2 * units``.
        filters: convolution filters (``mode="cnn"``); output is ``filters``.
        kernel_size: convolution width in characters (``mode="cnn"``).
        activation: activation of the convolution (``mode="cnn"``).
        dropout: dropout rate on the char embeddings (0 disables it).
        seed: seed for the dropout mask.

    Call arguments:
        inputs: integer char ids ``(batch, words, chars)``, post-padded with 0.
        training: whether dropout is active.

    Returns:
        float ``(batch, words, output_dim)``.

    Example:

    >>> encoder = CharWordEncoder(50, mode="cnn", filters=30)
    >>> encoder(keras.ops.ones((2, 7, 12), dtype="int32")).shape
    (2, 7, 30)
    """

    def __init__(
        self,
        num_chars: int,
        char_embedding_dim: int = 25,
        mode: str = "lstm",
        units: int = 25,
        filters: int = 30,
        kernel_size: int = 3,
        activation="tanh",
        dropout: float = 0.0,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"Expected mode to be one of {MODES}. Received: mode={mode!r}")
        for name, value in (
            ("num_chars", num_chars),
            ("char_embedding_dim", char_embedding_dim),
            ("units", units),
            ("filters", filters),
            ("kernel_size", kernel_size),
        ):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} to be an integer >= 1. Received: {name}={value!r}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"Expected 0 <= dropout < 1. Received: dropout={dropout}")
        self.num_chars = num_chars
        self.char_embedding_dim = char_embedding_dim
        self.mode = mode
        self.units = units
        self.filters = filters
        self.kernel_size = kernel_size
        self.activation = keras.activations.get(activation)
        self.dropout = float(dropout)
        self.seed = seed
        self.supports_masking = True

        self.char_embedding = keras.layers.Embedding(num_chars, char_embedding_dim, name="char_embedding")
        self.embedding_dropout = (
            keras.layers.Dropout(self.dropout, seed=seed, name="char_dropout") if self.dropout > 0 else None
        )
        if mode == "lstm":
            self.char_reader = keras.layers.Bidirectional(
                keras.layers.LSTM(units, name="char_lstm"), name="char_bidirectional_lstm"
            )
        else:
            self.char_reader = keras.layers.Conv1D(
                filters, kernel_size, padding="same", activation=self.activation, name="char_convolution"
            )

    @property
    def output_dim(self) -> int:
        return 2 * self.units if self.mode == "lstm" else self.filters

    def build(self, input_shape):
        self.char_embedding.build((None, input_shape[-1]))
        self.char_reader.build((None, input_shape[-1], self.char_embedding_dim))
        self.built = True

    def call(self, inputs, training=None):
        char_ids = ops.cast(inputs, "int32")
        shape = ops.shape(char_ids)
        batch, words, chars = shape[0], shape[1], shape[2]
        flat_ids = ops.reshape(char_ids, (-1, chars))
        char_mask = ops.not_equal(flat_ids, 0)
        word_mask = ops.any(char_mask, axis=-1)
        embedded = self.char_embedding(flat_ids)
        if self.embedding_dropout is not None:
            embedded = self.embedding_dropout(embedded, training=training)
        # Zeroed padding makes a "same" convolution see exactly what it sees
        # at the end of an unpadded word.
        embedded = embedded * ops.expand_dims(ops.cast(char_mask, embedded.dtype), -1)
        if self.mode == "lstm":
            # A padded word still gets one (zeroed) step: an all-masked row is
            # not allowed by the cuDNN kernel, and its output is zeroed below.
            first = ops.expand_dims(ops.arange(chars) == 0, 0)
            reader_mask = ops.logical_or(char_mask, ops.logical_and(first, ops.expand_dims(ops.logical_not(word_mask), -1)))
            encoded = self.char_reader(embedded, mask=reader_mask, training=training)
        else:
            convolved = self.char_reader(embedded)
            lowest = ops.convert_to_tensor(-1e4 if convolved.dtype == "float16" else -1e9, convolved.dtype)
            encoded = ops.max(ops.where(ops.expand_dims(char_mask, -1), convolved, lowest), axis=1)
        encoded = encoded * ops.expand_dims(ops.cast(word_mask, encoded.dtype), -1)
        return ops.reshape(encoded, (batch, words, self.output_dim))

    def compute_mask(self, inputs, mask=None):
        return ops.any(ops.not_equal(inputs, 0), axis=-1)

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[1], self.output_dim)

    def get_config(self):
        config = super().get_config()
        config.update(
            num_chars=self.num_chars,
            char_embedding_dim=self.char_embedding_dim,
            mode=self.mode,
            units=self.units,
            filters=self.filters,
            kernel_size=self.kernel_size,
            activation=keras.activations.serialize(self.activation),
            dropout=self.dropout,
            seed=self.seed,
        )
        return config
