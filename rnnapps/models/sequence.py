"""Small sequence utilities used inside exported text models."""

from __future__ import annotations

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="rnnapps")
class ClipSequenceLength(keras.layers.Layer):
    """Cut token-id sequences to ``max_length`` tokens and pad them to at least ``min_length``.

    A ``TextVectorization`` layer without ``output_sequence_length`` pads each
    batch only to its longest member, which is what makes bucketing by length
    pay (Keras computes every padded step, MEASUREMENTS.md). This layer caps
    the cost of the longest reviews, and keeps a batch of empty strings at one
    (masked) step so that recurrent layers never see a zero-length time axis.

    Which tokens survive a cut is ``keep``: the first ``max_length`` (``"head"``),
    the last (``"tail"``), or the first quarter and the last three quarters
    (``"head_tail"``), which Sun et al. 2019 ("How to Fine-Tune BERT for Text
    Classification") found best for long reviews: the verdict tends to sit at
    the end, the topic at the start.

    Args:
        max_length: keep at most this many tokens.
        min_length: pad with zeros (the padding id) up to this many steps.
        keep: ``"head"``, ``"tail"`` or ``"head_tail"``.

    Call arguments:
        inputs: integer ids ``(batch, time)``, 0 = padding, padding at the end.

    Example:

    >>> tuple(ClipSequenceLength(3)(keras.ops.ones((2, 5), "int64")).shape)
    (2, 3)
    """

    KEEP_MODES = ("head", "tail", "head_tail")

    def __init__(self, max_length: int, min_length: int = 1, keep: str = "head", **kwargs):
        super().__init__(**kwargs)
        if keep not in self.KEEP_MODES:
            raise ValueError(f"Expected keep to be one of {self.KEEP_MODES}. Received: keep={keep!r}")
        self.keep = keep
        if int(max_length) < 1:
            raise ValueError(f"Expected max_length >= 1. Received: max_length={max_length}")
        if not 0 <= int(min_length) <= int(max_length):
            raise ValueError(f"Expected 0 <= min_length <= max_length. Received: min_length={min_length}")
        self.max_length = int(max_length)
        self.min_length = int(min_length)

    def call(self, inputs):
        if self.keep == "head":
            clipped = inputs[:, : self.max_length]
        else:
            clipped = self._keep_tail(inputs)
        missing = ops.maximum(self.min_length - ops.shape(clipped)[1], 0)
        return ops.pad(clipped, [[0, 0], [0, missing]])

    def _keep_tail(self, inputs):
        # Rows are post-padded: row r has `length[r]` real tokens, then zeros. Gather, per row,
        # the positions to keep; positions past the row's end read as padding.
        time = ops.shape(inputs)[1]
        width = ops.minimum(time, self.max_length)
        lengths = ops.sum(ops.cast(ops.not_equal(inputs, 0), "int32"), axis=1, keepdims=True)
        steps = ops.expand_dims(ops.arange(width, dtype="int32"), 0)
        head = self.max_length // 4 if self.keep == "head_tail" else 0
        overflow = ops.maximum(lengths - self.max_length, 0)
        positions = ops.where(steps < head, steps, steps + overflow)
        valid = positions < lengths
        gathered = ops.take_along_axis(inputs, ops.minimum(positions, time - 1), axis=1)
        return ops.where(valid, gathered, ops.zeros_like(gathered))

    def compute_output_shape(self, input_shape):
        time = input_shape[1]
        return (input_shape[0], None if time is None else max(min(time, self.max_length), self.min_length))

    def get_config(self):
        config = super().get_config()
        config.update(max_length=self.max_length, min_length=self.min_length, keep=self.keep)
        return config
