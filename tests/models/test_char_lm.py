import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps.data.text_corpus import make_stream_dataset
from rnnapps.models.char_lm import (
    ResetStatesAtEpochStart,
    TruncatedBPTTModel,
    build_char_lm,
    initial_states,
    state_names,
    step_function,
)
from rnnapps.models.sampling import generate_tokens
from tests.layer_checks import (
    assert_all_close,
    check_keras_round_trip,
    check_saved_model_round_trip,
)

VOCAB = 7


def tiny_model(cell="lstm", depth=1, dropout=0.0, units=6, recurrent_dropout=0.0):
    return build_char_lm(
        VOCAB, embedding_dim=4, units=units, cell=cell, depth=depth, dropout=dropout, seed=1,
        recurrent_dropout=recurrent_dropout,
    )


def compiled(language_model, batch_size, learning_rate=0.01):
    model = TruncatedBPTTModel(language_model, batch_size=batch_size)
    model.compile(
        keras.optimizers.Adam(learning_rate, clipnorm=1.0),
        keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def stream(length=61, batch_size=2, sequence_length=5, seed=0):
    ids = np.random.default_rng(seed).integers(1, VOCAB, size=length)
    return ids, make_stream_dataset(ids, batch_size, sequence_length)


def test_stream_batches_continue_row_by_row():
    ids = np.arange(103)
    batches = [(x.numpy(), y.numpy()) for x, y in make_stream_dataset(ids, batch_size=4, sequence_length=6)]
    assert len(batches) == 4  # rows of 25 ids hold 4 windows of 6; the rest is dropped
    for inputs, targets in batches:
        assert inputs.shape == targets.shape == (4, 6) and inputs.dtype == np.int32
        np.testing.assert_array_equal(targets, inputs + 1)
    for (previous, _), (current, _) in zip(batches, batches[1:], strict=False):
        np.testing.assert_array_equal(current[:, 0], previous[:, -1] + 1)
    rows = np.concatenate([inputs for inputs, _ in batches], axis=1)
    np.testing.assert_array_equal(rows[:, 0], [0, 25, 50, 75])
    with pytest.raises(ValueError, match="too few"):
        make_stream_dataset(np.arange(10), batch_size=4, sequence_length=6)


@pytest.mark.parametrize("cell, depth", [("lstm", 2), ("gru", 1)])
def test_functional_model_shapes_and_round_trips(cell, depth, tmp_path):
    model = tiny_model(cell, depth, dropout=0.2, recurrent_dropout=0.1)
    names = state_names(cell, depth)
    assert [spec.name for spec in model.inputs[1:]] == names
    tokens = np.random.default_rng(0).integers(0, VOCAB, size=(3, 5)).astype("int32")
    inputs = [tokens] + [np.random.default_rng(1).normal(size=(3, 6)).astype("float32") for _ in names]
    logits, *states = model(inputs)
    assert logits.shape == (3, 5, VOCAB) and len(states) == len(names)
    check_keras_round_trip(model, inputs, tmp_path)
    check_saved_model_round_trip(model, inputs, tmp_path)


def test_recurrent_dropout_masks_the_state_only_in_training():
    plain = tiny_model(depth=2)
    dropped = tiny_model(depth=2, recurrent_dropout=0.5)
    dropped.set_weights(plain.get_weights())
    cells = [layer.cell for layer in dropped.layers if isinstance(layer, keras.layers.RNN)]
    assert [(type(cell).__name__, cell.recurrent_dropout, cell.implementation) for cell in cells] == [
        ("VariationalLSTMCell", 0.5, 2)
    ] * 2
    tokens = tf.constant(np.random.default_rng(3).integers(0, VOCAB, size=(4, 9)), tf.int32)
    inputs = [tokens, *initial_states(plain, 4)]
    assert_all_close(dropped(inputs, training=False)[0], plain(inputs, training=False)[0], atol=1e-6)
    assert not np.allclose(dropped(inputs, training=True)[0], plain(inputs, training=True)[0], atol=1e-4)


def test_state_input_continues_the_sequence():
    """Running two halves with the carried state equals running the whole sequence."""
    model = tiny_model(depth=2)
    tokens = tf.constant(np.random.default_rng(2).integers(0, VOCAB, size=(2, 8)), tf.int32)
    whole, *_ = model([tokens, *initial_states(model, 2)])
    first, *states = model([tokens[:, :4], *initial_states(model, 2)])
    second, *_ = model([tokens[:, 4:], *states])
    assert_all_close(tf.concat([first, second], axis=1), whole, atol=1e-5)


def test_train_step_carries_state_across_batches():
    language_model = tiny_model()
    model = compiled(language_model, batch_size=2)
    batches = [(x, y) for x, y in stream()[1]]
    state = initial_states(language_model, 2)
    for tokens, targets in batches[:3]:
        # The expected carry: the final states from the weights before the update.
        _, *expected = language_model([tokens, *state])
        model.train_on_batch(tokens, targets)
        assert_all_close([variable.value for variable in model.train_states], expected, atol=1e-5)
        state = expected
    model.reset_states()
    assert all(not np.any(variable.numpy()) for variable in model.train_states)


def test_states_reset_at_each_epoch_start():
    model = compiled(tiny_model(), batch_size=2)
    seen = []

    class RecordStates(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append((batch, float(np.abs(model.train_states[0].numpy()).sum())))

    model.fit(stream()[1], epochs=2, callbacks=[ResetStatesAtEpochStart(), RecordStates()], verbose=0)
    firsts = [total for batch, total in seen if batch == 0]
    later = [total for batch, total in seen if batch > 0]
    assert len(firsts) == 2 and firsts == [0.0, 0.0]
    assert all(total > 0 for total in later)


def test_evaluate_carries_state_and_starts_from_zero():
    """Evaluating batch by batch equals one pass over each whole row."""
    language_model = tiny_model(cell="gru")
    model = compiled(language_model, batch_size=2)
    ids, dataset = stream(length=41, sequence_length=4)
    rows = np.concatenate([x.numpy() for x, _ in dataset], axis=1)
    targets = np.concatenate([y.numpy() for _, y in dataset], axis=1)
    logits, *_ = language_model([tf.constant(rows), *initial_states(language_model, 2)])
    expected = keras.losses.SparseCategoricalCrossentropy(from_logits=True)(targets, logits)
    for variable in model.eval_states:
        variable.assign(np.ones(variable.shape, "float32"))
    first = model.evaluate(dataset, verbose=0)
    assert np.any(model.eval_states[0].numpy())
    second = model.evaluate(dataset, verbose=0)
    np.testing.assert_allclose([first, second], [float(expected)] * 2, rtol=1e-5)


def test_loss_drops_on_repetitive_text():
    keras.utils.set_random_seed(0)
    ids = np.tile(np.array([1, 2, 3, 4, 5, 6, 1, 3, 5]), 40)
    dataset = make_stream_dataset(ids, batch_size=4, sequence_length=10)
    model = compiled(build_char_lm(VOCAB, embedding_dim=8, units=24, seed=0), batch_size=4, learning_rate=0.03)
    history = model.fit(dataset, epochs=5, callbacks=[ResetStatesAtEpochStart()], verbose=0).history["loss"]
    assert len(dataset) * 5 <= 50
    assert history[-1] < 0.5 * history[0], history


@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.15], ids=["stock_lstm", "variational_cell"])
def test_mixed_precision_keeps_logits_and_states_float32(recurrent_dropout):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        language_model = tiny_model(depth=2, recurrent_dropout=recurrent_dropout)
        assert language_model.get_layer("lstm_0").compute_dtype == "float16"
        tokens = tf.zeros((2, 5), tf.int32)
        logits, *states = language_model([tokens, *initial_states(language_model, 2)])
        assert logits.dtype == tf.float32 and all(state.dtype == tf.float32 for state in states)
        model = compiled(language_model, batch_size=2)
        model.fit(stream()[1].take(2), verbose=0)
        assert all(variable.dtype == "float32" and np.any(variable.numpy()) for variable in model.train_states)
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_wrapper_round_trip(tmp_path):
    model = compiled(tiny_model(), batch_size=2)
    model.fit(stream()[1].take(1), verbose=0)
    path = tmp_path / "bptt.keras"
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, TruncatedBPTTModel) and reloaded.batch_size == 2
    tokens = tf.ones((2, 3), tf.int32)
    assert_all_close(reloaded(tokens), model(tokens))
    assert_all_close(reloaded.train_states[0].value, model.train_states[0].value)


