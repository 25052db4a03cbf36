"""Additive (Bahdanau) and multiplicative (Luong) attention over a masked memory.

Both layers share one contract so an attention decoder can swap them:
``call(query, value, key=None, mask=None, projected_key=None)`` returns
``(context, weights)``. A 2-D query ``(batch, dq)`` is one decoder step and
gives ``(batch, dv)`` / ``(batch, Tv)``; a 3-D query ``(batch, Tq, dq)`` gives
``(batch, Tq, dv)`` / ``(batch, Tq, Tv)``. The part of the score that depends
only on the keys can be computed once per source sentence with
``precompute_keys(key)`` and passed back as ``projected_key``, so a decoder
does not redo it at every step.
"""

from __future__ import annotations

import keras
from keras import ops

LUONG_SCORES = ("dot", "general")
# Added to the scores of padded keys before the softmax: exp() of it underflows
# to exactly 0 in float32, where the softmax always runs.
_MASKED_SCORE = -1e9


def _masked_softmax(scores, mask):
    """Softmax over the last axis in float32; padded keys get exactly 0.

    ``mask`` is ``(batch, Tv)`` and broadcasts over the query axis. A row with
    no real key gets all-zero weights (hence a zero context) instead of NaN.
    """
    scores = ops.cast(scores, "float32")
    if mask is None:
        return ops.softmax(scores, axis=-1)
    mask = ops.expand_dims(ops.cast(mask, "bool"), axis=1)
    scores = ops.where(mask, scores, _MASKED_SCORE)
    weights = ops.softmax(scores, axis=-1)
    return ops.where(mask, weights, 0.0)


