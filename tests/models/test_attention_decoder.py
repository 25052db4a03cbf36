import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps.models.attention_decoder import AttentionDecoder, AttentionDecoderCell
from rnnapps.models.decoding import beam_search_decode, greedy_decode
from tests.layer_checks import (
    assert_all_close,
    check_config_round_trip,
    check_keras_round_trip,
    check_saved_model_round_trip,
)

RNG = np.random.default_rng(0)
TARGETS = RNG.normal(size=(2, 4, 3)).astype("float32")
MEMORY = RNG.normal(size=(2, 5, 6)).astype("float32")
MEMORY_MASK = np.array([[True] * 5, [True, True, False, False, False]])
VARIANTS = [("lstm", "bahdanau"), ("gru", "luong"), ("lstm", "luong"), ("gru", "bahdanau")]


def loop_steps(cell, inputs, memory, memory_mask, states=None):
    states = cell.get_initial_state(batch_size=inputs.shape[0]) if states is None else states
    keys = cell.precompute_keys(memory)
    outputs, weights = [], []
    for t in range(inputs.shape[1]):
        output, states, step_weights = cell.step(inputs[:, t], states, memory, memory_mask, keys)
        outputs.append(output)
        weights.append(step_weights)
    return np.stack(outputs, 1), np.stack(weights, 1), states


@pytest.mark.parametrize("cell, attention", VARIANTS)
def test_teacher_forcing_equals_manual_steps(cell, attention):
    decoder = AttentionDecoder(
        4, cell=cell, attention=attention, return_attention=True, return_state=True
    )
    outputs, weights, *states = decoder(TARGETS, MEMORY, encoder_outputs_mask=MEMORY_MASK)
    assert outputs.shape == (2, 4, 4) and weights.shape == (2, 4, 5)
    assert weights.dtype == "float32"
    assert len(states) == (3 if cell == "lstm" else 2)
    expected_outputs, expected_weights, expected_states = loop_steps(
        decoder.cell, TARGETS, MEMORY, MEMORY_MASK
    )
    assert_all_close(outputs, expected_outputs, atol=1e-5)
    assert_all_close(weights, expected_weights, atol=1e-6)
    assert_all_close(states, expected_states, atol=1e-5)
    weights = np.asarray(weights)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    assert np.all(weights[1, :, 2:] == 0.0)
    # The state ends with the attentional vector, which is the last output (input feeding).
    assert_all_close(states[-1], np.asarray(outputs)[:, -1], atol=1e-6)


def test_cell_runs_in_a_stock_keras_rnn():
    cell = AttentionDecoderCell(4, cell="lstm", attention="bahdanau")
    rnn = keras.layers.RNN(cell, return_sequences=True)
    with cell.attend_to(MEMORY, MEMORY_MASK):
        outputs = rnn(TARGETS)
    expected, _, _ = loop_steps(cell, TARGETS, MEMORY, MEMORY_MASK)
    assert_all_close(outputs, expected, atol=1e-5)
    with pytest.raises(ValueError, match="attend_to"):
        rnn(TARGETS)


def test_input_feeding_changes_the_next_step():
    cell = AttentionDecoderCell(4, cell="gru", attention="luong")
    states = cell.get_initial_state(batch_size=2)
    first, _, _ = cell.step(TARGETS[:, 0], states, MEMORY, MEMORY_MASK)
    changed = [states[0], states[1] + 1.0]
    second, _, _ = cell.step(TARGETS[:, 0], changed, MEMORY, MEMORY_MASK)
    assert not np.allclose(first, second)


def test_padded_target_steps_and_initial_state():
    decoder = AttentionDecoder(4, cell="lstm", return_attention=True)
    encoder_state = [RNG.normal(size=(2, 4)).astype("float32") for _ in range(2)]
    padded = np.concatenate([TARGETS, np.zeros((2, 2, 3), "float32")], axis=1)
    mask = np.array([[True] * 4 + [False] * 2] * 2)
    outputs, weights = decoder(
        padded,
        MEMORY,
        initial_state=encoder_state,
        inputs_mask=mask,
        encoder_outputs_mask=MEMORY_MASK,
    )
    start = encoder_state + [np.zeros((2, 4), "float32")]
    expected, expected_weights, _ = loop_steps(
        decoder.cell, TARGETS, MEMORY, MEMORY_MASK, states=start
    )
    assert_all_close(np.asarray(outputs)[:, :4], expected, atol=1e-5)
    assert_all_close(np.asarray(weights)[:, :4], expected_weights, atol=1e-6)
    assert np.all(np.asarray(outputs)[:, 4:] == 0.0) and np.all(np.asarray(weights)[:, 4:] == 0.0)
    with pytest.raises(ValueError, match="initial_state"):
        decoder(TARGETS, MEMORY, initial_state=encoder_state[:1])


def test_masks_are_picked_up_from_keras_masks():
    source = keras.Input((None,), dtype="int32")
    target = keras.Input((None,), dtype="int32")
    memory = keras.layers.Embedding(9, 6, mask_zero=True)(source)
    embedded = keras.layers.Embedding(9, 3, mask_zero=True)(target)
    outputs, weights = AttentionDecoder(4, return_attention=True)(embedded, memory)
    model = keras.Model([source, target], weights)
    got = np.asarray(
        model([np.array([[3, 4, 0, 0], [5, 6, 7, 8]]), np.array([[1, 2, 0], [1, 2, 3]])])
    )
    assert np.all(got[0, :2, 2:] == 0.0) and np.all(got[0, 2] == 0.0)
    np.testing.assert_allclose(got[1].sum(-1), 1.0, atol=1e-6)


