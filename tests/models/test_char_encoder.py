import keras
import numpy as np
import pytest

from rnnapps.models.char_encoder import CharWordEncoder
from tests.layer_checks import assert_all_close, check_layer

# Two sentences of three word slots; the second sentence has a padded word.
CHAR_IDS = np.array(
    [
        [[3, 4, 5, 0], [6, 0, 0, 0], [7, 8, 9, 2]],
        [[2, 2, 0, 0], [5, 6, 7, 0], [0, 0, 0, 0]],
    ],
    "int32",
)


@pytest.mark.parametrize("mode, width", [("lstm", 8), ("cnn", 5)])
def test_round_trip_and_shapes(mode, width, tmp_path):
    encoder = CharWordEncoder(10, char_embedding_dim=4, mode=mode, units=4, filters=5, dropout=0.1, seed=3)
    outputs = check_layer(encoder, CHAR_IDS, tmp_path, expected_output_shape=(2, 3, width))
    assert_all_close(keras.ops.convert_to_numpy(outputs)[1, 2], np.zeros(width))
    assert np.abs(keras.ops.convert_to_numpy(outputs)[0]).sum() > 0


@pytest.mark.parametrize("mode", ["lstm", "cnn"])
def test_padding_chars_changes_nothing(mode):
    encoder = CharWordEncoder(10, char_embedding_dim=4, mode=mode, units=3, filters=4, kernel_size=3)
    longer = np.concatenate([CHAR_IDS, np.zeros((2, 3, 5), "int32")], axis=-1)
    assert_all_close(encoder(longer), encoder(CHAR_IDS), atol=1e-5)
    # A word encodes the same whatever its neighbours and its sentence length.
    alone = encoder(CHAR_IDS[:1, :1])
    assert_all_close(encoder(CHAR_IDS)[:1, :1], alone, atol=1e-5)


def test_word_mask_reaches_the_next_layer():
    chars = keras.Input((None, None), dtype="int32")
    encoder = CharWordEncoder(10, mode="cnn", filters=4)
    encoded = encoder(chars)
    pooled = keras.layers.GlobalAveragePooling1D()(encoded)
    model = keras.Model(chars, pooled)
    full = keras.ops.convert_to_numpy(encoder.compute_mask(CHAR_IDS))
    assert full.tolist() == [[True, True, True], [True, True, False]]
    assert model(CHAR_IDS).shape == (2, 4)


def test_mixed_precision_runs():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        outputs = CharWordEncoder(10, mode="lstm", units=3)(CHAR_IDS)
        assert outputs.shape == (2, 3, 6) and np.isfinite(keras.ops.convert_to_numpy(outputs)).all()
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mode": "gru"}, "mode"),
        ({"units": 0}, "units"),
        ({"kernel_size": 2.0}, "kernel_size"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        CharWordEncoder(10, **kwargs)
