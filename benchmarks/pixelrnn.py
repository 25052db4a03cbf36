"""PixelRNN benchmark on real binarized MNIST (not a test): quality and speed on this machine.

    python benchmarks/pixelrnn.py --data-dir /work/shared/data [--preset cpu] [--time-limit-minutes 60]

Trains the ``cpu`` preset through the shared runner (stopping early, at the end
of a batch, if ``--time-limit-minutes`` runs out), evaluates the test NLL on the
full 10k test split, exports, reloads the SavedModel from its directory and times
the ``inpaint`` signature on one half-occluded test image completed 16 times.
Writes ``benchmarks/results/pixelrnn.json`` (with its ``provenance``,
``benchmarks.common.provenance``: commit, command, CPU, load) and copies the
inpainting grid to ``docs/pixelrnn_inpainting.png``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import tensorflow as tf

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks import common  # noqa: E402
from rnnapps.config import parse_set_options  # noqa: E402
from rnnapps.data.images import load_images  # noqa: E402
from rnnapps.image_plots import write_inpainting_grid  # noqa: E402
from rnnapps.models.images import occlusion_mask  # noqa: E402
from rnnapps.pipelines.base import spread_indices  # noqa: E402
from rnnapps.pipelines.pixelrnn import PICTURE_SCALE  # noqa: E402
from rnnapps.training import TimeBudget  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default="/work/shared/data")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", dest="set_options", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--time-limit-minutes", type=float, default=60.0)
    parser.add_argument("--work-dir", default=str(ROOT / "benchmarks" / "work" / "pixelrnn"))
    parser.add_argument("--output", default=str(ROOT / "benchmarks" / "results" / "pixelrnn.json"))
    args = parser.parse_args()
    started = common.provenance_start()

    work = Path(args.work_dir)
    set_options = parse_set_options(args.set_options)
    from rnnapps.config import resolve_config
    from rnnapps.pipelines.pixelrnn import PixelRNNConfig

    batch_size = resolve_config(PixelRNNConfig, args.preset, set_options=set_options).batch_size
    budget, speed = TimeBudget(args.time_limit_minutes), common.TrainingSpeed(batch_size)
    run = common.timed_run("pixelrnn", args.preset, set_options, args.data_dir, work, extra_callbacks=[budget, speed])
    result = run.result

    # Serve from a moved copy, as a model server would, and time 16 completions of one half-hidden image.
    loaded = common.load_served_copy(result.export_path, work)
    test_images = load_images("binarized_mnist", args.data_dir)["test"]
    image = test_images[:1]
    known = occlusion_mask(image.shape, "bottom")
    inpaint = loaded.signatures["inpaint"]
    inputs = dict(images=tf.constant(np.repeat(image, 16, axis=0)), mask=tf.constant(np.repeat(known, 16, axis=0)))
    seeds = itertools.count()  # the warm-up draws seed 0, the timed calls 1, 2, 3
    latency = common.latency_stats(
        lambda: inpaint(seed=tf.constant(next(seeds)), **inputs)["images"].numpy(), repeats=3, warmup=1
    )

    # The docs picture: 8 test digits spread over the (digit-ordered) test file, lower half hidden,
    # 3 completions each, through the SavedModel.
    originals = test_images[spread_indices(len(test_images), 8)]
    grid_known = occlusion_mask(originals.shape, "bottom")
    completions = inpaint(images=tf.constant(np.repeat(originals, 3, axis=0)),
                          mask=tf.constant(np.repeat(grid_known, 3, axis=0)), seed=tf.constant(0))["images"].numpy()
    completions = completions.reshape((8, 3) + originals.shape[1:]).astype("float32")
    write_inpainting_grid(originals.astype("float32"), grid_known, completions, ROOT / "docs" / "pixelrnn_inpainting.png",
                          scale=PICTURE_SCALE)
    shutil.copy(result.run_dir / "samples.png", ROOT / "docs" / "pixelrnn_samples.png")

    report = {
        **common.training_report("pixelrnn", args.preset, set_options, run, speed, budget),
        "test_nll_nats": round(result.metrics["test_nll_nats"], 3),
        "test_bits_per_dim": round(result.metrics["test_bits_per_dim"], 5),
        "test_examples": result.metrics["test_examples"],
        "inpaint_16_completions_half_occluded_seconds": round(latency["p50_ms"] / 1000, 2),
        "provenance": common.provenance(started, common.command_line("pixelrnn.py")),
    }
    common.write_report(args.output, report)
    print(json.dumps(report, indent=2, sort_keys=True))


if __name__ == "__main__":
    main()
