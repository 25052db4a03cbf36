"""Probe: sentiment serving through Keras' LSTM loop vs the fused core-TF path (rnnapps.models.fused).

    python benchmarks/fused_serving_probe.py RUN_DIR/model.keras --data-dir ../shared/data [--output PATH]

Exports four signatures of one trained sentiment ``model.keras`` into one SavedModel
(text ``[None]`` string → ``{probability}``), reloads it as a server would, and times them
side by side, interleaved, so that the load of a shared machine falls on all of them alike:

* ``keras``: ``model(text)``, what ``serving_default`` runs today;
* ``fused_block``: the model's own ``to_ids`` part, then :func:`rnnapps.models.fused.fused_classifier`
  (``BlockLSTMV2``, one op per direction for the whole sequence);
* ``fused_loop``: the same with the hoisted-projection ``tf.while_loop`` (the route GRU takes);
* ``fused_dispatch``: ``fused_block`` up to ``--keras-above-batch`` reviews a request, the Keras
  layers above (one ``tf.cond``): BlockLSTMV2's cost grows about linearly with the batch.

One review at a time over ``--reviews`` IMDB test reviews (p50/p99/mean, after a warm-up),
then one batch of 64 reviews ``--batch-repeats`` times (and, p50 only, batches of ``--sweep``
sizes cut from it), and the largest probability difference of each fused path from the Keras one. A second, smaller part times a random
bidirectional GRU of the translate cpu preset's size (256 units) over sentence-length
inputs, Keras against the fused loop: what the encoder of a translate request would gain.

Writes the results, with their ``provenance``, to ``--output`` (default
benchmarks/results/fused_serving_probe.json). No GPU, no XLA: nothing here is compiled.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from benchmarks.common import RESULTS, command_line, provenance, provenance_start, write_report  # noqa: E402
from rnnapps.data import imdb  # noqa: E402
from rnnapps.data.sources import resolve_data_dir  # noqa: E402
from rnnapps.models import RecurrentStack  # noqa: E402  (also registers the layers model.keras needs)
from rnnapps.models.fused import fused_classifier, fused_stack_call  # noqa: E402

PATHS = ("keras", "fused_block", "fused_loop", "fused_dispatch")


def stats(samples_ms: list[float]) -> dict:
    return {
        "p50_ms": round(float(np.percentile(samples_ms, 50)), 3),
        "p99_ms": round(float(np.percentile(samples_ms, 99)), 3),
        "mean_ms": round(statistics.fmean(samples_ms), 3),
        "repeats": len(samples_ms),
    }


def interleaved(calls: dict, requests: list, warmup: int) -> tuple[dict, dict]:
    """Time every call on every request, rotating the order per request; samples (ms) and outputs per call."""
    for call in calls.values():
        for request in requests[:warmup]:
            call(request)
    names = list(calls)
    samples = {name: [] for name in names}
    outputs = {name: [] for name in names}
    for index, request in enumerate(requests):
        shift = index % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            result = calls[name](request)
            samples[name].append((time.perf_counter() - started) * 1000)
            outputs[name].append(result)
    return samples, outputs


def export_paths(model, directory: Path, keras_above_batch: int):
    """One SavedModel with the paths as signatures, written by keras' ExportArchive as rnnapps exports are."""
    to_ids = keras.Model(model.input, model.get_layer("clip_length").output, name="to_ids")
    fast = {impl: fused_classifier(model, lstm_impl=impl) for impl in ("block", "loop")}
    fast["dispatch"] = fused_classifier(model, keras_above_batch=keras_above_batch)

    def output(probability):
        return {"probability": tf.reshape(tf.cast(probability, tf.float32), [-1])}

    functions = {
        "keras": lambda text: output(model(text, training=False)),
        "fused_block": lambda text: output(fast["block"](to_ids(text, training=False))),
        "fused_loop": lambda text: output(fast["loop"](to_ids(text, training=False))),
        "fused_dispatch": lambda text: output(fast["dispatch"](to_ids(text, training=False))),
    }
    archive = keras.export.ExportArchive()
    archive.track(model)
    for name, function in functions.items():
        archive.add_endpoint(name, function, input_signature=[tf.TensorSpec([None], tf.string, name="text")])
    archive.write_out(str(directory), verbose=False)
    return tf.saved_model.load(str(directory)), to_ids


