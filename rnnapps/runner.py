"""One runner for every verb: run, evaluate, export (the CLI only parses and calls these).

Library users call the same functions::

    from rnnapps.runner import run
    result = run("sentiment", preset="smoke", data_dir="data/")
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

from rnnapps import devices, run_dirs, training
from rnnapps.config import apply_overrides, config_to_dict, load_config, resolve_config, save_config
from rnnapps.data.sources import resolve_data_dir
from rnnapps.errors import ConfigError
from rnnapps.pipelines import get_pipeline

MODEL_FILE = "model.keras"
# Pipeline.build_record of the run's model, merged into every metrics.json of the run.
BUILD_RECORD_FILE = "build_record.json"
# What `--resume` may change: how much longer training goes on and the learning-rate schedule of the
# epochs to come (e.g. decay a run that has levelled off), never the model, data or optimiser.
RESUMABLE_FIELDS = frozenset({
    "epochs", "time_budget_minutes", "early_stopping_patience", "learning_rate_decay", "learning_rate_hold_epochs",
})


@dataclasses.dataclass
class RunResult:
    run_dir: Path
    metrics: dict
    export_path: Path | None
    config: object
    #: False for the other workers of a multi-worker run: they train in step with the chief, but
    #: ``run_dir`` is their scratch directory (removed unless $RNNAPPS_WORKER_DIR named it)
    chief: bool = True


def _prepare(pipeline, config, precision: str, strategy_name: str):
    policy = devices.choose_precision(precision)
    devices.apply_precision(policy)
    devices.seed_everything(config.seed)
    return policy, devices.choose_strategy(strategy_name)


def run(
    name: str,
    preset: str = "cpu",
    *,
    config_file: str | None = None,
    set_options: dict | None = None,
    epochs: int | None = None,
    batch_size: int | None = None,
    seed: int | None = None,
    data_dir: str | None = None,
    output_dir: str = "runs",
    export_dir: str | None = "saved_models",
    resume: bool | str = False,
    precision: str = "auto",
    strategy: str = "auto",
    extra_callbacks=(),
    verbose="auto",
) -> RunResult:
    """Train, evaluate, plot and export one pipeline; returns where everything went.

    ``resume=True`` continues the latest run of ``name`` under ``output_dir``
    (``resume`` may also be a run directory) with its saved config; training
    restarts from the last completed epoch. That extends a finished run too:
    pass a larger ``epochs``, or let it use another ``time_budget_minutes``.
    On resume ``set_options`` may change only :data:`RESUMABLE_FIELDS`.
    """
    pipeline = get_pipeline(name)
    if resume:
        run_dir = run_dirs.latest_run_dir(output_dir, name) if resume is True else Path(resume)
        if (run_dir / MODEL_FILE).exists() and not (run_dir / run_dirs.BACKUP_DIR).exists():
            raise ConfigError(
                f"{str(run_dir)!r} finished without a training backup (runs of older rnnapps versions delete it), "
                f"so it cannot be continued; start a new run"
            )
        config = load_config(pipeline.config_class, run_dir / "config.json")
        changed = sorted(set(set_options or {}) - RESUMABLE_FIELDS)
        if changed or config_file or batch_size is not None or seed is not None:
            raise ConfigError(
                f"a resumed run keeps its saved config; only {', '.join(sorted(RESUMABLE_FIELDS))} (and --epochs) "
                f"may change, not {', '.join(changed) or '--config/--batch-size/--seed'}: start a new run instead"
            )
        if set_options:
            saved_decay = config.learning_rate_decay
            config = apply_overrides(config, set_options, "--set")
            if saved_decay == 1.0 and config.learning_rate_decay != 1.0:
                # Its history.csv has no learning_rate column to append to. (A run with the plateau
                # policy, lr_decay_patience, is refused by the config: one rate policy per run.)
                raise ConfigError(
                    f"{str(run_dir)!r} was trained without a learning-rate schedule (learning_rate_decay=1), so "
                    f"--resume cannot add one; start a new run with --set learning_rate_decay=..."
                )
        if epochs is not None:
            config = dataclasses.replace(config, epochs=epochs)
    else:
        flags = {"epochs": epochs, "batch_size": batch_size, "seed": seed}
        config = resolve_config(pipeline.config_class, preset, config_file, set_options, flags)
        run_dir = None
    # Every config above was validated as it was built (TrainingConfig.validate), before anything
    # is written. The data comes before the run directory too: missing data is the commonest failure,
    # and a new run must not leave an empty run directory behind.
    policy, strategy_obj = _prepare(pipeline, config, precision, strategy)
    datasets = pipeline.load_data(config, resolve_data_dir(data_dir))
    train = dict(extra_callbacks=extra_callbacks, verbose=verbose, resume_hint=f"--output-dir {output_dir}")
    if not devices.is_chief(strategy_obj):
        return _run_worker(pipeline, config, datasets, strategy_obj, run_dir, **train)
    run_dir = run_dir or run_dirs.new_run_dir(output_dir, name)
    save_config(config, run_dir / "config.json")
    print(f"rnnapps: {name} run in {run_dir} (precision {policy}, {strategy_obj.num_replicas_in_sync} replica(s))")
    model, train_seconds = _train(pipeline, config, datasets, strategy_obj, run_dir, **train)
    model.save(run_dir / MODEL_FILE)
    # What the build did that model.keras does not hold (sentiment: what init_from copied) is
    # written beside it, so every later evaluation of this run reports it, a reloaded copy's too.
    run_dirs.write_json(run_dir / BUILD_RECORD_FILE, pipeline.build_record(model))
    if devices.is_multi_worker(strategy_obj):
        import keras

        # The chief evaluates and exports alone: a copy outside the strategy never waits on a
        # collective that the finished workers will not join.
        model = keras.saving.load_model(run_dir / MODEL_FILE)
    metrics = _evaluate_and_plot(pipeline, model, datasets, config, run_dir)
    metrics["train_seconds_this_session"] = round(train_seconds, 2)
    run_dirs.write_json(run_dir / "metrics.json", metrics)
    export_path = None
    if export_dir:
        export_path = export(name, run_dir=run_dir, export_dir=export_dir, model=model, config=config, metrics=metrics)
    devices.wait_for_other_workers(strategy_obj)
    return RunResult(run_dir, metrics, export_path, config)


def _train(pipeline, config, datasets, strategy_obj, run_dir: Path, extra_callbacks, verbose, resume_hint: str):
    """Build the model under the strategy and fit it; returns it and the seconds training took."""
    with strategy_obj.scope():
        model = pipeline.build_model(config, datasets)
    started = time.perf_counter()
    try:
        training.fit(
            model,
            datasets,
            config,
            run_dir,
            pipeline.monitor,
            pipeline.monitor_mode,
            extra_callbacks=[*pipeline.extra_callbacks(model, datasets, config, run_dir), *extra_callbacks],
            verbose=verbose,
        )
    except KeyboardInterrupt:
        print(f"\nrnnapps: interrupted; continue with `rnnapps run {pipeline.name} --resume {resume_hint}`")
        raise
    return model, time.perf_counter() - started


def _run_worker(pipeline, config, datasets, strategy_obj, resumed: Path | None, **train) -> RunResult:
    """A non-chief worker of a multi-worker run: trains in step with the chief and writes nothing of the run.

    Its callbacks (backup, checkpoints, logs) write to a scratch directory; a resumed run first
    copies the chief's training state into it, so every worker restores the same step. That needs
    the chief's run directory readable here (a shared file system, docs/distributed.md).
    """
    task_type, task_id = devices.task_of(strategy_obj)
    with devices.worker_scratch_dir(strategy_obj) as scratch:
        if resumed:
            run_dirs.copy_training_state(resumed, scratch)
        save_config(config, scratch / "config.json")
        print(f"rnnapps: {pipeline.name} {task_type} {task_id} trains in step with the chief (scratch files in {scratch})")
        model, _ = _train(pipeline, config, datasets, strategy_obj, scratch, **train)
        model.save(scratch / MODEL_FILE)
        devices.wait_for_other_workers(strategy_obj)  # the chief's evaluation and export
    return RunResult(scratch, {}, None, config, chief=False)


def _evaluate_and_plot(pipeline, model, datasets, config, run_dir: Path) -> dict:
    from rnnapps import plots

    metrics = pipeline.evaluate(model, datasets, config, run_dir)
    record = run_dir / BUILD_RECORD_FILE
    if record.exists():
        metrics.update(json.loads(record.read_text()))
    history = run_dirs.read_history(run_dir / "history.csv")
    if history:
        plots.learning_curves(history, run_dir / "learning_curves.png", title=f"{pipeline.name} learning curves")
    return metrics


def load_run(name: str, run_dir: str | Path | None = None, output_dir: str = "runs"):
    """The pipeline, config and trained model of a finished run."""
    import keras

    pipeline = get_pipeline(name)
    run_dir = Path(run_dir) if run_dir else run_dirs.latest_run_dir(output_dir, name)
    config = load_config(pipeline.config_class, run_dir / "config.json")
    model_path = run_dir / MODEL_FILE
    if not model_path.exists():
        raise ConfigError(f"{str(run_dir)!r} has no {MODEL_FILE}: the run did not finish; continue it with --resume")
    model = keras.saving.load_model(model_path)
    return pipeline, config, model, run_dir


def evaluate(name: str, run_dir: str | None = None, output_dir: str = "runs", data_dir: str | None = None) -> dict:
    """Re-evaluate a finished run on its test split; rewrites its metrics.json."""
    pipeline, config, model, run_dir = load_run(name, run_dir, output_dir)
    datasets = pipeline.load_data(config, resolve_data_dir(data_dir))
    metrics = _evaluate_and_plot(pipeline, model, datasets, config, run_dir)
    run_dirs.write_json(run_dir / "metrics.json", metrics)
    return metrics


def export(
    name: str,
    run_dir: str | Path | None = None,
    output_dir: str = "runs",
    export_dir: str = "saved_models",
    model=None,
    config=None,
    metrics: dict | None = None,
) -> Path:
    """Export a run's model as ``export_dir/name/<next version>/``; returns that path."""
    from rnnapps.export import export_saved_model

    if model is None:
        pipeline, config, model, run_dir = load_run(name, run_dir, output_dir)
    else:
        pipeline = get_pipeline(name)
    endpoints = pipeline.serving(model, config)
    metadata = {
        "run_dir": str(Path(run_dir).resolve()) if run_dir else None,
        "config": config_to_dict(config),
        "request_limits": pipeline.request_limits(config),
    }
    if metrics:
        metadata["metrics"] = metrics
    return export_saved_model(model, endpoints, export_dir, name, metadata=metadata)
