"""End-to-end smoke test of the PixelRNN pipeline on the synthetic fixture, plus its pieces."""

import math

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from rnnapps.cli import cli
from rnnapps.config import resolve_config
from rnnapps.errors import ConfigError
from rnnapps.export import load_export
from rnnapps.models.images import occlusion_mask
from rnnapps.models.pixel_rnn import bernoulli_nll
from rnnapps.pipelines.base import Datasets, ImageData
from rnnapps.pipelines.pixelrnn import PIPELINE, PixelRNNConfig
from tests.conftest import FIXTURE_DATA


def _smoke_model():
    """The smoke preset's model, as the pipeline builds it (config fields → build_pixel_rnn)."""
    info = ImageData(sizes={}, image_shape=(28, 28, 1), test_images=np.zeros((0, 28, 28, 1), np.float32))
    return PIPELINE.build_model(resolve_config(PixelRNNConfig, "smoke"), Datasets(None, None, None, info=info))


def _test_images(count=3):
    with np.load(FIXTURE_DATA / "mnist" / "binarized_mnist.npz") as arrays:
        return arrays["x_test"][:count]


@pytest.fixture(scope="module")
def trained(canonical_run):
    # The export was moved away from the run: serving must not depend on the training location.
    shared = canonical_run("pixelrnn")
    return shared.result, shared.export


def test_smoke_run_reports_nll_and_pictures(trained):
    result, _ = trained
    metrics = result.metrics
    assert math.isfinite(metrics["test_nll_nats"]) and metrics["test_nll_nats"] > 0
    assert metrics["test_bits_per_dim"] == pytest.approx(metrics["test_nll_nats"] / (784 * math.log(2)))
    assert metrics["test_examples"] == 8
    for picture in ("inpainting.png", "samples.png", "learning_curves.png"):
        assert (result.run_dir / picture).stat().st_size > 0


def test_exported_signatures_from_moved_dir(trained):
    _, export = trained
    loaded = load_export(export)
    assert {"serving_default", "inpaint", "log_prob", "log_likelihood", "sample"} <= set(loaded.signatures)
    images = _test_images()
    known = occlusion_mask(images.shape, "bottom")
    inpaint = loaded.signatures["inpaint"]
    first = inpaint(images=tf.constant(images), mask=tf.constant(known), seed=tf.constant(5))["images"].numpy()
    again = inpaint(images=tf.constant(images), mask=tf.constant(known), seed=tf.constant(5))["images"].numpy()
    assert first.dtype == np.uint8 and first.shape == images.shape
    np.testing.assert_array_equal(first[:, :14], images[:, :14])  # visible pixels never change
    np.testing.assert_array_equal(first, again)  # a fixed seed reproduces
    assert set(np.unique(first)) <= {0, 1}

    # [batch, 28, 28, 1] and 0-255 images come back in the same shape and scale; random holes stay holes.
    random_known = occlusion_mask(images[..., None].shape, "random", seed=1)
    wide = loaded.signatures["serving_default"](
        images=tf.constant(images[..., None] * 255), mask=tf.constant(random_known), seed=tf.constant(0)
    )["images"].numpy()
    assert wide.shape == images[..., None].shape and set(np.unique(wide)) <= {0, 255}
    np.testing.assert_array_equal(wide[random_known == 1], images[..., None][random_known == 1] * 255)

    nll = loaded.signatures["log_prob"](images=tf.constant(images))["nll_nats"].numpy()
    assert nll.shape == (3,) and nll.dtype == np.float32 and np.all(nll > 0)
    samples = loaded.signatures["sample"](num=tf.constant(2), seed=tf.constant(1))["images"].numpy()
    assert samples.shape == (2, 28, 28) and samples.dtype == np.uint8


