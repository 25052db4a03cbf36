import json
import math
import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps.models.pixel_rnn import (
    MaskedConv2D,
    RowLSTM,
    bernoulli_nll,
    build_pixel_rnn,
    causal_kernel_mask,
    complete_images,
    inpaint_numpy,
    sample_numpy,
)
from tests.layer_checks import assert_all_close, check_layer

ROOT = Path(__file__).resolve().parents[2]
TINY = dict(height=6, width=5, filters=4, hidden_units=3, row_lstm_layers=2, output_units=4)


def _expected_single_channel_mask(size, mask_type):
    center = size // 2
    mask = np.zeros((size, size), "float32")
    mask[:center] = 1
    mask[center, :center] = 1
    mask[center, center] = 1 if mask_type == "B" else 0
    return mask


@pytest.mark.parametrize("size", [3, 7])
@pytest.mark.parametrize("mask_type", ["A", "B"])
def test_mask_shapes_and_values(size, mask_type):
    layer = MaskedConv2D(4, size, mask_type=mask_type)
    layer.build((None, 9, 9, 2))
    assert layer.kernel_mask.shape == (size, size, 2, 4)
    expected = _expected_single_channel_mask(size, mask_type)
    for input_channel in range(2):
        for output_channel in range(4):
            np.testing.assert_array_equal(
                layer.kernel_mask[:, :, input_channel, output_channel], expected
            )


def test_mask_3x3_literal():
    np.testing.assert_array_equal(
        causal_kernel_mask((3, 3), 1, 1, "A")[..., 0, 0], [[1, 1, 1], [1, 0, 0], [0, 0, 0]]
    )
    np.testing.assert_array_equal(
        causal_kernel_mask((3, 3), 1, 1, "B")[..., 0, 0], [[1, 1, 1], [1, 1, 0], [0, 0, 0]]
    )


def test_color_masks_order_red_green_blue():
    # 3 input channels (R, G, B), 6 output channels: blocks [R R G G B B].
    mask_a = causal_kernel_mask((3, 3), 3, 6, "A", color_channels=3)
    mask_b = causal_kernel_mask((3, 3), 3, 6, "B", color_channels=3)
    np.testing.assert_array_equal(
        mask_a[1, 1], [[0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1], [0, 0, 0, 0, 0, 0]]
    )
    np.testing.assert_array_equal(
        mask_b[1, 1], [[1, 1, 1, 1, 1, 1], [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 1, 1]]
    )
    # Away from the centre, colours do not matter: the spatial mask is the single-channel one.
    for mask in (mask_a, mask_b):
        np.testing.assert_array_equal(mask[0], np.ones((3, 3, 6)))
        np.testing.assert_array_equal(mask[1, 0], np.ones((3, 6)))
        np.testing.assert_array_equal(mask[1, 2], np.zeros((3, 6)))
        np.testing.assert_array_equal(mask[2], np.zeros((3, 3, 6)))


def test_masked_conv_matches_brute_force_and_keeps_weights():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 4, 5, 1)).astype("float32")
    layer = MaskedConv2D(1, 3, mask_type="A", kernel_initializer="ones", use_bias=False)
    output = keras.ops.convert_to_numpy(layer(x))
    # With an all-ones kernel, the output is the sum of the causal 3x3 neighbourhood.
    padded = np.pad(x[..., 0], ((0, 0), (1, 1), (1, 1)))
    expected = np.zeros_like(x[..., 0])
    for i in range(4):
        for j in range(5):
            expected[:, i, j] = padded[:, i, j : j + 3].sum(-1) + padded[:, i + 1, j]
    np.testing.assert_allclose(output[..., 0], expected, atol=1e-5)
    # Masking happens in the forward pass; the stored kernel is never overwritten.
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.kernel), np.ones((3, 3, 1, 1)))


