"""IMDB sentiment benchmark: quality, training throughput vs a plain-Keras baseline, serving, memory.

    python benchmarks/sentiment.py --data-dir ../shared/data [--epochs N] [--skip-baseline]

1. ``rnnapps run sentiment`` with the ``cpu`` preset: test accuracy on all 25,000 test reviews
   and wall time.
2. Training throughput in real (unpadded) tokens/s and sequences/s, for rnnapps and for a
   plain-Keras baseline written as the keras-io "Bidirectional LSTM on IMDB" example does it
   (Embedding(20000,128) → 2×BiLSTM(64) → sigmoid, maxlen 200, fixed pre-padding, batch 32),
   on the same texts and vocabulary size, for the same number of epochs.
3. Serving: p50/p99 latency of one review and throughput at batch 64 through the reloaded
   SavedModel.
4. Peak RSS of the training process (measured before the baseline runs).

Results go to benchmarks/results/sentiment.json, with the ``provenance`` of each write
(``benchmarks.common.provenance``; a ``--serving-only`` run records ``serving_provenance``).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import (  # noqa: E402
    RESULTS,
    TrainTimer,
    command_line,
    latency_stats,
    machine,
    peak_rss_mib,
    provenance,
    provenance_start,
    write_results,
)
from rnnapps import runner  # noqa: E402
from rnnapps.data import imdb  # noqa: E402
from rnnapps.data.sources import resolve_data_dir  # noqa: E402
from rnnapps.text_ops import make_vectorizer, token_counts  # noqa: E402


def real_tokens(texts, max_length):
    counts = []
    for start in range(0, len(texts), 2048):
        counts.append(token_counts(tf.constant(texts[start : start + 2048])).numpy())
    return int(np.minimum(np.concatenate(counts), max_length).sum())


def run_rnnapps(args, work: Path) -> dict:
    timer = TrainTimer()
    started = time.perf_counter()
    overrides = {"epochs": args.epochs} if args.epochs else {}
    result = runner.run(
        "sentiment", "cpu", data_dir=args.data_dir, output_dir=str(work / "runs"), export_dir=str(work / "exports"),
        extra_callbacks=[timer], verbose=2, set_options=dict(kv.split("=", 1) for kv in args.set), **overrides,
    )
    wall = time.perf_counter() - started
    config = result.config
    splits = imdb.load_imdb(resolve_data_dir(args.data_dir))
    train_texts, train_labels = splits["train"]
    (train_texts, _), _ = imdb.split_validation(train_texts, train_labels, config.validation_fraction, config.seed)
    tokens_per_epoch = real_tokens(train_texts, config.max_length)
    train_seconds = sum(timer.epoch_seconds)
    epochs = len(timer.epoch_seconds)
    return {
        "config": {k: v for k, v in vars(config).items()},
        "test_accuracy": result.metrics["test_accuracy"],
        "test_auc": result.metrics["test_auc"],
        "test_examples": result.metrics["test_examples"],
        "epochs_trained": epochs,
        "wall_seconds_run": round(wall, 1),
        "train_batch_seconds": round(train_seconds, 1),
        "tokens_per_second": round(tokens_per_epoch * epochs / train_seconds, 1),
        "sequences_per_second": round(len(train_texts) * epochs / train_seconds, 1),
        "epoch_seconds": [round(s, 1) for s in timer.epoch_seconds],
        "peak_rss_mib": round(peak_rss_mib(), 1),
        "export_path": str(result.export_path),
        "train_texts": train_texts,
        "train_labels": None,
        "vocab_size": config.vocab_size,
        "epochs": config.epochs if not args.epochs else args.epochs,
        "seed": config.seed,
        "validation_fraction": config.validation_fraction,
    }


def run_baseline(args, epochs: int, seed: int, fraction: float) -> dict:
    """keras-io's "Bidirectional LSTM on IMDB", fed our texts through a 20k vocabulary."""
    keras.utils.set_random_seed(seed)
    splits = imdb.load_imdb(resolve_data_dir(args.data_dir))
    texts, labels = splits["train"]
    (train_texts, train_labels), _ = imdb.split_validation(texts, labels, fraction, seed)
    test_texts, test_labels = splits["test"]
    vectorizer = make_vectorizer(max_tokens=20000)
    vectorizer.adapt(tf.data.Dataset.from_tensor_slices(train_texts).batch(1024))

    def encode(batch_texts):
        rows = [vectorizer(tf.constant(batch_texts[i : i + 2048])).numpy() for i in range(0, len(batch_texts), 2048)]
        sequences = [row[row > 0].tolist() for block in rows for row in block]
        return keras.utils.pad_sequences(sequences, maxlen=200)  # keras-io: pre-padding, pre-truncation

    x_train, x_test = encode(train_texts), encode(test_texts)
    inputs = keras.Input(shape=(None,), dtype="int32")
    x = keras.layers.Embedding(20000, 128)(inputs)
    x = keras.layers.Bidirectional(keras.layers.LSTM(64, return_sequences=True))(x)
    x = keras.layers.Bidirectional(keras.layers.LSTM(64))(x)
    outputs = keras.layers.Dense(1, activation="sigmoid")(x)
    model = keras.Model(inputs, outputs)
    model.compile("adam", "binary_crossentropy", metrics=["accuracy"])
    timer = TrainTimer()
    model.fit(x_train, np.asarray(train_labels), batch_size=32, epochs=epochs, callbacks=[timer], verbose=2)
    _, accuracy = model.evaluate(x_test, np.asarray(test_labels), batch_size=256, verbose=0)
    seconds = sum(timer.epoch_seconds)
    real = int((x_train > 0).sum())
    return {
        "test_accuracy": float(accuracy),
        "epochs": epochs,
        "train_batch_seconds": round(seconds, 1),
        "tokens_per_second": round(real * epochs / seconds, 1),
        "sequences_per_second": round(len(x_train) * epochs / seconds, 1),
        "epoch_seconds": [round(s, 1) for s in timer.epoch_seconds],
    }


