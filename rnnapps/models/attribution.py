"""Integrated gradients: how much each input position moved a model's score.

Sundararajan, Taly & Yan 2017, "Axiomatic Attribution for Deep Networks". The
attribution of input feature *i* is ``(x_i - x'_i)`` times the average gradient of
the score along the straight path from a baseline ``x'`` to the input ``x``. Its
*completeness* axiom makes the attributions add up to ``score(x) - score(x')``, so
they split exactly the part of the decision that the input adds over the baseline.
The path integral is a midpoint Riemann sum over ``steps`` points, all scored in
one batch; everything is graph ops, so it runs inside an exported signature.
"""

from __future__ import annotations

import tensorflow as tf


def integrated_gradients(score_fn, inputs, baseline, steps: int):
    """Attributions of ``score_fn`` at ``inputs`` against ``baseline``, summed over the last axis.

    Args:
        score_fn: maps a float tensor shaped like ``inputs`` but with ``steps``
            times the batch, ``(steps * batch, ...)``, to one score per row
            ``(steps * batch,)`` (e.g. a logit). Row ``k * batch + b`` is
            interpolation point ``k`` of example ``b``.
        inputs: float ``(batch, ..., features)``, e.g. embedded tokens
            ``(batch, time, embedding_dim)``.
        baseline: the same shape (or broadcastable to it).
        steps: points of the Riemann sum (``>= 1``); the error of the
            completeness sum shrinks as ``1 / steps**2`` for smooth scores.

    Returns:
        float32 ``(batch, ...)``: one attribution per position, the input's
        last axis summed away.

    Example:

    >>> inputs = tf.constant([[[1.0, 2.0], [3.0, 0.0]]])        # (1, 2, 2)
    >>> score = lambda x: tf.reduce_sum(x * x, axis=[1, 2])     # sum of squares
    >>> integrated_gradients(score, inputs, tf.zeros_like(inputs), steps=16).numpy().round(3)
    array([[5., 9.]], dtype=float32)
    """
    steps = int(steps)
    if steps < 1:
        raise ValueError(f"Expected steps >= 1. Received: steps={steps}")
    inputs = tf.cast(inputs, tf.float32)
    baseline = tf.broadcast_to(tf.cast(baseline, tf.float32), tf.shape(inputs))
    alphas = (tf.range(steps, dtype=tf.float32) + 0.5) / float(steps)
    difference = inputs - baseline
    alphas = tf.reshape(alphas, tf.concat([[steps, 1], tf.ones([tf.rank(inputs) - 1], tf.int32)], axis=0))
    path = baseline[tf.newaxis] + alphas * difference[tf.newaxis]
    flat_path = tf.reshape(path, tf.concat([[-1], tf.shape(inputs)[1:]], axis=0))
    with tf.GradientTape() as tape:
        tape.watch(flat_path)
        scores = tf.cast(score_fn(flat_path), tf.float32)
    gradients = tape.gradient(scores, flat_path)
    mean_gradient = tf.reduce_mean(tf.reshape(gradients, tf.shape(path)), axis=0)
    return tf.reduce_sum(difference * mean_gradient, axis=-1)