def test_generation_with_step_function_matches_full_rerun():
    model = tiny_model(cell="gru", depth=2)
    prompt = tf.constant([[1, 2, 3]], tf.int32)
    generate = tf.function(
        lambda prompt: generate_tokens(step_function(model), initial_states(model, 1), prompt, 4, temperature=0.0)
    )
    generated = generate(prompt).numpy()[0].tolist()
    sequence = [1, 2, 3]
    for _ in range(4):
        logits, *_ = model([tf.constant([sequence], tf.int32), *initial_states(model, 1)])
        sequence.append(int(np.argmax(logits[0, -1])))
    assert generated == sequence[3:]


@pytest.mark.parametrize(
    "kwargs, message",
    [({"cell": "rnn"}, "cell"), ({"depth": 0}, "depth"), ({"dropout": 1.0}, "dropout"), ({"units": 0}, "units"),
     ({"recurrent_dropout": -0.1}, "recurrent_dropout")],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_char_lm(VOCAB, **kwargs)


def test_wrapper_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        TruncatedBPTTModel(tiny_model(), batch_size=0)
    plain = keras.Sequential([keras.Input((None,), dtype="int32"), keras.layers.Embedding(VOCAB, 2)])
    with pytest.raises(ValueError, match="language_model"):
        TruncatedBPTTModel(plain, batch_size=2)


@pytest.mark.parametrize("recurrent_dropout", [0.0, 0.15], ids=["stock_lstm", "variational_cell"])
def test_generation_exports_as_saved_model(tmp_path, recurrent_dropout):
    model = tiny_model(depth=2, recurrent_dropout=recurrent_dropout)

    class Generator(tf.Module):
        def __init__(self, language_model):
            super().__init__()
            self.language_model = language_model
            # As rnnapps.export's ExportArchive does: keras.layers.RNN draws its dropout masks (from a
            # seed generator's state variable) even at inference, and tf.Module does not track that state.
            self.model_variables = list(language_model.variables)

        @tf.function(
            input_signature=[
                tf.TensorSpec([None, None], tf.int32),
                tf.TensorSpec([], tf.int32),
                tf.TensorSpec([], tf.float32),
                tf.TensorSpec([], tf.int32),
            ]
        )
        def generate(self, prompt, length, temperature, seed):
            states = initial_states(self.language_model, tf.shape(prompt)[0])
            step = step_function(self.language_model)
            return generate_tokens(step, states, prompt, length, temperature, 3, seed, start_id=1)

    generator = Generator(model)
    prompt = tf.constant([[1, 2], [3, 4]], tf.int32)
    greedy = generator.generate(prompt, 5, 0.0, 0).numpy()
    sampled = generator.generate(prompt, 5, 1.0, 9).numpy()
    tf.saved_model.save(generator, str(tmp_path / "first"))
    (tmp_path / "first").rename(tmp_path / "moved")
    reloaded = tf.saved_model.load(str(tmp_path / "moved"))
    np.testing.assert_array_equal(reloaded.generate(prompt, 5, 0.0, 0), greedy)
    np.testing.assert_array_equal(reloaded.generate(prompt, 5, 1.0, 9), sampled)
    assert reloaded.generate(tf.zeros((1, 0), tf.int32), 7, 0.8, 1).shape == (1, 7)
