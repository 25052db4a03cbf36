"""Sequence autoencoder benchmark: Multi30k reconstruction, and Dai & Le's pretraining protocol on IMDB.

1. ``multi30k``: the autoencoder trained on the English side of Multi30k train
   (``MULTI30K_SETTINGS`` over the ``--preset``), then greedy reconstruction of
   the 1,014 held-out val sentences: token accuracy (target >= 90%) and exact
   match, and the same with a beam search of ``BEAM_WIDTH``; test2016 too (from
   the run's metrics). ``--rescore-multi30k`` scores val again without training.
2. ``dai-le`` (Dai & Le 2015 at our scale): (a) the autoencoder pretrained on
   the IMDB train split that the sentiment pipeline trains on (labels ignored,
   its validation reviews left out); (b) the sentiment ``cpu`` preset from
   random init; (c) the same preset with ``--set init_from=<(a)'s run>``. (b)
   and (c) share every setting (epochs, time budget, seed) but ``init_from``;
   both use ``embeddings=none`` so that the comparison is random init against
   pretraining, not against GloVe. IMDB test accuracy and wall times of all three.

Every run goes through the shared runner, as ``rnnapps run`` does. Writes
``benchmarks/results/autoencoder.json``; a part that is skipped keeps its old
section there. Each part (and each repeat, and a rescore) records its
``provenance`` (``benchmarks.common.provenance``), and so does the file's latest
write, at the top. ``--table`` prints the docs table from that file.

Usage (the machine is shared: take the global benchmark lock):
    nohup flock /work/bench.lock python benchmarks/autoencoder.py --data-dir /work/shared/data > /tmp/autoencoder_bench.log 2>&1 &
    python benchmarks/autoencoder.py --data-dir tests/fixtures/data --multi30k-data-dir tests/fixtures \\
        --preset smoke --sentiment-preset smoke --results /tmp/autoencoder.json   # a plumbing check
    python benchmarks/autoencoder.py --table
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

RESULTS = Path(__file__).parent / "results" / "autoencoder.json"
TARGET_VAL_TOKEN_ACCURACY = 0.90
# Issue 20's raised target: the mean greedy val token accuracy of runs that differ in their seed alone.
TARGET_MEAN_VAL_TOKEN_ACCURACY = 0.91
SEEDS_FOR_MEAN_TARGET = 2
# Val is also reconstructed with a beam search of this width (an extra number; the target is greedy's).
BEAM_WIDTH = 5
# Multi30k captions are short (about 13 tokens): a wider GRU and code than the IMDB-shaped
# defaults, and the code fed to the decoder at every step (a short path from each target word
# back to the code). Tied embeddings (the logits are dot products with the word embeddings) were
# the step change: 53.6% val teacher-forced accuracy after one epoch against 20.9% untied. The
# model memorises train (greedy train reconstruction 100%), so it is regularised: with dropouts of
# 0.1 the same model reached 88.1% greedy val; 0.3 before the output layer, 0.2 on the embeddings,
# word dropout 0.2 (rate held 7 epochs, then x0.9) reached 90.2%; issue 20's settings, 0.35, 0.25
# and word dropout 0.3 (more decoder inputs hidden, so the decoder leans on the code, as greedy
# decoding must), held 8 epochs, then x0.92 over a longer run, reached 91.7% as the mean of seeds 7
# and 1337 (92.0%, 91.4%; 54 epochs in 118 min each on a Sapphire Rapids class CPU;
# docs/autoencoder.md). 6,000 words: a smaller softmax than 10k (a one-off step timing, not a
# committed benchmark, put it at 608 vs 1,024 ms per batch of 128 untied) and 1.8% of val tokens
# [UNK] (10k: 1.2% by a one-off count), reported in the results as val_unknown_share.
MULTI30K_SETTINGS = {
    "dataset": "multi30k", "vocab_size": "6000", "max_length": "40", "embedding_dim": "256", "cell": "gru",
    "units": "256", "code_size": "512", "decoder_units": "512", "code_at_every_step": "true",
    "tie_embeddings": "true", "embedding_dropout": "0.25", "dropout": "0.35", "word_dropout": "0.3", "epochs": "80",
    "learning_rate": "2e-3", "learning_rate_hold_epochs": "8", "learning_rate_decay": "0.92",
    "early_stopping_patience": "10", "time_budget_minutes": "118",
}
# Both sentiment arms: random init means no GloVe either.
SENTIMENT_SETTINGS = {"embeddings": "none"}


def _history_epochs(run_dir: Path) -> int:
    from rnnapps import run_dirs

    return len(run_dirs.read_history(run_dir / "history.csv").get("epoch", []))


def run_multi30k(arguments, set_options: dict, previous: dict | None = None) -> dict:
    """Train (or, with ``--resume-multi30k``, continue) the Multi30k autoencoder and score val.

    A resumed run trains for another ``time_budget_minutes`` (``--set-multi30k`` may change
    that, the epochs, the patience and the learning-rate schedule: ``runner.RESUMABLE_FIELDS``)
    from its last completed epoch; ``sessions`` lists the wall time of each part (None: not on
    record) and ``wall_seconds`` is their sum; ``earlier_provenance`` keeps the provenance blocks
    of the section's earlier writes, oldest first (None: not on record).
    """
    from benchmarks.common import machine_under_load, timed_run

    earlier_sessions, resumed_record = [], {}
    if arguments.resume_multi30k:
        resumed = Path(arguments.resume_multi30k).resolve()
        if previous and Path(previous.get("run_dir", "")).resolve() == resumed:
            options = {**previous.get("set_options", {}), **set_options}
            earlier_sessions = previous.get("sessions", [previous["wall_seconds"]])
            earlier_provenance = [*previous.get("earlier_provenance", []), previous.get("provenance")]
        else:
            # A run stopped before it wrote results: its options, earlier wall time and provenance
            # are not on record here (its config.json has the settings).
            options, earlier_sessions, earlier_provenance = dict(set_options), [None], [None]
        resumed_record = {"earlier_provenance": earlier_provenance}
        run = timed_run("autoencoder", arguments.preset, set_options, arguments.multi30k_data_dir,
                        Path(arguments.work_dir) / "multi30k", resume=str(resumed))
    else:
        options = {**MULTI30K_SETTINGS, **set_options}
        run = timed_run("autoencoder", arguments.preset, options, arguments.multi30k_data_dir,
                        Path(arguments.work_dir) / "multi30k")
    sessions = [*earlier_sessions, round(run.wall_seconds, 1)]
    metrics = run.result.metrics
    return {
        "preset": arguments.preset,
        "set_options": options,
        "config": dict(vars(run.result.config)),
        **score_validation(run.result.run_dir, Path(arguments.multi30k_data_dir)),
        "test_token_accuracy": round(metrics["test_token_accuracy"], 4),
        "test_exact_match": round(metrics["test_exact_match"], 4),
        "test_teacher_forced_token_accuracy": round(metrics["test_teacher_forced_token_accuracy"], 4),
        "epochs_run": _history_epochs(run.result.run_dir),
        "wall_seconds": None if None in sessions else round(sum(sessions), 1),
        "sessions": sessions,
        "train_seconds": metrics["train_seconds_this_session"],
        "machine": machine_under_load(run.load_average_at_start),
        "run_dir": str(run.result.run_dir),
        **resumed_record,
    }


def score_validation(run_dir: Path, data_dir: Path) -> dict:
    """The val fields of a Multi30k run: greedy (the target's) and beam-search reconstruction of val."""
    import keras

    from rnnapps.config import load_config
    from rnnapps.models.autoencoder import reconstruction_metrics
    from rnnapps.pipelines.autoencoder import AutoencoderConfig, load_texts

    model = keras.saving.load_model(run_dir / "model.keras")
    validation = load_texts(load_config(AutoencoderConfig, run_dir / "config.json"), data_dir)["validation"]
    greedy = reconstruction_metrics(model, validation)
    beam = reconstruction_metrics(model, validation, beam_width=BEAM_WIDTH)
    return {
        "val_token_accuracy": round(greedy["token_accuracy"], 4),
        "val_exact_match": round(greedy["exact_match"], 4),
        "val_examples": greedy["examples"],
        "val_unknown_share": round(greedy["unknown_share"], 4),
        "val_beam_width": BEAM_WIDTH,
        "val_beam_token_accuracy": round(beam["token_accuracy"], 4),
        "val_beam_exact_match": round(beam["exact_match"], 4),
        "target_val_token_accuracy": TARGET_VAL_TOKEN_ACCURACY,
        "target_met": bool(greedy["token_accuracy"] >= TARGET_VAL_TOKEN_ACCURACY),
        "samples": greedy["samples"][:10],
    }


def _settings_but_seed(section: dict) -> dict:
    return {key: value for key, value in section.get("config", {}).items() if key != "seed"}


def _seed_run(section: dict) -> dict:
    provenance = section.get("provenance") or {}
    return {
        "seed": section["config"]["seed"],
        "val_token_accuracy": section["val_token_accuracy"],
        "val_exact_match": section["val_exact_match"],
        "epochs_run": section.get("epochs_run"),
        "wall_seconds": section.get("wall_seconds"),
        "commit": provenance.get("commit"),
        "cpu_model": provenance.get("cpu_model"),
    }


def with_seed_runs(section: dict, previous: dict | None) -> dict:
    """``section`` with ``seed_runs``: its val figures beside those of the earlier runs of the same settings.

    Runs count together when their configs are equal but for the seed (a run of other settings
    starts the list again; a run of a seed already listed replaces that entry). The raised target
    is on their mean, ``val_token_accuracy_mean``, over at least ``SEEDS_FOR_MEAN_TARGET`` seeds.
    """
    runs = []
    if previous and "config" in previous and _settings_but_seed(previous) == _settings_but_seed(section):
        runs = [run for run in previous.get("seed_runs", [_seed_run(previous)])
                if run["seed"] != section["config"]["seed"]]
    runs.append(_seed_run(section))
    mean = sum(run["val_token_accuracy"] for run in runs) / len(runs)
    return {
        **section,
        "seed_runs": runs,
        "val_token_accuracy_mean": round(mean, 4),
        "target_val_token_accuracy_mean": TARGET_MEAN_VAL_TOKEN_ACCURACY,
        "target_mean_met": bool(len(runs) >= SEEDS_FOR_MEAN_TARGET and mean >= TARGET_MEAN_VAL_TOKEN_ACCURACY),
    }


def _sentiment_arm(run) -> dict:
    metrics = run.result.metrics
    return {
        "test_accuracy": metrics["test_accuracy"],
        "test_auc": metrics["test_auc"],
        "epochs_run": _history_epochs(run.result.run_dir),
        "wall_seconds": round(run.wall_seconds, 1),
        "train_seconds": metrics["train_seconds_this_session"],
        "run_dir": str(run.result.run_dir),
    }


def _sentiment_arms(arguments, pretraining_run_dir: Path, sentiment_options: dict, work: Path) -> dict:
    """Sentiment from random init, then from the autoencoder: every setting equal but ``init_from``."""
    from benchmarks.common import timed_run

    common = {**SENTIMENT_SETTINGS, **sentiment_options}
    random_init = timed_run("sentiment", arguments.sentiment_preset, common, arguments.data_dir, work)
    pretrained_options = {**common, "init_from": str(pretraining_run_dir)}
    pretrained = timed_run("sentiment", arguments.sentiment_preset, pretrained_options, arguments.data_dir, work)
    random_arm, pretrained_arm = _sentiment_arm(random_init), _sentiment_arm(pretrained)
    # The transfer's own report (rnnapps.transfer), as the sentiment run recorded it.
    pretrained_arm["embedding_coverage"] = round(pretrained.result.metrics["init_from"]["coverage"], 4)
    return {
        "seed": random_init.result.config.seed,
        "sentiment_set_options": common,
        "sentiment_config": dict(vars(random_init.result.config)),
        "random_init": random_arm,
        "pretrained": pretrained_arm,
        "test_accuracy_gain": round(pretrained_arm["test_accuracy"] - random_arm["test_accuracy"], 4),
        "pretraining_helped": bool(pretrained_arm["test_accuracy"] > random_arm["test_accuracy"]),
    }


def run_dai_le(arguments, autoencoder_options: dict, sentiment_options: dict) -> dict:
    from benchmarks.common import machine_under_load, timed_run

    work = Path(arguments.work_dir) / "dai_le"
    pretraining = timed_run("autoencoder", arguments.preset, autoencoder_options, arguments.data_dir, work)
    arms = _sentiment_arms(arguments, pretraining.result.run_dir, sentiment_options, work)
    metrics = pretraining.result.metrics
    return {
        "autoencoder": {
            "preset": arguments.preset,
            "set_options": autoencoder_options,
            "config": dict(vars(pretraining.result.config)),
            "test_token_accuracy": round(metrics["test_token_accuracy"], 4),
            "test_exact_match": round(metrics["test_exact_match"], 4),
            "test_teacher_forced_token_accuracy": round(metrics["test_teacher_forced_token_accuracy"], 4),
            "embedding_plot": metrics.get("embedding_plot"),
            "epochs_run": _history_epochs(pretraining.result.run_dir),
            "wall_seconds": round(pretraining.wall_seconds, 1),
            "train_seconds": metrics["train_seconds_this_session"],
            "run_dir": str(pretraining.result.run_dir),
        },
        "sentiment_preset": arguments.sentiment_preset,
        **arms,
        "machine": machine_under_load(pretraining.load_average_at_start),
    }


def repeat_dai_le(arguments, previous: dict, sentiment_options: dict) -> dict:
    """Both sentiment arms again from the same pretraining run (e.g. another seed), added to ``repeats``."""
    run_dir = Path(previous["autoencoder"]["run_dir"])
    if not (run_dir / "model.keras").exists():
        raise SystemExit(f"--repeat-dai-le needs the pretraining run of the dai_le section: {run_dir} is gone")
    arms = _sentiment_arms(arguments, run_dir, sentiment_options, Path(arguments.work_dir) / "dai_le")
    arms.pop("sentiment_config")
    return {**previous, "repeats": [*previous.get("repeats", []), arms]}


def _sessions_text(section: dict) -> str:
    """``"35.2 min"``, or each session's minutes for a resumed run (``?``: not on record)."""
    sessions = section.get("sessions", [section["wall_seconds"]])
    return " + ".join("?" if seconds is None else f"{seconds / 60:.1f}" for seconds in sessions) + " min"


def table(results: dict) -> str:
    """The markdown table of docs/autoencoder.md."""
    rows = ["| measurement | result | wall time |", "|---|---|---|"]
    multi30k = results.get("multi30k")
    if multi30k:
        rows.append(
            f"| Multi30k en val, greedy token accuracy (target ≥ 90%) | {multi30k['val_token_accuracy']:.1%} "
            f"(exact match {multi30k['val_exact_match']:.1%}, {multi30k['epochs_run']} epochs) | {_sessions_text(multi30k)} |"
        )
        seed_runs = multi30k.get("seed_runs", [])
        if len(seed_runs) >= 2:
            each = ", ".join(f"seed {run['seed']}: {run['val_token_accuracy']:.1%}" for run in seed_runs)
            rows.append(
                f"| same settings, mean of {len(seed_runs)} seeds (target ≥ {TARGET_MEAN_VAL_TOKEN_ACCURACY:.0%}) | "
                f"{multi30k['val_token_accuracy_mean']:.1%} ({each}) | |"
            )
        if "val_beam_token_accuracy" in multi30k:
            rows.append(
                f"| same model, beam search of {multi30k['val_beam_width']} | "
                f"{multi30k['val_beam_token_accuracy']:.1%} (exact match {multi30k['val_beam_exact_match']:.1%}) | |"
            )
    dai_le = results.get("dai_le")
    if dai_le:
        pretraining = dai_le["autoencoder"]
        rows.append(
            f"| IMDB autoencoder pretraining, test greedy token accuracy | {pretraining['test_token_accuracy']:.1%} "
            f"| {pretraining['wall_seconds'] / 60:.1f} min |"
        )
        for name, key in (("random init", "random_init"), ("from the autoencoder", "pretrained")):
            arm = dai_le[key]
            rows.append(
                f"| IMDB test accuracy, sentiment `{dai_le['sentiment_preset']}` {name} | {arm['test_accuracy']:.2%} "
                f"(AUC {arm['test_auc']:.4f}, {arm['epochs_run']} epochs) | {arm['wall_seconds'] / 60:.1f} min |"
            )
    for repeat in (dai_le or {}).get("repeats", []):
        rows.append(
            f"| same, seed {repeat['seed']}: random init → from the autoencoder | "
            f"{repeat['random_init']['test_accuracy']:.2%} → {repeat['pretrained']['test_accuracy']:.2%} "
            f"({repeat['test_accuracy_gain'] * 100:+.2f} points) | "
            f"{repeat['random_init']['wall_seconds'] / 60:.1f} + {repeat['pretrained']['wall_seconds'] / 60:.1f} min |"
        )
    return "\n".join(rows)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", help="Folder holding imdb/ (and multi30k/).")
    parser.add_argument("--multi30k-data-dir", help="Folder holding multi30k/ (default: --data-dir).")
    parser.add_argument("--preset", default="cpu", help="Autoencoder preset.")
    parser.add_argument("--sentiment-preset", default="cpu")
    parser.add_argument("--set-multi30k", action="append", default=[], metavar="KEY=VALUE",
                        help="Autoencoder override for the Multi30k run (over MULTI30K_SETTINGS).")
    parser.add_argument("--set-imdb", action="append", default=[], metavar="KEY=VALUE",
                        help="Autoencoder override for the IMDB pretraining.")
    parser.add_argument("--set-sentiment", action="append", default=[], metavar="KEY=VALUE",
                        help="Sentiment override for both arms.")
    parser.add_argument("--skip-multi30k", action="store_true")
    parser.add_argument("--resume-multi30k", metavar="RUN_DIR",
                        help="Continue this Multi30k run for another time budget instead of starting one.")
    parser.add_argument("--rescore-multi30k", action="store_true",
                        help="Score val again (greedy and beam search) with the recorded Multi30k run's model; no "
                             "training.")
    parser.add_argument("--skip-dai-le", action="store_true")
    parser.add_argument("--repeat-dai-le", action="store_true",
                        help="Run only the two sentiment arms again (use --set-sentiment seed=N), from the dai_le "
                             "section's pretraining run, and add them to its repeats.")
    parser.add_argument("--work-dir", default=str(Path(__file__).parent / "work" / "autoencoder"),
                        help="Runs and exports go here (git-ignored).")
    parser.add_argument("--results", default=str(RESULTS))
    parser.add_argument("--table", action="store_true", help="Print the docs table from --results and stop.")
    arguments = parser.parse_args(argv)
    results_path = Path(arguments.results)
    previous = json.loads(results_path.read_text()) if results_path.exists() else {}
    if arguments.table:
        print(table(previous))
        return previous
    if not arguments.data_dir:
        parser.error("--data-dir is required")
    arguments.multi30k_data_dir = arguments.multi30k_data_dir or arguments.data_dir

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from benchmarks.common import command_line, provenance, provenance_start, write_report
    from rnnapps.config import parse_set_options

    command, started = command_line("autoencoder.py", argv), provenance_start()

    def write(results: dict) -> None:
        results["provenance"] = provenance(started, command)  # the file's latest write
        write_report(results_path, results)

    results = dict(previous)
    if arguments.rescore_multi30k:
        if "multi30k" not in previous:
            parser.error("--rescore-multi30k needs a multi30k section in --results")
        section = previous["multi30k"]
        rescored = {**section, **score_validation(Path(section["run_dir"]), Path(arguments.multi30k_data_dir)),
                    "rescore_provenance": provenance(started, command)}
        results["multi30k"] = with_seed_runs(rescored, section)
        write(results)
        print(table(results))
        return results
    if not (arguments.skip_multi30k or arguments.repeat_dai_le):
        part_started = provenance_start()
        results["multi30k"] = run_multi30k(arguments, parse_set_options(arguments.set_multi30k),
                                           previous.get("multi30k"))
        results["multi30k"]["provenance"] = provenance(part_started, command)
        results["multi30k"] = with_seed_runs(results["multi30k"], previous.get("multi30k"))
        write(results)
    part_started = provenance_start()
    if arguments.repeat_dai_le:
        if "dai_le" not in previous:
            parser.error("--repeat-dai-le needs a dai_le section in --results")
        results["dai_le"] = repeat_dai_le(arguments, previous["dai_le"], parse_set_options(arguments.set_sentiment))
        results["dai_le"]["repeats"][-1].update(command=command, provenance=provenance(part_started, command))
    else:
        if not arguments.skip_dai_le:
            results["dai_le"] = run_dai_le(
                arguments, parse_set_options(arguments.set_imdb), parse_set_options(arguments.set_sentiment)
            )
            results["dai_le"]["provenance"] = provenance(part_started, command)
        results["command"] = command
    write(results)
    print(table(results))
    return results


if __name__ == "__main__":
    main()
