"""CoNLL-2003 NER benchmark: span F1, training speed and tagging speed of the ``cpu`` preset.

Trains through the shared runner (the same path as ``rnnapps run ner``), then
reloads the exported SavedModel and times its signatures. Results are merged
into ``benchmarks/results/ner.json`` under the variant's name, each with its
``provenance`` (``benchmarks.common.provenance``).

Usage::

    python benchmarks/ner.py --data-dir /work/shared/data --variant glove \\
        --embeddings /work/shared/data/glove/glove.6B.50d.top100k_conll2003.txt.gz
    python benchmarks/ner.py --data-dir /work/shared/data --variant plain --set time_budget_minutes=20

Not a test: it reads the real dataset and trains for minutes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

RESULTS = Path(__file__).parent / "results" / "ner.json"
TIMING_BATCH = 32


def _time_signatures(export_path: Path, sentences) -> dict:
    import numpy as np
    import tensorflow as tf

    from rnnapps.export import load_export

    loaded = load_export(export_path)
    tag_tokens = loaded.signatures["serving_default"]
    tag_text = loaded.signatures["tag_text"]
    batches = []
    for start in range(0, len(sentences), TIMING_BATCH):
        chunk = [s.tokens for s in sentences[start : start + TIMING_BATCH]]
        width = max(len(tokens) for tokens in chunk)
        batches.append(np.array([tokens + [""] * (width - len(tokens)) for tokens in chunk], dtype=object))
    tag_tokens(tokens=tf.constant(batches[0]))  # warm-up
    started = time.perf_counter()
    for batch in batches:
        tag_tokens(tokens=tf.constant(batch))
    batch_seconds = time.perf_counter() - started
    tokens = sum(len(s.tokens) for s in sentences)
    texts = [" ".join(s.tokens) for s in sentences[:200]]
    tag_text(text=tf.constant(texts[:1]))
    latencies = []
    for text in texts:
        began = time.perf_counter()
        tag_text(text=tf.constant([text]))
        latencies.append(1000.0 * (time.perf_counter() - began))
    return {
        "tagging_tokens_per_second_batch32": round(tokens / batch_seconds, 1),
        "tagging_sentences_per_second_batch32": round(len(sentences) / batch_seconds, 1),
        "tag_text_latency_ms_median_one_sentence": round(statistics.median(latencies), 2),
        "tag_text_latency_ms_p90_one_sentence": round(sorted(latencies)[int(0.9 * len(latencies))], 2),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True, help="Folder holding conll2003/{train,valid,test}.txt[.gz].")
    parser.add_argument("--variant", default="glove", help="Name of this result in ner.json (e.g. glove, plain).")
    parser.add_argument("--embeddings", help="GloVe-style file for --set embeddings=...")
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--set", dest="set_options", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--output-dir", default="benchmarks/work/ner", help="Runs and exports go here.")
    parser.add_argument("--reliability-png", help="Copy the run's test reliability diagram here (e.g. docs/ner_reliability.png).")
    parser.add_argument("--resume", metavar="RUN_DIR",
                        help="Continue (or only evaluate and export, if training finished) this run of an earlier "
                             "session with its saved config; its training speed is then not measured.")
    args = parser.parse_args(argv)

    # Imported only now, so --help needs no TensorFlow.
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.common import (
        TrainingSpeed,
        command_line,
        machine_under_load,
        provenance,
        provenance_start,
        timed_run,
        write_report,
    )
    from rnnapps import run_dirs
    from rnnapps.config import parse_set_options, resolve_config
    from rnnapps.data import conll
    from rnnapps.pipelines.ner import NerConfig

    set_options = parse_set_options(args.set_options)
    if args.embeddings:
        set_options["embeddings"] = args.embeddings
    speed = TrainingSpeed(resolve_config(NerConfig, args.preset, set_options=set_options).batch_size)
    command, started = command_line("ner.py", argv), provenance_start()
    # A resumed run keeps its saved config (embeddings included), so no --set travels with it.
    run = timed_run("ner", args.preset, None if args.resume else set_options, args.data_dir, args.output_dir,
                    extra_callbacks=[speed], resume=args.resume or False)
    result, wall_seconds = run.result, run.wall_seconds
    history = run_dirs.read_history(result.run_dir / "history.csv")
    epochs_run = len(history.get("loss", []))
    test_sentences = conll.load_conll_splits(args.data_dir)["test"]
    metrics = result.metrics
    entry = {
        "command": command,
        "preset": args.preset,
        "set": set_options,
        "valid_f1": round(metrics["valid_f1"], 4),
        "test_f1": round(metrics["test_f1"], 4),
        "test_precision": round(metrics["test_precision"], 4),
        "test_recall": round(metrics["test_recall"], 4),
        "test_per_type": metrics["test_per_type"],
        # Calibration of the entity confidences (the least CRF marginal of an entity's tags).
        "test_entity_ece": metrics["test_entity_ece"],
        "test_entity_calibration": metrics["test_entity_calibration"],
        "epochs_run": epochs_run,
        "best_val_loss": min(history.get("val_loss", [float("nan")])),
        "train_seconds": metrics["train_seconds_this_session"],
        "wall_seconds_total": round(wall_seconds, 1),
        "train_steps": speed.steps,
        # Full batches assumed (a bucket's last batch is smaller): a slight overestimate. None when
        # this session trained no step (a resumed run whose training had finished).
        "training_sentences_per_second": round(
            speed.steps * result.config.batch_size / metrics["train_seconds_this_session"], 1
        ) if speed.steps else None,
        **({"resumed_from": args.resume} if args.resume else {}),
        **_time_signatures(result.export_path, test_sentences),
        "run_dir": str(result.run_dir),
        "export": str(result.export_path),
        "machine": machine_under_load(run.load_average_at_start),
        "provenance": provenance(started, command),
    }
    if args.reliability_png:
        shutil.copyfile(result.run_dir / "reliability_diagram.png", args.reliability_png)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    results[args.variant] = entry
    write_report(RESULTS, results)
    print(json.dumps({k: v for k, v in entry.items() if k not in ("test_per_type", "test_entity_calibration")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
