"""Shared runtime: strategy, precision, seeding, run directories and callbacks.

Every pipeline trains through :func:`fit` here; nothing else in the package
calls ``model.fit``. See docs/design.md for the choices and why.
"""

from __future__ import annotations

import contextlib
import csv
import datetime as _dt
import json
import math
import os
import shutil
import tempfile
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


def is_multi_worker(strategy: tf.distribute.Strategy) -> bool:
    """Whether ``strategy`` trains in step with other processes (MultiWorkerMirroredStrategy over a cluster)."""
    return isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and strategy.extended._in_multi_worker_mode()


def task_of(strategy: tf.distribute.Strategy) -> tuple[str, int]:
    """This process's ``(task type, index)`` in the cluster, ``("chief", 0)`` outside one."""
    if not is_multi_worker(strategy):
        return "chief", 0
    resolver = strategy.cluster_resolver
    return resolver.task_type, int(resolver.task_id)


def is_chief(strategy: tf.distribute.Strategy) -> bool:
    """The ``chief`` task, or worker 0 of a cluster without one (TensorFlow's convention); True outside a cluster."""
    task_type, task_id = task_of(strategy)
    if task_type == "chief":
        return True
    return task_type == "worker" and task_id == 0 and "chief" not in strategy.cluster_resolver.cluster_spec().jobs


# A non-chief worker writes into this directory (and keeps it) instead of a temporary one that is removed.
WORKER_DIR_ENV = "RNNAPPS_WORKER_DIR"


@contextlib.contextmanager
def worker_scratch_dir(strategy: tf.distribute.Strategy):
    """Where a non-chief worker's callbacks write: only the chief writes the run directory.

    A temporary directory, removed afterwards; or ``$RNNAPPS_WORKER_DIR``, kept (to compare a
    worker's ``model.keras`` with the chief's, or read its logs).
    """
    kept = os.environ.get(WORKER_DIR_ENV)
    if kept:
        Path(kept).mkdir(parents=True, exist_ok=True)
        yield Path(kept)
        return
    task_type, task_id = task_of(strategy)
    scratch = Path(tempfile.mkdtemp(prefix=f"rnnapps-{task_type}{task_id}-"))
    try:
        yield scratch
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def copy_training_state(run_dir: Path, scratch: Path) -> None:
    """Copy what a resumed session reads (backup, best checkpoint, history) from the chief's run directory."""
    for name in (BACKUP_DIR, "checkpoints"):
        if (run_dir / name).is_dir():
            shutil.copytree(run_dir / name, scratch / name, dirs_exist_ok=True)
    if (run_dir / "history.csv").exists():
        shutil.copy2(run_dir / "history.csv", scratch / "history.csv")


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
# Keras' name for the backup's metadata; ours also names the weights file it commits.
BACKUP_METADATA = "training_metadata.json"
# The weights file of backups written before ours named theirs (Keras' BackupAndRestore).
LEGACY_BACKUP_WEIGHTS = "latest.weights.h5"


def check_backup_interval(minutes: float | None) -> None:
    """Raise :class:`ConfigError` for a negative ``backup_every_minutes``."""
    if minutes is not None and minutes < 0:
        raise ConfigError(f"backup_every_minutes={minutes!r} must be >= 0 (0 or none: back up at epoch ends only)")


def read_backup(backup_dir: str | Path) -> dict | None:
    """The committed backup's metadata, ``{"epoch", "batch", "weights"}``, or None when there is none.

    ``epoch`` is the epoch a resume starts (or restarts) at; ``batch`` is the last batch of that
    epoch in the backup, None for a backup taken at the end of the epoch before.
    """
    path = Path(backup_dir) / BACKUP_METADATA
    if not path.exists():
        return None
    metadata = json.loads(path.read_text())
    metadata.setdefault("weights", LEGACY_BACKUP_WEIGHTS)
    return metadata


def describe_backup(metadata: dict) -> str:
    """Where a resume goes on from, in words: "epoch 3 (from its start)", "epoch 3, after batch 120 (...)"."""
    epoch = metadata["epoch"] + 1
    if metadata.get("batch") is None:
        return f"the start of epoch {epoch}"
    return f"epoch {epoch} after batch {metadata['batch'] + 1}; that epoch's data is read again from its start"


