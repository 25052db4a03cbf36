"""Every pipeline's smoke run must beat the model it started from, by a clear margin, on its own metric.

Range checks (``0 <= F1 <= 1``, ``nll > 0``) pass for a model that never learned. Here each
pipeline's canonical smoke run (conftest.py) is scored against its untrained twin: the same
config, data and seed, scored by the same ``evaluate`` on the same test split
(tests/baselines.py). The margins are a fraction of the gain the fixture runs reach, so an
optimiser, loss or data bug that stops learning fails here.
"""

import math

import pytest

from rnnapps.pipelines import get_pipeline
from tests.baselines import assert_beats, untrained
from tests.conftest import CANONICAL_RUNS

#: pipeline -> (metric, lower is better, the least gain over the untrained model)
LEARNING = {
    "sentiment": ("test_accuracy", False, 0.2),
    "ner": ("test_f1", False, 0.15),
    "translate": ("test_bleu_beam", False, 5.0),
    # Reconstruction loss per token (nats): the fixture reviews are random word salads, which a
    # 16-number code of a smoke-sized model cannot reproduce greedily (see the xfail below), but
    # whose word and position statistics it learns: 3.03 vs 3.83 untrained, measured 2026-12-03.
    "autoencoder": ("test_loss", True, 0.4),
    "textgen": ("test_nats_per_char", True, 0.5),
    "pixelrnn": ("test_nll_nats", True, 50.0),
    "draw": ("test_nll_bound_nats", True, 50.0),
}


@pytest.fixture(scope="module")
def untrained_metrics(canonical_run, tmp_path_factory):
    """``untrained_metrics(pipeline)``: the canonical run's metrics for its untrained model, computed once."""
    cache = {}

    def get(pipeline):
        if pipeline not in cache:
            run = canonical_run(pipeline)
            model, datasets = untrained(pipeline, run.result.config, CANONICAL_RUNS[pipeline]["data_dir"])
            cache[pipeline] = get_pipeline(pipeline).evaluate(
                model, datasets, run.result.config, tmp_path_factory.mktemp(f"untrained-{pipeline}")
            )
        return cache[pipeline]

    return get


@pytest.mark.parametrize("pipeline", sorted(LEARNING))
def test_the_smoke_run_beats_its_untrained_model(pipeline, canonical_run, untrained_metrics):
    metric, lower_is_better, margin = LEARNING[pipeline]
    trained = canonical_run(pipeline).result.metrics[metric]
    baseline = untrained_metrics(pipeline)[metric]
    assert math.isfinite(trained) and math.isfinite(baseline)
    assert_beats(trained, baseline, by=margin, name=f"{pipeline} {metric}", lower_is_better=lower_is_better)


def test_textgen_beats_a_uniform_guess_over_its_vocabulary(canonical_run):
    run = canonical_run("textgen")
    datasets = get_pipeline("textgen").load_data(run.result.config, CANONICAL_RUNS["textgen"]["data_dir"])
    vocabulary = len(datasets.info.vocabulary)
    nats = run.result.metrics["test_nats_per_char"]
    # A uniform guess over the characters scores ln(V); a model that learned the fixture's letter
    # frequencies and common bigrams is well below that.
    assert nats < 0.8 * math.log(vocabulary), (nats, vocabulary)


def test_translate_beam_search_is_no_worse_than_greedy(canonical_run):
    metrics = canonical_run("translate").result.metrics
    assert metrics["beam_width"] > 1
    assert metrics["test_bleu_beam"] >= metrics["test_bleu_greedy"] - 1e-9, metrics


@pytest.mark.xfail(strict=True, reason="greedy reconstruction of unseen random word salads stays near chance on the "
                   "fixture: token accuracy 0.043 vs 0.023 untrained (measured 2026-12-03); turns red once it learns")
def test_autoencoder_greedy_reconstruction_beats_its_untrained_model(canonical_run, untrained_metrics):
    trained = canonical_run("autoencoder").result.metrics["test_token_accuracy"]
    assert_beats(trained, untrained_metrics("autoencoder")["test_token_accuracy"], by=0.1,
                 name="autoencoder test_token_accuracy")
