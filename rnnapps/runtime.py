"""Shared runtime: strategy, precision, seeding, run directories and callbacks.

Every pipeline trains through :func:`fit` here; nothing else in the package
calls ``model.fit``. See docs/design.md for the choices and why.
"""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import os
import time
import warnings
from pathlib import Path

import keras
import tensorflow as tf

from rnnapps.errors import ConfigError, TrainingError

PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
STRATEGIES = ("auto", "default", "mirrored", "multiworker")


def num_gpus() -> int:
    return len(tf.config.list_physical_devices("GPU"))


def choose_precision(requested: str = "auto", gpus: int | None = None) -> str:
    """The Keras dtype policy name for ``requested``.

    ``auto`` is ``mixed_float16`` on a GPU (tensor cores, cuDNN RNN kernels) and
    ``float32`` on a CPU: MEASUREMENTS.md found mixed_bfloat16 gives 0.7–1.1× for
    Keras LSTM/GRU on this CPU, so it is opt-in only.
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested != "auto":
        return requested
    gpus = num_gpus() if gpus is None else gpus
    return "mixed_float16" if gpus > 0 else "float32"


def apply_precision(policy_name: str) -> None:
    keras.mixed_precision.set_global_policy(policy_name)


def choose_strategy(requested: str = "auto", gpus: int | None = None) -> tf.distribute.Strategy:
    """The ``tf.distribute`` strategy for ``requested``; batch sizes stay global.

    ``auto`` mirrors over all local GPUs when there is more than one, and is
    the default (single device) strategy otherwise. ``multiworker`` reads the
    cluster from ``$TF_CONFIG``.
    """
    if requested not in STRATEGIES:
        raise ConfigError(f"unknown strategy {requested!r}; choose one of {', '.join(STRATEGIES)}")
    gpus = num_gpus() if gpus is None else gpus
    if requested == "mirrored" or (requested == "auto" and gpus > 1):
        return tf.distribute.MirroredStrategy()
    if requested == "multiworker":
        if "TF_CONFIG" not in os.environ:
            raise ConfigError("--strategy multiworker needs the cluster in $TF_CONFIG")
        return tf.distribute.MultiWorkerMirroredStrategy()
    return tf.distribute.get_strategy()


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (``keras.utils.set_random_seed``)."""
    keras.utils.set_random_seed(int(seed))


def make_optimizer(config) -> keras.optimizers.Optimizer:
    """Adam with the config's learning rate and gradient-norm clipping.

    Under ``mixed_float16`` ``Model.compile`` wraps it in a LossScaleOptimizer.
    """
    clipnorm = config.clipnorm if config.clipnorm and config.clipnorm > 0 else None
    return keras.optimizers.Adam(learning_rate=config.learning_rate, clipnorm=clipnorm)


# --- run directories -------------------------------------------------------------------------

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
    temporary.write_text(json.dumps(values, indent=2, sort_keys=True, default=_json_default) + "\n")
    os.replace(temporary, path)


def _json_default(value):
    if hasattr(value, "tolist"):
        return value.tolist()
    return str(value)


# Where BackupAndRestore keeps the last completed epoch of a run (what --resume continues from).
BACKUP_DIR = "backup"

# --- callbacks -------------------------------------------------------------------------------

class StopOnNaN(keras.callbacks.Callback):
    """Stop at the first NaN/inf loss and remember it, so the run can fail clearly.

    Unlike ``keras.callbacks.TerminateOnNaN`` it records the batch, and because
    BackupAndRestore only saves at epoch ends, the last good backup survives.
    """

    def __init__(self):
        super().__init__()
        self.bad_batch = None

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            self.bad_batch = batch
            self.model.stop_training = True


class TimeBudget(keras.callbacks.Callback):
    """Stop training once ``minutes`` of wall time have passed since ``fit`` began.

    The check runs after every batch, so a budget is kept to within one step.
    With early stopping on, the best epoch's weights are restored afterwards.
    """

    def __init__(self, minutes: float):
        super().__init__()
        if minutes <= 0:
            raise ConfigError(f"time_budget_minutes must be > 0, got {minutes}")
        self.seconds = minutes * 60.0
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()

    def on_train_batch_end(self, batch, logs=None):
        if time.monotonic() - self.started >= self.seconds:
            self.stopped = True
            self.model.stop_training = True


def check_learning_rate_schedule(decay: float, hold_epochs: int) -> None:
    """Raise :class:`ConfigError` for a schedule that is invalid or would silently do nothing."""
    if not 0 < decay <= 1:
        raise ConfigError(f"learning_rate_decay={decay!r} must be in (0, 1]")
    if hold_epochs < 0:
        raise ConfigError(f"learning_rate_hold_epochs={hold_epochs!r} must be >= 0")
    if decay == 1.0 and hold_epochs:
        raise ConfigError(
            f"learning_rate_hold_epochs={hold_epochs!r} holds the rate before a decay, but "
            f"learning_rate_decay=1 means no decay: set learning_rate_decay below 1 too, or drop the hold"
        )


