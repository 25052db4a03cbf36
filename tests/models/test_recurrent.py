import keras
import numpy as np
import pytest

from rnnapps.models import RecurrentStack, SequencePooling, VariationalLSTMCell
from tests.layer_checks import (
    assert_all_close,
    check_config_round_trip,
    check_keras_round_trip,
    check_layer,
    check_saved_model_round_trip,
    functional_model,
)


@pytest.mark.parametrize("cell", ["lstm", "gru", "simple_rnn"])
def test_recurrent_stack_round_trips(cell, tmp_path):
    x = np.random.default_rng(0).normal(size=(3, 7, 5)).astype("float32")
    layer = RecurrentStack(4, cell=cell, depth=2, bidirectional=True, dropout=0.1, residual=True, return_sequences=True, seed=1)
    check_layer(layer, x, tmp_path, expected_output_shape=(3, 7, 8))


def test_an_lstm_stack_with_recurrent_dropout_uses_the_fused_step_cell(tmp_path):
    x = np.random.default_rng(5).normal(size=(3, 7, 5)).astype("float32")
    layer = RecurrentStack(4, cell="lstm", depth=2, recurrent_dropout=0.2, return_sequences=True, seed=1)
    check_layer(layer, x, tmp_path, expected_output_shape=(3, 7, 8))
    cells = [rnn.forward_layer.cell for rnn in layer.recurrent_layers]
    assert all(isinstance(cell, VariationalLSTMCell) and cell.implementation == 2 for cell in cells)
    assert not np.allclose(layer(x, training=True), layer(x, training=True))


def test_last_step_output_shape_and_states(tmp_path):
    x = np.ones((2, 6, 3), "float32")
    layer = RecurrentStack(5, cell="lstm", depth=1, bidirectional=True, return_state=True)
    outputs = layer(x)
    assert [tuple(o.shape) for o in outputs] == [(2, 10)] + [(2, 5)] * 4


def test_masked_equals_truncated():
    """A post-padded, masked sequence gives the same result as the unpadded one."""
    rng = np.random.default_rng(1)
    real = rng.normal(size=(1, 4, 3)).astype("float32")
    padded = np.concatenate([real, rng.normal(size=(1, 3, 3)).astype("float32")], axis=1)
    mask = np.array([[True] * 4 + [False] * 3])
    for bidirectional in (False, True):
        layer = RecurrentStack(6, cell="gru", depth=2, bidirectional=bidirectional)
        assert_all_close(layer(padded, mask=mask), layer(real), atol=1e-5)
        seq = RecurrentStack(6, cell="lstm", depth=2, bidirectional=bidirectional, return_sequences=True)
        assert_all_close(seq(padded, mask=mask)[:, :4], seq(real), atol=1e-5)


def test_mask_propagates_through_embedding():
    tokens = keras.Input((None,), dtype="int32")
    x = keras.layers.Embedding(10, 4, mask_zero=True)(tokens)
    x = RecurrentStack(3, return_sequences=True)(x)
    model = keras.Model(tokens, SequencePooling(("mean",))(x))
    a = model(np.array([[1, 2, 3, 0, 0]]))
    b = model(np.array([[1, 2, 3]]))
    assert_all_close(a, b, atol=1e-5)
    # The sequence output carries the padding mask on to the next layer.
    embedding, stack = keras.layers.Embedding(10, 4, mask_zero=True), RecurrentStack(3, return_sequences=True)
    ids = np.array([[1, 2, 3, 0, 0]])
    mask = embedding.compute_mask(ids)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(stack.compute_mask(embedding(ids), mask)),
                                  [[True, True, True, False, False]])


def test_residual_adds_input():
    layer = RecurrentStack(4, depth=2, bidirectional=True, residual=True, return_sequences=True)
    plain = RecurrentStack(4, depth=2, bidirectional=True, residual=False, return_sequences=True)
    x = np.random.default_rng(2).normal(size=(2, 5, 8)).astype("float32")
    layer.build(x.shape)
    plain.build(x.shape)
    plain.set_weights(layer.get_weights())
    first = plain.recurrent_layers[0](x)
    assert_all_close(layer(x), plain(x) + first, atol=1e-5)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cell": "transformer"}, "cell"),
        ({"depth": 0}, "depth"),
        ({"dropout": 1.5}, "dropout"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        RecurrentStack(4, **kwargs)


def test_sequence_pooling_masked(tmp_path):
    x = np.array([[[1.0], [5.0], [100.0]], [[-2.0], [-4.0], [-6.0]]], "float32")
    mask = np.array([[True, True, False], [True, True, True]])
    pooled = SequencePooling(("max", "mean"))(x, mask=mask)
    np.testing.assert_allclose(pooled, [[5.0, 3.0], [-2.0, -4.0]])
    empty = SequencePooling()(x, mask=np.zeros((2, 3), bool))
    np.testing.assert_allclose(empty, np.zeros((2, 2)))
    check_layer(SequencePooling(("max",)), x, tmp_path, expected_output_shape=(2, 1))
    with pytest.raises(ValueError, match="modes"):
        SequencePooling(("median",))


def test_variational_lstm_cell_round_trips(tmp_path):
    x = np.random.default_rng(2).normal(size=(3, 6, 4)).astype("float32")
    cell = VariationalLSTMCell(5, recurrent_dropout=0.3, seed=3)
    assert cell.implementation == 2 and cell.dropout_mask_count is None
    assert check_config_round_trip(cell).recurrent_dropout == 0.3
    # The cell is the registered piece; keras.layers.RNN carries it through both formats.
    model = functional_model(keras.layers.RNN(cell, return_sequences=True), x)
    assert tuple(model(x).shape) == (3, 6, 5)
    check_keras_round_trip(model, x, tmp_path)
    check_saved_model_round_trip(model, x, tmp_path)


def test_variational_lstm_cell_is_an_lstm_with_one_state_mask_for_every_gate_and_step():
    """Training output equals a NumPy LSTM whose state is multiplied by one fixed mask at every step."""
    units, rng = 4, np.random.default_rng(4)
    x = rng.normal(size=(2, 5, 3)).astype("float32")
    fixed_mask = (rng.random((2, units)) > 0.5).astype("float32") / 0.5

    class FixedMaskCell(VariationalLSTMCell):
        def get_recurrent_dropout_mask(self, step_input):
            return keras.ops.convert_to_tensor(fixed_mask)

    layer = keras.layers.RNN(FixedMaskCell(units, recurrent_dropout=0.5), return_sequences=True)
    got = keras.ops.convert_to_numpy(layer(x, training=True))
    kernel, recurrent_kernel, bias = (keras.ops.convert_to_numpy(w) for w in layer.cell.weights)

    def sigmoid(z):
        return 1 / (1 + np.exp(-z))

    state, carry, expected = np.zeros((2, units)), np.zeros((2, units)), []
    for t in range(x.shape[1]):
        z = x[:, t] @ kernel + (state * fixed_mask) @ recurrent_kernel + bias
        i, f, g, o = np.split(z, 4, axis=-1)
        carry = sigmoid(f) * carry + sigmoid(i) * np.tanh(g)
        state = sigmoid(o) * np.tanh(carry)
        expected.append(state)
    assert_all_close(got, np.stack(expected, axis=1), atol=1e-5)
    stock = keras.layers.RNN(keras.layers.LSTMCell(units), return_sequences=True)
    stock.build(x.shape)
    stock.set_weights(layer.get_weights())
    assert_all_close(layer(x, training=False), stock(x, training=False), atol=1e-6)
    assert not np.allclose(got, keras.ops.convert_to_numpy(stock(x, training=True)), atol=1e-4)
