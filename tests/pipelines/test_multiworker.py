"""Two worker processes on 127.0.0.1 train one model with MultiWorkerMirroredStrategy; a killed one restarts.

Each gets its own ``TF_CONFIG``; they share the output directory as hosts would share a file
system. Only the chief (worker 0) writes the run directory, metrics and export; worker 1 keeps its
scratch directory because ``RNNAPPS_WORKER_DIR`` names it, so its final weights can be compared.
"""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
import tensorflow as tf

from tests.conftest import FIXTURE_DATA
from tests.pipelines.backups import mid_epoch_backup

TIMEOUT = 300


def _free_ports(count):
    sockets = [socket.socket() for _ in range(count)]
    for held in sockets:
        held.bind(("127.0.0.1", 0))
    ports = [held.getsockname()[1] for held in sockets]
    for held in sockets:
        held.close()
    return ports


def _start_workers(tmp_path, *args):
    tmp_path.mkdir(parents=True, exist_ok=True)
    cluster = {"worker": [f"127.0.0.1:{port}" for port in _free_ports(2)]}
    processes = []
    for index in range(2):
        env = dict(os.environ, CUDA_VISIBLE_DEVICES="",
                   TF_CONFIG=json.dumps({"cluster": cluster, "task": {"type": "worker", "index": index}}))
        if index:
            env["RNNAPPS_WORKER_DIR"] = str(tmp_path / f"worker{index}")
        with open(tmp_path / f"worker{index}.log", "w") as log:
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "rnnapps.cli", "run", *args], stdout=log, stderr=subprocess.STDOUT, env=env,
            ))
    return processes


def _wait(processes, tmp_path):
    deadline = time.monotonic() + TIMEOUT
    try:
        for process in processes:
            process.wait(timeout=max(1.0, deadline - time.monotonic()))
    except subprocess.TimeoutExpired:
        pass
    finally:
        for process in processes:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=30)
    logs = "\n".join(f"--- worker {i}\n" + (tmp_path / f"worker{i}.log").read_text()[-3000:] for i in range(2))
    if any(process.returncode != 0 for process in processes):
        pytest.fail(f"exit codes {[process.returncode for process in processes]}:\n{logs}")


def _steps_per_epoch():
    """The smoke preset's training batches on the fixtures, as one process counts them."""
    from rnnapps import training
    from rnnapps.config import resolve_config
    from rnnapps.pipelines import get_pipeline

    pipeline = get_pipeline("sentiment")
    datasets = pipeline.load_data(resolve_config(pipeline.config_class, "smoke"), FIXTURE_DATA)
    return int(training.with_known_length(datasets.train).cardinality())


def test_two_workers_train_in_step_and_only_the_chief_writes(tmp_path):
    from rnnapps import runner

    output, exports = tmp_path / "runs", tmp_path / "exports"
    started = time.monotonic()
    processes = _start_workers(
        tmp_path, "sentiment", "--preset", "smoke", "--strategy", "multiworker", "--data-dir", str(FIXTURE_DATA),
        "--output-dir", str(output), "--export-dir", str(exports),
        # Mid-epoch backups written by each worker on its own clock; a time budget that never runs out
        # still has the workers agree on it after every batch.
        "--set", "backup_every_minutes=0.0001", "--set", "time_budget_minutes=30",
    )
    _wait(processes, tmp_path)
    print(f"two workers took {time.monotonic() - started:.1f} s")

    (run_dir,) = (output / "sentiment").iterdir()
    for name in ("config.json", "history.csv", "metrics.json", "model.keras", "backup/training_metadata.json"):
        assert (run_dir / name).exists(), name
    assert [p.name for p in (exports / "sentiment").iterdir()] == ["1"]
    scratch = tmp_path / "worker1"
    assert (scratch / "model.keras").exists() and not (scratch / "metrics.json").exists()
    assert "the chief writes the run directory" in (tmp_path / "worker1.log").read_text()
    # The batch size is global: two workers take as many steps an epoch as one process would.
    steps = _steps_per_epoch()
    assert f"{steps}/{steps}" in (tmp_path / "worker0.log").read_text()

    _, _, chief, _ = runner.load_run("sentiment", run_dir)  # imports the pipeline's registered layers
    worker = keras.saving.load_model(scratch / "model.keras")
    assert int(chief.optimizer.iterations.numpy()) == 3 * steps
    for chief_weight, worker_weight in zip(chief.get_weights(), worker.get_weights(), strict=True):
        np.testing.assert_array_equal(chief_weight, worker_weight)

    served = tf.saved_model.load(str(exports / "sentiment" / "1"))
    probability = served.signatures["serving_default"](text=tf.constant(["A wonderful film.", "Dull."]))["probability"]
    assert probability.shape == (2,) and np.all((probability.numpy() >= 0) & (probability.numpy() <= 1))


def test_a_killed_worker_restarts_with_the_job_and_it_continues(tmp_path):
    """SIGKILL worker 1 mid-epoch; the job (both workers) restarts with --resume and finishes in step.

    This is what a cluster manager does when a host dies (Kubernetes restarts the pod; the surviving
    worker's collectives fail, so its task is restarted too): the chief's backup in the shared run
    directory is where both continue from.
    """
    from rnnapps import runner

    output = tmp_path / "runs"
    common = ["sentiment", "--strategy", "multiworker", "--data-dir", str(FIXTURE_DATA), "--output-dir", str(output),
              "--no-export"]
    first = _start_workers(tmp_path / "first", *common, "--preset", "smoke", "--epochs", "3",
                           "--set", "steps_per_epoch=60", "--set", "backup_every_minutes=0.0001")
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline and mid_epoch_backup(output) is None:
            if any(process.poll() is not None for process in first):
                break
            time.sleep(0.05)
        killed_at = mid_epoch_backup(output)
        first[1].send_signal(signal.SIGKILL)
    finally:
        time.sleep(2.0)  # the chief blocks in (or fails) its next collective; the job is restarted whole
        for process in first:
            if process.poll() is None:
                process.kill()
            process.wait(timeout=30)
    assert killed_at is not None, (tmp_path / "first" / "worker0.log").read_text()[-3000:]
    (run_dir,) = (output / "sentiment").iterdir()
    assert not (run_dir / "model.keras").exists()

    second = _start_workers(tmp_path / "second", *common, "--resume")
    _wait(second, tmp_path / "second")
    chief_log = (tmp_path / "second" / "worker0.log").read_text()
    assert "rnnapps: resuming from the backup at" in chief_log
    with open(run_dir / "history.csv", newline="") as handle:
        assert [int(row["epoch"]) for row in csv.DictReader(handle)] == [0, 1, 2]
    _, _, chief, _ = runner.load_run("sentiment", run_dir)
    worker = keras.saving.load_model(tmp_path / "second" / "worker1" / "model.keras")
    for chief_weight, worker_weight in zip(chief.get_weights(), worker.get_weights(), strict=True):
        np.testing.assert_array_equal(chief_weight, worker_weight)
    assert all(np.isfinite(weight).all() for weight in chief.get_weights())