def learning_rate_decay_callback(
    learning_rate: float, decay: float, hold_epochs: int = 0
) -> keras.callbacks.Callback | None:
    """Exponential per-epoch decay after ``hold_epochs`` at the full rate; None when ``decay`` is 1.

    The rate of epoch ``e`` (from 0) is ``learning_rate * decay**max(0, e - hold_epochs)``.
    Per epoch rather than per wall-second so that a resumed or slower run follows the same
    schedule; after a resume the epoch index (and so the rate) continues where it stopped.
    """
    check_learning_rate_schedule(decay, hold_epochs)
    if decay == 1.0:
        return None
    return keras.callbacks.LearningRateScheduler(
        lambda epoch: learning_rate * decay ** max(0, epoch - hold_epochs)
    )


def training_callbacks(
    run_dir: Path, monitor: str, mode: str, patience: int, extra=(), time_budget_minutes: float | None = None,
    learning_rate_schedule: keras.callbacks.Callback | None = None, best_so_far: float | None = None,
) -> list:
    """Checkpoints, resume backups, logs, early stopping and NaN detection.

    ``best_so_far`` (a resumed run's best ``monitor`` value) keeps the best-epoch
    checkpoint from being overwritten by a worse epoch of the new session.
    """
    # Pipeline callbacks run right after the restore and before checkpointing, logging and early
    # stopping, so a callback that adds a validation metric (e.g. NER's span F1) to the epoch's
    # logs can be the monitored metric.
    callbacks = [
        # The backup outlives a finished fit, so `--resume` can also extend a finished or
        # time-budgeted run (more epochs, another budget) instead of starting it over.
        keras.callbacks.BackupAndRestore(str(run_dir / BACKUP_DIR), delete_checkpoint=False),
        *([learning_rate_schedule] if learning_rate_schedule else []),
        *extra,
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "checkpoints" / "best.weights.h5"),
            monitor=monitor,
            mode=mode,
            save_best_only=True,
            save_weights_only=True,
            initial_value_threshold=best_so_far,
        ),
        keras.callbacks.CSVLogger(str(run_dir / "history.csv"), append=True),
        keras.callbacks.TensorBoard(str(run_dir / "logs"), write_graph=False, profile_batch=0),
        StopOnNaN(),
    ]
    if time_budget_minutes:
        callbacks.append(TimeBudget(time_budget_minutes))
    if patience and patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True)
        )
    return callbacks


def fit(model: keras.Model, datasets, config, run_dir: Path, monitor: str, mode: str, extra_callbacks=(), verbose="auto"):
    """Train ``model`` on ``datasets.train`` with the shared callbacks; returns the History.

    Resumes from ``run_dir/backup`` after an interruption, and continues a
    finished run the same way (from its last epoch, for the epochs or time
    budget left); with early stopping on, the model ends with the best epoch's
    weights over all sessions. Raises :class:`TrainingError` when the loss became NaN.
    """
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    best_checkpoint = run_dir / "checkpoints" / "best.weights.h5"
    best_so_far = _best_logged(run_dir / "history.csv", monitor, mode) if best_checkpoint.exists() else None
    callbacks = training_callbacks(
        run_dir, monitor, mode, config.early_stopping_patience, extra_callbacks,
        time_budget_minutes=getattr(config, "time_budget_minutes", None),
        learning_rate_schedule=learning_rate_decay_callback(
            config.learning_rate, getattr(config, "learning_rate_decay", 1.0),
            getattr(config, "learning_rate_hold_epochs", 0)),
        best_so_far=best_so_far,
    )
    nan_guard = next(cb for cb in callbacks if isinstance(cb, StopOnNaN))
    with warnings.catch_warnings():
        # tf.data datasets are shuffled by the pipeline, and bucketed ones have unknown length
        # until the first epoch ends: Keras' warnings about both only confuse users.
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        warnings.filterwarnings("ignore", message=".*ran out of data.*")
        history = _fit(model, datasets, config, callbacks, verbose)
    if nan_guard.bad_batch is not None:
        raise TrainingError(
            f"loss became NaN at batch {nan_guard.bad_batch}; try a lower learning_rate or clipnorm "
            f"(--set learning_rate=...). The last good epoch is backed up in {run_dir / BACKUP_DIR}"
        )
    if best_so_far is not None and config.early_stopping_patience:
        # Early stopping only knows this session's epochs; the checkpoint holds the best of all.
        model.load_weights(best_checkpoint)
    return history


def _best_logged(history_path: Path, monitor: str, mode: str) -> float | None:
    """The best ``monitor`` value in a run's ``history.csv`` (None when there is none)."""
    values = [value for value in read_history(history_path).get(monitor, []) if math.isfinite(value)]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def _fit(model, datasets, config, callbacks, verbose):
    # With a step cap, epochs are slices of an endless stream rather than restarts of the data.
    train = datasets.train.repeat() if config.steps_per_epoch else datasets.train
    return model.fit(
        train,
        validation_data=datasets.validation,
        epochs=config.epochs,
        steps_per_epoch=config.steps_per_epoch,
        callbacks=callbacks,
        verbose=verbose,
    )


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
