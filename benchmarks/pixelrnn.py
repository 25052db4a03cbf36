"""PixelRNN benchmark on real binarized MNIST (not a test): quality and speed on this machine.

    python benchmarks/pixelrnn.py --data-dir /work/shared/data [--preset cpu] [--time-limit-minutes 25]

Trains the ``cpu`` preset through the shared runner (stopping early, at the end
of a batch, if ``--time-limit-minutes`` runs out), evaluates the test NLL on the
full 10k test split, exports, reloads the SavedModel from its directory and times
the ``inpaint`` signature on one half-occluded test image completed 16 times.
Writes ``benchmarks/results/pixelrnn.json`` and copies the inpainting grid to
``docs/pixelrnn_inpainting.png``.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import time
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rnnapps.config import parse_set_options
from rnnapps.data.images import load_images
from rnnapps.export import load_export
from rnnapps.pipelines.pixelrnn import occlusion_mask, spread_indices, write_inpainting_grid
from rnnapps.runner import run

ROOT = Path(__file__).resolve().parent.parent


class TimeLimit(keras.callbacks.Callback):
    """Stop training once ``seconds`` have passed (checked after every batch)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.started, self.stopped_early = seconds, None, False

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.started > self.seconds:
            self.stopped_early = self.model.stop_training = True


class Throughput(keras.callbacks.Callback):
    """Images per second over training batches only (no validation, no first-epoch tracing)."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size, self.seconds, self.batches, self.epoch, self.steps = batch_size, 0.0, 0, 0, 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        self.batch_started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.epoch > 0 or batch >= 10:
            self.seconds += time.perf_counter() - self.batch_started
            self.batches += 1

    @property
    def images_per_second(self) -> float:
        return self.batches * self.batch_size / self.seconds if self.seconds else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="/work/shared/data")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", dest="set_options", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--time-limit-minutes", type=float, default=25.0)
    parser.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work" / "pixelrnn"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "pixelrnn.json"))
    args = parser.parse_args()

    work = Path(args.work_dir)
    set_options = parse_set_options(args.set_options)
    from rnnapps.config import resolve_config
    from rnnapps.pipelines.pixelrnn import PixelRNNConfig

    batch_size = resolve_config(PixelRNNConfig, args.preset, set_options=set_options).batch_size
    limit, throughput = TimeLimit(args.time_limit_minutes * 60), Throughput(batch_size)
    started = time.perf_counter()
    result = run("pixelrnn", preset=args.preset, set_options=set_options, data_dir=args.data_dir,
                 output_dir=str(work / "runs"), export_dir=str(work / "exports"),
                 extra_callbacks=[limit, throughput], verbose=2)
    wall = time.perf_counter() - started

    # Serve from a moved copy, as a model server would, and time 16 completions of one half-hidden image.
    served = work / "served" / "1"
    shutil.rmtree(served, ignore_errors=True)
    shutil.copytree(result.export_path, served)
    loaded = load_export(served)
    test_images = load_images("binarized_mnist", args.data_dir)["test"]
    image = test_images[:1]
    known = occlusion_mask(image.shape, "bottom")
    inpaint = loaded.signatures["inpaint"]
    inputs = dict(images=tf.constant(np.repeat(image, 16, axis=0)), mask=tf.constant(np.repeat(known, 16, axis=0)))
    inpaint(seed=tf.constant(0), **inputs)  # warm-up
    timings = []
    for seed in (1, 2, 3):
        tick = time.perf_counter()
        inpaint(seed=tf.constant(seed), **inputs)["images"].numpy()
        timings.append(time.perf_counter() - tick)

    # The docs picture: 8 test digits spread over the (digit-ordered) test file, lower half hidden,
    # 3 completions each, through the SavedModel.
    originals = test_images[spread_indices(len(test_images), 8)]
    grid_known = occlusion_mask(originals.shape, "bottom")
    completions = inpaint(images=tf.constant(np.repeat(originals, 3, axis=0)),
                          mask=tf.constant(np.repeat(grid_known, 3, axis=0)), seed=tf.constant(0))["images"].numpy()
    write_inpainting_grid(originals, grid_known, completions.reshape((8, 3) + originals.shape[1:]),
                          ROOT / "docs" / "pixelrnn_inpainting.png")
    shutil.copy(result.run_dir / "samples.png", ROOT / "docs" / "pixelrnn_samples.png")

    report = {
        "pipeline": "pixelrnn",
        "preset": args.preset,
        "set_options": set_options,
        "config": dict(vars(result.config)),
        "test_nll_nats": round(result.metrics["test_nll_nats"], 3),
        "test_bits_per_dim": round(result.metrics["test_bits_per_dim"], 5),
        "test_examples": result.metrics["test_examples"],
        "train_seconds": result.metrics["train_seconds_this_session"],
        "wall_seconds_total": round(wall, 1),
        "stopped_by_time_limit": limit.stopped_early,
        "time_limit_minutes": args.time_limit_minutes,
        "optimizer_steps": throughput.steps,
        "train_images_per_second": round(throughput.images_per_second, 1),
        "inpaint_16_completions_half_occluded_seconds": round(float(np.median(timings)), 2),
        "machine": f"{platform.machine()}, {len(tf.config.list_physical_devices('CPU'))} CPU device, "
                   f"tensorflow {tf.__version__}, keras {keras.__version__}; shared and busy",
        "metrics": result.metrics,
    }
    Path(args.output).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
