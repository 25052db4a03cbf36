import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps import export
from rnnapps.errors import ExportError


def _trained_model():
    model = keras.Sequential([keras.Input((2,), name="features"), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    model.fit(np.ones((4, 2)), np.ones((4, 1)), verbose=0, epochs=1)
    return model


def _endpoints(model):
    def predict(features):
        return {"score": model(features)}

    return {"serving_default": export.Endpoint(predict, [tf.TensorSpec([None, 2], tf.float32, name="features")])}


def test_versions_increase_and_signature_is_named(tmp_path):
    model = _trained_model()
    first = export.export_saved_model(model, _endpoints(model), tmp_path, "toy", metadata={"note": "x"})
    second = export.export_saved_model(model, _endpoints(model), tmp_path, "toy")
    assert (first.name, second.name) == ("1", "2")
    assert export.latest_export(tmp_path, "toy") == second
    assert export.read_metadata(first)["note"] == "x"
    assert not [p for p in (tmp_path / "toy").iterdir() if p.name.startswith(".tmp")]
    signature = export.load_export(second).signatures["serving_default"]
    assert list(signature.structured_input_signature[1]) == ["features"]
    assert list(signature.structured_outputs) == ["score"]
    np.testing.assert_allclose(signature(features=tf.ones((3, 2)))["score"], model(np.ones((3, 2))), rtol=1e-6)


def test_refuses_untrained_model(tmp_path):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile("sgd", "mse")
    with pytest.raises(ExportError, match="untrained"):
        export.export_saved_model(model, _endpoints(model), tmp_path, "toy")
    assert not (tmp_path / "toy" / "1").exists()


def test_failed_export_leaves_no_partial_version(tmp_path, monkeypatch):
    model = _trained_model()

    def broken_rename(source, target):
        raise OSError("disk full")

    monkeypatch.setattr(os, "rename", broken_rename)
    with pytest.raises(OSError, match="disk full"):
        export.export_saved_model(model, _endpoints(model), tmp_path, "toy")
    assert list((tmp_path / "toy").iterdir()) == []


def test_missing_exports_are_clear_errors(tmp_path):
    with pytest.raises(ExportError, match="no export of 'toy'"):
        export.latest_export(tmp_path, "toy")
    with pytest.raises(ExportError, match="not a SavedModel"):
        export.load_export(tmp_path)