def _causal_stack(color_channels=1, channels=1):
    # tanh, not the pipeline's relu: a dead relu unit would zero a gradient by chance
    # and make the "sees some earlier pixel" check flaky at this tiny width.
    width = 3 * color_channels
    return keras.Sequential(
        [
            keras.Input((None, None, channels)),
            MaskedConv2D(width, 3, mask_type="A", color_channels=color_channels),
            RowLSTM(width, color_channels=color_channels),
            MaskedConv2D(width, 1, mask_type="B", activation="tanh", color_channels=color_channels),
            MaskedConv2D(color_channels, 1, mask_type="B", color_channels=color_channels),
        ]
    )


def _input_gradient(model, x, row, col, channel=0):
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        output = model(x)[0, row, col, channel]
    return tape.gradient(output, x).numpy()[0]


def test_causality_via_gradients():
    keras.utils.set_random_seed(0)
    height, width = 5, 5
    model = _causal_stack()
    x = np.random.default_rng(1).normal(size=(1, height, width, 1)).astype("float32")
    for row in range(height):
        for col in range(width):
            gradient = np.abs(_input_gradient(model, x, row, col))[..., 0].ravel()
            position = row * width + col
            assert np.all(gradient[position:] == 0), (
                f"pixel ({row}, {col}) sees itself or a later pixel"
            )
            if position > 0:
                assert np.any(gradient[:position] > 0), (
                    f"pixel ({row}, {col}) sees no earlier pixel"
                )
    # The recurrence carries information down many rows: the 3x3 convolutions alone
    # would only reach one row up, the Row LSTM's triangle reaches the top row.
    far = np.abs(_input_gradient(model, x, 4, 2))[..., 0]
    assert far[0, 4] > 0 and far[0, 0] > 0


def test_color_causality_via_gradients():
    keras.utils.set_random_seed(0)
    model = _causal_stack(color_channels=3, channels=3)
    x = np.random.default_rng(2).normal(size=(1, 3, 4, 3)).astype("float32")
    for row, col in [(0, 0), (1, 2), (2, 3)]:
        for color in range(3):
            gradient = np.abs(_input_gradient(model, x, row, col, color))
            flat = gradient.reshape(-1, 3)
            position = row * 4 + col
            assert np.all(flat[position + 1 :] == 0)
            # At the pixel itself, colour `color` sees exactly the colours before it.
            np.testing.assert_array_equal(flat[position] > 0, np.arange(3) < color)


