"""The fused serving path (rnnapps.models.fused) against the Keras layers it re-implements."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps.models import RecurrentStack
from rnnapps.models.fused import check_stack, fused_classifier, fused_stack_call
from rnnapps.pipelines.base import Datasets

ATOL = 1e-5
FEATURES = 5
# Mixed lengths: a full row, a short one, an empty one, a single step.
LENGTHS = [7, 3, 0, 1]


def randomize(layer, seed: int = 0, scale: float = 0.5):
    """Non-trivial weights everywhere, so that a wrong gate order or a dropped bias shows."""
    rng = np.random.default_rng(seed)
    for weight in layer.weights:
        weight.assign(rng.normal(scale=scale, size=weight.shape).astype(weight.dtype))


def make_stack(cell, bidirectional, depth, residual, return_sequences, units=6, seed=0, recurrent_dropout=0.0):
    stack = RecurrentStack(units, cell=cell, depth=depth, bidirectional=bidirectional, residual=residual,
                           return_sequences=return_sequences, dropout=0.3 if depth > 1 else 0.0, seed=1,
                           recurrent_dropout=recurrent_dropout)
    stack.build((None, None, FEATURES))
    randomize(stack, seed)
    return stack


def inputs(batch=None, time=None, seed=1):
    batch, time = batch or len(LENGTHS), time or max(LENGTHS)
    x = np.random.default_rng(seed).normal(size=(batch, time, FEATURES)).astype("float32")
    return tf.constant(x), tf.sequence_mask(LENGTHS[:batch], time)


def assert_close(actual, expected):
    np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=ATOL, rtol=0)


@pytest.mark.parametrize("return_sequences", [False, True], ids=["last", "sequences"])
@pytest.mark.parametrize("depth", [1, 2], ids=["depth1", "depth2_residual"])
@pytest.mark.parametrize("bidirectional", [False, True], ids=["uni", "bi"])
@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_stack_matches_keras(cell, bidirectional, depth, return_sequences):
    stack = make_stack(cell, bidirectional, depth, residual=depth > 1, return_sequences=return_sequences)
    x, mask = inputs()
    for lstm_impl in ("block", "loop"):
        for m in (mask, None):
            expected = stack(x, mask=m, training=False)
            # The comparison means something only if the outputs do (not all ~0).
            assert float(tf.reduce_max(tf.abs(expected))) > 0.1
            # With return_sequences this compares the padded steps too.
            assert_close(fused_stack_call(stack, x, m, lstm_impl=lstm_impl), expected)


def test_an_lstm_trained_with_recurrent_dropout_matches_keras():
    stack = make_stack("lstm", True, 2, residual=True, return_sequences=False, recurrent_dropout=0.25)
    assert type(stack.recurrent_layers[0].forward_layer.cell).__name__ == "VariationalLSTMCell"
    x, mask = inputs()
    for lstm_impl in ("block", "loop"):
        assert_close(fused_stack_call(stack, x, mask, lstm_impl=lstm_impl), stack(x, mask=mask, training=False))


def test_simple_rnn_matches_keras():
    stack = make_stack("simple_rnn", True, 2, residual=True, return_sequences=True)
    x, mask = inputs()
    assert_close(fused_stack_call(stack, x, mask), stack(x, mask=mask, training=False))


def test_keras_padded_outputs_are_what_the_fused_path_mirrors():
    """Pins the Keras (CPU) behaviour at masked steps that fused_stack_call copies."""
    x, mask = inputs()
    uni = make_stack("lstm", False, 1, False, True)(x, mask=mask).numpy()
    bi = make_stack("lstm", True, 1, False, True)(x, mask=mask).numpy()
    # Unidirectional: the last real output repeats over the padding; an empty row stays zero.
    np.testing.assert_array_equal(uni[1, 3:], np.repeat(uni[1, 2:3], 4, axis=0))
    np.testing.assert_array_equal(uni[2], 0)
    # Bidirectional sets zero_output_for_mask when returning sequences.
    np.testing.assert_array_equal(bi[1, 3:], 0)
    np.testing.assert_array_equal(bi[2], 0)


@pytest.mark.parametrize("cell,lstm_impl", [("lstm", "block"), ("lstm", "loop"), ("gru", "block")])
def test_unknown_shapes_in_tf_function(cell, lstm_impl):
    stack = make_stack(cell, True, 2, residual=True, return_sequences=True)
    last = make_stack(cell, True, 1, residual=False, return_sequences=False, seed=3)

    @tf.function(input_signature=[tf.TensorSpec([None, None, FEATURES]), tf.TensorSpec([None, None], tf.bool)])
    def both(x, mask):
        return (fused_stack_call(stack, x, mask, lstm_impl=lstm_impl),
                fused_stack_call(last, x, mask, lstm_impl=lstm_impl))

    for batch, time in ((4, 7), (2, 3)):
        x, _ = inputs(batch, time, seed=batch)
        mask = tf.sequence_mask(np.minimum(LENGTHS[:batch], time), time)
        sequences, final = both(x, mask)
        assert sequences.shape == (batch, time, stack.output_width)
        assert_close(sequences, stack(x, mask=mask, training=False))
        assert_close(final, last(x, mask=mask, training=False))


def swapped_gates(stack, first: int, second: int):
    """A copy of ``stack`` whose recurrent weights have gate blocks ``first`` and ``second`` swapped."""
    twin = RecurrentStack.from_config(stack.get_config())
    twin.build((None, None, FEATURES))
    units = stack.units

    def swap(value):
        value = value.copy()
        a, b = slice(first * units, (first + 1) * units), slice(second * units, (second + 1) * units)
        value[..., a], value[..., b] = value[..., b].copy(), value[..., a].copy()
        return value

    twin.set_weights([swap(value) for value in stack.get_weights()])
    return twin


@pytest.mark.parametrize("cell,first,second", [("lstm", 1, 2), ("lstm", 2, 3), ("gru", 0, 1)])
def test_a_wrong_gate_order_would_not_pass(cell, first, second):
    """The equality tests above can fail: the same weights in another gate order give other outputs."""
    stack = make_stack(cell, True, 1, residual=False, return_sequences=True)
    x, mask = inputs()
    expected = stack(x, mask=mask, training=False)
    wrong = fused_stack_call(swapped_gates(stack, first, second), x, mask)
    assert float(tf.reduce_max(tf.abs(wrong - expected))) > 1e-2


def test_rejects_a_pre_padded_mask():
    stack = make_stack("lstm", True, 1, False, False)
    x, _ = inputs()
    pre_padded = tf.reverse(tf.sequence_mask(LENGTHS, max(LENGTHS)), axis=[1])
    with pytest.raises(tf.errors.InvalidArgumentError, match="post-padded"):
        fused_stack_call(stack, x, pre_padded)


def test_unsupported_stacks_raise():
    x, _ = inputs()
    stateful = RecurrentStack(4, return_state=True)
    stateful.build(x.shape)
    with pytest.raises(NotImplementedError, match="return_state"):
        fused_stack_call(stateful, x)
    with pytest.raises(ValueError, match="lstm_impl"):
        fused_stack_call(stateful, x, lstm_impl="xla")
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = RecurrentStack(4)
    finally:
        keras.config.set_dtype_policy(previous)
    # Told up front, before any tracing: serving can keep the Keras path for such a model.
    with pytest.raises(NotImplementedError, match="float16"):
        check_stack(mixed)


# --- the sentiment classifier -------------------------------------------------------------------

VOCABULARY = ["", "[UNK]", "good", "bad", "film", "plot", "wonderful", "dull", "the", "a"]
REVIEWS = [
    "a wonderful film",
    "",  # no token: one masked step after clip_length, an empty row
    "dull plot , bad film , the worst",
    " ".join(["good film"] * 20),  # longer than max_length: clip_length keeps head and tail
    "unknown words only",
]


def sentiment_model(**overrides):
    from rnnapps.pipelines.sentiment import SentimentConfig, SentimentData, SentimentPipeline

    config = SentimentConfig(vocab_size=len(VOCABULARY), embedding_dim=4, units=5, max_length=12, **overrides)
    datasets = Datasets(None, None, None, info=SentimentData(sizes={}, vocabulary=VOCABULARY))
    model = SentimentPipeline().build_model(config, datasets)
    for index, name in enumerate(("embedding", "encoder", "probability")):
        randomize(model.get_layer(name), seed=index, scale=0.8)
    return model


def ids_and_expected(model):
    to_ids = keras.Model(model.input, model.get_layer("clip_length").output)
    from_ids = keras.Model(model.get_layer("clip_length").output, model.output)
    ids = to_ids(tf.constant(REVIEWS), training=False)
    assert int(tf.reduce_sum(tf.cast(ids[1] != 0, tf.int32))) == 0 and ids.shape[1] == 12
    return ids, from_ids(ids, training=False)


@pytest.mark.parametrize("overrides", [
    {},  # the cpu-preset shape: BiLSTM, max+mean pooling, dropouts
    {"cell": "gru", "depth": 2, "residual": True, "bidirectional": False, "pooling": "last"},
    {"cell": "lstm", "depth": 2, "residual": True, "pooling": "mean", "dropout": 0.0, "embedding_dropout": 0.0},
], ids=["bilstm_pooled", "gru2_last", "bilstm2_mean"])
def test_classifier_matches_keras(overrides):
    model = sentiment_model(**overrides)
    ids, expected = ids_and_expected(model)
    probabilities = np.asarray(expected)[:, 0]
    assert probabilities.std() > 1e-3  # the reviews are told apart, so equality is informative
    for lstm_impl in ("block", "loop"):
        got = fused_classifier(model, lstm_impl=lstm_impl)(ids)
        assert got.shape == expected.shape
        assert_close(got, expected)


def test_classifier_hands_large_batches_to_keras(tmp_path):
    model = sentiment_model()
    ids, expected = ids_and_expected(model)
    dispatching = fused_classifier(model, keras_above_batch=2)
    module = tf.Module()
    module.fused = dispatching
    module.serve = tf.function(dispatching, input_signature=[tf.TensorSpec([None, None], ids.dtype)])
    traced = module.serve.get_concrete_function().graph.as_graph_def()
    ops = {node.op for node in traced.node} | {node.op for f in traced.library.function for node in f.node_def}
    assert "BlockLSTMV2" in ops and {"While", "StatelessWhile"} & ops  # both paths, one cond
    tf.saved_model.save(module, str(tmp_path / "dispatching"))
    loaded = tf.saved_model.load(str(tmp_path / "dispatching"))
    for rows in (slice(0, 2), slice(0, 5)):  # fused (2 rows), Keras (5 rows)
        assert_close(loaded.serve(ids[rows]), expected[rows])
    with pytest.raises(ValueError, match="keras_above_batch"):
        fused_classifier(model, keras_above_batch=0)


def test_classifier_names_an_unsupported_layer():
    text = keras.Input(shape=(None,), dtype="int64", name="ids")
    start = keras.layers.Identity(name="clip_length")(text)
    x = keras.layers.Embedding(10, 4, mask_zero=True, name="embedding")(start)
    encoded = RecurrentStack(3, return_sequences=False, name="encoder")(x)
    x = keras.layers.LayerNormalization(name="norm")(encoded)
    model = keras.Model(text, keras.layers.Dense(1, activation="sigmoid", name="probability")(x))
    with pytest.raises(NotImplementedError, match="'norm'"):
        fused_classifier(model)
    with pytest.raises(NotImplementedError, match="no layer named 'text_to_ids'"):
        fused_classifier(keras.Model(text, encoded), start="text_to_ids")


def test_classifier_saved_model_round_trip(tmp_path):
    model = sentiment_model()
    ids, expected = ids_and_expected(model)
    module = tf.Module()
    module.fused = fused_classifier(model)
    module.serve = tf.function(module.fused, input_signature=[tf.TensorSpec([None, None], ids.dtype)])
    tf.saved_model.save(module, str(tmp_path / "fused"))
    del module
    loaded = tf.saved_model.load(str(tmp_path / "fused"))
    assert_close(loaded.serve(ids), expected)
    # Another batch and time size than the one traced first.
    from_ids = keras.Model(model.get_layer("clip_length").output, model.output)
    assert_close(loaded.serve(ids[:2, :3]), from_ids(ids[:2, :3], training=False))
    # The fast path is what got saved: one BlockLSTMV2 per direction, no while loop.
    graph = loaded.serve.get_concrete_function(tf.TensorSpec([None, None], ids.dtype)).graph
    ops = [op.type for op in graph.get_operations()]
    for function in graph.as_graph_def().library.function:
        ops += [node.op for node in function.node_def]
    assert ops.count("BlockLSTMV2") == 2
    assert not {"While", "StatelessWhile"} & set(ops)
