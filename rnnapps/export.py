"""SavedModel export in the layout TensorFlow Serving polls, written atomically.

``<export_root>/<pipeline>/<version>/`` where ``version`` is an integer one
higher than any already there. The model is written to a hidden temporary
folder beside it and renamed into place, so a server polling the folder never
sees half a model. Signatures take what a client has (raw strings, token lists,
images) and return named outputs.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import keras
import tensorflow as tf

from rnnapps.errors import ExportError

METADATA_FILE = "rnnapps.json"  # under assets.extra/, which TensorFlow Serving ignores


@dataclasses.dataclass
class Endpoint:
    """One exported signature: a function and its named input specs."""

    function: Callable
    input_signature: Sequence[tf.TensorSpec]


def ensure_trained(model: keras.Model) -> None:
    """Refuse models that never took an optimizer step: exporting them is always a mistake."""
    optimizer = getattr(model, "optimizer", None)
    iterations = int(optimizer.iterations.numpy()) if optimizer is not None and optimizer.built else 0
    if iterations == 0:
        raise ExportError("refusing to export an untrained model (0 optimizer steps); train it with `rnnapps run` first")


def _versions(pipeline_root: Path) -> list[int]:
    if not pipeline_root.is_dir():
        return []
    return sorted(int(p.name) for p in pipeline_root.iterdir() if p.is_dir() and p.name.isdigit())


def export_saved_model(
    model: keras.Model,
    endpoints: Mapping[str, Endpoint],
    export_root: str | Path,
    pipeline: str,
    metadata: Mapping | None = None,
    track: Sequence = (),
    require_trained: bool = True,
) -> Path:
    """Export ``endpoints`` of ``model``; returns the final version directory.

    The first endpoint should be ``serving_default``: TensorFlow Serving's
    REST ``:predict`` uses it when no signature is named. ``track`` lists extra
    layers/objects holding resources (lookup tables) that the endpoints use.
    """
    if require_trained:
        ensure_trained(model)
    if not endpoints:
        raise ExportError("no endpoints to export")
    pipeline_root = Path(export_root) / pipeline
    pipeline_root.mkdir(parents=True, exist_ok=True)
    version = (_versions(pipeline_root) or [0])[-1] + 1
    temporary = pipeline_root / f".tmp-{version}-{os.getpid()}"
    if temporary.exists():
        shutil.rmtree(temporary)

    archive = keras.export.ExportArchive()
    archive.track(model)
    for extra in track:
        archive.track(extra)
    for name, endpoint in endpoints.items():
        archive.add_endpoint(name, endpoint.function, input_signature=list(endpoint.input_signature))
    try:
        archive.write_out(str(temporary), verbose=False)
        extra_dir = temporary / "assets.extra"
        extra_dir.mkdir(exist_ok=True)
        info = {"pipeline": pipeline, "version": version, "signatures": list(endpoints), **(metadata or {})}
        (extra_dir / METADATA_FILE).write_text(json.dumps(info, indent=2, sort_keys=True, default=str) + "\n")
        final = pipeline_root / str(version)
        os.rename(temporary, final)
    except BaseException:
        shutil.rmtree(temporary, ignore_errors=True)
        raise
    return final


def latest_export(export_root: str | Path, pipeline: str) -> Path:
    """The highest-numbered version under ``export_root/pipeline`` (what Serving would load)."""
    pipeline_root = Path(export_root) / pipeline
    versions = _versions(pipeline_root)
    if not versions:
        raise ExportError(
            f"no export of {pipeline!r} under {str(pipeline_root)!r}; run `rnnapps run {pipeline}` "
            f"or `rnnapps export {pipeline}` first, or pass --model PATH"
        )
    return pipeline_root / str(versions[-1])


def load_export(path: str | Path):
    """``tf.saved_model.load`` with a clear error for a folder that is not a SavedModel."""
    path = Path(path)
    if not (path / "saved_model.pb").exists():
        raise ExportError(f"{str(path)!r} is not a SavedModel directory (no saved_model.pb)")
    return tf.saved_model.load(str(path))


def read_metadata(path: str | Path) -> dict:
    file = Path(path) / "assets.extra" / METADATA_FILE
    return json.loads(file.read_text()) if file.exists() else {}
