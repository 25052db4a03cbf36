"""Helpers shared by the benchmark scripts (timed runs, timing callbacks, latency stats, machine, provenance, results files)."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import keras
import numpy as np

from rnnapps import runner
from rnnapps.export import load_export

RESULTS = Path(__file__).parent / "results"
REPO = Path(__file__).resolve().parent.parent
# The CPU flags that decide TensorFlow's fast paths on x86 (AVX2, AVX-512, bfloat16, AMX).
FLAGS_OF_NOTE = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


class TrainTimer(keras.callbacks.Callback):
    """Seconds spent in training batches per epoch, excluding validation."""

    def __init__(self):
        super().__init__()
        self.epoch_seconds: list[float] = []
        self._validation = 0.0

    def on_epoch_begin(self, epoch, logs=None):
        self._start, self._validation = time.perf_counter(), 0.0

    def on_test_begin(self, logs=None):
        self._test_start = time.perf_counter()

    def on_test_end(self, logs=None):
        self._validation += time.perf_counter() - self._test_start

    def on_epoch_end(self, epoch, logs=None):
        self.epoch_seconds.append(time.perf_counter() - self._start - self._validation)


class TrainingSpeed(keras.callbacks.Callback):
    """Optimizer steps, and examples per second timed over training batches only.

    Validation is not timed, nor are the first ``skip_steps`` steps (tracing and warm-up).
    """

    def __init__(self, batch_size: int, skip_steps: int = 10):
        super().__init__()
        self.batch_size, self.skip_steps = batch_size, skip_steps
        self.steps, self.timed, self.seconds = 0, 0, 0.0

    def on_train_batch_begin(self, batch, logs=None):
        self._tick = time.perf_counter()

    def on_train_batch_end(self, batch, logs=None):
        self.steps += 1
        if self.steps > self.skip_steps:
            self.seconds += time.perf_counter() - self._tick
            self.timed += 1

    @property
    def examples_per_second(self) -> float:
        return self.timed * self.batch_size / self.seconds if self.seconds else float("nan")


@dataclasses.dataclass
class TimedRun:
    """A benchmark's training run: the runner's ``RunResult``, its wall time, and the load when it began."""

    result: Any
    wall_seconds: float
    load_average_at_start: tuple[float, float, float]


def timed_run(pipeline: str, preset: str, set_options: dict, data_dir: str, work_dir, extra_callbacks=(),
              resume: bool | str = False) -> TimedRun:
    """Train, evaluate and export through the shared runner, as ``rnnapps run`` does.

    Runs go to ``work_dir/runs`` and exports to ``work_dir/exports``; ``resume`` (a run
    directory) continues that run with its saved config, as ``rnnapps run --resume`` does.
    """
    load_average_at_start = os.getloadavg()
    started = time.perf_counter()
    result = runner.run(
        pipeline, preset=preset, set_options=set_options, data_dir=data_dir,
        output_dir=str(Path(work_dir) / "runs"), export_dir=str(Path(work_dir) / "exports"),
        extra_callbacks=list(extra_callbacks), verbose=2, resume=resume,
    )
    return TimedRun(result, time.perf_counter() - started, load_average_at_start)


def load_served_copy(export_path, work_dir):
    """Copy an export to ``work_dir/served/1`` and load it from there, as a model server would."""
    served = Path(work_dir) / "served" / "1"
    shutil.rmtree(served, ignore_errors=True)
    shutil.copytree(export_path, served)
    return load_export(served)


def training_report(pipeline: str, preset: str, set_options: dict, run: TimedRun, speed: TrainingSpeed,
                    budget, unit: str = "images") -> dict:
    """The report fields of a time-budgeted benchmark run; ``budget`` is its ``rnnapps.training.TimeBudget``."""
    return {
        "pipeline": pipeline,
        "preset": preset,
        "set_options": set_options,
        "config": dict(vars(run.result.config)),
        "train_seconds": run.result.metrics["train_seconds_this_session"],
        "wall_seconds_total": round(run.wall_seconds, 1),
        "stopped_by_time_limit": budget.stopped,
        "time_limit_minutes": budget.seconds / 60,
        "optimizer_steps": speed.steps,
        f"train_{unit}_per_second": round(speed.examples_per_second, 1),
        "machine": machine_under_load(run.load_average_at_start),
        "metrics": run.result.metrics,
    }


def peak_rss_mib() -> float:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def latency_stats(call, repeats: int, warmup: int = 5) -> dict:
    for _ in range(warmup):
        call()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        samples.append((time.perf_counter() - start) * 1000)
    return {
        "p50_ms": round(float(np.percentile(samples, 50)), 3),
        "p99_ms": round(float(np.percentile(samples, 99)), 3),
        "mean_ms": round(statistics.fmean(samples), 3),
        "repeats": repeats,
    }


def machine() -> dict:
    import os

    import tensorflow as tf

    return {
        "python": platform.python_version(),
        "tensorflow": tf.__version__,
        "keras": keras.__version__,
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
    }


def machine_under_load(load_average_at_start) -> dict:
    """:func:`machine` plus the platform and the load averages at the start and now (the machine is shared)."""
    return {
        **machine(),
        "platform": platform.platform(),
        "load_average_at_start": [round(value, 2) for value in load_average_at_start],
        "load_average_at_end": [round(value, 2) for value in os.getloadavg()],
    }


def command_line(script: str, argv=None) -> str:
    """The command that reproduces this benchmark: ``python benchmarks/<script> <arguments>``."""
    return shlex.join(["python", f"benchmarks/{script}", *(sys.argv[1:] if argv is None else argv)])


def _git(repo, *arguments) -> str | None:
    """The output of ``git <arguments>`` in ``repo``; None where git is missing or fails (not a repository)."""
    try:
        done = subprocess.run(
            ["git", *arguments], cwd=repo, capture_output=True, text=True, timeout=60, check=False,
            env={**os.environ, "GIT_OPTIONAL_LOCKS": "0"},  # git status must not lock others' index
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def _load_average() -> list[float] | None:
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except OSError:
        return None


def _now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")


def cpu_model_and_flags(cpuinfo="/proc/cpuinfo") -> tuple[str | None, dict[str, bool] | None]:
    """The first CPU's "model name" (else ``platform.processor()``) and which of FLAGS_OF_NOTE it has.

    The flags are None where ``cpuinfo`` lists none (not Linux on x86).
    """
    fields: dict[str, str] = {}
    try:
        lines = Path(cpuinfo).read_text().splitlines()
    except OSError:
        lines = []
    for line in lines:
        key, colon, value = line.partition(":")
        if colon:
            fields.setdefault(key.strip(), value.strip())
    flags = fields["flags"].split() if "flags" in fields else None
    return (fields.get("model name") or platform.processor() or None,
            None if flags is None else {flag: flag in flags for flag in FLAGS_OF_NOTE})


def provenance_start(repo=REPO) -> dict:
    """What :func:`provenance` reads when a benchmark begins: the code's git state, the time, the load."""
    commit = _git(repo, "rev-parse", "HEAD")
    status = _git(repo, "status", "--porcelain")
    return {
        "commit": commit.strip() if commit else None,
        "dirty": None if status is None else bool(status.strip()),
        "started": _now(),
        "load_average_at_start": _load_average(),
    }


