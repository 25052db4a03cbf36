import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps.models.draw import (
    AttentionReader,
    AttentionWriter,
    DrawCell,
    DrawModel,
    build_draw,
    gaussian_filterbanks,
    latent_kl_divergence,
)
from tests.layer_checks import (
    assert_all_close,
    check_config_round_trip,
    check_keras_round_trip,
    check_layer,
    check_saved_model_round_trip,
)

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(steps=3, encoder_units=16, decoder_units=16, latent_size=4, read_glimpse_size=2, write_glimpse_size=3)


def numpy_filterbank(center, log_variance, log_stride, size, glimpse_size):
    """Brute-force reference of one filterbank, paper coordinates (1-based)."""
    stride, variance = math.exp(log_stride), math.exp(log_variance)
    bank = np.zeros((glimpse_size, size))
    for i in range(1, glimpse_size + 1):
        mean = center + (i - glimpse_size / 2 - 0.5) * stride
        for a in range(1, size + 1):
            bank[i - 1, a - 1] = math.exp(-((a - mean) ** 2) / (2 * variance))
        bank[i - 1] /= max(bank[i - 1].sum(), 1e-8)
    return bank


def set_attention(layer, log_variance, glimpse_parameters=(0.0, 0.0), log_stride=0.0, log_gamma=0.0):
    """Make the attention head ignore the state and emit fixed parameters."""
    dense = layer.attention_projection
    kernel = np.zeros(dense.kernel.shape, "float32")
    bias = np.array([*glimpse_parameters, log_variance, log_stride, log_gamma], "float32")
    dense.set_weights([kernel, bias])


def dtype_of(tensor):
    return keras.backend.standardize_dtype(tensor.dtype)


def binary_images(count=8, size=8, seed=0):
    return (np.random.default_rng(seed).random((count, size, size, 1)) > 0.5).astype("float32")


def test_filterbanks_match_numpy_reference():
    centers_x, centers_y = [3.0, 5.5], [2.5, 4.0]
    log_variances, log_strides = [0.0, math.log(0.7)], [math.log(1.5), 0.0]
    f_x, f_y = gaussian_filterbanks(
        np.array(centers_x), np.array(centers_y)[:, None], log_variances, log_strides, 5, 7, 3
    )
    assert tuple(f_x.shape) == (2, 3, 7) and tuple(f_y.shape) == (2, 3, 5)
    for b in range(2):
        assert_all_close(f_x[b], numpy_filterbank(centers_x[b], log_variances[b], log_strides[b], 7, 3), atol=1e-6)
        assert_all_close(f_y[b], numpy_filterbank(centers_y[b], log_variances[b], log_strides[b], 5, 3), atol=1e-6)
    np.testing.assert_allclose(np.sum(f_x, -1), 1.0, atol=1e-6)
    np.testing.assert_allclose(np.sum(f_y, -1), 1.0, atol=1e-6)
    # Centre 5.5 with stride 1 and N=3: filters on 4.5, 5.5, 6.5 -> the middle
    # filter peaks at (1-based) pixel 5.5, i.e. equal weight on pixels 5 and 6.
    middle = np.asarray(f_x[1, 1])
    assert middle[4] == pytest.approx(middle[5]) and middle.argmax() in (4, 5)


def test_filterbank_far_outside_the_image_is_zero_not_nan():
    f_x, _ = gaussian_filterbanks([1e4], [1.0], [math.log(1e-3)], [0.0], 4, 4, 2)
    assert np.all(np.isfinite(f_x)) and np.allclose(f_x, 0.0)


