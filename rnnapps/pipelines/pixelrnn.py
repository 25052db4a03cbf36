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

The model, its loss and the sampler are :mod:`rnnapps.models.pixel_rnn`
(``build_pixel_rnn``, ``bernoulli_nll``, ``complete_images``), so a saved
``model.keras`` loads with ``rnnapps.models`` alone; this module maps the config
onto them, evaluates, serves and predicts.
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

from rnnapps import image_plots, training
from rnnapps.config import TrainingConfig
from rnnapps.data.images import load_images, make_dataset
from rnnapps.export import Endpoint, read_metadata
from rnnapps.models.images import (
    assert_same_shape,
    occlusion_mask,
    serving_image_batch,
    serving_images_to_float,
)
from rnnapps.models.pixel_rnn import (
    bernoulli_nll,
    build_pixel_rnn,
    complete_images,
    inpaint_numpy,
    per_image_nll,
    sample_numpy,
)
from rnnapps.pipelines.base import (
    Datasets,
    ImageData,
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
# Pixels per image pixel in the PNG grids (28-pixel digits are tiny).
PICTURE_SCALE = 3


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
        # Up to 34 x 500 steps of 32 images (11 passes over the 50k training images) inside a 57-minute
        # budget, so the whole benchmark stays under 60 (docs/pixelrnn.md). Weight averaging (Polyak,
        # 0.999: about two epochs) and a rate annealed to about 7% of its start by the last epoch. The
        # 32-unit Row LSTM: 84.64 test nats, all 34 epochs in 43 minutes on a Sapphire Rapids class CPU;
        # 16 units over 44 epochs: 85.28 (issue 20).
        "cpu": dict(epochs=34, batch_size=32, steps_per_epoch=500, learning_rate=2e-3, learning_rate_decay=0.925,
                    weight_averaging=0.999, time_budget_minutes=57.0,
                    filters=32, hidden_units=32, row_lstm_layers=3, output_units=64, early_stopping_patience=0,
                    max_validation_examples=2000),
        "full": dict(epochs=60, batch_size=64, learning_rate=1e-3, filters=128, hidden_units=64, row_lstm_layers=7,
                     output_units=128, early_stopping_patience=5),
    }

    def validate(self) -> None:
        super().validate()
        self.check_choices(dataset=DATASETS, binarize=BINARIZE_MODES)
        self.check_at_least(1, "filters", "hidden_units", "row_lstm_layers", "output_units")


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
            info=ImageData(
                sizes={"train": len(train), "validation": len(validation), "test": len(test)},
                image_shape=tuple(int(size) for size in train.shape[1:]),
                test_images=test,
            ),
        )

    def build_model(self, config: PixelRNNConfig, datasets: Datasets) -> keras.Model:
        height, width, channels = datasets.info.image_shape
        model = build_pixel_rnn(
            height=height, width=width, channels=channels, filters=config.filters, hidden_units=config.hidden_units,
            row_lstm_layers=config.row_lstm_layers, residual=config.residual,
            state_kernel_size=config.state_kernel_size, input_kernel_size=config.input_kernel_size,
            output_units=config.output_units,
        )
        model.compile(optimizer=training.make_optimizer(config), loss=bernoulli_nll)
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
        test_images = datasets.info.test_images
        if test_images is not None and config.inpaint_examples > 0:
            originals = test_images[spread_indices(len(test_images), config.inpaint_examples)]
            known = occlusion_mask(originals.shape, "bottom")
            completions = inpaint_numpy(model, originals, known, samples=2, seed=config.seed)
            image_plots.write_inpainting_grid(originals.astype("float32"), known, completions.astype("float32"),
                                              run_dir / "inpainting.png", scale=PICTURE_SCALE)
        if config.sample_examples > 0:
            samples = sample_numpy(model, config.sample_examples, seed=config.seed)
            image_plots.write_image_grid(samples.astype("float32"), run_dir / "samples.png",
                                         columns=min(8, config.sample_examples), scale=PICTURE_SCALE)
        return metrics

    def serving(self, model, config) -> dict[str, Endpoint]:
        height, width, _ = model.input_shape[1:]
        any_images = tf.TensorSpec(None, tf.uint8, name="images")

        def inpaint(images, mask, seed):
            images = guarded([batch_at_most(images, "images", config.max_samples, "max_samples")], images)
            canvas, scale = serving_images_to_float(images, image_shape=(height, width, 1))
            known = serving_image_batch(mask, height, width, name="mask") > 0
            with tf.control_dependencies([assert_same_shape(images, mask)]):
                completed = complete_images(model, canvas, known, seed)
            return {"images": tf.reshape(tf.cast(completed, tf.uint8) * scale, tf.shape(images))}

        def log_prob(images):
            images = guarded([batch_at_most(images, "images", config.max_request_batch)], images)
            canvas, _ = serving_images_to_float(images, image_shape=(height, width, 1))
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
    image_plots.write_inpainting_grid(originals.astype("float32"), known, completions.astype("float32"), output,
                                      scale=PICTURE_SCALE)
    click.echo(f"wrote {output}: {len(originals)} image(s) x {samples} completion(s), occluded {occlude}, seed {seed}")


PIPELINE = PixelRNNPipeline()
PIPELINE.predict_command = predict_command
