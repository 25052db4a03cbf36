import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps.models.embedding import PartlyFrozenEmbedding
from tests.layer_checks import check_layer

IDS = np.array([[2, 7, 0, 0], [9, 1, 3, 0]], "int64")
MATRIX = np.random.default_rng(0).normal(size=(10, 3)).astype("float32")


def loaded_layer(trainable_rows=4, **kwargs):
    layer = PartlyFrozenEmbedding(10, 3, trainable_rows, **kwargs)
    layer.build()
    layer.set_embedding_matrix(MATRIX)
    return layer


def test_round_trips_and_reads_both_parts(tmp_path):
    layer = loaded_layer(mask_zero=True)
    outputs = check_layer(layer, IDS, tmp_path, expected_output_shape=(2, 4, 3))
    np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs), MATRIX[IDS], atol=1e-6)
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.compute_mask(IDS)), IDS != 0)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.embedding_matrix()), MATRIX)


def test_a_training_step_matches_a_plain_embedding_and_leaves_the_fixed_rows_alone():
    """Same model, same Adam update as one trainable matrix: the rows no input reaches do not move in either."""
    targets = np.random.default_rng(1).normal(size=(2, 4, 3)).astype("float32")
    ids = np.array([[2, 3, 1, 0], [3, 2, 1, 0]], "int64")  # only rows < 4 are read in training

    def trained_matrix(embedding, read_matrix):
        model = keras.Sequential([keras.Input((4,), dtype="int64"), embedding])
        model.compile(optimizer=keras.optimizers.Adam(0.1, clipnorm=1.0), loss="mse")
        model.fit(ids, targets, epochs=3, batch_size=2, verbose=0)
        return keras.ops.convert_to_numpy(read_matrix(embedding))

    plain = keras.layers.Embedding(10, 3)
    plain.build()
    plain.set_weights([MATRIX])
    want = trained_matrix(plain, lambda layer: layer.embeddings)
    split = loaded_layer(trainable_rows=4)
    got = trained_matrix(split, lambda layer: layer.embedding_matrix())
    np.testing.assert_allclose(got, want, atol=1e-5)
    np.testing.assert_array_equal(got[4:], MATRIX[4:])
    assert not np.allclose(got[:4], MATRIX[:4])
    assert [w.shape for w in split.trainable_weights] == [(4, 3)]


def test_all_rows_trainable_has_no_fixed_part():
    layer = loaded_layer(trainable_rows=10)
    assert layer.non_trainable_weights == []
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(tf.constant(IDS))), MATRIX[IDS], atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, message",
    [({"trainable_rows": 0}, "trainable_rows"), ({"trainable_rows": 11}, "trainable_rows <= input_dim"),
     ({"trainable_rows": 2, "output_dim": 0}, "output_dim")],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        PartlyFrozenEmbedding(**{"input_dim": 10, "output_dim": 3, **kwargs})


def test_a_matrix_of_the_wrong_shape_is_refused():
    layer = loaded_layer()
    with pytest.raises(ValueError, match=r"shape \(10, 3\)"):
        layer.set_embedding_matrix(np.zeros((9, 3), "float32"))