def test_reader_with_centred_unit_grid_extracts_the_image(tmp_path):
    rng = np.random.default_rng(0)
    image = rng.random((2, 6, 6, 3)).astype("float32")
    error = rng.normal(size=(2, 6, 6, 3)).astype("float32")
    state = rng.normal(size=(2, 5)).astype("float32")
    reader = AttentionReader(6, 6, 6, 3)
    reader.build(image.shape, error.shape, state.shape)
    set_attention(reader, log_variance=math.log(1e-3))
    glimpses = np.asarray(reader(image, error, state))
    assert glimpses.shape == (2, 2 * 6 * 6 * 3)
    np.testing.assert_allclose(glimpses[:, :108], image.reshape(2, -1), atol=1e-5)
    np.testing.assert_allclose(glimpses[:, 108:], error.reshape(2, -1), atol=1e-5)
    # Intensity γ scales the glimpse.
    set_attention(reader, log_variance=math.log(1e-3), log_gamma=math.log(2.0))
    np.testing.assert_allclose(np.asarray(reader([image, error, state]))[:, :108], 2 * image.reshape(2, -1), atol=1e-5)


def test_reader_round_trips_and_no_attention_mode(tmp_path):
    rng = np.random.default_rng(1)
    inputs = [rng.random((3, 8, 8, 2)).astype("float32"), rng.random((3, 8, 8, 2)).astype("float32"),
              rng.normal(size=(3, 4)).astype("float32")]
    check_layer(AttentionReader(2, 8, 8, 2), inputs, tmp_path, expected_output_shape=(3, 16))
    whole = AttentionReader(2, 8, 8, 2, read_attention=False)
    check_config_round_trip(whole)
    assert_all_close(whole(inputs), np.concatenate([inputs[0].reshape(3, -1), inputs[1].reshape(3, -1)], -1))


def test_writer_places_patch_through_identity_grid(tmp_path):
    state = np.random.default_rng(2).normal(size=(2, 4)).astype("float32")
    check_layer(AttentionWriter(3, 8, 6, 2), state, tmp_path, expected_output_shape=(2, 8, 6, 2))
    writer = AttentionWriter(5, 5, 5, 2)
    writer.build(state.shape)
    set_attention(writer, log_variance=math.log(1e-3), log_gamma=math.log(4.0))
    patch = np.arange(50, dtype="float32")
    writer.patch_projection.set_weights([np.zeros((4, 50), "float32"), patch])
    expected = np.broadcast_to(patch.reshape(1, 5, 5, 2) / 4.0, (2, 5, 5, 2))
    np.testing.assert_allclose(writer(state), expected, atol=1e-4)
    plain = AttentionWriter(5, 7, 7, 1, write_attention=False)
    assert tuple(plain(state).shape) == (2, 7, 7, 1)


def test_cell_runs_in_keras_rnn_and_round_trips(tmp_path):
    cell = DrawCell(8, 8, 1, read_glimpse_size=2, write_glimpse_size=3, encoder_units=6, decoder_units=5,
                    latent_size=3, seed=4)
    check_config_round_trip(cell)
    images = binary_images(count=2)
    noise = np.random.default_rng(3).normal(size=(2, 3, 3)).astype("float32")
    sequence = np.concatenate([np.repeat(images.reshape(2, 1, 64), 3, axis=1), noise], -1)
    inputs = keras.Input((3, 64 + 3))
    outputs = keras.layers.RNN(cell, return_sequences=True, return_state=True)(inputs)
    model = keras.Model(inputs, outputs)
    sequence_output, *states = model(sequence)
    assert tuple(sequence_output.shape) == (2, 3, 64 + 2 * 3)
    assert [tuple(s.shape) for s in states] == [(2, 6), (2, 6), (2, 5), (2, 5), (2, 64)]
    assert_all_close(sequence_output[:, -1, :64], states[-1])
    check_keras_round_trip(model, sequence, tmp_path)
    check_saved_model_round_trip(model, sequence, tmp_path)
    # Generation runs the decoder alone: one canvas per step.
    assert tuple(cell.generate(4, 3, seed=1).shape) == (4, 3, 8, 8, 1)
    with pytest.raises(ValueError, match="latent_size"):
        DrawCell(8, 8, 1, latent_size=3).build((None, 64))


