"""A real process killed (SIGKILL) mid-epoch, then ``--resume``d to the end.

Each test runs the CLI twice as subprocesses on the fixtures: once until a mid-epoch backup exists
(``backup_every_minutes`` tiny, so one is written after nearly every batch), killed at once; then
``--resume`` to completion. The history must list every epoch exactly once and the model must be
finite. Bounded: no wait is longer than ``TIMEOUT`` seconds.
"""

import csv
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.conftest import FIXTURE_DATA
from tests.pipelines.backups import mid_epoch_backup

TIMEOUT = 180


def _cli(*args):
    return [sys.executable, "-m", "rnnapps.cli", "run", *args, "--data-dir", str(FIXTURE_DATA)]


def _environment():
    env = dict(os.environ, CUDA_VISIBLE_DEVICES="")
    # The CLI's own quieting is what is under test: it steps aside when the user chose a level.
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    env.pop("RNNAPPS_DEBUG", None)
    return env


def _kill_mid_epoch(command, output, log):
    """Start ``command`` and SIGKILL it as soon as a mid-epoch backup exists; returns that backup's metadata."""
    with open(log, "w") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT, env=_environment())
    deadline = time.monotonic() + TIMEOUT
    try:
        while time.monotonic() < deadline and process.poll() is None:
            metadata = mid_epoch_backup(output)
            if metadata:
                process.send_signal(signal.SIGKILL)
                process.wait(timeout=30)
                return metadata
            time.sleep(0.05)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=30)
    pytest.fail(f"no mid-epoch backup within {TIMEOUT} s (exit code {process.returncode}):\n{log.read_text()[-3000:]}")


def _epochs_logged(run_dir):
    with open(run_dir / "history.csv", newline="") as handle:
        return [int(row["epoch"]) for row in csv.DictReader(handle)]


def _kill_and_resume(tmp_path, pipeline, epochs, *settings):
    output = tmp_path / "runs"
    places = ["--output-dir", str(output), "--no-export"]  # exporting is tested elsewhere, and slow
    started = time.monotonic()
    _kill_mid_epoch(
        _cli(pipeline, "--preset", "smoke", "--epochs", str(epochs), "--set", "backup_every_minutes=0.0001",
             *settings, *places),
        output, tmp_path / "killed.log",
    )
    (run_dir,) = (output / pipeline).iterdir()
    assert not (run_dir / "model.keras").exists()
    killed_at = json.loads((run_dir / "backup" / "training_metadata.json").read_text())
    resumed = subprocess.run(
        _cli(pipeline, "--resume", *places), capture_output=True, text=True, timeout=TIMEOUT, env=_environment()
    )
    print(f"{pipeline}: killed at {killed_at}; kill and resume took {time.monotonic() - started:.1f} s")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    if killed_at["batch"] is not None:
        assert f"after batch {killed_at['batch'] + 1}" in resumed.stdout
    assert _epochs_logged(run_dir) == list(range(epochs))
    # TensorFlow's C++ start-up lines are silenced by the CLI (only Python warnings may remain).
    assert "cudart_stub" not in resumed.stderr and "absl::InitializeLog" not in resumed.stderr
    from rnnapps import runner

    _, _, model, _ = runner.load_run(pipeline, run_dir)  # imports the pipeline's registered layers
    assert model.optimizer.iterations.numpy() > 0
    assert all(np.isfinite(weight).all() for weight in model.get_weights())
    return run_dir


def test_sentiment_killed_mid_epoch_resumes_to_the_end(tmp_path):
    # Smoke's 12 batches an epoch pass too fast to catch mid-epoch: a stream of 80 steps an epoch.
    _kill_and_resume(tmp_path, "sentiment", 2, "--set", "steps_per_epoch=80")


def test_textgen_killed_mid_epoch_resumes_to_the_end(tmp_path):
    # Truncated BPTT with states carried across batches and zeroed at epoch starts; full passes.
    run_dir = _kill_and_resume(tmp_path, "textgen", 3, "--set", "sample_length=0")
    assert (run_dir / "sample.txt").exists()
