"""Probe: NER training step with GloVe, one trainable embedding against PartlyFrozenEmbedding.

    python benchmarks/ner_embedding_probe.py --data-dir ../shared/data [--steps 150] [--output PATH]

Builds the ``cpu`` preset's tagger with the GloVe file twice: once with the word embedding as one
trainable matrix (what the tagger did before: every row is updated by Adam each step), once as
the pipeline builds it now (the rows training reads trainable, the file-only rows fixed). Trains
each for ``--steps`` batches of the real training split after a warm-up, twice, interleaved, so
the load of a shared machine falls on both alike, and reports milliseconds per step. Writes the
results with their ``provenance`` to ``--output`` (default benchmarks/results/ner_embedding_probe.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import RESULTS, command_line, provenance, provenance_start, write_report  # noqa: E402
from rnnapps.config import resolve_config  # noqa: E402
from rnnapps.pipelines.ner import PIPELINE, NerConfig  # noqa: E402

GLOVE = "glove/glove.6B.50d.top100k_conll2003.txt.gz"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--output", default=str(RESULTS / "ner_embedding_probe.json"))
    args = parser.parse_args(argv)
    command, started = command_line("ner_embedding_probe.py", argv), provenance_start()

    config = resolve_config(NerConfig, "cpu", set_options={"embeddings": str(Path(args.data_dir) / GLOVE)})
    datasets = PIPELINE.load_data(config, Path(args.data_dir))
    vocab = datasets.info.vocabularies
    # Without word counts every row counts as trained: the tagger gets one trainable Embedding.
    one_matrix = dataclasses.replace(datasets, info=dataclasses.replace(
        datasets.info, vocabularies=dataclasses.replace(vocab, word_counts={})))
    models = {"one_trainable_matrix": PIPELINE.build_model(config, one_matrix),
              "partly_frozen": PIPELINE.build_model(config, datasets)}
    batches = datasets.train.repeat()
    for model in models.values():
        model.fit(batches.take(args.warmup), epochs=1, verbose=0)
    times = {name: [] for name in models}
    for _ in range(2):
        for name, model in models.items():
            start = time.perf_counter()
            model.fit(batches.take(args.steps), epochs=1, verbose=0)
            times[name].append(1000 * (time.perf_counter() - start) / args.steps)
    results = {
        "lookup_rows": int(len(vocab.words) + 2),
        "trained_rows": int(vocab.trained_word_rows),
        "steps_timed": args.steps,
        "batch_size": config.batch_size,
        "ms_per_step": {name: [round(t, 2) for t in runs] for name, runs in times.items()},
        "ms_per_step_best": {name: round(min(runs), 2) for name, runs in times.items()},
        "trainable_parameters": {name: int(sum(w.numpy().size for w in model.trainable_weights))
                                 for name, model in models.items()},
    }
    results["speedup"] = round(results["ms_per_step_best"]["one_trainable_matrix"]
                               / results["ms_per_step_best"]["partly_frozen"], 2)
    results["provenance"] = provenance(started, command)
    write_report(args.output, results)
    print(results)


if __name__ == "__main__":
    main()
