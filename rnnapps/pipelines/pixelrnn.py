"""PixelRNN (Row LSTM) on binarized MNIST: image likelihood, inpainting and sampling.

What it does, in five bullets:

* reads binarized MNIST (Larochelle split 50k/10k/10k; or MNIST binarised with a
  fixed threshold or stochastically, ``--set dataset=mnist --set binarize=...``) and
  trains on images as their own targets;
* models ``p(x) = prod_i p(x_i | x_<i)`` over the 784 pixels in raster order: a
  7x7 mask-A convolution (each pixel blind to itself and everything after it),
  then a stack of Row LSTM layers that walk the image row by row (a masked
  1x3 input-to-state convolution along the row, a 1x3 state-to-state convolution
  over the previous row's hidden state) with residual connections;
* ReLU and two 1x1 mask-B convolutions turn every pixel's features into one
  Bernoulli logit; the loss is the sigmoid cross-entropy summed over the pixels,
  so ``loss`` is the negative log-likelihood in nats per image;
* evaluates the test NLL in nats per image and bits/dim (nats / (784 ln 2)) on
  the whole test split, and draws inpaintings (lower half hidden) and samples;
* samples pixel by pixel in raster order inside a ``tf.function`` loop that runs
  the whole model on the current canvas once per hidden pixel (784 forward
  passes for an unconditional sample; 392 for a hidden lower half), keeping
  every visible pixel; exported as ``inpaint``, ``sample`` and ``log_prob``.

Reference: van den Oord, Kalchbrenner and Kavukcuoglu (2016), "Pixel Recurrent
Neural Networks", ICML (sections 3.1, 3.4 and 4, Row LSTM and residual blocks).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import ClassVar

import click
import keras
import numpy as np
import tensorflow as tf

from rnnapps import runtime
from rnnapps.config import TrainingConfig
from rnnapps.data.images import load_images, make_dataset
from rnnapps.errors import ConfigError
from rnnapps.export import Endpoint, read_metadata
from rnnapps.models.pixel_rnn import MaskedConv2D, RowLSTM
from rnnapps.pipelines.base import (
    Datasets,
    Pipeline,
    evaluation_subset,
    export_limits,
    export_options,
    served_model,
    spread_indices,
)
from rnnapps.request_limits import batch_at_most, count_within, guarded

DATASETS = ("binarized_mnist", "mnist")
BINARIZE_MODES = ("fixed", "stochastic")
OCCLUSIONS = ("bottom", "right", "random")
IMAGE_SHAPE = (28, 28, 1)


@dataclasses.dataclass
class PixelRNNConfig(TrainingConfig):
    dataset: str = "binarized_mnist"
    # Only for dataset=mnist: "fixed" (pixel > 127) or "stochastic" (one seeded Bernoulli draw per pixel).
    binarize: str = "fixed"
    # Channels of the mask-A convolution and of the residual stream between Row LSTM layers.
    filters: int = 32
    # Hidden units h of every Row LSTM layer.
    hidden_units: int = 32
    row_lstm_layers: int = 2
    residual: bool = True
    # Width of the Row LSTM's state-to-state (previous row) and input-to-state (masked) convolutions.
    state_kernel_size: int = 3
    input_kernel_size: int = 3
    # Channels of the first 1x1 output convolution.
    output_units: int = 64
    # Pictures written by evaluate(): test images inpainted (each completed twice) and samples.
    inpaint_examples: int = 8
    sample_examples: int = 16
    # The loss is nats per image (hundreds), so gradient norms are large: clip far above their typical size.
    clipnorm: float = 250.0
    learning_rate: float = 2e-3
    batch_size: int = 32
    # Validate on at most this many images per epoch (None: all); the test NLL always uses the whole test split.
    max_validation_examples: int | None = None
    # Serving: sample and inpaint cost one forward pass per pixel (784 for MNIST), so they take at
    # most max_samples images a request; log_prob is one pass and takes up to max_request_batch.
    max_samples: int = 64

    PRESETS: ClassVar[dict] = {
        "smoke": dict(epochs=2, batch_size=8, learning_rate=5e-3, learning_rate_decay=0.9, filters=8, hidden_units=4, row_lstm_layers=1,
                      output_units=8, early_stopping_patience=0, inpaint_examples=2, sample_examples=2,
                      max_train_examples=256, max_eval_examples=128),
        # Up to 44 x 500 steps of 32 images (14 passes over the 50k training images), annealed by 0.92
        # an epoch, inside a 52-minute budget: on 2 cores about 40 epochs fit and reach 86.0 test nats
        # (docs/pixelrnn.md). The earlier 20 epochs annealed by 0.85 decayed too soon: 89.2 test nats.
        "cpu": dict(epochs=44, batch_size=32, steps_per_epoch=500, learning_rate=2e-3, learning_rate_decay=0.92,
                    time_budget_minutes=52.0,
                    filters=32, hidden_units=16, row_lstm_layers=3, output_units=64, early_stopping_patience=0,
                    max_validation_examples=2000),
        "full": dict(epochs=60, batch_size=64, learning_rate=1e-3, filters=128, hidden_units=64, row_lstm_layers=7,
                     output_units=128, early_stopping_patience=5),
    }

    def __post_init__(self):
        if self.dataset not in DATASETS:
            raise ConfigError(f"dataset={self.dataset!r}; choose one of {', '.join(DATASETS)}")
        if self.binarize not in BINARIZE_MODES:
            raise ConfigError(f"binarize={self.binarize!r}; choose one of {', '.join(BINARIZE_MODES)}")
        for name in ("filters", "hidden_units", "row_lstm_layers", "output_units"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be at least 1")


@keras.saving.register_keras_serializable(package="rnnapps")
def bernoulli_nll(targets, logits):
    """Negative log-likelihood in nats per image of 0/1 ``targets`` under Bernoulli ``logits``."""
    targets = keras.ops.cast(targets, "float32")
    logits = keras.ops.cast(logits, "float32")
    per_pixel = keras.ops.binary_crossentropy(targets, logits, from_logits=True)
    return keras.ops.sum(keras.ops.reshape(per_pixel, (keras.ops.shape(per_pixel)[0], -1)), axis=-1)


class PixelRNNPipeline(Pipeline):
    name = "pixelrnn"
    config_class = PixelRNNConfig
    monitor = "val_loss"
    monitor_mode = "min"
    request_limit_fields = ("max_request_batch", "max_samples")

    def load_data(self, config: PixelRNNConfig, data_dir: Path | None) -> Datasets:
        splits = load_images(config.dataset, data_dir, binarize=config.binarize, seed=config.seed)
        train = splits["train"]
        if config.max_train_examples:
            train = train[: config.max_train_examples]

        def pairs(images, shuffle):
            # The images are their own targets: every pixel is predicted from the ones before it.
            dataset = make_dataset(images, config.batch_size, shuffle=shuffle, seed=config.seed, binary=True)
            return dataset.map(lambda batch: (batch, batch), num_parallel_calls=tf.data.AUTOTUNE)

        validation = evaluation_subset(splits["validation"][: config.max_validation_examples or None],
                                       config.max_eval_examples)
        test = evaluation_subset(splits["test"], config.max_eval_examples)
        return Datasets(
            train=pairs(train, True),
            validation=pairs(validation, False),
            test=pairs(test, False),
            info={
                "image_shape": tuple(int(size) for size in train.shape[1:]),
                "test_images": test,
                "sizes": {"train": len(train), "validation": len(validation), "test": len(test)},
            },
        )

    def build_model(self, config: PixelRNNConfig, datasets: Datasets) -> keras.Model:
        model = build_pixel_rnn(config, datasets.info.get("image_shape", IMAGE_SHAPE))
        model.compile(optimizer=runtime.make_optimizer(config), loss=bernoulli_nll)
        return model

    def evaluate(self, model, datasets: Datasets, config, run_dir: Path) -> dict:
        nll = per_image_nll(model, datasets.test)
        height, width, channels = model.input_shape[1:]
        dimensions = height * width * channels
        metrics = {
            "test_nll_nats": float(nll.mean()),
            "test_bits_per_dim": float(nll.mean() / (dimensions * math.log(2))),
            "test_examples": int(len(nll)),
        }
        test_images = datasets.info.get("test_images")
        if test_images is not None and config.inpaint_examples > 0:
            originals = test_images[spread_indices(len(test_images), config.inpaint_examples)]
            known = occlusion_mask(originals.shape, "bottom")
            completions = inpaint_numpy(model, originals, known, samples=2, seed=config.seed)
            write_inpainting_grid(originals, known, completions, run_dir / "inpainting.png")
        if config.sample_examples > 0:
            samples = sample_numpy(model, config.sample_examples, seed=config.seed)
            write_image_grid(samples, run_dir / "samples.png", columns=min(8, config.sample_examples))
        return metrics

    def serving(self, model, config) -> dict[str, Endpoint]:
        height, width, _ = model.input_shape[1:]
        any_images = tf.TensorSpec(None, tf.uint8, name="images")

        def inpaint(images, mask, seed):
            images = guarded([batch_at_most(images, "images", config.max_samples, "max_samples")], images)
            canvas, scale = _serving_images(images, height, width, "images")
            known, _ = _serving_images(mask, height, width, "mask", binary_only=True)
            with tf.control_dependencies([_assert_same_shape(images, mask)]):
                completed = complete_images(model, canvas, known > 0, seed)
            return {"images": tf.reshape(tf.cast(completed, tf.uint8) * scale, tf.shape(images))}

        def log_prob(images):
            images = guarded([batch_at_most(images, "images", config.max_request_batch)], images)
            canvas, _ = _serving_images(images, height, width, "images")
            logits = model(canvas, training=False)
            return {"nll_nats": bernoulli_nll(canvas, logits)}

        def sample(num, seed):
            num = guarded([count_within(num, "num", config.max_samples, "max_samples")], num)
            canvas = tf.zeros([num, height, width, 1], tf.float32)
            completed = complete_images(model, canvas, tf.zeros_like(canvas, tf.bool), seed)
            return {"images": tf.cast(completed[..., 0], tf.uint8)}

        inpaint_spec = [any_images, tf.TensorSpec(None, tf.uint8, name="mask"), tf.TensorSpec([], tf.int32, name="seed")]
        return {
            "serving_default": Endpoint(inpaint, inpaint_spec),
            "inpaint": Endpoint(inpaint, inpaint_spec),
            "log_prob": Endpoint(log_prob, [any_images]),
            # The same function under the name the project's other docs use.
            "log_likelihood": Endpoint(log_prob, [any_images]),
            "sample": Endpoint(sample, [tf.TensorSpec([], tf.int32, name="num"),
                                        tf.TensorSpec([], tf.int32, name="seed")]),
        }



def build_pixel_rnn(config: PixelRNNConfig, image_shape=IMAGE_SHAPE) -> keras.Model:
    """Mask-A 7x7 conv → Row LSTM stack (residual) → ReLU, 1x1 mask-B convs → a logit per pixel."""
    images = keras.Input(shape=tuple(image_shape), name="images")
    x = MaskedConv2D(config.filters, 7, mask_type="A", name="input_conv")(images)
    for index in range(config.row_lstm_layers):
        hidden = RowLSTM(
            config.hidden_units,
            kernel_size=config.state_kernel_size,
            input_kernel_size=config.input_kernel_size,
            name=f"row_lstm_{index + 1}",
        )(x)
        if not config.residual:
            x = hidden
            continue
        # A 1x1 convolution sees one pixel's own features only, so it keeps the model causal.
        if config.hidden_units != config.filters:
            hidden = MaskedConv2D(config.filters, 1, mask_type="B", name=f"residual_projection_{index + 1}")(hidden)
        x = keras.layers.Add(name=f"residual_{index + 1}")([x, hidden])
    x = keras.layers.ReLU(name="output_relu")(x)
    x = MaskedConv2D(config.output_units, 1, mask_type="B", activation="relu", name="output_conv")(x)
    # float32 logits keep the summed cross-entropy exact under mixed precision.
    logits = MaskedConv2D(image_shape[-1], 1, mask_type="B", dtype="float32", name="logits")(x)
    return keras.Model(images, logits, name="pixel_rnn")


def per_image_nll(model, dataset) -> np.ndarray:
    """Negative log-likelihood in nats of every image of an ``(images, images)`` dataset."""
    score = tf.function(lambda images: bernoulli_nll(images, model(images, training=False)), reduce_retracing=True)
    return np.concatenate([score(images).numpy() for images, _ in dataset]).astype("float64")


# --- sampling and inpainting -----------------------------------------------------------------

def complete_images(model, images, known, seed):
    """Sample every unknown pixel of ``images`` in raster order, conditioned on all known ones.

    Args:
        model: a PixelRNN mapping float ``(batch, height, width, 1)`` 0/1 images to logits.
        images: float ``(batch, height, width, 1)`` 0/1 values (unknown ones are ignored).
        known: bool, same shape; True where a pixel is given and must be kept.
        seed: int32 scalar; the same seed and inputs give the same completions.

    Returns:
        float32 ``(batch, height, width, 1)``: known pixels unchanged, the rest sampled.

    Each sampled position costs one forward pass of the whole model on the
    current canvas (the Row LSTM has no cheaper incremental step here), so only
    positions where some image of the batch has an unknown pixel are visited.
    """
    images = tf.cast(images, tf.float32)
    known = tf.cast(known, tf.bool)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    canvas = tf.where(known, images, tf.zeros_like(images))
    unknown_somewhere = tf.reduce_any(tf.reshape(tf.logical_not(known), [batch, height * width]), axis=0)
    positions = tf.cast(tf.reshape(tf.where(unknown_somewhere), [-1]), tf.int32)
    seed = tf.cast(seed, tf.int32)

    def step(index, canvas):
        position = positions[index]
        row, column = position // width, position % width
        logits = model(canvas, training=False)
        probability = tf.sigmoid(tf.cast(logits[:, row, column, 0], tf.float32))
        noise = tf.random.stateless_uniform([batch], seed=tf.stack([seed, position]))
        draw = tf.cast(noise < probability, tf.float32)[:, None, None, None]
        here = tf.reshape(tf.one_hot(position, height * width, on_value=True, off_value=False), [1, height, width, 1])
        canvas = tf.where(tf.logical_and(here, tf.logical_not(known)), draw, canvas)
        return index + 1, canvas

    _, canvas = tf.while_loop(lambda index, _: index < tf.size(positions), step, [tf.constant(0), canvas])
    return canvas


def _serving_images(images, height, width, name, binary_only=False):
    """uint8 ``[batch, H, W]`` or ``[batch, H, W, 1]`` → float 0/1 ``[batch, H, W, 1]`` and the output scale.

    Images may hold 0/1 or 0-255 values (thresholded at 128, returned as 0/255).
    """
    shape = tf.shape(images)
    padded = tf.concat([shape, tf.ones([4], tf.int32)], axis=0)
    rank = tf.rank(images)
    valid = tf.logical_and(
        tf.logical_or(tf.equal(rank, 3), tf.logical_and(tf.equal(rank, 4), tf.equal(padded[3], 1))),
        tf.logical_and(tf.equal(padded[1], height), tf.equal(padded[2], width)),
    )
    check = tf.debugging.Assert(
        valid, [f"{name} must be uint8 [batch, {height}, {width}] or [batch, {height}, {width}, 1]; got shape", shape]
    )
    with tf.control_dependencies([check]):
        images = tf.reshape(images, [-1, height, width, 1])
    if binary_only:
        return tf.cast(images > 0, tf.float32), tf.constant(1, tf.uint8)
    full_range = tf.reduce_max(images) > 1
    binary = tf.where(full_range, images > 127, images > 0)
    return tf.cast(binary, tf.float32), tf.where(full_range, tf.constant(255, tf.uint8), tf.constant(1, tf.uint8))


def _assert_same_shape(images, mask):
    def padded(tensor):
        return tf.concat([tf.shape(tensor), tf.ones([4], tf.int32)], axis=0)[:5]

    same = tf.logical_and(tf.equal(tf.rank(images), tf.rank(mask)), tf.reduce_all(tf.equal(padded(images), padded(mask))))
    return tf.debugging.Assert(same, ["mask must have the shape of images; got mask", tf.shape(mask), "images",
                                      tf.shape(images)])


def occlusion_mask(shape, occlude: str, seed: int = 0) -> np.ndarray:
    """uint8 mask (1 = known) for ``shape`` ``(N, H, W[, 1])``.

    ``bottom``/``bottom-half``: the lower half hidden; ``right``/``right-half``: the
    right half; ``random``: each pixel hidden with probability 1/2 (seeded);
    ``box:r0,c0,r1,c1``: rows r0..r1-1 and columns c0..c1-1 hidden.
    """
    mask = np.ones(shape, dtype=np.uint8)
    height, width = shape[1], shape[2]
    kind = occlude.split("-")[0] if not occlude.startswith("box:") else "box"
    if kind == "bottom":
        mask[:, height // 2:] = 0
    elif kind == "right":
        mask[:, :, width // 2:] = 0
    elif kind == "random":
        mask = (np.random.default_rng(seed).random(shape) >= 0.5).astype(np.uint8)
    elif kind == "box":
        try:
            r0, c0, r1, c1 = (int(value) for value in occlude[4:].split(","))
        except ValueError:
            raise ConfigError(f"--occlude {occlude!r}: expected box:r0,c0,r1,c1 with four integers") from None
        if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
            raise ConfigError(f"--occlude {occlude!r}: the box must lie inside the {height}x{width} image")
        mask[:, r0:r1, c0:c1] = 0
    else:
        raise ConfigError(f"--occlude {occlude!r}: choose bottom, right, random or box:r0,c0,r1,c1")
    return mask


def inpaint_numpy(model, images: np.ndarray, known: np.ndarray, samples: int = 1, seed: int = 0) -> np.ndarray:
    """``samples`` completions of each uint8 0/1 image ``(N, H, W, 1)``: uint8 ``(N, samples, H, W, 1)``."""
    repeated = np.repeat(images.astype("float32"), samples, axis=0)
    repeated_known = np.repeat(known.astype(bool), samples, axis=0)
    completed = tf.function(lambda x, k, s: complete_images(model, x, k, s))(repeated, repeated_known, tf.constant(seed))
    return completed.numpy().astype(np.uint8).reshape((len(images), samples) + images.shape[1:])


def sample_numpy(model, count: int, seed: int = 0) -> np.ndarray:
    """``count`` unconditional samples, uint8 ``(count, H, W, 1)``."""
    shape = (count,) + tuple(model.input_shape[1:])
    zeros = np.zeros(shape, "float32")
    completed = tf.function(lambda x, k, s: complete_images(model, x, k, s))(zeros, zeros.astype(bool), tf.constant(seed))
    return completed.numpy().astype(np.uint8)


# --- pictures ---------------------------------------------------------------------------------

def _tile(rows: list[list[np.ndarray]], scale: int = 3) -> np.ndarray:
    """A float image of ``rows`` of 2-D tiles in [0, 1] with 2-pixel grey gutters."""
    height, width = rows[0][0].shape
    columns = max(len(row) for row in rows)
    gutter = 2
    canvas = np.full((len(rows) * (height + gutter) + gutter, columns * (width + gutter) + gutter), 0.35)
    for r, row in enumerate(rows):
        for c, tile in enumerate(row):
            top, left = gutter + r * (height + gutter), gutter + c * (width + gutter)
            canvas[top:top + height, left:left + width] = tile
    return np.kron(canvas, np.ones((scale, scale)))


def _save_png(array: np.ndarray, path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.imsave(str(path), array, cmap="gray", vmin=0.0, vmax=1.0)
    return Path(path)


def write_inpainting_grid(originals, known, completions, path) -> Path:
    """One row per image, as in the paper: occluded | K completions | original (hidden pixels shown grey)."""
    rows = []
    for original, mask, samples in zip(originals, known, completions, strict=True):
        occluded = np.where(mask[..., 0] > 0, original[..., 0].astype(float), 0.5)
        rows.append([occluded, *[sample[..., 0].astype(float) for sample in samples], original[..., 0].astype(float)])
    return _save_png(_tile(rows), path)


def write_image_grid(images, path, columns: int = 8) -> Path:
    tiles = [image[..., 0].astype(float) for image in images]
    rows = [tiles[start:start + columns] for start in range(0, len(tiles), columns)]
    blank = np.full_like(tiles[0], 0.35)
    rows[-1] = rows[-1] + [blank] * (columns - len(rows[-1]))
    return _save_png(_tile(rows), path)


# --- the predict verb -------------------------------------------------------------------------

def _read_png(path: str) -> np.ndarray:
    image = tf.io.decode_image(tf.io.read_file(path), channels=1, expand_animations=False).numpy()
    if image.shape[:2] != IMAGE_SHAPE[:2]:
        raise click.BadParameter(f"{path}: image is {image.shape[0]}x{image.shape[1]}; expected 28x28", param_hint="--image")
    return (image > 127).astype(np.uint8)


@click.command("pixelrnn")
@click.option("--occlude", default="bottom", show_default=True,
              help="Hidden region: bottom[-half], right[-half], random, or box:r0,c0,r1,c1.")
@click.option("--count", default=8, show_default=True, type=click.IntRange(1, 256),
              help="Test images to inpaint, spread evenly over the test split.")
@click.option("--samples", default=1, show_default=True, type=click.IntRange(1, 16),
              help="Completions per image.")
@click.option("--seed", default=0, show_default=True, type=int, help="Sampling seed (same seed, same completions).")
@click.option("--image", "image_paths", multiple=True, type=click.Path(dir_okay=False, exists=True),
              help="A 28x28 PNG to inpaint instead of test images (repeatable).")
@click.option("--data-dir", envvar="RNNAPPS_DATA_DIR", type=click.Path(file_okay=False),
              help="Dataset folder to take test images from (default: the export's dataset via tfds).")
@export_options
@click.option("--output", default="pixelrnn_inpainting.png", show_default=True, type=click.Path(dir_okay=False),
              help="Where to write the PNG grid.")
def predict_command(occlude, count, samples, seed, image_paths, data_dir, model_path, export_dir, output):
    """Hide part of test digits and let an exported PixelRNN complete them.

    Writes a PNG grid, one row per image: occluded | SAMPLES completions | original.

    \b
    Examples:
      rnnapps predict pixelrnn --occlude bottom --count 8 --samples 3
      rnnapps predict pixelrnn --occlude box:8,8,20,20 --image my_digit.png --output out.png
    """
    loaded, path = served_model("pixelrnn", model_path, export_dir)
    if image_paths:
        originals = np.stack([_read_png(p) for p in image_paths])
    else:
        dataset_config = read_metadata(path).get("config", {})
        splits = load_images(dataset_config.get("dataset", "binarized_mnist"), data_dir,
                             binarize=dataset_config.get("binarize", "fixed"), seed=dataset_config.get("seed", 0))
        originals = splits["test"][spread_indices(len(splits["test"]), count)]
    known = occlusion_mask(originals.shape, occlude, seed)
    images, masks = np.repeat(originals, samples, axis=0), np.repeat(known, samples, axis=0)
    # One request holds at most the export's max_samples images.
    per_request = export_limits(path, PixelRNNConfig)["max_samples"]
    completions = np.concatenate([
        loaded.signatures["inpaint"](
            images=tf.constant(images[start : start + per_request]),
            mask=tf.constant(masks[start : start + per_request]),
            seed=tf.constant(seed, tf.int32),
        )["images"].numpy()
        for start in range(0, len(images), per_request)
    ])
    completions = completions.reshape((len(originals), samples) + originals.shape[1:])
    write_inpainting_grid(originals, known, completions, output)
    click.echo(f"wrote {output}: {len(originals)} image(s) x {samples} completion(s), occluded {occlude}, seed {seed}")


PIPELINE = PixelRNNPipeline()
PIPELINE.predict_command = predict_command