def run_serving(export_path: str, texts) -> dict:
    """Latency of one review and throughput at batch 64, for each exported signature."""
    loaded = tf.saved_model.load(export_path)
    rng = np.random.default_rng(0)
    singles = [texts[i] for i in rng.integers(0, len(texts), size=300)]
    batch = tf.constant([texts[i] for i in rng.integers(0, len(texts), size=64)])
    results = {}
    for name in ("serving_default", "serving_keras", "serving_xla"):
        if name not in loaded.signatures:
            continue
        serving = loaded.signatures[name]
        position = iter(range(10**9))
        one = latency_stats(lambda serving=serving, position=position: serving(text=tf.constant([singles[next(position) % 300]])),
                            repeats=300, warmup=20)
        batched = latency_stats(lambda serving=serving: serving(text=batch), repeats=30)
        results[name] = {
            "one_review": one,
            "batch_64": batched,
            "batch_64_reviews_per_second": round(64 / (batched["p50_ms"] / 1000), 1),
        }
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("RNNAPPS_DATA_DIR"), required=False)
    parser.add_argument("--epochs", type=int, help="override the cpu preset's epochs (also used for the baseline)")
    parser.add_argument("--set", action="append", default=[], help="config override key=value for rnnapps")
    parser.add_argument("--skip-baseline", action="store_true")
    parser.add_argument("--serving-only", metavar="EXPORT_DIR",
                        help="only re-measure serving of this export and update the results file")
    args = parser.parse_args()
    command, started = command_line("sentiment.py"), provenance_start()
    if args.serving_only:
        results = json.loads((RESULTS / "sentiment.json").read_text())
        texts = imdb.load_imdb(resolve_data_dir(args.data_dir))["test"][0]
        results["serving"] = run_serving(args.serving_only, texts)
        results["serving_command"] = "python " + " ".join(sys.argv)
        results["serving_export"] = str(args.serving_only)
        results["serving_provenance"] = provenance(started, command)
        print(write_results("sentiment", results))
        print(json.dumps(results["serving"], indent=2))
        return
    work = Path(tempfile.mkdtemp(prefix="rnnapps-bench-sentiment-"))
    ours = run_rnnapps(args, work)
    texts = ours.pop("train_texts")
    ours.pop("train_labels")
    results = {"machine": machine(), "command": "python " + " ".join(sys.argv), "rnnapps": ours}
    results["serving"] = run_serving(ours["export_path"], texts)
    results["provenance"] = provenance(started, command)
    write_results("sentiment", results)
    if not args.skip_baseline:
        baseline = run_baseline(args, ours["epochs_trained"], ours["seed"], ours["validation_fraction"])
        results["baseline_keras_io"] = baseline
        results["throughput_ratio_tokens"] = round(ours["tokens_per_second"] / baseline["tokens_per_second"], 2)
        results["throughput_ratio_sequences"] = round(ours["sequences_per_second"] / baseline["sequences_per_second"], 2)
    for key in ("export_path",):
        ours.pop(key)
    results["provenance"] = provenance(started, command)
    print(write_results("sentiment", results))
    print({k: v for k, v in results.items() if k != "machine"})


if __name__ == "__main__":
    main()