class _Attention(keras.layers.Layer):
    """Shared call logic: scores -> masked float32 softmax -> weighted values."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # The output mask is not the value mask; the caller keeps the query's.
        self.supports_masking = True

    def precompute_keys(self, key):
        """The key-only part of the score, ``(batch, Tv, d)``; reuse it per step."""
        raise NotImplementedError

    def _project_query(self, query):
        return query

    def _scores(self, query, projected_key):
        raise NotImplementedError

    def call(self, query, value, key=None, mask=None, projected_key=None):
        single_step = len(query.shape) == 2
        # Projected before adding the time axis: a Dense on a 3-D tensor is a
        # tensordot, whose gradient inside a decoder loop XLA cannot compile.
        query = self._project_query(query)
        if single_step:
            query = ops.expand_dims(query, axis=1)
        if projected_key is None:
            projected_key = self.precompute_keys(value if key is None else key)
        scores = self._scores(query, projected_key)
        weights = _masked_softmax(scores, mask)
        context = ops.matmul(ops.cast(weights, value.dtype), value)
        if single_step:
            return ops.squeeze(context, axis=1), ops.squeeze(weights, axis=1)
        return context, weights

    def compute_mask(self, query, mask=None):
        return [None, None]

    def compute_output_shape(
        self, query_shape, value_shape, key_shape=None, projected_key_shape=None
    ):
        if len(query_shape) == 2:
            return (query_shape[0], value_shape[-1]), (query_shape[0], value_shape[1])
        return (query_shape[0], query_shape[1], value_shape[-1]), (
            query_shape[0],
            query_shape[1],
            value_shape[1],
        )

    def compute_output_spec(self, query, value, key=None, mask=None, projected_key=None):
        context_shape, weights_shape = self.compute_output_shape(query.shape, value.shape)
        return (
            keras.KerasTensor(context_shape, dtype=self.compute_dtype),
            keras.KerasTensor(weights_shape, dtype="float32"),
        )


@keras.saving.register_keras_serializable(package="rnnapps")
class BahdanauAttention(_Attention):
    """Additive attention: ``score(q, k) = vᵀ tanh(W₁ q + W₂ k)``.

    Unlike ``keras.layers.AdditiveAttention`` (which scores ``vᵀ tanh(q + k)``
    and so needs equal widths and learns no projections), this has the two
    projections of the paper, so query and keys may have different widths.

    Reference: Bahdanau, Cho and Bengio (2015), "Neural Machine Translation by
    Jointly Learning to Align and Translate", appendix A.1.2.

    Args:
        units: width of the hidden layer of the scoring network (``W₁``,
            ``W₂`` and ``v``).

    Call arguments:
        query: ``(batch, Tq, dq)``, or ``(batch, dq)`` for one decoder step.
        value: ``(batch, Tv, dv)``, the memory that is averaged.
        key: optional ``(batch, Tv, dk)``; defaults to ``value``.
        mask: optional boolean ``(batch, Tv)``; ``True`` marks real keys.
        projected_key: optional ``precompute_keys(key)``, ``(batch, Tv, units)``;
            when given, ``key`` is not projected again.

    Returns:
        ``(context, weights)``: ``(batch, Tq, dv)`` and float32 ``(batch, Tq, Tv)``
        (without the ``Tq`` axis for a 2-D query). Weights sum to 1 over the
        real keys and are exactly 0 on padded ones; a row with no real key
        gets zero weights and a zero context.

    Example:

    >>> attention = BahdanauAttention(8)
    >>> context, weights = attention(keras.ops.ones((2, 16)), keras.ops.ones((2, 5, 6)))
    >>> tuple(context.shape), tuple(weights.shape)
    ((2, 6), (2, 5))
    """

    def __init__(self, units: int, **kwargs):
        super().__init__(**kwargs)
        if int(units) < 1:
            raise ValueError(f"Expected units >= 1. Received: units={units}")
        self.units = int(units)
        self.query_projection = keras.layers.Dense(
            self.units, use_bias=False, name="query_projection"
        )
        self.key_projection = keras.layers.Dense(self.units, use_bias=False, name="key_projection")

    def build(self, query_shape, value_shape, key_shape=None, projected_key_shape=None):
        self.query_projection.build(tuple(query_shape))
        self.key_projection.build(tuple(key_shape if key_shape is not None else value_shape))
        self.score_vector = self.add_weight(
            shape=(self.units,), initializer="glorot_uniform", name="score_vector"
        )
        self.built = True

    def precompute_keys(self, key):
        return self.key_projection(key)

    def _project_query(self, query):
        return self.query_projection(query)

    def _scores(self, query, projected_key):
        # (batch, Tq, 1, units) + (batch, 1, Tv, units): every query against every key.
        hidden = ops.tanh(ops.expand_dims(query, axis=2) + ops.expand_dims(projected_key, axis=1))
        # Multiply-and-sum, not matmul with a vector: that lowers to a tensordot whose
        # gradient inside a loop has a dynamic transpose XLA cannot compile.
        return ops.sum(hidden * ops.cast(self.score_vector, hidden.dtype), axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(units=self.units)
        return config


@keras.saving.register_keras_serializable(package="rnnapps")
class LuongAttention(_Attention):
    """Multiplicative attention: ``score(q, k) = qᵀ k`` ("dot") or ``qᵀ W k`` ("general").

    Reference: Luong, Pham and Manning (2015), "Effective Approaches to
    Attention-based Neural Machine Translation", section 3.1.

    Args:
        score: ``"dot"`` (query and key widths must agree) or ``"general"``
            (a learned ``W`` maps keys to the query width).
        scale: divide scores by ``sqrt(query width)`` (the scaled dot product
            of Vaswani et al. 2017), which keeps the softmax from saturating
            for wide states.

    Call arguments:
        query: ``(batch, Tq, dq)``, or ``(batch, dq)`` for one decoder step.
        value: ``(batch, Tv, dv)``, the memory that is averaged.
        key: optional ``(batch, Tv, dk)``; defaults to ``value``.
        mask: optional boolean ``(batch, Tv)``; ``True`` marks real keys.
        projected_key: optional ``precompute_keys(key)``, ``(batch, Tv, dq)``.

    Returns:
        ``(context, weights)`` as for :class:`BahdanauAttention`.

    Example:

    >>> attention = LuongAttention("general")
    >>> context, weights = attention(keras.ops.ones((2, 3, 4)), keras.ops.ones((2, 5, 6)))
    >>> tuple(context.shape), tuple(weights.shape)
    ((2, 3, 6), (2, 3, 5))
    """

    def __init__(self, score: str = "dot", scale: bool = False, **kwargs):
        super().__init__(**kwargs)
        if score not in LUONG_SCORES:
            raise ValueError(
                f"Expected score to be one of {LUONG_SCORES}. Received: score={score!r}"
            )
        self.score = score
        self.scale = bool(scale)
        self.key_projection = None

    def build(self, query_shape, value_shape, key_shape=None, projected_key_shape=None):
        query_width = query_shape[-1]
        key_width = (key_shape if key_shape is not None else value_shape)[-1]
        if self.score == "general":
            self.key_projection = keras.layers.Dense(
                query_width, use_bias=False, name="key_projection"
            )
            self.key_projection.build((None, None, key_width))
        elif query_width is not None and key_width is not None and query_width != key_width:
            raise ValueError(
                "LuongAttention(score='dot') needs equal query and key widths; use score='general'. "
                f"Received: query width {query_width}, key width {key_width}"
            )
        self.built = True

    def precompute_keys(self, key):
        return key if self.key_projection is None else self.key_projection(key)

    def _scores(self, query, projected_key):
        scores = ops.matmul(query, ops.transpose(projected_key, (0, 2, 1)))
        if self.scale:
            scores = scores / ops.sqrt(ops.cast(ops.shape(query)[-1], scores.dtype))
        return scores

    def get_config(self):
        config = super().get_config()
        config.update(score=self.score, scale=self.scale)
        return config
