"""Training: the optimiser, the one learning-rate policy, crash-safe backups, callbacks and ``fit``.

Every pipeline trains through :func:`fit` here; nothing else in the package calls
``model.fit``. See docs/design.md for the choices and why.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import os
import time
import warnings
from pathlib import Path

import keras
import tensorflow as tf

from rnnapps.config import check_backup_interval, check_learning_rate_schedule
from rnnapps.devices import any_worker, is_multi_worker
from rnnapps.errors import ConfigError, TrainingError
from rnnapps.run_dirs import BACKUP_DIR, read_history, write_json


def make_optimizer(config) -> keras.optimizers.Optimizer:
    """Adam with the config's learning rate and gradient-norm clipping; :class:`AveragedAdam` when the
    config asks for ``weight_averaging``.

    Under ``mixed_float16`` ``Model.compile`` wraps it in a LossScaleOptimizer.
    """
    clipnorm = config.clipnorm if config.clipnorm and config.clipnorm > 0 else None
    averaging = getattr(config, "weight_averaging", 0.0)
    if averaging:
        return AveragedAdam(learning_rate=config.learning_rate, clipnorm=clipnorm, ema_momentum=averaging)
    return keras.optimizers.Adam(learning_rate=config.learning_rate, clipnorm=clipnorm)


@keras.saving.register_keras_serializable(package="rnnapps")
class AveragedAdam(keras.optimizers.Adam):
    """Adam that keeps an exponential moving average of the weights whose momentum warms up.

    Keras' ``use_ema`` averages with a fixed momentum from the second step on, so after ``n`` steps
    the first step's weights still weigh ``momentum**n``: 7% after a 20-minute textgen run's 2,650
    steps at 0.999. Here step ``t`` uses ``min(momentum, (1 + t) / (10 + t))`` (the ``num_updates``
    rule of ``tf.train.ExponentialMovingAverage``): the average follows the weights closely early on
    and settles to ``momentum`` after about ``10 / (1 - momentum)`` steps. The average lives in the
    optimizer's variables, so backups and ``--resume`` carry it; :class:`AveragedWeights` puts it in
    the model for validation, checkpoints and the end of training.

    Args:
        ema_momentum: the momentum the average settles to, in [0, 1).
        **kwargs: as for ``keras.optimizers.Adam`` (``use_ema`` is always on).

    Example:
        >>> optimizer = AveragedAdam(learning_rate=1e-3, ema_momentum=0.999)
    """

    def __init__(self, *args, ema_momentum: float = 0.999, **kwargs):
        kwargs.pop("use_ema", None)  # get_config() writes it; it is always on here
        super().__init__(*args, use_ema=True, ema_momentum=ema_momentum, **kwargs)

    def _update_model_variables_moving_average(self, trainable_variables):
        # Called before the step counter moves on: ``iterations`` is the index of this step.
        steps = keras.ops.cast(self.iterations, "float32")
        warmed_up = keras.ops.minimum(self.ema_momentum, (1.0 + steps) / (10.0 + steps))
        # The average starts as zeros: the first step copies the weights.
        momentum_of_step = keras.ops.where(keras.ops.equal(self.iterations, 0), 0.0, warmed_up)
        for variable, average in zip(trainable_variables, self._model_variables_moving_average, strict=True):
            if average is not None:
                momentum = keras.ops.cast(momentum_of_step, variable.dtype)
                average.assign(momentum * average + (1.0 - momentum) * variable)


# Keras' name for the backup's metadata; ours also names the weights file it commits.
BACKUP_METADATA = "training_metadata.json"
# The weights file of backups written before ours named theirs (Keras' BackupAndRestore).
LEGACY_BACKUP_WEIGHTS = "latest.weights.h5"


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
        self.averaged_weights: AveragedWeights | None = None
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
        averaged = self.averaged_weights.raw_weights() if self.averaged_weights else contextlib.nullcontext()
        with averaged:  # the state training goes on from; the average is in the optimizer's variables
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

class EpochMetric(keras.callbacks.Callback):
    """Adds ``name: compute(model)`` to each epoch's logs, before the checkpoint, early-stopping
    and history callbacks read them (put it first): a task metric such as span F1 can be ``monitor``.

    Args:
        name: the log key, e.g. ``"val_f1"``.
        compute: ``model -> float``, run once at the end of every epoch.
    """

    def __init__(self, name: str, compute):
        super().__init__()
        self.name, self.compute = name, compute

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs[self.name] = float(self.compute(self.model))


class AveragedWeights(keras.callbacks.Callback):
    """Puts the optimizer's weight average (:class:`AveragedAdam`) in the model wherever it is scored.

    From validation to the end of each epoch the model holds the averaged weights, so the validation
    metrics, a pipeline's epoch metric, the best checkpoint and early stopping all see the weights a
    finished run exports; the next epoch trains on from the raw weights. The backup is written from
    the raw weights (:meth:`raw_weights`), the average staying in the optimizer's state, so a resume
    continues exactly. Keras' ``SwapEMAWeights`` swaps the two in place and leaves the raw weights in
    a model stopped early (time budget, early stopping) by ``fit``'s final ``finalize_variable_values``;
    here ``fit`` ends on the average, or on the best epoch's average with early stopping.

    Place it right after the backup's restore and before any callback that reads the model at epoch end.
    """

    def __init__(self):
        super().__init__()
        self._raw_values = None

    def _pairs(self):
        optimizer = self.model.optimizer
        optimizer = getattr(optimizer, "inner_optimizer", optimizer)  # under a LossScaleOptimizer
        averages = getattr(optimizer, "_model_variables_moving_average", None)
        if not averages:
            return []  # not built yet: no step has run
        return list(zip(optimizer._trainable_variables, averages, strict=True))

    def use_average(self) -> None:
        pairs = self._pairs()
        if self._raw_values is not None or not pairs:
            return
        self._raw_values = [variable.numpy() for variable, _ in pairs]
        for variable, average in pairs:
            variable.assign(average)

    def use_raw(self) -> None:
        if self._raw_values is None:
            return
        for (variable, _), value in zip(self._pairs(), self._raw_values, strict=True):
            variable.assign(value)
        self._raw_values = None

    @contextlib.contextmanager
    def raw_weights(self):
        """The raw (trained) weights in the model for the duration, whatever it held before."""
        averaged = self._raw_values is not None
        self.use_raw()
        try:
            yield
        finally:
            if averaged:
                self.use_average()

    def on_epoch_begin(self, epoch, logs=None):
        self.use_raw()

    def on_test_begin(self, logs=None):
        self.use_average()

    def on_epoch_end(self, epoch, logs=None):
        self.use_average()

    def on_train_end(self, logs=None):
        self.use_average()
        self._raw_values = None  # fit's finalize_variable_values put the average in; it stays


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


def learning_rate_policy(config) -> keras.callbacks.Callback | None:
    """The run's one learning-rate policy, from its config; None for a constant rate.

    * ``learning_rate_decay < 1``: the per-epoch exponential decay of :func:`learning_rate_decay_callback`;
    * ``lr_decay_patience > 0``: halve the rate (to at least 1e-5) once the validation loss has not
      improved for that many epochs (``ReduceLROnPlateau``).

    ``TrainingConfig.validate`` refuses both at once, so two callbacks never fight over the rate.
    """
    decay = learning_rate_decay_callback(config.learning_rate, config.learning_rate_decay,
                                         config.learning_rate_hold_epochs)
    if decay is not None:
        return decay
    if config.lr_decay_patience:
        # Keras' patience counts the epochs after the one without improvement: ours counts that one.
        return keras.callbacks.ReduceLROnPlateau(
            monitor="val_loss", factor=0.5, patience=config.lr_decay_patience - 1, min_lr=1e-5, verbose=0
        )
    return None


def training_callbacks(
    run_dir: Path, monitor: str, mode: str, patience: int, extra=(), time_budget_minutes: float | None = None,
    learning_rate_schedule: keras.callbacks.Callback | None = None, best_so_far: float | None = None,
    backup_every_minutes: float | None = None, weight_averaging: bool = False,
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
    averaged_weights = AveragedWeights() if weight_averaging else None
    backup.averaged_weights = averaged_weights
    # Pipeline callbacks run right after the restore and before checkpointing, logging and early
    # stopping, so a callback that adds a validation metric (e.g. NER's span F1) to the epoch's
    # logs can be the monitored metric.
    callbacks = [
        backup,
        *([averaged_weights] if averaged_weights else []),
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
        time_budget_minutes=config.time_budget_minutes,
        learning_rate_schedule=learning_rate_policy(config),
        best_so_far=best_so_far,
        backup_every_minutes=config.backup_every_minutes,
        weight_averaging=bool(getattr(config, "weight_averaging", 0.0)),
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