def provenance(started: dict | None = None, command: str | None = None, repo=REPO) -> dict:
    """Where a result came from, for the ``provenance`` block of a results JSON.

    ``started`` is :func:`provenance_start`'s record from the start of the run (read now if
    None); ``command`` defaults to ``python <script> <arguments>`` from ``sys.argv``. The git
    fields (the commit and whether the tree was dirty) are None where git is missing or
    ``repo`` is not a repository. Reads only local files and the local git repository.
    """
    started = provenance_start(repo) if started is None else started
    if command is None:
        script = Path(sys.argv[0]).resolve()
        script = script.relative_to(REPO) if script.is_relative_to(REPO) else Path(sys.argv[0])
        command = shlex.join(["python", str(script), *sys.argv[1:]])
    cpu_model, cpu_flags = cpu_model_and_flags()
    versions = machine()
    return {
        "reconstructed": False,
        **started,
        "date": _now(),
        "command": command,
        "cpu_model": cpu_model,
        "cpu_flags": cpu_flags,
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "load_average_at_end": _load_average(),
        **{key: versions[key] for key in ("python", "tensorflow", "keras")},
    }


def write_report(path, results: dict) -> Path:
    """Write a results JSON (sorted keys), creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    return path


def write_results(name: str, results: dict) -> Path:
    return write_report(RESULTS / f"{name}.json", results)