def test_kl_matches_closed_form():
    rng = np.random.default_rng(5)
    mean = rng.normal(size=(4, 3, 6)).astype("float32")
    log_sigma = rng.normal(scale=0.5, size=(4, 3, 6)).astype("float32")
    sigma_squared = np.exp(2 * log_sigma)
    closed = 0.5 * np.sum(mean**2 + sigma_squared - 1 - np.log(sigma_squared), axis=-1)
    kl = latent_kl_divergence(mean, log_sigma)
    assert tuple(kl.shape) == (4, 3) and dtype_of(kl) == "float32"
    np.testing.assert_allclose(kl, closed, rtol=1e-5, atol=1e-5)


def test_draw_model_trains_with_fit():
    keras.utils.set_random_seed(0)
    # One shared pattern with a few flipped pixels: learnable in a few steps,
    # unlike independent coin flips whose best loss is already 64 log 2.
    rng = np.random.default_rng(0)
    pattern = binary_images(count=1)
    images = np.abs(pattern - (rng.random((8, 8, 8, 1)) < 0.05)).astype("float32")
    model = DrawModel((8, 8, 1), seed=0, **TINY)
    model.compile(optimizer=keras.optimizers.Adam(0.02, clipnorm=10.0))
    before = float(np.mean(model.reconstruct(images, seed=1)[1]))
    history = model.fit(images, batch_size=8, epochs=5, verbose=0).history
    after = float(np.mean(model.reconstruct(images, seed=1)[1]))
    assert set(history) == {"loss", "reconstruction", "kl"}
    assert np.all(np.isfinite(history["loss"]))
    assert after < before - 0.5, (before, after)
    np.testing.assert_allclose(history["loss"], np.add(history["reconstruction"], history["kl"]), rtol=1e-4)
    evaluation = model.evaluate(images, verbose=0, return_dict=True)
    assert np.isfinite(evaluation["loss"]) and evaluation["kl"] >= 0


def test_no_attention_baseline_reads_and_writes_whole_images():
    model = DrawModel((8, 8, 1), attention=False, seed=0, **TINY)
    canvases, nll = model.reconstruct(binary_images(count=2), seed=1)
    assert tuple(canvases.shape) == (2, 3, 8, 8, 1) and np.all(np.isfinite(nll))
    assert model.draw_cell.reader.output_width == 2 * 64


def test_gradients_reach_every_weight():
    model = DrawModel((8, 8, 1), seed=1, **TINY)
    images = binary_images(count=2)
    with tf.GradientTape() as tape:
        reconstruction, kl = model.loss_terms(images, model(images, training=True))
        loss = tf.reduce_mean(reconstruction + kl)
    gradients = tape.gradient(loss, model.trainable_weights)
    assert len(gradients) == 14
    for weight, gradient in zip(model.trainable_weights, gradients, strict=True):
        assert gradient is not None, weight.path
        assert np.all(np.isfinite(gradient)) and np.any(np.asarray(gradient) != 0), weight.path


def test_generation_and_reconstruction_are_seeded():
    model = DrawModel((8, 8, 1), seed=7, **TINY)
    first = model.generate(3, seed=11)
    assert tuple(first.shape) == (3, 3, 8, 8, 1)
    assert np.all((np.asarray(first) >= 0) & (np.asarray(first) <= 1))
    assert_all_close(model.generate(3, seed=11), first)
    assert_all_close(model.generate(3, seed=tf.constant(11)), first)
    assert not np.allclose(model.generate(3, seed=12), first)
    assert not np.allclose(model.generate(3), model.generate(3))
    images = binary_images(count=2)
    canvases, nll = model.reconstruct(images, seed=5)
    assert tuple(canvases.shape) == (2, 3, 8, 8, 1) and tuple(nll.shape) == (2,)
    assert_all_close(model.reconstruct(images, seed=5), [canvases, nll])
    assert tuple(model.kl_per_step(images, seed=5).shape) == (2, 3)


