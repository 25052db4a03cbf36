"""A small layer test helper in the spirit of Keras' ``run_layer_test``.

``keras.src.testing`` is internal API, so rnnapps keeps its own: every reusable
layer is checked for a config round trip, serialize/deserialize, identical
outputs after a ``.keras`` save/load, and identical outputs through a
SavedModel reloaded with ``tf.saved_model.load`` (Python's object loader).
Whole pipeline exports are also loaded the way TensorFlow Serving's C++ server
loads them, through a TF1 session (tests/serving_checks.py, tests/pipelines/test_serving.py).
"""

from __future__ import annotations

import copy
import os
import shutil

import keras
import numpy as np
import tensorflow as tf


def _as_list(value):
    return list(value) if isinstance(value, (list, tuple)) else [value]


def _to_numpy(value):
    if isinstance(value, dict):
        return {key: _to_numpy(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_numpy(item) for item in value]
    return keras.ops.convert_to_numpy(value)


def assert_all_close(actual, expected, atol=1e-5, rtol=1e-5):
    actual, expected = _to_numpy(actual), _to_numpy(expected)
    if isinstance(expected, dict):
        assert set(actual) == set(expected)
        for key in expected:
            assert_all_close(actual[key], expected[key], atol, rtol)
    elif isinstance(expected, list):
        assert len(actual) == len(expected)
        for got, want in zip(actual, expected, strict=True):
            assert_all_close(got, want, atol, rtol)
    else:
        np.testing.assert_allclose(np.asarray(actual), np.asarray(expected), atol=atol, rtol=rtol)


def check_config_round_trip(layer: keras.layers.Layer) -> keras.layers.Layer:
    """from_config(get_config()) and serialize/deserialize rebuild the same config."""
    config = layer.get_config()
    # A copy: keras.layers.RNN.from_config pops "cell" from the dict it is given.
    rebuilt = layer.__class__.from_config(copy.deepcopy(config))
    assert rebuilt.get_config() == config, "get_config/from_config round trip changed the config"
    serialized = keras.saving.serialize_keras_object(layer)
    assert serialized["registered_name"].startswith("rnnapps>"), (
        f"{type(layer).__name__} is not registered under package 'rnnapps'"
    )
    deserialized = keras.saving.deserialize_keras_object(serialized)
    assert type(deserialized) is type(layer)
    assert deserialized.get_config() == config
    return rebuilt


def check_keras_round_trip(model: keras.Model, inputs, tmp_path, atol=1e-5) -> keras.Model:
    """Save to ``.keras``, load with no custom_objects, compare outputs."""
    expected = model(inputs, training=False)
    path = os.path.join(str(tmp_path), "model.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert_all_close(reloaded(inputs, training=False), expected, atol=atol)
    return reloaded


def check_saved_model_round_trip(model: keras.Model, inputs, tmp_path, atol=1e-5):
    """Export a SavedModel, move it, reload with ``tf.saved_model.load``, compare."""
    expected = model(inputs, training=False)
    input_list = _as_list(inputs)
    signature = [
        tf.TensorSpec((None,) + tuple(np.shape(x))[1:], tf.as_dtype(keras.ops.convert_to_numpy(x).dtype))
        for x in input_list
    ]
    archive = keras.export.ExportArchive()
    archive.track(model)

    def serve(*args):
        return model(list(args) if len(args) > 1 else args[0], training=False)

    archive.add_endpoint("serve", serve, input_signature=signature)
    first = os.path.join(str(tmp_path), "saved_model_first")
    archive.write_out(first, verbose=False)
    moved = os.path.join(str(tmp_path), "saved_model_moved")
    shutil.move(first, moved)
    reloaded = tf.saved_model.load(moved)
    assert_all_close(reloaded.serve(*input_list), expected, atol=atol)
    return reloaded


def functional_model(layer: keras.layers.Layer, inputs, call_kwargs=None) -> keras.Model:
    """Wrap ``layer`` into a functional model with inputs shaped like ``inputs``."""
    symbolic = [
        keras.Input(shape=tuple(np.shape(x))[1:], dtype=str(keras.ops.convert_to_numpy(x).dtype))
        for x in _as_list(inputs)
    ]
    outputs = layer(symbolic if isinstance(inputs, (list, tuple)) else symbolic[0], **(call_kwargs or {}))
    return keras.Model(symbolic if isinstance(inputs, (list, tuple)) else symbolic[0], outputs)


def check_layer(
    layer: keras.layers.Layer,
    inputs,
    tmp_path,
    *,
    expected_output_shape=None,
    call_kwargs=None,
    atol=1e-5,
):
    """Run every standard check on ``layer`` applied to ``inputs``; return its outputs."""
    check_config_round_trip(layer)
    model = functional_model(layer, inputs, call_kwargs)
    outputs = model(inputs, training=False)
    if expected_output_shape is not None:
        got = [tuple(o.shape) for o in _as_list(outputs)]
        want = [tuple(s) for s in (expected_output_shape if isinstance(expected_output_shape, list) else [expected_output_shape])]
        assert got == want, f"output shapes {got} != expected {want}"
    check_keras_round_trip(model, inputs, tmp_path, atol=atol)
    check_saved_model_round_trip(model, inputs, tmp_path, atol=atol)
    return outputs
