import keras
import numpy as np
import pytest

from rnnapps.models.word_dropout import UnknownWordDropout
from tests.layer_checks import check_layer

WORD_IDS = np.array([[5, 6, 7, 8, 0, 0], [9, 3, 0, 0, 0, 0]], "int64")


def test_round_trips_and_leaves_inference_alone(tmp_path):
    outputs = check_layer(UnknownWordDropout(0.5, seed=3), WORD_IDS, tmp_path, expected_output_shape=(2, 6))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(outputs), WORD_IDS)


def test_training_replaces_about_rate_of_the_real_words_and_no_padding():
    ids = np.tile(np.arange(2, 1002, dtype="int64"), (8, 1))
    ids[:, -200:] = 0
    dropped = keras.ops.convert_to_numpy(UnknownWordDropout(0.2, seed=7)(ids, training=True))
    real = ids != 0
    replaced = dropped != ids
    assert (dropped[replaced] == 1).all()
    assert not replaced[~real].any()
    assert 0.17 < replaced[real].mean() < 0.23
    # Each training step draws anew.
    layer = UnknownWordDropout(0.2, seed=7)
    first, second = (keras.ops.convert_to_numpy(layer(ids, training=True)) for _ in range(2))
    assert (first != second).any()


def test_zero_rate_is_the_identity_in_training():
    np.testing.assert_array_equal(
        keras.ops.convert_to_numpy(UnknownWordDropout(0.0)(WORD_IDS, training=True)), WORD_IDS
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [({"rate": 1.0}, "rate"), ({"rate": -0.1}, "rate"), ({"rate": 0.1, "unknown_id": -1}, "unknown_id"),
     ({"rate": 0.1, "unknown_id": 0}, "differ")],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        UnknownWordDropout(**kwargs)
