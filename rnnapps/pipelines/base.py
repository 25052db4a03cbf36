"""The pipeline contract (DESIGN.md, "The pipeline contract").

A pipeline module composes ``rnnapps.models`` and ``rnnapps.data`` and says
nothing about training loops, run directories or export: the shared runner
does those for every pipeline.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import keras
import tensorflow as tf

from rnnapps.export import Endpoint


@dataclasses.dataclass
class Datasets:
    """Batched ``tf.data`` splits plus what the model needs to be built (vocabularies...)."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    info: dict[str, Any] = dataclasses.field(default_factory=dict)


class Pipeline:
    """Subclass and override; ``name``, ``config_class`` and ``monitor`` are required."""

    name: str = ""
    config_class: type = object
    #: validation metric that picks the best epoch, and whether higher is better
    monitor: str = "val_loss"
    monitor_mode: str = "min"

    def load_data(self, config, data_dir: Path | None) -> Datasets:
        raise NotImplementedError

    def build_model(self, config, datasets: Datasets) -> keras.Model:
        """A compiled model (use ``rnnapps.runtime.make_optimizer(config)``)."""
        raise NotImplementedError

    def evaluate(self, model: keras.Model, datasets: Datasets, config, run_dir: Path) -> dict[str, Any]:
        """The task's real metric on the test split; may write task plots into ``run_dir``."""
        raise NotImplementedError

    def serving(self, model: keras.Model, config) -> dict[str, Endpoint]:
        """Signatures for TensorFlow Serving; the first should be ``serving_default``."""
        raise NotImplementedError

    def extra_callbacks(self, model: keras.Model, datasets: Datasets, config, run_dir: Path) -> list:
        return []

    #: a click command for ``rnnapps predict <name>``, or None
    predict_command = None