class RunBackup(keras.callbacks.BackupAndRestore):
    """Keras' BackupAndRestore, with atomic writes, time-based mid-epoch backups and the right epoch.

    What Keras 3.15's own does not: its ``save_freq`` counts batches, not minutes; it writes the
    weights file in place and then the metadata, so a kill mid-write leaves a truncated file (or new
    weights under the old epoch); and its mid-epoch backups record the epoch counter it keeps from 0
    in every session, so the second interruption of a resumed run would restart it from epoch 1.

    Here every backup writes a new weights file, then commits it by atomically replacing the metadata
    that names it (the one commit point), then deletes the older file: a kill at any moment leaves the
    previous backup or the new one, whole. The restore (``on_train_begin``) is Keras'; the writes are
    done by :attr:`saver`, a second callback placed after all the others, so an epoch is backed up as
    done only once its ``history.csv`` row and best checkpoint are written.

    A mid-epoch backup restores the weights and optimizer state of that step; the epoch it was taken in
    then runs again from its first batch (Keras restarts an epoch's data; a shuffled pass cannot be
    replayed in a new process anyway), and ``fit`` forgets that epoch's row if it was logged.
    """

    def __init__(self, backup_dir: str | Path, every_minutes: float | None = None):
        super().__init__(str(backup_dir), save_freq="epoch", delete_checkpoint=False)
        check_backup_interval(every_minutes)
        self.every_seconds = every_minutes * 60.0 if every_minutes else None
        self.saver = _BackupSaver(self)
        self._last_saved = time.monotonic()

    def _load_model(self):
        metadata = read_backup(self.backup_dir)
        if metadata is not None:
            self._weights_path = os.path.join(self.backup_dir, metadata["weights"])
            self._current_epoch = metadata["epoch"]
        super()._load_model()

    def on_train_begin(self, logs=None):
        super().on_train_begin(logs)
        self._last_saved = time.monotonic()

    def on_epoch_begin(self, epoch, logs=None):
        self._current_epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        pass  # the saver writes it, after the other callbacks

    def on_train_batch_end(self, batch, logs=None):
        pass  # likewise

    def save(self, epoch: int, batch: int | None = None) -> None:
        """Back up the model and optimizer as of ``batch`` of ``epoch`` (None: the start of ``epoch``)."""
        backup_dir = Path(self.backup_dir)
        backup_dir.mkdir(parents=True, exist_ok=True)
        previous = read_backup(backup_dir)
        serial = (previous or {}).get("serial", 0) + 1
        weights = f"state-{serial}.weights.h5"
        self.model.save_weights(str(backup_dir / weights), overwrite=True)
        with open(backup_dir / weights, "rb+") as handle:
            os.fsync(handle.fileno())  # on disk before the metadata names it
        write_json(backup_dir / BACKUP_METADATA, {"epoch": epoch, "batch": batch, "weights": weights, "serial": serial})
        for stale in backup_dir.glob("*.weights.h5"):
            if stale.name != weights:
                stale.unlink(missing_ok=True)  # the committed backup no longer needs it
        self._last_saved = time.monotonic()


class _BackupSaver(keras.callbacks.Callback):
    """The writing half of :class:`RunBackup`; goes last in the callback list.

    Never backs up a step whose loss was not finite (:class:`StopOnNaN` then keeps the last good backup).
    """

    def __init__(self, backup: RunBackup):
        super().__init__()
        self.backup = backup
        self.nan_guard: StopOnNaN | None = None

    def _healthy(self) -> bool:
        return self.nan_guard is None or self.nan_guard.bad_batch is None

    def on_train_batch_end(self, batch, logs=None):
        backup = self.backup
        if backup.every_seconds and time.monotonic() - backup._last_saved >= backup.every_seconds and self._healthy():
            backup.save(backup._current_epoch, batch)

    def on_epoch_end(self, epoch, logs=None):
        if self._healthy():
            self.backup.save(epoch + 1)


# --- callbacks -------------------------------------------------------------------------------

class StopOnNaN(keras.callbacks.Callback):
    """Stop at the first NaN/inf loss and remember it, so the run can fail clearly.

    Unlike ``keras.callbacks.TerminateOnNaN`` it records the batch, and the backup is
    not written after it (:class:`RunBackup`), so the last good backup survives.
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
    Workers of a multi-worker run must stop at the same step (one that stops alone leaves the others
    waiting for it forever), so there they stop once any worker's clock says so: one all-reduce of a
    flag per batch.
    """

    def __init__(self, minutes: float):
        super().__init__()
        if minutes <= 0:
            raise ConfigError(f"time_budget_minutes must be > 0, got {minutes}")
        self.seconds = minutes * 60.0
        self.stopped = False

    def on_train_begin(self, logs=None):
        self.started = time.monotonic()
        strategy = self.model.distribute_strategy
        self._any_worker = any_worker(strategy) if is_multi_worker(strategy) else None

    def on_train_batch_end(self, batch, logs=None):
        spent = time.monotonic() - self.started >= self.seconds
        if self._any_worker:
            spent = self._any_worker(spent)
        if spent:
            self.stopped = True
            self.model.stop_training = True