def probe_sentiment(model_path: str, data_dir, reviews: int, batch_repeats: int, warmup: int,
                    keras_above_batch: int, sweep_sizes=(), sweep_repeats: int = 10) -> dict:
    model = keras.saving.load_model(model_path)
    texts = imdb.load_imdb(resolve_data_dir(data_dir))["test"][0]
    # The reviews and batch of benchmarks/sentiment.py's run_serving.
    rng = np.random.default_rng(0)
    singles = [texts[i] for i in rng.integers(0, len(texts), size=reviews)]
    batch = [texts[i] for i in rng.integers(0, len(texts), size=64)]

    with tempfile.TemporaryDirectory(prefix="fused-probe-") as directory:
        loaded, to_ids = export_paths(model, Path(directory) / "export", keras_above_batch)
        signatures = {name: loaded.signatures[name] for name in PATHS}

        def caller(signature):
            return lambda texts: signature(text=tf.constant(texts))["probability"].numpy()

        calls = {name: caller(signature) for name, signature in signatures.items()}
        one_samples, one_outputs = interleaved(calls, [[text] for text in singles], warmup)
        batch_samples, batch_outputs = interleaved(calls, [batch] * batch_repeats, max(3, warmup // 5))
        # Where the fused LSTM stops paying: smaller batches cut from the same 64 reviews.
        sweep = {}
        for size in sweep_sizes:
            samples, _ = interleaved(calls, [batch[:size]] * sweep_repeats, 2)
            sweep[f"batch_{size}"] = {name: round(float(np.percentile(samples[name], 50)), 3) for name in PATHS}
        # The loaded SavedModel must give what the in-memory model gives.
        in_memory = model(tf.constant(singles[:64]), training=False).numpy().reshape(-1)
        saved_vs_memory = float(np.abs(np.concatenate(one_outputs["keras"][:64]) - in_memory).max())

    lengths = np.concatenate([
        tf.reduce_sum(tf.cast(to_ids(tf.constant(singles[start:start + 64]), training=False) != 0, tf.int32), 1).numpy()
        for start in range(0, len(singles), 64)
    ])
    probabilities = {name: np.concatenate(one_outputs[name] + batch_outputs[name]) for name in PATHS}
    one = {name: stats(one_samples[name]) for name in PATHS}
    batched = {name: {**stats(batch_samples[name]),
                      "reviews_per_second": round(64 / (np.percentile(batch_samples[name], 50) / 1000), 1)}
               for name in PATHS}
    config_file = Path(model_path).parent / "config.json"
    config = json.loads(config_file.read_text()) if config_file.exists() else {}
    encoder = model.get_layer("encoder")
    return {
        "model": str(model_path),
        "model_summary": {
            "cell": encoder.cell, "units": encoder.units, "depth": encoder.depth,
            "bidirectional": encoder.bidirectional,
            "embedding_dim": int(model.get_layer("embedding").output_dim),
            "vocabulary": int(model.get_layer("embedding").input_dim),
            "max_length": config.get("max_length"), "pooling": config.get("pooling"),
        },
        "reviews": len(singles),
        "fused_dispatch_keras_above_batch": keras_above_batch,
        "tokens_per_review_after_clip": {
            "mean": round(float(lengths.mean()), 1), "median": float(np.median(lengths)), "max": int(lengths.max()),
        },
        "one_review": one,
        "batch_64": batched,
        "p50_ms_by_batch_size": sweep,
        "speedup_p50_one_review": {name: round(one["keras"]["p50_ms"] / one[name]["p50_ms"], 2) for name in PATHS[1:]},
        "speedup_p50_batch_64": {name: round(batched["keras"]["p50_ms"] / batched[name]["p50_ms"], 2)
                                 for name in PATHS[1:]},
        "max_abs_probability_difference_vs_keras": {
            name: float(np.abs(probabilities[name] - probabilities["keras"]).max()) for name in PATHS[1:]
        },
        "max_abs_probability_difference_saved_vs_in_memory": saved_vs_memory,
        "probabilities_compared": int(probabilities["keras"].size),
    }


def probe_gru_encoder(units: int, steps: tuple[int, ...], repeats: int) -> dict:
    """A random bidirectional GRU (translate's encoder shape) at batch 1: Keras vs the fused loop."""
    results = {}
    for time_steps in steps:
        stack = RecurrentStack(units, cell="gru", bidirectional=True, return_sequences=True, seed=0)
        stack.build((None, None, units))
        rng = np.random.default_rng(time_steps)
        for weight in stack.weights:
            weight.assign(rng.normal(scale=0.1, size=weight.shape).astype("float32"))
        spec = [tf.TensorSpec([None, None, units]), tf.TensorSpec([None, None], tf.bool)]
        keras_call = tf.function(lambda x, mask, stack=stack: stack(x, mask=mask, training=False), input_signature=spec)
        fused_call = tf.function(lambda x, mask, stack=stack: fused_stack_call(stack, x, mask, validate_mask=False),
                                 input_signature=spec)
        x = tf.constant(rng.normal(size=(1, time_steps, units)).astype("float32"))
        mask = tf.ones((1, time_steps), tf.bool)
        calls = {"keras": lambda _, f=keras_call, x=x, mask=mask: f(x, mask).numpy(),
                 "fused_loop": lambda _, f=fused_call, x=x, mask=mask: f(x, mask).numpy()}
        samples, outputs = interleaved(calls, [None] * repeats, warmup=10)
        results[f"steps_{time_steps}"] = {
            **{name: stats(samples[name]) for name in calls},
            "speedup_p50": round(float(np.percentile(samples["keras"], 50) / np.percentile(samples["fused_loop"], 50)), 2),
            "max_abs_difference": float(np.abs(outputs["keras"][0] - outputs["fused_loop"][0]).max()),
        }
    return {"units": units, "bidirectional": True, "batch": 1, **results}


def _sizes(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part.strip())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model", help="a trained sentiment model.keras (a run directory's)")
    parser.add_argument("--data-dir", default=os.environ.get("RNNAPPS_DATA_DIR"),
                        help="the data directory holding imdb/test.csv.gz (default $RNNAPPS_DATA_DIR)")
    parser.add_argument("--reviews", type=int, default=300, help="reviews timed one at a time")
    parser.add_argument("--batch-repeats", type=int, default=30, help="timed calls on the batch of 64")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls per path first")
    parser.add_argument("--keras-above-batch", type=int, default=16,
                        help="fused_dispatch: requests of more reviews than this run the Keras layers")
    parser.add_argument("--sweep", default="4,16,32",
                        help="batch sizes timed 10 times each, p50 only (comma-separated; empty skips it)")
    parser.add_argument("--gru-steps", default="13,40",
                        help="sequence lengths of the GRU encoder part (comma-separated; empty skips it)")
    parser.add_argument("--output", default=str(RESULTS / "fused_serving_probe.json"))
    args = parser.parse_args(argv)
    command, started = command_line("fused_serving_probe.py", argv), provenance_start()
    results = {"sentiment": probe_sentiment(args.model, args.data_dir, args.reviews, args.batch_repeats, args.warmup,
                                            args.keras_above_batch, _sizes(args.sweep))}
    steps = _sizes(args.gru_steps)
    if steps:
        results["gru_encoder"] = probe_gru_encoder(256, steps, repeats=200)
    results["provenance"] = provenance(started, command)
    print(json.dumps(results, indent=2))
    print(write_report(args.output, results))


if __name__ == "__main__":
    main()