def test_bad_shapes_are_clear_errors(trained):
    _, export = trained
    loaded = load_export(export)
    with pytest.raises(tf.errors.InvalidArgumentError, match=r"images must be uint8 \[batch, 28, 28\]"):
        loaded.signatures["log_prob"](images=tf.zeros([2, 27, 28], tf.uint8))
    with pytest.raises(tf.errors.InvalidArgumentError, match="mask must have the shape of images"):
        loaded.signatures["inpaint"](images=tf.zeros([2, 28, 28], tf.uint8), mask=tf.zeros([1, 28, 28], tf.uint8),
                                     seed=tf.constant(0))


def test_predict_cli_writes_grid(trained, tmp_path):
    _, export = trained
    output = tmp_path / "grid.png"
    result = CliRunner().invoke(cli, ["predict", "pixelrnn", "--model", str(export), "--data-dir", str(FIXTURE_DATA),
                                      "--occlude", "right", "--count", "2", "--samples", "2", "--seed", "3",
                                      "--output", str(output)])
    assert result.exit_code == 0, result.output
    assert str(output) in result.output and output.stat().st_size > 0
    bad = CliRunner().invoke(cli, ["predict", "pixelrnn", "--model", str(export), "--data-dir", str(FIXTURE_DATA),
                                   "--occlude", "box:5,5,40,9", "--output", str(output)])
    assert bad.exit_code != 0 and "box must lie inside" in bad.output


def test_model_is_causal():
    model = _smoke_model()
    images = tf.Variable(tf.cast(tf.random.stateless_uniform([1, 28, 28, 1], seed=[1, 2]) > 0.5, tf.float32))
    row, column = 9, 13
    with tf.GradientTape() as tape:
        logit = model(images)[0, row, column, 0]
    gradient = tape.gradient(logit, images).numpy()[0, ..., 0].reshape(-1)
    position = row * 28 + column
    assert np.all(gradient[position:] == 0)  # the pixel itself and everything after it in raster order
    assert np.any(gradient[:position] != 0)


def test_occlusion_masks_and_config_errors():
    shape = (2, 28, 28)
    assert occlusion_mask(shape, "bottom-half")[:, 14:].sum() == 0 and occlusion_mask(shape, "bottom")[:, :14].all()
    assert occlusion_mask(shape, "right")[:, :, 14:].sum() == 0
    assert occlusion_mask(shape, "box:1,2,3,4").sum() == 2 * (784 - 4)
    with pytest.raises(ConfigError, match="choose bottom, right, random"):
        occlusion_mask(shape, "top")
    with pytest.raises(ConfigError, match="dataset='svhn'"):
        resolve_config(PixelRNNConfig, "smoke", set_options={"dataset": "svhn"})
    with pytest.raises(ConfigError, match="binarize='soft'"):
        resolve_config(PixelRNNConfig, "smoke", set_options={"binarize": "soft"})


def test_mixed_float16_logits_and_loss_are_float32():
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _smoke_model()
        images = tf.cast(_test_images(2)[..., None], tf.float32)
        logits = model(images)
        nll = bernoulli_nll(images, logits)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert logits.dtype == tf.float32 and nll.dtype == tf.float32
    assert np.all(np.isfinite(nll.numpy()))


def test_inpainting_grid_rows_show_occluded_completions_original(tmp_path):
    from PIL import Image

    from rnnapps.image_plots import write_inpainting_grid

    originals = np.ones((2, 4, 3, 1), "float32")
    known = np.ones_like(originals)
    known[:, 2:] = 0
    completions = np.zeros((2, 3, 4, 3, 1), "float32")
    path = write_inpainting_grid(originals, known, completions, tmp_path / "grid.png", scale=1)
    grid = np.asarray(Image.open(path))
    assert grid.shape == (2 * (4 + 2) + 2, 5 * (3 + 2) + 2)  # one row per image: occluded | 3 completions | original
    assert grid[2, 2] == 255 and grid[2 + 2, 2] == 128 and grid[2, 2 + 5] == 0 and grid[2, 2 + 4 * 5] == 255