@pytest.mark.parametrize("cell, attention", VARIANTS[:2])
def test_round_trips_in_a_functional_model(cell, attention, tmp_path):
    layer = AttentionDecoder(5, cell=cell, attention=attention, return_attention=True)
    check_config_round_trip(layer)
    check_config_round_trip(layer.cell)
    targets = keras.Input((None, 3))
    memory = keras.Input((None, 6))
    memory_mask = keras.Input((None,), dtype="bool")
    outputs, weights = layer(targets, memory, encoder_outputs_mask=memory_mask)
    projected = keras.layers.Dense(7)(outputs)
    model = keras.Model([targets, memory, memory_mask], [projected, weights])
    inputs = [TARGETS, MEMORY, MEMORY_MASK]
    result = model(inputs)
    assert tuple(result[0].shape) == (2, 4, 7) and tuple(result[1].shape) == (2, 4, 5)
    reloaded = check_keras_round_trip(model, inputs, tmp_path)
    check_saved_model_round_trip(model, inputs, tmp_path)
    decoder = next(x for x in reloaded.layers if isinstance(x, AttentionDecoder))
    assert decoder.get_config() == layer.get_config()


def test_gradients_reach_every_weight():
    decoder = AttentionDecoder(4, cell="lstm", attention="bahdanau")
    memory = tf.constant(MEMORY)
    with tf.GradientTape() as tape:
        tape.watch(memory)
        loss = tf.reduce_sum(decoder(TARGETS, memory, encoder_outputs_mask=MEMORY_MASK) ** 2)
    gradients = tape.gradient(loss, [memory] + decoder.trainable_weights)
    # LSTM kernel, recurrent kernel, bias; W1, W2, v; W_c.
    assert len(decoder.trainable_weights) == 7
    assert all(g is not None and np.all(np.isfinite(g)) for g in gradients)


def test_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        decoder = AttentionDecoder(4, cell="gru", attention="bahdanau", return_attention=True)
        outputs, weights = decoder(TARGETS, MEMORY, encoder_outputs_mask=MEMORY_MASK)
        assert outputs.dtype == "float16" and weights.dtype == "float32"
        assert all(w.dtype == "float32" for w in decoder.weights)
        np.testing.assert_allclose(np.asarray(weights).sum(-1), 1.0, atol=1e-3)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_step_drives_greedy_and_beam_search_in_a_tf_function():
    vocab, start, end = 8, 1, 2
    embedding = keras.layers.Embedding(vocab, 3)
    decoder = AttentionDecoder(4, cell="lstm", attention="luong")
    projection = keras.layers.Dense(vocab)
    decoder(embedding(np.ones((2, 1), "int32")), MEMORY)
    projection.build((None, 4))

    def step_fn(tokens, states):
        outputs, decoder_states, weights = decoder.step(
            embedding(tokens), states["decoder"], states["memory"], states["mask"], states["keys"]
        )
        log_probs = tf.nn.log_softmax(projection(outputs))
        return log_probs, {**states, "decoder": decoder_states}, weights

    @tf.function
    def translate(memory, mask):
        states = {
            "decoder": decoder.cell.get_initial_state(batch_size=tf.shape(memory)[0]),
            "memory": memory,
            "mask": mask,
            "keys": decoder.cell.precompute_keys(memory),
        }
        greedy = greedy_decode(step_fn, states, start, end, 6, batch_size=tf.shape(memory)[0])
        beam = beam_search_decode(step_fn, states, start, end, 6, beam_width=1)
        return greedy, beam

    greedy, beam = translate(tf.constant(MEMORY), tf.constant(MEMORY_MASK))
    assert greedy.ids.shape == (2, 6) and greedy.extras.shape == (2, 6, 5)
    np.testing.assert_array_equal(greedy.ids, beam.ids)
    np.testing.assert_allclose(greedy.extras, beam.extras, atol=1e-6)
    assert np.all(np.asarray(greedy.extras)[1, :, 2:] == 0.0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"units": 0}, "units"),
        ({"cell": "simple_rnn"}, "cell"),
        ({"attention": "multihead"}, "attention"),
        ({"attention_units": 0}, "attention_units"),
        ({"luong_score": "concat"}, "luong_score"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"units": 4, **kwargs}
    with pytest.raises(ValueError, match=message):
        AttentionDecoderCell(**arguments)
    with pytest.raises(ValueError, match=message):
        AttentionDecoder(**arguments)


def test_wrong_number_of_states_is_named():
    cell = AttentionDecoderCell(4, cell="lstm")
    with pytest.raises(ValueError, match="states"):
        cell.step(TARGETS[:, 0], cell.get_initial_state(batch_size=2)[:2], MEMORY)


def test_trains_under_xla():
    """The decoder loop's gradient compiles with jit_compile=True (GPU training default)."""
    source = keras.Input((None,), dtype="int32")
    target = keras.Input((None,), dtype="int32")
    memory, hidden, carry = keras.layers.LSTM(4, return_sequences=True, return_state=True)(
        keras.layers.Embedding(9, 3, mask_zero=True)(source)
    )
    embedded = keras.layers.Embedding(9, 3, mask_zero=True)(target)
    outputs = AttentionDecoder(4, cell="lstm", attention="bahdanau")(
        embedded, memory, initial_state=[hidden, carry]
    )
    model = keras.Model([source, target], keras.layers.Dense(9)(outputs))
    model.compile(
        "adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True), jit_compile=True
    )
    tokens = np.random.default_rng(1).integers(1, 9, size=(4, 3))
    history = model.fit([tokens, tokens], tokens, epochs=2, batch_size=4, verbose=0)
    assert np.all(np.isfinite(history.history["loss"]))