def test_model_keras_round_trip_and_export(tmp_path):
    images = binary_images(count=4)
    model = DrawModel((8, 8, 1), seed=3, **TINY)
    expected_canvases, expected_nll = model.reconstruct(images, seed=9)
    expected_samples = model.generate(2, seed=9)

    path = os.path.join(str(tmp_path), "draw.keras")
    model.save(path)
    reloaded = keras.saving.load_model(path)
    assert isinstance(reloaded, DrawModel) and reloaded.get_config() == model.get_config()
    assert_all_close(reloaded.reconstruct(images, seed=9), [expected_canvases, expected_nll])
    assert_all_close(reloaded.generate(2, seed=9), expected_samples)

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint(
        "generate",
        lambda num, seed: {"canvases": model.generate(num, seed=seed)},
        input_signature=[tf.TensorSpec([], tf.int32), tf.TensorSpec([], tf.int32)],
    )
    def reconstruct(batch, seed):
        canvases, nll_bound = model.reconstruct(batch, seed=seed)
        return {"canvases": canvases, "nll_bound": nll_bound}

    archive.add_endpoint(
        "reconstruct",
        reconstruct,
        input_signature=[tf.TensorSpec([None, 8, 8, 1], tf.float32), tf.TensorSpec([], tf.int32)],
    )
    first = os.path.join(str(tmp_path), "export_first")
    archive.write_out(first, verbose=False)
    moved = os.path.join(str(tmp_path), "export_moved")
    shutil.move(first, moved)
    served = tf.saved_model.load(moved)
    assert_all_close(served.generate(tf.constant(2), tf.constant(9))["canvases"], expected_samples)
    result = served.reconstruct(tf.constant(images), tf.constant(9))
    assert_all_close([result["canvases"], result["nll_bound"]], [expected_canvases, expected_nll], atol=1e-4)