def _numpy_row_lstm(x, input_kernel, recurrent_kernel, bias, units):
    def sigmoid(value):
        return 1 / (1 + np.exp(-value))

    batch, height, width, _ = x.shape
    k_in, k_rec = input_kernel.shape[1], recurrent_kernel.shape[0]
    hidden = np.zeros((batch, width, units))
    cell = np.zeros((batch, width, units))
    outputs = np.zeros((batch, height, width, units))
    for row in range(height):
        new_hidden, new_cell = np.zeros_like(hidden), np.zeros_like(cell)
        for col in range(width):
            gates = bias.astype("float64").copy() + np.zeros((batch, 4 * units))
            # Mask B along the row: the pixel itself and those to its left.
            for offset in range(-(k_in // 2), 1):
                if 0 <= col + offset < width:
                    gates += x[:, row, col + offset] @ input_kernel[0, offset + k_in // 2]
            for offset in range(-(k_rec // 2), k_rec // 2 + 1):
                if 0 <= col + offset < width:
                    gates += hidden[:, col + offset] @ recurrent_kernel[offset + k_rec // 2]
            i, f, g, o = np.split(gates, 4, axis=-1)
            new_cell[:, col] = sigmoid(f) * cell[:, col] + sigmoid(i) * np.tanh(g)
            new_hidden[:, col] = sigmoid(o) * np.tanh(new_cell[:, col])
        hidden, cell = new_hidden, new_cell
        outputs[:, row] = hidden
    return outputs


def test_row_lstm_matches_numpy_reference():
    rng = np.random.default_rng(3)
    units = 3
    x = rng.normal(size=(2, 3, 4, 2)).astype("float32")
    layer = RowLSTM(units, kernel_size=3, input_kernel_size=3)
    layer.build(x.shape)
    # Random weights everywhere, masked positions included: the layer must ignore those.
    weights = [rng.normal(scale=0.5, size=w.shape).astype("float32") for w in layer.get_weights()]
    layer.set_weights(weights)
    expected = _numpy_row_lstm(x, *weights, units)
    assert_all_close(layer(x), expected, atol=1e-5)


def test_row_lstm_forget_bias_starts_at_one():
    layer = RowLSTM(2)
    layer.build((None, 3, 3, 1))
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(layer.bias), [0, 0, 1, 1, 0, 0, 0, 0])


def test_masked_conv_round_trips(tmp_path):
    x = np.random.default_rng(4).normal(size=(2, 5, 5, 1)).astype("float32")
    check_layer(
        MaskedConv2D(4, 3, mask_type="A", activation="relu"),
        x,
        tmp_path,
        expected_output_shape=(2, 5, 5, 4),
    )


def test_color_masked_conv_round_trips(tmp_path):
    x = np.random.default_rng(5).normal(size=(2, 4, 4, 3)).astype("float32")
    check_layer(
        MaskedConv2D(6, 3, mask_type="B", color_channels=3),
        x,
        tmp_path,
        expected_output_shape=(2, 4, 4, 6),
    )


def test_row_lstm_round_trips(tmp_path):
    x = np.random.default_rng(6).normal(size=(2, 4, 5, 2)).astype("float32")
    check_layer(RowLSTM(3, input_kernel_size=1), x, tmp_path, expected_output_shape=(2, 4, 5, 3))


def test_variable_image_size():
    model = _causal_stack()
    assert tuple(model(np.zeros((2, 3, 6, 1), "float32")).shape) == (2, 3, 6, 1)
    assert tuple(model(np.zeros((1, 4, 2, 1), "float32")).shape) == (1, 4, 2, 1)


def test_mixed_float16():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = _causal_stack()
        output = model(np.ones((1, 3, 3, 1), "float32"))
        assert output.dtype == "float16"
        assert all(weight.dtype == "float32" for weight in model.weights)
        assert np.all(np.isfinite(keras.ops.convert_to_numpy(output)))
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize(
    "factory, message",
    [
        (
            lambda: MaskedConv2D(4, 3, mask_type="C"),
            r"mask_type to be one of .*Received: mask_type='C'",
        ),
        (lambda: MaskedConv2D(4, 4), r"odd kernel sizes .*Received: kernel_size=4"),
        (lambda: MaskedConv2D(4, (3, 2)), r"odd kernel sizes .*Received: kernel_size=\(3, 2\)"),
        (
            lambda: MaskedConv2D(4, 3, padding="valid"),
            r"padding='same' .*Received: padding='valid'",
        ),
        (lambda: MaskedConv2D(4, 3, strides=2), r"strides=1 .*Received: strides=2"),
        (
            lambda: MaskedConv2D(4, 3, color_channels=2),
            r"color_channels to be 1 or 3. Received: color_channels=2",
        ),
        (
            lambda: MaskedConv2D(4, 3, color_channels=3),
            r"filters divisible by color_channels=3.*Received: filters=4",
        ),
        (lambda: RowLSTM(0), r"units >= 1. Received: units=0"),
        (
            lambda: RowLSTM(4, kernel_size=2),
            r"kernel_size to be an odd integer >= 1. Received: kernel_size=2",
        ),
        (
            lambda: RowLSTM(4, color_channels=3),
            r"units divisible by color_channels=3.*Received: units=4",
        ),
    ],
)
def test_argument_errors(factory, message):
    with pytest.raises(ValueError, match=message):
        factory()


def test_input_channels_must_split_into_colours():
    with pytest.raises(
        ValueError,
        match=r"input channels divisible by color_channels=3.*Received: input channels=1",
    ):
        MaskedConv2D(3, 3, color_channels=3)(np.zeros((1, 3, 3, 1), "float32"))
    with pytest.raises(
        ValueError,
        match=r"input channels divisible by color_channels=3.*Received: input channels=2",
    ):
        RowLSTM(3, color_channels=3)(np.zeros((1, 3, 3, 2), "float32"))


def _tiny_images(count=2, seed=0):
    return (np.random.default_rng(seed).random((count, 6, 5, 1)) > 0.5).astype("float32")


def test_builder_takes_plain_keyword_arguments():
    keras.utils.set_random_seed(0)
    model = build_pixel_rnn(**TINY)
    assert model.name == "pixel_rnn" and tuple(model.input_shape) == (None, 6, 5, 1)
    assert tuple(model(_tiny_images()).shape) == (2, 6, 5, 1)
    names = {layer.name for layer in model.layers}
    # hidden_units != filters: each residual branch is projected back to the stream's width.
    assert {"row_lstm_1", "row_lstm_2", "residual_projection_1", "residual_2", "logits"} <= names
    plain = build_pixel_rnn(**{**TINY, "residual": False, "hidden_units": 4})
    assert not any(layer.name.startswith("residual") for layer in plain.layers)


def test_bernoulli_nll_sums_pixels_in_nats():
    images = _tiny_images()
    nll = bernoulli_nll(images, np.zeros_like(images))
    np.testing.assert_allclose(nll, [30 * math.log(2)] * 2, rtol=1e-6)  # every pixel costs ln 2 at p = 1/2
    logits = np.where(images > 0, 20.0, -20.0).astype("float32")
    assert np.all(np.asarray(bernoulli_nll(images, logits)) < 1e-6)
    assert keras.saving.get_registered_name(bernoulli_nll) == "rnnapps>bernoulli_nll"


def test_complete_images_keeps_known_pixels_and_is_seeded():
    keras.utils.set_random_seed(1)
    model = build_pixel_rnn(**TINY)
    images = _tiny_images(seed=2)
    known = np.zeros_like(images, bool)
    known[:, :3] = True  # the top half is given
    first = complete_images(model, images, known, tf.constant(4)).numpy()
    np.testing.assert_array_equal(first[:, :3], images[:, :3])
    assert set(np.unique(first)) <= {0.0, 1.0}
    np.testing.assert_array_equal(complete_images(model, images, known, tf.constant(4)).numpy(), first)
    completions = inpaint_numpy(model, images.astype(np.uint8), known, samples=2, seed=4)
    assert completions.shape == (2, 2, 6, 5, 1) and completions.dtype == np.uint8
    np.testing.assert_array_equal(completions[:, :, :3], np.repeat(images[:, None, :3], 2, axis=1))
    np.testing.assert_array_equal(inpaint_numpy(model, images.astype(np.uint8), known, samples=2, seed=4), completions)
    samples = sample_numpy(model, 3, seed=0)
    assert samples.shape == (3, 6, 5, 1) and samples.dtype == np.uint8


def test_model_keras_loads_with_rnnapps_models_alone(tmp_path):
    keras.utils.set_random_seed(2)
    model = build_pixel_rnn(**TINY)
    model.compile(optimizer=keras.optimizers.Adam(1e-3, clipnorm=250.0), loss=bernoulli_nll)
    path = tmp_path / "model.keras"
    model.save(path)
    images = (np.arange(30).reshape(1, 6, 5, 1) % 3 == 0).astype("float32")
    # A fresh interpreter that imports keras and rnnapps.models only, never a pipeline module.
    code = (
        "import json, sys\n"
        "import keras\n"
        "import rnnapps.models\n"
        "model = keras.saving.load_model(sys.argv[1])\n"
        "assert model.loss is rnnapps.models.bernoulli_nll, model.loss\n"
        "images = keras.ops.cast(keras.ops.reshape(keras.ops.arange(30) % 3 == 0, (1, 6, 5, 1)), 'float32')\n"
        "logits = keras.ops.convert_to_numpy(model(images))\n"
        "assert 'rnnapps.pipelines' not in sys.modules, sorted(sys.modules)\n"
        "print(json.dumps(logits.tolist()))\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(path)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_allclose(json.loads(done.stdout.splitlines()[-1]), model(images), atol=1e-5)
