"""Integrated gradients against closed forms: completeness, linear exactness, and the shape of the answer."""

import numpy as np
import pytest
import tensorflow as tf

from rnnapps.models.attribution import integrated_gradients


def test_a_linear_score_is_attributed_exactly():
    weights = tf.constant([[0.5, -2.0, 1.0]])
    inputs = tf.constant([[[1.0, 1.0, 1.0], [2.0, 0.0, -1.0]]])  # (batch 1, time 2, features 3)
    baseline = tf.constant([[[0.0, 1.0, 0.0]]])
    score = lambda x: tf.reduce_sum(x * weights, axis=[1, 2])  # noqa: E731
    attributions = integrated_gradients(score, inputs, baseline, steps=1).numpy()
    np.testing.assert_allclose(attributions, [[1.5, 2.0]], rtol=1e-6)


@pytest.mark.parametrize("steps", [8, 64])
def test_completeness_on_a_nonlinear_score(steps):
    rng = np.random.default_rng(0)
    inputs = tf.constant(rng.normal(size=(3, 5, 4)), tf.float32)
    baseline = tf.zeros_like(inputs)
    matrix = tf.constant(rng.normal(size=(4, 4)), tf.float32)
    score = lambda x: tf.reduce_sum(tf.tanh(tf.einsum("btf,fg->btg", x, matrix)), axis=[1, 2])  # noqa: E731
    attributions = integrated_gradients(score, inputs, baseline, steps=steps).numpy()
    assert attributions.shape == (3, 5)
    expected = score(inputs).numpy() - score(baseline).numpy()
    np.testing.assert_allclose(attributions.sum(axis=1), expected, rtol=0.02 if steps == 8 else 1e-3, atol=1e-4)


def test_inside_a_tf_function_and_a_bad_step_count():
    compiled = tf.function(lambda x: integrated_gradients(lambda p: tf.reduce_sum(p**2, axis=[1, 2]), x,
                                                          tf.zeros_like(x), steps=16))
    np.testing.assert_allclose(compiled(tf.constant([[[1.0, 2.0], [3.0, 0.0]]])).numpy(), [[5.0, 9.0]], rtol=1e-3)
    with pytest.raises(ValueError, match="steps >= 1"):
        integrated_gradients(lambda p: p, tf.zeros([1, 1, 1]), tf.zeros([1, 1, 1]), steps=0)
