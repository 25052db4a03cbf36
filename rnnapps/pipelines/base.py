"""The pipeline contract (DESIGN.md, "The pipeline contract").

A pipeline module composes ``rnnapps.models`` and ``rnnapps.data`` and says
nothing about training loops, run directories or export: the shared runner
does those for every pipeline.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Generic, TypeVar

import keras
import numpy as np
import tensorflow as tf

from rnnapps.export import Endpoint


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """What a pipeline's data step hands on besides the batches; each pipeline extends it.

    Frozen: ``load_data`` writes it once, and ``build_model``, ``evaluate`` and the benchmarks
    only read it (a field that a later step filled in was a side channel between them).
    """

    #: examples per split after the caps (``max_train_examples``, ``max_eval_examples``)
    sizes: dict[str, int]


@dataclasses.dataclass(frozen=True)
class ImageData(DataInfo):
    """What the image pipelines' ``load_data`` hands on: the image shape and the test images (for pictures)."""

    image_shape: tuple[int, int, int]
    test_images: np.ndarray
    #: whether pixels are 0/1 (binarized MNIST) rather than intensities (SVHN)
    binary: bool = True


InfoT = TypeVar("InfoT", bound=DataInfo)


@dataclasses.dataclass
class Datasets(Generic[InfoT]):
    """Batched ``tf.data`` splits plus the pipeline's typed :class:`DataInfo` (vocabularies, test texts...)."""

    train: tf.data.Dataset
    validation: tf.data.Dataset
    test: tf.data.Dataset
    info: InfoT | None = None


class Pipeline:
    """Subclass and override; ``name``, ``config_class`` and ``monitor`` are required."""

    name: str = ""
    config_class: type = object
    #: validation metric that picks the best epoch, and whether higher is better
    monitor: str = "val_loss"
    monitor_mode: str = "min"
    #: config fields that bound what one serving request may cost; recorded in the export's metadata
    request_limit_fields: tuple[str, ...] = ("max_request_batch",)

    def load_data(self, config, data_dir: Path | None) -> Datasets:
        raise NotImplementedError

    def build_model(self, config, datasets: Datasets) -> keras.Model:
        """A compiled model (use ``rnnapps.training.make_optimizer(config)``)."""
        raise NotImplementedError

    def evaluate(self, model: keras.Model, datasets: Datasets, config, run_dir: Path) -> dict[str, Any]:
        """The task's real metric on the test split; may write task plots into ``run_dir``."""
        raise NotImplementedError

    def serving(self, model: keras.Model, config) -> dict[str, Endpoint]:
        """Signatures for TensorFlow Serving; the first should be ``serving_default``."""
        raise NotImplementedError

    def request_limits(self, config) -> dict[str, int]:
        """The serving limits of an export of ``config`` (``assets.extra/rnnapps.json``, docs/serving.md)."""
        return {name: getattr(config, name) for name in self.request_limit_fields}

    def build_record(self, model: keras.Model) -> dict[str, Any]:
        """What ``build_model`` did that ``model.keras`` does not hold, for ``metrics.json`` (JSON-ready).

        The runner saves it beside the model once training ends and merges it into every
        evaluation of the run, a reloaded model's included (sentiment: what ``init_from`` copied).
        """
        return {}

    def extra_callbacks(self, model: keras.Model, datasets: Datasets, config, run_dir: Path) -> list:
        return []

    #: a click command for ``rnnapps predict <name>``, or None
    predict_command = None


def spread_indices(total: int, count: int):
    """``count`` indices spread evenly over ``range(total)``: a split sorted by class still gives a mix."""
    import numpy as np

    return np.unique(np.linspace(0, total - 1, min(count, total)).round().astype(int))


def evaluation_subset(items, limit: int | None):
    """At most ``limit`` of ``items`` (a list or array), spread evenly over them; all of them when ``limit`` is None."""
    if not limit or len(items) <= limit:
        return items
    indices = spread_indices(len(items), limit)
    return items[indices] if hasattr(items, "shape") else [items[index] for index in indices]


# --- shared pieces of the pipelines' predict verbs ---------------------------------------------

def export_options(command):
    """Add ``--model PATH`` and ``--export-dir DIR`` to a pipeline's predict command."""
    import click

    command = click.option("--export-dir", default="saved_models", show_default=True, help="Export root.")(command)
    return click.option(
        "--model", "model_path", type=click.Path(file_okay=False, exists=True),
        help="A SavedModel version directory (default: the latest under --export-dir).",
    )(command)


def export_path(pipeline: str, model_path: str | None, export_dir: str) -> Path:
    """The export a predict verb reads: ``--model``, or the latest export of ``pipeline`` under ``--export-dir``."""
    from rnnapps.export import latest_export

    return Path(model_path) if model_path else latest_export(export_dir, pipeline)


def served_model(pipeline: str, model_path: str | None, export_dir: str):
    """``(loaded SavedModel, its path)``: ``model_path``, or the latest export of ``pipeline``."""
    from rnnapps.export import load_export

    path = export_path(pipeline, model_path, export_dir)
    return load_export(path), path


def run_keras_model(model_path: Path, option: str, instead: str) -> keras.Model:
    """The Keras model behind an export (its run's ``model.keras``), for what ``option`` asks and the export lacks."""
    import click

    from rnnapps.export import read_metadata

    run_dir = read_metadata(model_path).get("run_dir")
    keras_file = Path(run_dir) / "model.keras" if run_dir else None
    if keras_file is None or not keras_file.exists():
        raise click.ClickException(
            f"{option} needs the Keras model of the run that made {str(model_path)!r} "
            f"({keras_file or 'no run recorded'} not found); {instead}"
        )
    return keras.saving.load_model(keras_file)


def export_limits(model_path: Path, config_class) -> dict[str, int]:
    """The request limits an export enforces (its metadata), else ``config_class``'s defaults."""
    from rnnapps.export import read_metadata

    recorded = read_metadata(model_path).get("request_limits", {})
    defaults = {field.name: field.default for field in dataclasses.fields(config_class)}
    return {name: recorded.get(name, defaults.get(name)) for name in set(recorded) | set(defaults)}


def text_requests(texts, limits: dict) -> list[list[str]]:
    """``texts`` in request-sized batches (``max_request_batch``), each text checked against ``max_text_bytes``."""
    import click

    max_bytes = limits["max_text_bytes"]
    for index, text in enumerate(texts):
        size = len(text.encode("utf-8"))
        if size > max_bytes:
            raise click.BadParameter(f"text {index + 1} has {size} bytes, over the export's max_text_bytes={max_bytes}")
    size = limits["max_request_batch"]
    return [list(texts[start : start + size]) for start in range(0, len(texts), size)]


def read_texts(texts) -> tuple[str, ...]:
    """The texts given as arguments, else non-empty lines piped on stdin."""
    import sys

    import click

    if texts:
        return tuple(texts)
    if sys.stdin.isatty():
        raise click.UsageError("give texts as arguments or pipe them in, one per line")
    return tuple(line.rstrip("\n") for line in sys.stdin if line.strip())
