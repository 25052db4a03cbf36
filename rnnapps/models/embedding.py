"""An embedding whose first rows train and whose other rows stay as they were loaded."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rnnapps")
class PartlyFrozenEmbedding(keras.layers.Layer):
    """``keras.layers.Embedding`` split in two: rows ``[0, trainable_rows)`` train, the rest are fixed.

    A tagger that loads pretrained vectors keeps every word of the vector file so that words
    never seen in training still get their pretrained vector (NER with GloVe: 95k rows, 16k of
    them read in training). Those extra rows never receive a gradient, so Adam never moves them; but a
    single trainable matrix makes Adam update all of it every step, and on a 2-core CPU that
    dense update of 4.8M parameters made the tagger's step 1.36x slower (docs/ner.md).
    Keeping the rows that training can reach in one trainable matrix and the others in a
    non-trainable one gives the same model and the same updates, at the cost of the small
    matrix only. The caller orders its vocabulary so the rows training sees come first.

    Args:
        input_dim: number of rows (vocabulary size, padding and unknown ids included).
        output_dim: width of each vector.
        trainable_rows: how many leading rows train, in ``[1, input_dim]``.
        mask_zero: whether id 0 is padding (then the layer emits a mask, as ``Embedding`` does).
        embeddings_initializer: initializer of both matrices before :meth:`set_embedding_matrix`.

    Call arguments:
        ids: integer ids of any shape, each in ``[0, input_dim)``.

    Returns:
        vectors of shape ``ids.shape + (output_dim,)``.

    Example:

    >>> import numpy as np
    >>> layer = PartlyFrozenEmbedding(5, 2, trainable_rows=3)
    >>> layer.build()
    >>> layer.set_embedding_matrix(np.arange(10, dtype="float32").reshape(5, 2))
    >>> keras.ops.convert_to_numpy(layer(np.array([[0, 4]]))).tolist()
    [[[0.0, 1.0], [8.0, 9.0]]]
    >>> [len(layer.trainable_weights), len(layer.non_trainable_weights)]
    [1, 1]
    """

    def __init__(self, input_dim: int, output_dim: int, trainable_rows: int, mask_zero: bool = False,
                 embeddings_initializer="uniform", **kwargs):
        super().__init__(**kwargs)
        for name, value in (("input_dim", input_dim), ("output_dim", output_dim), ("trainable_rows", trainable_rows)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"Expected {name} to be an integer >= 1. Received: {name}={value!r}")
        if trainable_rows > input_dim:
            raise ValueError(f"Expected trainable_rows <= input_dim. Received: trainable_rows={trainable_rows}, "
                             f"input_dim={input_dim}")
        self.input_dim = input_dim
        self.output_dim = output_dim
        self.trainable_rows = trainable_rows
        self.mask_zero = mask_zero
        self.embeddings_initializer = keras.initializers.get(embeddings_initializer)
        self.supports_masking = mask_zero

    @property
    def fixed_rows(self) -> int:
        return self.input_dim - self.trainable_rows

    def build(self, input_shape=None):
        self.trained_embeddings = self.add_weight(
            shape=(self.trainable_rows, self.output_dim), initializer=self.embeddings_initializer,
            name="trained_embeddings",
        )
        # A zero-row variable is legal but awkward to save; with no fixed rows there is none.
        self.fixed_embeddings = self.add_weight(
            shape=(self.fixed_rows, self.output_dim), initializer=self.embeddings_initializer,
            name="fixed_embeddings", trainable=False,
        ) if self.fixed_rows else None
        self.built = True

    def call(self, ids):
        ids = ops.cast(ids, "int32")
        trained = ops.take(self.trained_embeddings, ops.minimum(ids, self.trainable_rows - 1), axis=0)
        if self.fixed_embeddings is None:
            vectors = trained
        else:
            fixed = ops.take(self.fixed_embeddings, ops.maximum(ids - self.trainable_rows, 0), axis=0)
            vectors = ops.where(ops.expand_dims(ids < self.trainable_rows, -1), trained, fixed)
        return ops.cast(vectors, self.compute_dtype)

    def compute_mask(self, ids, mask=None):
        return ops.not_equal(ids, 0) if self.mask_zero else None

    def compute_output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def embedding_matrix(self):
        """All rows as one ``(input_dim, output_dim)`` array, in id order."""
        parts = [self.trained_embeddings] + ([self.fixed_embeddings] if self.fixed_embeddings is not None else [])
        return ops.concatenate([ops.convert_to_tensor(part) for part in parts], axis=0)

    def set_embedding_matrix(self, matrix) -> None:
        """Loads a full ``(input_dim, output_dim)`` matrix, e.g. pretrained vectors in id order."""
        matrix = ops.convert_to_numpy(matrix)
        if tuple(matrix.shape) != (self.input_dim, self.output_dim):
            raise ValueError(f"Expected a matrix of shape {(self.input_dim, self.output_dim)}. "
                             f"Received: shape {tuple(matrix.shape)}")
        self.trained_embeddings.assign(matrix[: self.trainable_rows])
        if self.fixed_embeddings is not None:
            self.fixed_embeddings.assign(matrix[self.trainable_rows:])

    def get_config(self):
        return {
            **super().get_config(),
            "input_dim": self.input_dim,
            "output_dim": self.output_dim,
            "trainable_rows": self.trainable_rows,
            "mask_zero": self.mask_zero,
            "embeddings_initializer": keras.initializers.serialize(self.embeddings_initializer),
        }
