"""Small sequence utilities used inside exported text models."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rnnapps")
class ClipSequenceLength(keras.layers.Layer):
    """Cut token-id sequences to ``max_length`` and pad them to at least ``min_length``.

    A ``TextVectorization`` layer without ``output_sequence_length`` pads each
    batch only to its longest member, which is what makes bucketing by length
    pay (Keras computes every padded step, MEASUREMENTS.md). This layer caps
    the cost of the longest reviews, and keeps a batch of empty strings at one
    (masked) step so that recurrent layers never see a zero-length time axis.

    Args:
        max_length: keep at most this many leading tokens.
        min_length: pad with zeros (the padding id) up to this many steps.

    Call arguments:
        inputs: integer ids ``(batch, time)``, 0 = padding, padding at the end.

    Example:

    >>> tuple(ClipSequenceLength(3)(keras.ops.ones((2, 5), "int64")).shape)
    (2, 3)
    """

    def __init__(self, max_length: int, min_length: int = 1, **kwargs):
        super().__init__(**kwargs)
        if int(max_length) < 1:
            raise ValueError(f"Expected max_length >= 1. Received: max_length={max_length}")
        if not 0 <= int(min_length) <= int(max_length):
            raise ValueError(f"Expected 0 <= min_length <= max_length. Received: min_length={min_length}")
        self.max_length = int(max_length)
        self.min_length = int(min_length)

    def call(self, inputs):
        clipped = inputs[:, : self.max_length]
        missing = ops.maximum(self.min_length - ops.shape(clipped)[1], 0)
        return ops.pad(clipped, [[0, 0], [0, missing]])

    def compute_output_shape(self, input_shape):
        time = input_shape[1]
        return (input_shape[0], None if time is None else max(min(time, self.max_length), self.min_length))

    def get_config(self):
        config = super().get_config()
        config.update(max_length=self.max_length, min_length=self.min_length)
        return config
