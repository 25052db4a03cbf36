"""Where and how a run computes: devices, precision, distribution strategy and seeds.

TensorFlow is imported here, so the command line reads the *names* of the choices
(``--precision``, ``--strategy``) from :mod:`rnnapps.config`, which does not import it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path

import keras
import tensorflow as tf

from rnnapps.config import PRECISIONS, STRATEGIES
from rnnapps.errors import ConfigError


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


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and TensorFlow (``keras.utils.set_random_seed``)."""
    keras.utils.set_random_seed(int(seed))


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
