"""Run directories: where a run's config, history, metrics, backups and model live, and how they are written.

``<output_dir>/<pipeline>/<YYYYmmdd-HHMMSS>/`` holds ``config.json``, ``history.csv`` (one row per
epoch, appended across resumes), ``metrics.json``, ``model.keras``, ``checkpoints/`` and
:data:`BACKUP_DIR`. JSON is written atomically.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import os
import shutil
from pathlib import Path

from rnnapps.errors import ConfigError


def new_run_dir(output_dir: str | Path, pipeline: str) -> Path:
    """``<output_dir>/<pipeline>/<YYYYmmdd-HHMMSS>[-n]/``, created."""
    root = Path(output_dir) / pipeline
    root.mkdir(parents=True, exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    candidate, suffix = root / stamp, 1
    while candidate.exists():
        suffix += 1
        candidate = root / f"{stamp}-{suffix}"
    candidate.mkdir()
    return candidate


def latest_run_dir(output_dir: str | Path, pipeline: str) -> Path:
    """The most recent run of ``pipeline`` (by name, which sorts by start time)."""
    root = Path(output_dir) / pipeline
    runs = sorted(p for p in root.glob("*") if (p / "config.json").exists()) if root.is_dir() else []
    if not runs:
        raise ConfigError(f"no runs of {pipeline!r} under {str(root)!r}; start one with `rnnapps run {pipeline}`")
    return runs[-1]


def write_json(path: str | Path, values) -> None:
    """Write JSON atomically (temp file + rename): a crash never leaves half a file."""
    path = Path(path)
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w") as handle:
        handle.write(json.dumps(values, indent=2, sort_keys=True, default=_json_default) + "\n")
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# Where the training backup (what --resume continues from) lives in a run directory.
BACKUP_DIR = "backup"


def copy_training_state(run_dir: Path, scratch: Path) -> None:
    """Copy what a resumed session reads (backup, best checkpoint, history) from the chief's run directory."""
    for name in (BACKUP_DIR, "checkpoints"):
        if (run_dir / name).is_dir():
            shutil.copytree(run_dir / name, scratch / name, dirs_exist_ok=True)
    if (run_dir / "history.csv").exists():
        shutil.copy2(run_dir / "history.csv", scratch / "history.csv")


def read_history(path: str | Path) -> dict[str, list[float]]:
    """``history.csv`` (one row per epoch, appended across resumes) as columns."""
    path = Path(path)
    if not path.exists():
        return {}
    columns: dict[str, list[float]] = {}
    with open(path, newline="") as handle:
        for row in csv.DictReader(handle):
            for key, value in row.items():
                try:
                    columns.setdefault(key, []).append(float(value))
                except (TypeError, ValueError):
                    continue
    return columns
