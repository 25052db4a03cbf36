"""DRAW benchmark on real binarized MNIST (not a test): likelihood bound and speed on this machine.

    python benchmarks/draw.py --data-dir /work/shared/data [--preset cpu] [--time-limit-minutes 25]

Trains the ``cpu`` preset with ``dataset=binarized_mnist`` through the shared
runner (stopping at the end of a batch if ``--time-limit-minutes`` runs out),
evaluates the test NLL bound (negative ELBO) on the full 10k test split,
exports, copies the SavedModel elsewhere, reloads it and times ``generate`` for
64 samples. Writes ``benchmarks/results/draw.json``, and through the served model
``docs/draw_samples.png`` (64 samples) and ``docs/draw_canvas.gif`` (16 of them drawn step by step).
The machine is shared: run it under the global lock,
``flock /work/bench.lock python benchmarks/draw.py ...``.
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
from rnnapps.export import load_export
from rnnapps.runner import run

ROOT = Path(__file__).resolve().parent.parent


class TimeLimit(keras.callbacks.Callback):
    """Stop training once ``seconds`` have passed since training began (checked after every batch)."""

    def __init__(self, seconds: float):
        super().__init__()
        self.seconds, self.started, self.stopped_early = seconds, None, False

    def on_train_begin(self, logs=None):
        self.started = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        if time.perf_counter() - self.started > self.seconds:
            self.stopped_early = self.model.stop_training = True


class TrainingSpeed(keras.callbacks.Callback):
    """Training images per second, timing train batches only and skipping the first 10 (tracing)."""

    def __init__(self, batch_size: int):
        super().__init__()
        self.batch_size, self.seconds, self.timed, self.steps = batch_size, 0.0, 0, 0

    def on_train_batch_begin(self, batch, logs=None):
        self.tick = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps > 10:
            self.seconds += time.perf_counter() - self.tick
            self.timed += 1

    @property
    def images_per_second(self) -> float:
        return self.timed * self.batch_size / self.seconds if self.seconds else float("nan")


def write_docs_pictures(generate, docs: Path) -> None:
    """Through the served ``generate`` signature: 64 samples as a grid, the first 16 drawn step by step as a GIF."""
    from rnnapps import image_plots

    outputs = generate(num=tf.constant(64, tf.int32), seed=tf.constant(0, tf.int32))
    image_plots.write_image_grid(outputs["images"].numpy(), docs / "draw_samples.png", columns=8)
    # 16 samples keep the committed GIF small (64 would be 1.4 MB).
    image_plots.write_grid_animation(outputs["canvases"].numpy()[:16], docs / "draw_canvas.gif", columns=8)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="/work/shared/data")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", dest="set_options", action="append", default=[], metavar="KEY=VALUE",
                        help="Config overrides after dataset=binarized_mnist (repeatable).")
    parser.add_argument("--time-limit-minutes", type=float, default=25.0, help="Cap on training time.")
    parser.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work" / "draw"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "draw.json"))
    parser.add_argument("--docs-dir", default=str(ROOT / "docs"), help="Where the sample grid and GIF are copied.")
    args = parser.parse_args()

    from rnnapps.config import resolve_config
    from rnnapps.pipelines.draw import DrawConfig

    set_options = {"dataset": "binarized_mnist", **parse_set_options(args.set_options)}
    batch_size = resolve_config(DrawConfig, args.preset, set_options=set_options).batch_size
    work = Path(args.work_dir)
    limit, speed = TimeLimit(args.time_limit_minutes * 60), TrainingSpeed(batch_size)
    started = time.perf_counter()
    result = run("draw", preset=args.preset, set_options=set_options, data_dir=args.data_dir,
                 output_dir=str(work / "runs"), export_dir=str(work / "exports"),
                 extra_callbacks=[limit, speed], verbose=2)
    wall = time.perf_counter() - started

    # Serve from a copy elsewhere, as a model server would, and time 64 samples (median of 3 after a warm-up).
    served = work / "served" / "1"
    shutil.rmtree(served, ignore_errors=True)
    shutil.copytree(result.export_path, served)
    generate = load_export(served).signatures["generate"]
    num = tf.constant(64, tf.int32)
    generate(num=num, seed=tf.constant(0, tf.int32))
    timings = []
    for seed in (1, 2, 3):
        tick = time.perf_counter()
        generate(num=num, seed=tf.constant(seed, tf.int32))["images"].numpy()
        timings.append(time.perf_counter() - tick)

    write_docs_pictures(generate, Path(args.docs_dir))

    metrics = result.metrics
    report = {
        "pipeline": "draw",
        "preset": args.preset,
        "set_options": set_options,
        "config": dict(vars(result.config)),
        "test_nll_bound_nats": round(metrics["test_nll_bound_nats"], 3),
        "test_bits_per_dim": round(metrics["test_bits_per_dim"], 5),
        "test_examples": metrics["test_examples"],
        "target_nll_bound_nats": 95.0,
        "paper_nll_bound_nats_T64": 80.97,
        "train_seconds": metrics["train_seconds_this_session"],
        "wall_seconds_total": round(wall, 1),
        "stopped_by_time_limit": limit.stopped_early,
        "time_limit_minutes": args.time_limit_minutes,
        "optimizer_steps": speed.steps,
        "train_images_per_second": round(speed.images_per_second, 1),
        "generate_64_samples_seconds": round(float(np.median(timings)), 3),
        "machine": f"{platform.machine()}, {len(tf.config.list_physical_devices('CPU'))} CPU device, "
                   f"tensorflow {tf.__version__}, keras {keras.__version__}; 2 cores, shared and busy",
        "metrics": metrics,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2, sort_keys=True) + "\n")
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
