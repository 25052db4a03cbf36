"""Load an export the way TensorFlow Serving's C++ server does, and call it by tensor names.

``tf.saved_model.load`` rebuilds Python objects from the SavedModel's object graph;
TensorFlow Serving never does that. Its ``LoadSavedModel`` reads the MetaGraphDef
tagged ``serve``, restores the variables, runs the table initialisers, and then
runs each request in a session, feeding and fetching the tensor names that the
``signature_def`` lists. :class:`SessionModel` takes exactly that path through
``tf.compat.v1``, so a signature that only works through the Python loader
(a captured Python value, an op the C++ runtime lacks, an uninitialised table)
fails here as it would fail in the server.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

PREDICT_METHOD = "tensorflow/serving/predict"


class SessionModel:
    """A SavedModel loaded into its own ``tf.compat.v1`` graph and session, with the ``serve`` tag."""

    def __init__(self, path: str | Path):
        self.graph = tf.Graph()
        self.session = tf.compat.v1.Session(graph=self.graph)
        with self.graph.as_default():
            self.meta_graph = tf.compat.v1.saved_model.loader.load(self.session, ["serve"], str(path))
        # The loader's own initialiser entry is not a signature a client can call.
        self.signatures = {
            name: definition for name, definition in self.meta_graph.signature_def.items()
            if name != "__saved_model_init_op"
        }

    def input_specs(self, signature: str) -> dict[str, tuple[tf.DType, list[int] | None]]:
        """``{input name: (dtype, shape)}`` as the signature_def declares them (-1: any size; None: any rank)."""
        return {
            name: (
                tf.as_dtype(info.dtype),
                None if info.tensor_shape.unknown_rank else [dim.size for dim in info.tensor_shape.dim],
            )
            for name, info in self.signatures[signature].inputs.items()
        }

    def __call__(self, signature: str, **inputs) -> dict[str, np.ndarray]:
        definition = self.signatures[signature]
        if set(inputs) != set(definition.inputs):
            raise KeyError(f"{signature} takes {sorted(definition.inputs)}, got {sorted(inputs)}")
        feed = {
            definition.inputs[name].name: np.asarray(value, dtype=tf.as_dtype(definition.inputs[name].dtype).as_numpy_dtype)
            for name, value in inputs.items()
        }
        fetches = {name: info.name for name, info in definition.outputs.items()}
        return self.session.run(fetches, feed_dict=feed)

    def close(self):
        self.session.close()


def object_call(loaded, signature: str, **inputs) -> dict[str, np.ndarray]:
    """The same request through ``tf.saved_model.load``'s signature, as NumPy."""
    function = loaded.signatures[signature]
    specs = function.structured_input_signature[1]
    tensors = {name: tf.constant(value, dtype=specs[name].dtype) for name, value in inputs.items()}
    return {name: value.numpy() for name, value in function(**tensors).items()}


def saved_model_cli_show(path: str | Path) -> str:
    """What ``saved_model_cli show --all`` prints for an export (the CLI TensorFlow ships)."""
    cli = Path(sys.executable).with_name("saved_model_cli")
    command = [str(cli)] if cli.exists() else [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    completed = subprocess.run(
        [*command, "show", "--all", "--dir", str(path)], capture_output=True, text=True, timeout=300, check=False
    )
    if completed.returncode != 0:
        raise AssertionError(f"saved_model_cli failed ({completed.returncode}): {completed.stderr[-2000:]}")
    return completed.stdout


def assert_same_answers(actual: dict, expected: dict, atol: float = 1e-5) -> None:
    """Outputs equal key by key: strings and integers exactly, floats to ``atol``."""
    assert set(actual) == set(expected), (sorted(actual), sorted(expected))
    for name in expected:
        got, want = np.asarray(actual[name]), np.asarray(expected[name])
        assert got.shape == want.shape, f"{name}: shape {got.shape} != {want.shape}"
        if want.dtype.kind in "fc":
            np.testing.assert_allclose(got, want, atol=atol, rtol=1e-5, err_msg=name)
        else:
            np.testing.assert_array_equal(got, want, err_msg=name)
