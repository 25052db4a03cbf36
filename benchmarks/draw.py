"""DRAW benchmark on real binarized MNIST (not a test): likelihood bound and speed on this machine.

    python benchmarks/draw.py --data-dir /work/shared/data [--preset cpu] [--time-limit-minutes 60]

Trains the ``cpu`` preset with ``dataset=binarized_mnist`` through the shared
runner (stopping at the end of a batch if ``--time-limit-minutes`` runs out),
evaluates the test NLL bound (negative ELBO) on the full 10k test split,
exports, copies the SavedModel elsewhere, reloads it and times ``generate`` for
64 samples. Writes ``benchmarks/results/draw.json``, and through the served model
``docs/draw_samples.png`` (64 samples) and ``docs/draw_canvas.gif`` (16 of them drawn step by step).
The JSON records its ``provenance`` (``benchmarks.common.provenance``: commit, command, CPU, load).
The machine is shared: run it under the global lock,
``flock /work/bench.lock python benchmarks/draw.py ...``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
from pathlib import Path

import tensorflow as tf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from rnnapps.config import parse_set_options  # noqa: E402
from rnnapps.training import TimeBudget  # noqa: E402


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
    parser.add_argument("--time-limit-minutes", type=float, default=60.0,
                        help="Cap on training time (the cpu preset has its own 50-minute budget).")
    parser.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work" / "draw"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "draw.json"))
    parser.add_argument("--docs-dir", default=str(ROOT / "docs"), help="Where the sample grid and GIF are copied.")
    args = parser.parse_args()
    started = common.provenance_start()

    from rnnapps.config import resolve_config
    from rnnapps.pipelines.draw import DrawConfig

    set_options = {"dataset": "binarized_mnist", **parse_set_options(args.set_options)}
    batch_size = resolve_config(DrawConfig, args.preset, set_options=set_options).batch_size
    work = Path(args.work_dir)
    budget, speed = TimeBudget(args.time_limit_minutes), common.TrainingSpeed(batch_size)
    run = common.timed_run("draw", args.preset, set_options, args.data_dir, work, extra_callbacks=[budget, speed])

    # Serve from a copy elsewhere, as a model server would, and time 64 samples (median of 3 after a warm-up).
    generate = common.load_served_copy(run.result.export_path, work).signatures["generate"]
    num = tf.constant(64, tf.int32)
    seeds = itertools.count()  # the warm-up draws seed 0, the timed calls 1, 2, 3
    latency = common.latency_stats(
        lambda: generate(num=num, seed=tf.constant(next(seeds), tf.int32))["images"].numpy(), repeats=3, warmup=1
    )

    write_docs_pictures(generate, Path(args.docs_dir))

    metrics = run.result.metrics
    report = {
        **common.training_report("draw", args.preset, set_options, run, speed, budget),
        "test_nll_bound_nats": round(metrics["test_nll_bound_nats"], 3),
        "test_bits_per_dim": round(metrics["test_bits_per_dim"], 5),
        "test_examples": metrics["test_examples"],
        "target_nll_bound_nats": 95.0,
        "paper_nll_bound_nats_T64": 80.97,
        "generate_64_samples_seconds": round(latency["p50_ms"] / 1000, 3),
        "provenance": common.provenance(started, common.command_line("draw.py")),
    }
    common.write_report(args.output, report)
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
