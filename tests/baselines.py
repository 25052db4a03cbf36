"""Untrained baselines for the pipeline tests: what a pipeline's model scores before it has learned anything.

A test that only checks a metric's range (``0 <= F1 <= 1``, ``nll > 0``) also passes for a model
that never learned. :func:`untrained` builds the model a run started from: the same pipeline,
config and data, seeded as the runner seeds it, with no training step. A test scores it with the
pipeline's own metric functions on the same split and asks the run to beat it by a clear margin
(:func:`assert_beats`). Building and scoring it takes seconds on the fixtures.
"""

from __future__ import annotations

from pathlib import Path

import keras

from rnnapps import devices
from rnnapps.pipelines import get_pipeline
from rnnapps.pipelines.base import Datasets


def untrained(pipeline: str, config, data_dir: Path) -> tuple[keras.Model, Datasets]:
    """``(model, datasets)``: ``pipeline``'s compiled model for ``config`` with its initial weights, and its data.

    The order is the runner's (seed, load the data, build), so the weights are the ones the run with
    this config started from.
    """
    implementation = get_pipeline(pipeline)
    devices.seed_everything(config.seed)
    datasets = implementation.load_data(config, Path(data_dir))
    return implementation.build_model(config, datasets), datasets


def assert_beats(trained: float, baseline: float, *, by: float, name: str, lower_is_better: bool = False) -> None:
    """``trained`` is better than the untrained ``baseline`` by at least ``by``, in the metric's own units."""
    gain = baseline - trained if lower_is_better else trained - baseline
    assert gain >= by, (
        f"{name}: trained {trained:.4g} vs untrained {baseline:.4g}, a gain of {gain:.4g} where at least {by:.4g} "
        f"is required: the smoke run did not learn enough"
    )
