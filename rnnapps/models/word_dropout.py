"""Word dropout: during training, a random share of the word ids read as the unknown word."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rnnapps")
class UnknownWordDropout(keras.layers.Layer):
    """Replaces each real word id by the unknown-word id with probability ``rate``, in training only.

    A tagger or classifier without pretrained vectors learns its word embeddings from the
    training words alone and leans on them; at test time many words are new and fall back to
    the unknown-word vector, which saw only the rare words. Hiding a few known words behind the
    unknown id while training makes the model use its other evidence (characters, case,
    context) and trains the unknown-word vector on ordinary words too (Lample et al. 2016
    replace singletons; Iyyer et al. 2015 drop whole words). Unlike ``Dropout`` on the
    embeddings it drops whole words, not vector components, and it never touches padding.

    Args:
        rate: probability in ``[0, 1)`` that a real word is replaced.
        unknown_id: the lookup's id for out-of-vocabulary words (``StringLookup`` with a mask
            token: 1).
        padding_id: the padding id, which is never replaced.
        seed: seed of the replacement draws.

    Call arguments:
        word_ids: integer ids of any shape.
        training: replace only when True; inference returns ``word_ids`` unchanged.

    Returns:
        integer ids of the same shape and dtype.

    Example:

    >>> dropout = UnknownWordDropout(0.5, seed=1)
    >>> ids = keras.ops.convert_to_tensor([[5, 6, 7, 0]])
    >>> keras.ops.convert_to_numpy(dropout(ids)).tolist()  # inference: unchanged
    [[5, 6, 7, 0]]
    """

    def __init__(self, rate: float, unknown_id: int = 1, padding_id: int = 0, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"Expected rate in [0, 1). Received: rate={rate!r}")
        for name, value in (("unknown_id", unknown_id), ("padding_id", padding_id)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Expected {name} to be an integer >= 0. Received: {name}={value!r}")
        if unknown_id == padding_id:
            raise ValueError(f"unknown_id and padding_id must differ. Received: both {unknown_id}")
        self.rate = float(rate)
        self.unknown_id = unknown_id
        self.padding_id = padding_id
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.supports_masking = True
        self.built = True

    def call(self, word_ids, training=False):
        if not training or self.rate == 0.0:
            return word_ids
        drop = keras.random.uniform(ops.shape(word_ids), seed=self.seed_generator) < self.rate
        drop = ops.logical_and(drop, ops.not_equal(word_ids, self.padding_id))
        return ops.where(drop, ops.cast(self.unknown_id, word_ids.dtype), word_ids)

    def compute_output_shape(self, input_shape):
        return input_shape

    def compute_output_spec(self, word_ids, training=False):
        return keras.KerasTensor(word_ids.shape, dtype=word_ids.dtype)

    def get_config(self):
        return {
            **super().get_config(),
            "rate": self.rate,
            "unknown_id": self.unknown_id,
            "padding_id": self.padding_id,
            "seed": self.seed,
        }