def any_worker(strategy: tf.distribute.Strategy):
    """``vote(flag) -> bool``: whether ``flag`` is true on any worker; a collective, so every worker must vote."""

    @tf.function
    def count(flag):
        votes = strategy.run(lambda: tf.cast(flag, tf.float32))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, votes, axis=None)

    return lambda flag: float(count(tf.constant(bool(flag)))) > 0


def wait_for_other_workers(strategy: tf.distribute.Strategy) -> None:
    """Return once every worker has called this (a no-op outside a cluster).

    The chief calls it after evaluating and exporting, the others after training: a worker that
    exits first is reported by the chief's coordination service as crashed.
    """
    if is_multi_worker(strategy):
        any_worker(strategy)(True)


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
    backup_every_minutes: float | None = None,
) -> list:
    """Checkpoints, resume backups, logs, early stopping and NaN detection.

    ``best_so_far`` (a resumed run's best ``monitor`` value) keeps the best-epoch
    checkpoint from being overwritten by a worse epoch of the new session.
    """
    # The backup outlives a finished fit, so `--resume` can also extend a finished or
    # time-budgeted run (more epochs, another budget) instead of starting it over. It restores
    # first (before the history file is opened) and writes last (RunBackup).
    backup = RunBackup(run_dir / BACKUP_DIR, every_minutes=backup_every_minutes)
    nan_guard = StopOnNaN()
    backup.saver.nan_guard = nan_guard
    # Pipeline callbacks run right after the restore and before checkpointing, logging and early
    # stopping, so a callback that adds a validation metric (e.g. NER's span F1) to the epoch's
    # logs can be the monitored metric.
    callbacks = [
        backup,
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
        nan_guard,
    ]
    if time_budget_minutes:
        callbacks.append(TimeBudget(time_budget_minutes))
    if patience and patience > 0:
        callbacks.append(
            keras.callbacks.EarlyStopping(monitor=monitor, mode=mode, patience=patience, restore_best_weights=True)
        )
    callbacks.append(backup.saver)
    return callbacks


