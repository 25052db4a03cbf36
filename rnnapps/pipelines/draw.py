"""DRAW on SVHN and binarized MNIST: a recurrent VAE that draws with read/write attention.

What it does, in five bullets:

* reads SVHN cropped digits (32x32x3, the default: ``svhn/svhn.npz``, the
  original ``train_32x32.mat``/``test_32x32.mat``, else tfds ``svhn_cropped``)
  or binarized MNIST (``--set dataset=binarized_mnist``) as float ``[0, 1]``
  images that are their own targets;
* at each of ``T`` steps an encoder LSTM reads the image and the error image
  (image minus the current canvas) through an ``N×N`` grid of Gaussian filters
  whose centre, stride, width and intensity the decoder state chooses;
* the encoder state gives a posterior ``N(μ_t, σ_t)``; ``z_t`` is sampled by
  reparameterisation and a decoder LSTM turns it into a patch written onto the
  canvas through another Gaussian grid;
* after ``T`` steps ``sigmoid(canvas)`` parameterises a Bernoulli per pixel
  (for SVHN: a Bernoulli on intensities in ``[0, 1]``, as public DRAW
  implementations do); the loss, trained with ``fit`` and clipped gradients,
  is the reconstruction NLL plus ``Σ_t KL(q(z_t) ‖ N(0, I))``: the negative
  ELBO, an upper bound on ``-log p(x)`` in nats per image;
* evaluation reports that bound on the test split (nats/image and bits/dim),
  writes sample and reconstruction grids, a KL-per-step chart and an animated
  GIF of canvases being drawn, and exports ``generate`` and ``reconstruct``.

Reference: Gregor, Danihelka, Graves, Rezende and Wierstra (2015), "DRAW: A
Recurrent Neural Network For Image Generation", ICML.

The model is :mod:`rnnapps.models.draw` (``build_draw``, ``DrawModel``, which
computes its own loss), so a saved ``model.keras`` loads with ``rnnapps.models``
alone; this module maps the config onto it, evaluates, serves and predicts.

Serving (TensorFlow Serving, ``saved_models/draw/<version>/``):

* ``generate(num: int32[], seed: int32[]) -> {images: uint8[num, H, W, C],
  canvases: uint8[num, T, H, W, C]}``: the canvas means ``sigmoid(c_t)`` scaled
  to 0-255 (not Bernoulli draws, as in the paper's figures); the same seed gives
  the same images. ``serving_default`` is this signature: generating is what
  DRAW is for.
* ``reconstruct(images: uint8[None, H, W, C]) -> {images: uint8, nll_bound:
  float32[None]}``: the final canvas and the per-image bound in nats, with a
  fixed noise seed so a request always gets the same answer. Binary datasets
  accept 0/1 or 0-255 images (thresholded at 128); SVHN takes 0-255 colour.
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
from rnnapps.errors import ConfigError
from rnnapps.export import Endpoint
from rnnapps.models.draw import build_draw, nll_bounds
from rnnapps.models.images import serving_images_to_float, unit_float_to_uint8
from rnnapps.pipelines.base import (
    Datasets,
    ImageData,
    Pipeline,
    evaluation_subset,
    export_limits,
    export_options,
    served_model,
)
from rnnapps.request_limits import batch_at_most, count_within, guarded

DATASETS = ("svhn", "binarized_mnist")
LIKELIHOODS = ("bernoulli",)
IMAGE_SHAPES = {"svhn": (32, 32, 3), "binarized_mnist": (28, 28, 1)}
# The paper's glimpse sizes (read N, write N): 2/5 for MNIST, 12/12 for SVHN.
PAPER_GLIMPSES = {"svhn": (12, 12), "binarized_mnist": (2, 5)}
# The noise seed of the exported reconstruct signature: a request always gets the same answer.
RECONSTRUCT_SEED = 0


@dataclasses.dataclass
class DrawConfig(TrainingConfig):
    dataset: str = "svhn"
    # Only "bernoulli" (on 0/1 pixels, or on intensities in [0, 1] for SVHN); see docs/draw.md.
    likelihood: str = "bernoulli"
    # T: glimpses per image.
    steps: int = 64
    # N of the read and write grids; None: the paper's choice for the dataset (MNIST 2/5, SVHN 12/12).
    read_glimpse_size: int | None = None
    write_glimpse_size: int | None = None
    encoder_units: int = 256
    decoder_units: int = 256
    latent_size: int = 100
    # Gaussian read/write attention; false: the paper's no-attention baseline (whole images).
    attention: bool = True
    # The loss is nats per image (hundreds), so gradient norms are large: clip well above their typical size.
    clipnorm: float = 100.0
    # Validate on at most this many images per epoch (None: all); the test bound always uses the whole test split.
    max_validation_examples: int | None = None
    # Pictures written by evaluate(): generated samples (also animated) and reconstructed test images.
    sample_examples: int = 64
    reconstruct_examples: int = 16
    # Serving: generate returns every step's canvas, num x steps x H x W x C bytes (SVHN at T=64:
    # 200 KB an image), so a request draws at most max_samples images.
    max_samples: int = 256

    PRESETS: ClassVar[dict] = {
        "smoke": dict(epochs=2, batch_size=4, learning_rate=3e-3, steps=3, read_glimpse_size=2, write_glimpse_size=3,
                      encoder_units=8, decoder_units=8, latent_size=4, early_stopping_patience=0, sample_examples=4,
                      reconstruct_examples=2, max_train_examples=256, max_eval_examples=128),
        # Sized for binarized MNIST on 2 CPU cores (the benchmark): T=16 instead of 64, the paper's
        # units, read/write attention with an 8x8 read and a 20x20 write grid. The paper's 2x2 read sees
        # too little in 16 glimpses (182 nats after 600 steps) and a 5x5 write paints too little; in
        # 4-minute probes (docs/draw.md) read 8 / write 20 reached 128 nats after 700 steps, level with
        # no attention per minute (125 after 600), cheaper per step. Up to 44 x 500 steps, annealed,
        # inside a 56-minute budget: 90.57 nats after 21,205 steps on a Zen 4 EPYC (93.54 after 9,354
        # steps in 50 minutes on an AVX2 EPYC); from epoch 33 on it gained < 0.3 an epoch while the rate
        # decayed x0.92 an epoch to 3e-5 (docs/draw.md). So the rate now decays x0.94 (1e-4 at epoch 38)
        # and the weights are averaged (Polyak, 0.999: about two epochs), which settles them without
        # the rate having to reach zero: 89.20 nats after all 22,000 steps in 50 minutes on a Sapphire
        # Rapids class CPU (an AVX2 EPYC fits about 21 of the 44 epochs in the budget).
        "cpu": dict(epochs=44, batch_size=64, steps_per_epoch=500, steps=16, encoder_units=256, decoder_units=256,
                    latent_size=100, attention=True, read_glimpse_size=8, write_glimpse_size=20,
                    learning_rate=1e-3, learning_rate_decay=0.94, weight_averaging=0.999, early_stopping_patience=0,
                    max_validation_examples=2000, time_budget_minutes=56.0),
        # The paper's model (T=64, 256-unit LSTMs, 100-d latents, paper glimpses), for a GPU.
        "full": dict(epochs=100, batch_size=64, steps=64, encoder_units=256, decoder_units=256, latent_size=100,
                     learning_rate=1e-3, early_stopping_patience=10),
    }

    def validate(self) -> None:
        super().validate()
        self.check_choices(dataset=DATASETS)
        if self.likelihood not in LIKELIHOODS:
            raise ConfigError(
                f"likelihood={self.likelihood!r} is not implemented; the only choice is 'bernoulli' "
                "(on intensities in [0, 1] for SVHN)"
            )
        # The glimpse sizes may be None: the paper's.
        self.check_at_least(1, "steps", "encoder_units", "decoder_units", "latent_size", "read_glimpse_size",
                            "write_glimpse_size")

    @property
    def glimpse_sizes(self) -> tuple[int, int]:
        read, write = PAPER_GLIMPSES[self.dataset]
        return self.read_glimpse_size or read, self.write_glimpse_size or write


class DrawPipeline(Pipeline):
    name = "draw"
    config_class = DrawConfig
    monitor = "val_loss"
    monitor_mode = "min"
    request_limit_fields = ("max_request_batch", "max_samples")

    def load_data(self, config: DrawConfig, data_dir: Path | None) -> Datasets:
        splits = load_images(config.dataset, data_dir)
        binary = config.dataset == "binarized_mnist"
        train = splits["train"][: config.max_train_examples or None]
        validation = evaluation_subset(splits["validation"][: config.max_validation_examples or None],
                                       config.max_eval_examples)
        test = evaluation_subset(splits["test"], config.max_eval_examples)

        def batches(images, shuffle):
            # DrawModel.compute_loss takes the images as their own targets, so batches are images alone.
            return make_dataset(images, config.batch_size, shuffle=shuffle, seed=config.seed, binary=binary)

        return Datasets(
            train=batches(train, True),
            validation=batches(validation, False),
            test=batches(test, False),
            info=ImageData(
                sizes={"train": len(train), "validation": len(validation), "test": len(test)},
                image_shape=tuple(int(size) for size in train.shape[1:]),
                test_images=test,
                binary=binary,
            ),
        )

    def build_model(self, config: DrawConfig, datasets: Datasets) -> keras.Model:
        height, width, channels = datasets.info.image_shape
        read_glimpse, write_glimpse = config.glimpse_sizes
        # Built by build_draw: BackupAndRestore (the runner's resume) needs the weights before fit().
        model = build_draw(
            height=height, width=width, channels=channels, steps=config.steps, read_glimpse_size=read_glimpse,
            write_glimpse_size=write_glimpse, encoder_units=config.encoder_units,
            decoder_units=config.decoder_units, latent_size=config.latent_size, attention=config.attention,
            seed=config.seed,
        )
        model.compile(optimizer=training.make_optimizer(config))
        return model

    def evaluate(self, model, datasets: Datasets, config: DrawConfig, run_dir: Path) -> dict:
        bounds = nll_bounds(model, datasets.test, seed=config.seed)
        dimensions = int(np.prod(model.image_shape))
        metrics = {
            "test_nll_bound_nats": float(bounds.mean()),
            "test_bits_per_dim": float(bounds.mean() / (dimensions * math.log(2))),
            "test_examples": int(len(bounds)),
            "likelihood": config.likelihood,
        }
        test_images = datasets.info.test_images
        if test_images is not None and len(test_images):
            # Spread over the split: a test split sorted by class would otherwise show one digit.
            originals = evaluation_subset(test_images, max(config.reconstruct_examples, 1))
            floats = _to_unit_interval(originals, datasets.info.binary)
            kl = np.asarray(model.kl_per_step(floats, seed=config.seed)).mean(axis=0)
            metrics["test_kl_per_step_nats"] = [round(float(value), 4) for value in kl]
            image_plots.write_step_bars(kl, run_dir / "kl_per_step.png", title="KL(q(z_t) ‖ p(z_t)) per step",
                                        ylabel="nats / image")
            if config.reconstruct_examples > 0:
                canvases, _ = model.reconstruct(floats, seed=config.seed)
                final = np.asarray(canvases)[:, -1]
                columns = min(8, len(originals))
                # Originals and their reconstructions interleaved by row: row 2k shows inputs, row 2k+1 outputs.
                pairs = [block for start in range(0, len(originals), columns)
                         for block in (floats[start:start + columns], final[start:start + columns])]
                image_plots.write_image_grid(np.concatenate(pairs), run_dir / "reconstructions.png", columns=columns)
                if config.attention:
                    metrics["attention_animation"] = str(image_plots.write_attention_animation(
                        model.attention_trace(floats, seed=config.seed), run_dir / "attention.gif", columns=columns))
        if config.sample_examples > 0:
            canvases = np.asarray(model.generate(config.sample_examples, seed=config.seed))
            columns = min(8, config.sample_examples)
            image_plots.write_image_grid(canvases[:, -1], run_dir / "samples.png", columns=columns)
            image_plots.write_grid_animation(canvases, run_dir / "canvas.gif", columns=columns)
        return metrics

    def serving(self, model, config: DrawConfig) -> dict[str, Endpoint]:
        binary = config.dataset == "binarized_mnist"
        height, width, channels = model.image_shape

        def generate(num, seed):
            num = guarded([count_within(num, "num", config.max_samples, "max_samples")], num)
            canvases = unit_float_to_uint8(model.generate(num, seed=seed))
            return {"images": canvases[:, -1], "canvases": canvases}

        def reconstruct(images):
            images = guarded([batch_at_most(images, "images", config.max_request_batch)], images)
            floats, _ = serving_images_to_float(images, binary)
            canvases, nll_bound = model.reconstruct(floats, seed=tf.constant(RECONSTRUCT_SEED, tf.int32))
            return {"images": unit_float_to_uint8(canvases[:, -1]), "nll_bound": nll_bound}

        generate_spec = [tf.TensorSpec([], tf.int32, name="num"), tf.TensorSpec([], tf.int32, name="seed")]
        reconstruct_spec = [tf.TensorSpec([None, height, width, channels], tf.uint8, name="images")]
        return {
            "serving_default": Endpoint(generate, generate_spec),
            "generate": Endpoint(generate, generate_spec),
            "reconstruct": Endpoint(reconstruct, reconstruct_spec),
        }


# --- evaluation ------------------------------------------------------------------------------

def _to_unit_interval(images: np.ndarray, binary: bool) -> np.ndarray:
    return images.astype("float32") if binary else images.astype("float32") / 255.0


# --- the predict verb -------------------------------------------------------------------------

@click.command("draw")
@click.option("--samples", default=16, show_default=True, type=click.IntRange(1, DrawConfig.max_samples),
              help="Images to draw (at most the export's max_samples).")
@click.option("--animate", is_flag=True, help="Also write an animated GIF of the canvases over the T steps.")
@click.option("--seed", default=0, show_default=True, type=int, help="Sampling seed (same seed, same images).")
@click.option("--columns", default=8, show_default=True, type=click.IntRange(1, 64), help="Images per grid row.")
@export_options
@click.option("--output", default="draw_output", show_default=True, type=click.Path(file_okay=False),
              help="Folder for draw_samples.png (and draw_canvas.gif); created if needed.")
def predict_command(samples, animate, seed, columns, model_path, export_dir, output):
    """Draw new images with an exported DRAW model; writes a PNG grid (and a GIF) and prints the paths.

    \b
    Examples:
      rnnapps predict draw --samples 16 --animate
      rnnapps predict draw --samples 64 --seed 3 --model saved_models/draw/2 --output pictures/
    """
    if not 0 <= seed < 2**31:
        raise click.BadParameter(f"{seed} is not in [0, 2^31)", param_hint="--seed")
    loaded, path = served_model("draw", model_path, export_dir)
    max_samples = export_limits(path, DrawConfig)["max_samples"]
    if samples > max_samples:
        raise click.BadParameter(f"{samples} is over the export's max_samples={max_samples}", param_hint="--samples")
    outputs = loaded.signatures["generate"](num=tf.constant(samples, tf.int32), seed=tf.constant(seed, tf.int32))
    output = Path(output)
    columns = min(columns, samples)
    grid = image_plots.write_image_grid(outputs["images"].numpy(), output / "draw_samples.png", columns=columns)
    click.echo(str(grid))
    if animate:
        gif = image_plots.write_grid_animation(outputs["canvases"].numpy(), output / "draw_canvas.gif",
                                               columns=columns)
        click.echo(str(gif))


PIPELINE = DrawPipeline()
PIPELINE.predict_command = predict_command
