import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps.models.attention import BahdanauAttention, LuongAttention
from tests.layer_checks import (
    assert_all_close,
    check_config_round_trip,
    check_keras_round_trip,
    check_saved_model_round_trip,
)

RNG = np.random.default_rng(0)
QUERY = RNG.normal(size=(3, 2, 4)).astype("float32")
VALUE = RNG.normal(size=(3, 5, 6)).astype("float32")
# Row 0: all keys real; row 1: three real keys; row 2: none.
MASK = np.array([[True] * 5, [True, True, True, False, False], [False] * 5])


def numpy_softmax(scores, mask):
    scores = np.where(mask[:, None, :], scores, -np.inf)
    with np.errstate(invalid="ignore"):
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights = weights / weights.sum(-1, keepdims=True)
    return np.nan_to_num(weights)


def bahdanau_reference(layer, query, value, mask):
    w1 = layer.query_projection.kernel.numpy()
    w2 = layer.key_projection.kernel.numpy()
    v = layer.score_vector.numpy()
    scores = np.zeros(query.shape[:2] + value.shape[1:2])
    for b in range(query.shape[0]):
        for i in range(query.shape[1]):
            for j in range(value.shape[1]):
                scores[b, i, j] = v @ np.tanh(query[b, i] @ w1 + value[b, j] @ w2)
    weights = numpy_softmax(scores, mask)
    return weights @ value, weights


def luong_reference(layer, query, value, mask):
    keys = value if layer.score == "dot" else value @ layer.key_projection.kernel.numpy()
    scores = np.einsum("bid,bjd->bij", query, keys)
    if layer.scale:
        scores = scores / np.sqrt(query.shape[-1])
    weights = numpy_softmax(scores, mask)
    return weights @ value, weights


CASES = [
    (lambda: BahdanauAttention(7), bahdanau_reference, QUERY),
    (lambda: LuongAttention("general"), luong_reference, QUERY),
    (lambda: LuongAttention("general", scale=True), luong_reference, QUERY),
    (
        lambda: LuongAttention("dot", scale=True),
        luong_reference,
        RNG.normal(size=(3, 2, 6)).astype("float32"),
    ),
]


@pytest.mark.parametrize("make_layer, reference, query", CASES)
def test_matches_numpy_reference_with_mask(make_layer, reference, query):
    layer = make_layer()
    context, weights = layer(query, VALUE, mask=MASK)
    expected_context, expected_weights = reference(layer, query, VALUE, MASK)
    assert context.shape == (3, 2, 6) and weights.shape == (3, 2, 5)
    assert_all_close(weights, expected_weights, atol=1e-5)
    assert_all_close(context, expected_context, atol=1e-5)
    weights = np.asarray(weights)
    np.testing.assert_allclose(weights[:2].sum(-1), 1.0, atol=1e-6)
    # Padded keys get exactly zero, and a row with no real key is all zeros (no NaN).
    assert np.all(weights[1, :, 3:] == 0.0)
    assert np.all(weights[2] == 0.0) and np.all(np.asarray(context)[2] == 0.0)
    assert np.all(np.isfinite(np.asarray(context)))


@pytest.mark.parametrize("make_layer, reference, query", CASES)
def test_single_step_query_and_precomputed_keys(make_layer, reference, query):
    layer = make_layer()
    full_context, full_weights = layer(query, VALUE, mask=MASK)
    keys = layer.precompute_keys(VALUE)
    context, weights = layer(query[:, 1], VALUE, mask=MASK, projected_key=keys)
    assert context.shape == (3, 6) and weights.shape == (3, 5)
    assert_all_close(context, np.asarray(full_context)[:, 1], atol=1e-6)
    assert_all_close(weights, np.asarray(full_weights)[:, 1], atol=1e-6)


def test_separate_keys_and_no_mask():
    layer = BahdanauAttention(4)
    keys = RNG.normal(size=(3, 5, 2)).astype("float32")
    context, weights = layer(QUERY, VALUE, key=keys)
    np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, atol=1e-6)
    w1, w2, v = (
        w.numpy()
        for w in (layer.query_projection.kernel, layer.key_projection.kernel, layer.score_vector)
    )
    scores = np.tanh((QUERY @ w1)[:, :, None, :] + (keys @ w2)[:, None, :, :]) @ v
    expected = numpy_softmax(scores, np.ones((3, 5), bool))
    assert_all_close(weights, expected, atol=1e-5)
    assert_all_close(context, expected @ VALUE, atol=1e-5)


def test_gradients_reach_every_weight():
    for layer in (BahdanauAttention(3), LuongAttention("general")):
        query = tf.constant(QUERY)
        with tf.GradientTape() as tape:
            tape.watch(query)
            context, _ = layer(query, VALUE, mask=MASK)
            loss = tf.reduce_sum(context**2)
        gradients = tape.gradient(loss, [query] + layer.trainable_weights)
        assert all(g is not None and np.all(np.isfinite(g)) for g in gradients)
        assert len(layer.trainable_weights) == (3 if isinstance(layer, BahdanauAttention) else 1)


@pytest.mark.parametrize(
    "make_layer", [lambda: BahdanauAttention(5), lambda: LuongAttention("general", scale=True)]
)
def test_round_trips_in_a_functional_model(make_layer, tmp_path):
    layer = make_layer()
    check_config_round_trip(layer)
    query = keras.Input((None, 4))
    value = keras.Input((None, 6))
    mask = keras.Input((None,), dtype="bool")
    context, weights = layer(query, value, mask=mask)
    model = keras.Model([query, value, mask], [context, weights])
    inputs = [QUERY, VALUE, MASK]
    outputs = model(inputs)
    assert tuple(outputs[0].shape) == (3, 2, 6) and tuple(outputs[1].shape) == (3, 2, 5)
    check_keras_round_trip(model, inputs, tmp_path)
    check_saved_model_round_trip(model, inputs, tmp_path)


def test_value_mask_taken_from_embedding_is_explicit():
    """The layer never picks up the query's Keras mask as a value mask."""
    tokens = keras.Input((None,), dtype="int32")
    query = keras.layers.Embedding(10, 6, mask_zero=True)(tokens)
    value = keras.Input((None, 6))
    context, weights = LuongAttention("dot")(query, value)
    model = keras.Model([tokens, value], weights)
    got = np.asarray(model([np.array([[1, 0], [2, 3], [4, 0]]), VALUE]))
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-6)
    assert np.all(got > 0)


def test_mixed_precision_softmax_in_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        for layer in (BahdanauAttention(4), LuongAttention("general")):
            context, weights = layer(QUERY, VALUE, mask=MASK)
            assert context.dtype == "float16"
            assert weights.dtype == "float32"
            assert all(w.dtype == "float32" for w in layer.weights)
            weights = np.asarray(weights)
            np.testing.assert_allclose(weights[:2].sum(-1), 1.0, atol=1e-6)
            assert np.all(weights[2] == 0.0) and np.all(
                np.isfinite(np.asarray(context, dtype="float32"))
            )
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="units"):
        BahdanauAttention(0)
    with pytest.raises(ValueError, match="score"):
        LuongAttention("concat")
    with pytest.raises(ValueError, match="score='general'"):
        LuongAttention("dot")(QUERY, VALUE)
