"""Textgen benchmark on the real Tiny Shakespeare: quality, training speed, generation speed, a sample.

Trains the ``cpu`` preset (or ``--preset``) through the shared runner, exactly
as ``rnnapps run textgen`` does, then reloads the exported SavedModel and
times ``generate``. Writes ``benchmarks/results/textgen.json``, with its
``provenance`` (``benchmarks.common.provenance``).

Usage:
    python benchmarks/textgen.py --data-dir /work/shared/data
    python benchmarks/textgen.py --data-dir /work/shared/data --preset smoke --set steps_per_epoch=5  # quick check
    python benchmarks/textgen.py --data-dir unused --table   # the docs table of the saved results
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "textgen.json"
PROMPT = "ROMEO:"
TARGET_NATS_PER_CHAR = 1.50  # issue 20; was 1.55
TARGET_WALL_MINUTES = 20


def generation_speed(loaded, length: int, repeats: int = 3) -> float:
    """Characters per second of one ``generate`` call of ``length`` characters (median over ``repeats``)."""
    import tensorflow as tf

    from benchmarks.common import latency_stats

    def call(seed):
        return loaded.signatures["generate"](
            prompt=tf.constant([PROMPT]), length=tf.constant([length], tf.int32),
            temperature=tf.constant([0.8]), seed=tf.constant([seed], tf.int32),
        )["text"]

    seeds = itertools.count()  # the warm-up call (seed 0) pays for loading the graph's functions
    latency = latency_stats(lambda: call(next(seeds)).numpy(), repeats=repeats, warmup=1)
    return length / (latency["p50_ms"] / 1000)


def markdown_table(report: dict) -> str:
    """The docs/textgen.md table for one results JSON."""
    config = report["config"]
    model = f"{config['depth']}x{config['units']} {config['cell'].upper()}, emb {config['embedding_dim']}"
    rows = [
        ("model", model),
        ("batch x sequence length", f"{config['batch_size']} x {config['sequence_length']}"),
        ("epochs run (of max)", f"{report['epochs_run']} ({config['epochs']})"),
        ("validation nats/char (bits/char)",
         f"{report['validation_nats_per_char']:.3f} ({report['validation_bits_per_char']:.3f})"),
        ("test nats/char (bits/char)", f"{report['test_nats_per_char']:.3f} ({report['test_bits_per_char']:.3f})"),
        (f"target: test <= {report.get('target_test_nats_per_char', TARGET_NATS_PER_CHAR):.2f} nats/char"
         f" in <= {TARGET_WALL_MINUTES} min wall",
         "met" if report["target_met"] else "missed"),
        ("wall time (train + evaluate + export)", f"{report['wall_seconds'] / 60:.1f} min"),
        ("training speed", f"{report['train_chars_per_second']:,} chars/s"),
        ("generation speed (reloaded SavedModel, 1 row)", f"{report['generation_chars_per_second']:,} chars/s"),
        ("load average at start / end", f"{report['machine']['load_average_at_start'][0]} / "
                                        f"{report['machine']['load_average_at_end'][0]} "
                                        f"({report['machine']['cpus']} CPUs)"),
    ]
    lines = ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]
    return "\n".join(lines)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True, help="Folder holding shakespeare/input.txt.")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", dest="set_options", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--work-dir", default=str(Path(__file__).parent / "work" / "textgen"),
                        help="Runs and exports go here (git-ignored).")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--table", action="store_true", help="Only print the markdown table of --results.")
    arguments = parser.parse_args(argv)
    if arguments.table:
        report = json.loads(Path(arguments.results).read_text())
        print(markdown_table(report))
        return report

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import tensorflow as tf

    from benchmarks.common import (
        command_line,
        machine_under_load,
        provenance,
        provenance_start,
        timed_run,
    )
    from rnnapps import run_dirs
    from rnnapps.config import parse_set_options

    command, started = command_line("textgen.py", argv), provenance_start()
    run = timed_run("textgen", arguments.preset, parse_set_options(arguments.set_options), arguments.data_dir,
                    arguments.work_dir)
    result, wall_seconds = run.result, run.wall_seconds
    config = result.config
    history = run_dirs.read_history(result.run_dir / "history.csv")
    epochs_run = len(history.get("epoch", []))
    metrics = result.metrics

    from rnnapps.pipelines.textgen import PIPELINE

    # The characters one epoch trains on: every whole batch of the train stream.
    datasets = PIPELINE.load_data(config, Path(arguments.data_dir))
    batches = config.steps_per_epoch or int(datasets.train.cardinality().numpy())
    train_characters = batches * config.batch_size * config.sequence_length
    train_seconds = metrics["train_seconds_this_session"]

    loaded = tf.saved_model.load(str(result.export_path))
    sample = loaded.signatures["generate"](
        prompt=tf.constant([PROMPT]), length=tf.constant([300], tf.int32),
        temperature=tf.constant([0.8]), seed=tf.constant([config.seed], tf.int32),
    )["text"].numpy()[0].decode("utf-8")

    report = {
        "preset": arguments.preset,
        "config": {key: value for key, value in vars(config).items()},
        "validation_nats_per_char": round(metrics["validation_nats_per_char"], 4),
        "validation_bits_per_char": round(metrics["validation_bits_per_char"], 4),
        "test_nats_per_char": round(metrics["test_nats_per_char"], 4),
        "test_bits_per_char": round(metrics["test_bits_per_char"], 4),
        "target_test_nats_per_char": TARGET_NATS_PER_CHAR,
        "target_met": bool(metrics["test_nats_per_char"] <= TARGET_NATS_PER_CHAR
                           and wall_seconds <= TARGET_WALL_MINUTES * 60),
        "epochs_run": epochs_run,
        "best_val_loss": round(min(history.get("val_loss", [float("nan")])), 4),
        "wall_seconds": round(wall_seconds, 1),
        "train_seconds": train_seconds,
        "train_chars_per_second": round(epochs_run * train_characters / train_seconds),
        "generation_chars_per_second": round(generation_speed(loaded, 1000)),
        "sample_prompt": PROMPT,
        "sample_temperature": 0.8,
        "sample_seed": config.seed,
        "sample": PROMPT + sample,
        "machine": machine_under_load(run.load_average_at_start),
        "command": command,
        "provenance": provenance(started, command),
    }
    Path(arguments.results).parent.mkdir(parents=True, exist_ok=True)
    Path(arguments.results).write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(markdown_table(report))
    print(report["sample"])
    return report


if __name__ == "__main__":
    main()