def test_mixed_precision_keeps_losses_float32():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = DrawModel((8, 8, 1), seed=2, **TINY)
        canvases, nll = model.reconstruct(binary_images(count=2), seed=1)
        assert model.draw_cell.compute_dtype == "float16"
        assert model.draw_cell.reader.attention_projection.kernel.dtype == "float32"
        assert dtype_of(canvases) == "float32" and dtype_of(nll) == "float32"
        assert np.all(np.isfinite(nll))
        assert dtype_of(model.generate(2, seed=1)) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "factory, message",
    [
        (lambda: AttentionReader(0, 8, 8), "glimpse_size=0"),
        (lambda: AttentionWriter(2, 8, -1), "image_width=-1"),
        (lambda: DrawCell(8, 8, 1, latent_size=2.5), "latent_size=2.5"),
        (lambda: DrawCell(8, 8, 1, seed="a"), "seed='a'"),
        (lambda: DrawModel((8, 8)), "image_shape"),
        (lambda: DrawModel((8, 8, 1), steps=0), "steps=0"),
    ],
)
def test_bad_arguments_are_named(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_builder_takes_plain_keyword_arguments():
    model = build_draw(height=8, width=6, channels=3, attention=False, seed=4, **TINY)
    assert isinstance(model, DrawModel) and model.name == "draw"
    assert model.built and model.weights  # BackupAndRestore can restore into it before fit()
    config = model.get_config()
    assert {key: config[key] for key in TINY} == TINY
    assert (config["image_shape"], config["attention"], config["seed"]) == ([8, 6, 3], False, 4)
    assert model.draw_cell.reader.read_attention is False


def test_model_keras_loads_with_rnnapps_models_alone(tmp_path):
    model = build_draw(height=8, width=8, seed=3, **TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=100.0))
    path = tmp_path / "model.keras"
    model.save(path)
    images = (np.arange(64).reshape(1, 8, 8, 1) % 3 == 0).astype("float32")
    # A fresh interpreter that imports keras and rnnapps.models only, never a pipeline module.
    script = "\n".join([
        "import json, sys",
        "import keras",
        "import rnnapps.models",
        "model = keras.saving.load_model(sys.argv[1])",
        "assert isinstance(model, rnnapps.models.DrawModel), type(model)",
        "pixels = keras.ops.cast(keras.ops.reshape(keras.ops.arange(64) % 3 == 0, (1, 8, 8, 1)), 'float32')",
        "canvases, bound = (keras.ops.convert_to_numpy(part) for part in model.reconstruct(pixels, seed=9))",
        "assert 'rnnapps.pipelines' not in sys.modules, sorted(sys.modules)",
        "print(json.dumps([canvases.tolist(), bound.tolist()]))",
    ])
    done = subprocess.run([sys.executable, "-c", script, str(path)], cwd=ROOT, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    canvases, bound = (np.asarray(part) for part in json.loads(done.stdout.splitlines()[-1]))
    assert_all_close([canvases, bound], model.reconstruct(images, seed=9), atol=1e-5)


def test_grid_boxes_span_the_filter_centres():
    state = np.zeros((1, 4), "float32")
    writer = AttentionWriter(5, 9, 13)
    writer.build(state.shape)
    # Centred, unit stride scale: the grid spans the longer side (12 pixels) on both axes, centred.
    set_attention(writer, log_variance=0.0)
    np.testing.assert_allclose(writer.grid_boxes(state), [[0.0, -2.0, 12.0, 10.0]], atol=1e-5)
    # Half the stride, moved right: half the span, centred at g_X = (W + 1) / 2 * 1.5 pixels (1-based).
    set_attention(writer, log_variance=0.0, glimpse_parameters=(0.5, 0.0), log_stride=math.log(0.5))
    x0, y0, x1, y1 = np.asarray(writer.grid_boxes(state))[0]
    assert x1 - x0 == pytest.approx(6.0) and y1 - y0 == pytest.approx(6.0)
    assert (x0 + x1) / 2 == pytest.approx(0.75 * 14 - 1) and (y0 + y1) / 2 == pytest.approx(4.0)
    # The read grid's box agrees with its filterbank: the first and last filter rows peak at its corners.
    reader = AttentionReader(4, 9, 13)
    reader.build((None, 9, 13, 1), (None, 9, 13, 1), state.shape)
    set_attention(reader, log_variance=math.log(0.01), glimpse_parameters=(-0.2, -0.1), log_stride=math.log(0.5))
    filter_x, filter_y, _ = reader.filterbanks(state)
    x0, y0, x1, y1 = np.asarray(reader.grid_boxes(state))[0]
    assert np.argmax(filter_x[0, 0]) == round(x0) and np.argmax(filter_x[0, -1]) == round(x1)
    assert np.argmax(filter_y[0, 0]) == round(y0) and np.argmax(filter_y[0, -1]) == round(y1)


def test_attention_trace_redraws_as_reconstruct_and_records_both_grids():
    model = DrawModel((8, 8, 1), seed=7, **TINY)
    images = binary_images(count=2)
    trace = model.attention_trace(images, seed=5)
    canvases, _ = model.reconstruct(images, seed=5)
    np.testing.assert_allclose(trace["canvases"], canvases, atol=1e-5)
    assert tuple(trace["read_boxes"].shape) == (2, 3, 4) and tuple(trace["write_boxes"].shape) == (2, 3, 4)
    # The grids move with the state: not one box for every step.
    assert not np.allclose(trace["write_boxes"][:, 0], trace["write_boxes"][:, -1])
    plain = DrawModel((8, 8, 1), seed=7, attention=False, **TINY)
    plain_trace = plain.attention_trace(images, seed=5)
    assert plain_trace["read_boxes"] is None and plain_trace["write_boxes"] is None
    np.testing.assert_allclose(plain_trace["canvases"], plain.reconstruct(images, seed=5)[0], atol=1e-5)