def fit(model: keras.Model, datasets, config, run_dir: Path, monitor: str, mode: str, extra_callbacks=(), verbose="auto"):
    """Train ``model`` on ``datasets.train`` with the shared callbacks; returns the History.

    Resumes from ``run_dir/backup`` after an interruption (from the last epoch end, or from a
    mid-epoch backup, ``backup_every_minutes``), and continues a finished run the same way (from
    its last epoch, for the epochs or time budget left); with early stopping on, the model ends
    with the best epoch's weights over all sessions. Raises :class:`TrainingError` when the loss
    became NaN.
    """
    (run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
    best_checkpoint = run_dir / "checkpoints" / "best.weights.h5"
    history_path = run_dir / "history.csv"
    # Read before the rows of a repeated epoch are dropped: the checkpoint may hold that epoch's
    # weights (a kill between its checkpoint and its backup), and a worse epoch must not replace them.
    best_so_far = _best_logged(history_path, monitor, mode) if best_checkpoint.exists() else None
    backup = read_backup(run_dir / BACKUP_DIR)
    # The epochs from the backup's on run (again): their rows from the killed session would count them twice.
    _forget_epochs(history_path, backup["epoch"] if backup else 0)
    if backup and verbose != 0:
        print(f"rnnapps: resuming from the backup at {describe_backup(backup)}")
    callbacks = training_callbacks(
        run_dir, monitor, mode, config.early_stopping_patience, extra_callbacks,
        time_budget_minutes=getattr(config, "time_budget_minutes", None),
        learning_rate_schedule=learning_rate_decay_callback(
            config.learning_rate, getattr(config, "learning_rate_decay", 1.0),
            getattr(config, "learning_rate_hold_epochs", 0)),
        best_so_far=best_so_far,
        backup_every_minutes=getattr(config, "backup_every_minutes", None),
    )
    nan_guard = next(cb for cb in callbacks if isinstance(cb, StopOnNaN))
    with warnings.catch_warnings():
        # tf.data datasets are shuffled by the pipeline: Keras' warning about it only confuses users.
        warnings.filterwarnings("ignore", message=".*shuffle=True.*")
        warnings.filterwarnings("ignore", message=".*ran out of data.*")
        history = _fit(model, datasets, config, callbacks, verbose)
    if nan_guard.bad_batch is not None:
        raise TrainingError(
            f"loss became NaN at batch {nan_guard.bad_batch}; try a lower learning_rate or clipnorm "
            f"(--set learning_rate=...). The last good state is backed up in {run_dir / BACKUP_DIR}"
        )
    if best_so_far is not None and config.early_stopping_patience:
        # Early stopping only knows this session's epochs; the checkpoint holds the best of all.
        model.load_weights(best_checkpoint)
    return history


def _forget_epochs(history_path: Path, first: int) -> None:
    """Drop the rows of epochs ``first`` and later from ``history.csv`` (atomically, before CSVLogger opens it)."""
    if not history_path.exists():
        return
    with open(history_path, newline="") as handle:
        rows = list(csv.reader(handle))
    if not rows or "epoch" not in rows[0]:
        return
    column = rows[0].index("epoch")
    kept = [rows[0]] + [row for row in rows[1:] if row and int(float(row[column])) < first]
    if len(kept) == len(rows):
        return
    temporary = history_path.with_name(f".{history_path.name}.tmp")
    with open(temporary, "w", newline="") as handle:
        csv.writer(handle).writerows(kept)
    os.replace(temporary, history_path)


def _best_logged(history_path: Path, monitor: str, mode: str) -> float | None:
    """The best ``monitor`` value in a run's ``history.csv`` (None when there is none)."""
    values = [value for value in read_history(history_path).get(monitor, []) if math.isfinite(value)]
    if not values:
        return None
    return max(values) if mode == "max" else min(values)


def _fit(model, datasets, config, callbacks, verbose):
    strategy = model.distribute_strategy
    train, validation = datasets.train, datasets.validation
    if config.steps_per_epoch:
        # With a step cap, epochs are slices of an endless stream rather than restarts of the data.
        train = train.repeat()
    else:
        train = with_known_length(train)
    if is_multi_worker(strategy):
        # The pipelines read in-memory tensors, not files, so each worker keeps its share of the
        # elements (the batches, split per replica); the batch size stays global.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        train, validation = train.with_options(options), validation.with_options(options)
    with _keras_distribution_fixes(model, train.element_spec):
        return model.fit(
            train,
            validation_data=validation,
            epochs=config.epochs,
            steps_per_epoch=config.steps_per_epoch,
            callbacks=callbacks,
            verbose=verbose,
        )


def with_known_length(dataset: tf.data.Dataset) -> tf.data.Dataset:
    """``dataset`` with its number of batches known, so the first epoch's progress bar has a total.

    Bucketing and filtering leave tf.data's cardinality unknown until a pass ends. One counting
    pass runs the input pipeline without training, and the pipelines' ``cache()`` keeps what it
    computed for the first epoch: on IMDB's 22,500 training reviews the count took 5.2 s, of which
    about 4 s was tokenising that epoch 1 then skips; the ~1.3 s left (shuffle and bucketing) is
    about 1% of a cpu-preset epoch. A bucketed pass yields the same number of batches in any order
    (ceil(n / batch) per bucket), and ``assert_cardinality`` would fail loudly otherwise.
    """
    if int(dataset.cardinality()) != int(tf.data.UNKNOWN_CARDINALITY):
        return dataset
    count = int(dataset.reduce(tf.constant(0, tf.int64), lambda count, _: count + 1))
    return dataset.apply(tf.data.experimental.assert_cardinality(count))


@contextlib.contextmanager
def _keras_distribution_fixes(model: keras.Model, element_spec):
    """Work around two Keras 3.15 bugs that break ``fit`` under ``tf.distribute``, for one call.

    * Under any strategy but the default, ``fit`` and ``evaluate`` build the model from one input
      batch averaged over the replicas, which fails for string inputs (sentiment's raw reviews):
      we build it from the dataset's element spec (shapes and dtypes are all it reads) instead.
    * Under MultiWorkerMirroredStrategy each step averages its scalar logs over ``axis=0``, which
      fails ("Invalid reduction dimension 0 for input with 0 dimensions", tensorflow/tensorflow#72388):
      scalars are averaged over the replicas alone.
    """
    if getattr(model, "_distribute_strategy", None) is None:  # built outside any strategy scope
        yield
        return
    from keras.src import tree
    from keras.src.backend.tensorflow import trainer

    strategy = model.distribute_strategy
    with strategy.scope():
        model._symbolic_build(data_batch=element_spec)
    model._maybe_symbolic_build = lambda iterator=None, data_batch=None: None
    original = trainer.reduce_per_replica

    def reduce_per_replica(values, strategy, reduction):
        if reduction in ("auto", "mean") and is_multi_worker(strategy):
            return tree.map_structure(
                lambda value: strategy.reduce("MEAN", value, axis=None if value.shape.rank == 0 else 0), values
            )
        return original(values, strategy, reduction)

    trainer.reduce_per_replica = reduce_per_replica
    try:
        yield
    finally:
        trainer.reduce_per_replica = original
        del model._maybe_symbolic_build


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
