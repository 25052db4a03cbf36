"""The ``rnnapps`` command line: generic over the pipeline registry.

Commands import TensorFlow lazily, so ``rnnapps --help`` is instant. Every
command parses its options and calls a function of :mod:`rnnapps.runner` that
library users can call too.
"""

from __future__ import annotations

import os
import re
import sys
import tempfile

import click
from click.core import ParameterSource

from rnnapps import pipelines
from rnnapps.config import PRECISIONS, PRESET_NAMES, STRATEGIES
from rnnapps.errors import RnnappsError

# TensorFlow's C++ start-up lines (CUDA probing, CPU features, absl's banner): nothing a user can act on.
# Lines written before absl's logging starts ignore TF_CPP_MIN_LOG_LEVEL, so `import tensorflow` runs
# with stderr captured and these lines dropped; anything else it prints is passed on.
_STARTUP_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR"
    r"|[IWE]\d{4} [\d:.]+ +\d+ \S+\.cc:\d+\] "
    r"|To enable the following instructions: .* rebuild TensorFlow)"
)


def quiet_tensorflow(environ=os.environ) -> bool:
    """Silence TensorFlow's C++ logs unless ``RNNAPPS_DEBUG=1`` or the user chose a level; returns whether it did.

    Level 3 hides its INFO, WARNING and ERROR lines (a CPU-only machine's "failed call to cuInit"
    among them); failures still surface as Python exceptions. Call before TensorFlow is imported.
    """
    if environ.get("RNNAPPS_DEBUG") or "TF_CPP_MIN_LOG_LEVEL" in environ:
        return False
    environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
    return True


def import_tensorflow_quietly() -> None:
    """Import TensorFlow with its start-up lines dropped from stderr (see :data:`_STARTUP_NOISE`)."""
    if "tensorflow" in sys.modules or os.environ.get("TF_CPP_MIN_LOG_LEVEL") != "3" or os.environ.get("RNNAPPS_DEBUG"):
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow  # noqa: F401
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            for line in captured.read().decode(errors="replace").splitlines(keepends=True):
                if not _STARTUP_NOISE.match(line):
                    sys.stderr.write(line)


class FriendlyGroup(click.Group):
    """Turns user errors into one line and a non-zero exit instead of a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except RnnappsError as error:
            raise click.ClickException(str(error)) from None
        except (ValueError, FileNotFoundError) as error:
            if os.environ.get("RNNAPPS_DEBUG"):
                raise
            raise click.ClickException(f"{error} (set RNNAPPS_DEBUG=1 for the traceback)") from None


class PredictGroup(FriendlyGroup):
    """``rnnapps predict NAME ...``: each pipeline contributes its own task verb."""

    def list_commands(self, ctx):
        return pipelines.names()

    def get_command(self, ctx, name):
        if name not in pipelines.REGISTRY:
            return None
        import_tensorflow_quietly()
        command = pipelines.get_pipeline(name).predict_command
        return command


def _pipeline_name(ctx, param, value):
    if value not in pipelines.REGISTRY:
        raise click.BadParameter(f"unknown pipeline {value!r}; choose one of {', '.join(pipelines.names())}")
    return value


pipeline_argument = click.argument("name", metavar="NAME", callback=_pipeline_name)


@click.group(cls=FriendlyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="rnnapps")
def cli():
    """rnnapps: recurrent-network applications that train, evaluate, export and serve.

    \b
    Start here:
      rnnapps list                         the pipelines
      rnnapps run sentiment                train + evaluate + export (cpu preset)
      rnnapps run sentiment --preset smoke a seconds-long check of the whole path
      rnnapps predict sentiment "Loved it"  classify with the latest export

    Data is read from --data-dir or $RNNAPPS_DATA_DIR (the layout in docs/data.md),
    else downloaded with tensorflow-datasets.
    """


@cli.command("list")
def list_command():
    """List the pipelines and what each one does."""
    width = max(len(name) for name in pipelines.names())
    for name in pipelines.names():
        click.echo(f"{name:<{width}}  {pipelines.describe(name)}")


@cli.command("run")
@pipeline_argument
@click.option("--preset", type=click.Choice(PRESET_NAMES), default="cpu", show_default=True,
              help="smoke: seconds, for tests; cpu: a good result on 2 CPU cores; full: paper-sized, for a GPU.")
@click.option("--epochs", type=int, help="Override the preset's number of epochs.")
@click.option("--batch-size", type=int, help="Global batch size (split across replicas).")
@click.option("--data-dir", envvar="RNNAPPS_DATA_DIR", type=click.Path(file_okay=False),
              help="Local dataset folder (env RNNAPPS_DATA_DIR); see docs/data.md for the layout.")
@click.option("--set", "set_options", multiple=True, metavar="KEY=VALUE",
              help="Override one config field, typed by the pipeline's config (repeatable).")
@click.option("--config", "config_file", type=click.Path(dir_okay=False), help="TOML file of config fields.")
@click.option("--seed", type=int, help="Seed for Python, NumPy and TensorFlow.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="auto", show_default=True,
              help="auto: mixed_float16 on a GPU, float32 on a CPU.")
@click.option("--strategy", type=click.Choice(STRATEGIES), default="auto", show_default=True,
              help="auto: mirrored over all local GPUs when there are several; multiworker reads $TF_CONFIG.")
@click.option("--output-dir", default="runs", show_default=True, type=click.Path(file_okay=False),
              help="Run root: checkpoints, logs, metrics and plots go to OUTPUT_DIR/NAME/RUN_ID/.")
@click.option("--export-dir", default="saved_models", show_default=True, type=click.Path(file_okay=False),
              help="Export root: the SavedModel goes to EXPORT_DIR/NAME/VERSION/.")
@click.option("--no-export", is_flag=True, help="Train and evaluate but do not export.")
@click.option("--resume", is_flag=True,
              help="Continue the latest run of NAME under --output-dir from its last completed epoch, with its "
                   "saved config; --epochs and --set epochs/time_budget_minutes/early_stopping_patience may "
                   "extend it, and --set learning_rate_decay/learning_rate_hold_epochs may change the schedule of "
                   "the epochs to come.")
def run_command(name, preset, epochs, batch_size, data_dir, set_options, config_file, seed, precision, strategy,
                output_dir, export_dir, no_export, resume):
    """Train, evaluate and export pipeline NAME.

    \b
    Examples:
      rnnapps run sentiment
      rnnapps run sentiment --preset smoke --data-dir tests/fixtures/data
      rnnapps run sentiment --set cell=gru --set units=128 --epochs 5
      rnnapps run sentiment --config my.toml --seed 7
      rnnapps run sentiment --resume          # after Ctrl-C or a crash
      rnnapps run sentiment --resume --set time_budget_minutes=30   # 30 more minutes

    Config precedence: preset < --config < --set < --epochs/--batch-size/--seed.
    """
    import_tensorflow_quietly()
    from rnnapps.config import parse_set_options
    from rnnapps.runner import run

    if resume and click.get_current_context().get_parameter_source("preset") is ParameterSource.COMMANDLINE:
        # A silently ignored preset would leave the user believing the run changed shape.
        raise click.UsageError("--preset cannot be combined with --resume: a resumed run keeps its saved config")
    result = run(
        name,
        preset,
        config_file=config_file,
        set_options=parse_set_options(set_options),
        epochs=epochs,
        batch_size=batch_size,
        seed=seed,
        data_dir=data_dir,
        output_dir=output_dir,
        export_dir=None if no_export else export_dir,
        resume=resume,
        precision=precision,
        strategy=strategy,
    )
    if not result.chief:
        click.echo("worker finished: the chief writes the run directory, metrics and export")
        return
    click.echo(f"run directory: {result.run_dir}")
    click.echo("metrics: " + ", ".join(f"{k}={v}" for k, v in result.metrics.items() if isinstance(v, (int, float))))
    if result.export_path:
        click.echo(f"exported: {result.export_path}")


@cli.command("evaluate")
@pipeline_argument
@click.option("--run", "run_dir", type=click.Path(file_okay=False, exists=True),
              help="Run directory (default: the latest run of NAME).")
@click.option("--output-dir", default="runs", show_default=True, help="Run root to search for the latest run.")
@click.option("--data-dir", envvar="RNNAPPS_DATA_DIR", type=click.Path(file_okay=False), help="Local dataset folder.")
def evaluate_command(name, run_dir, output_dir, data_dir):
    """Evaluate a finished run of NAME on the test split (rewrites metrics.json).

    \b
    Example:
      rnnapps evaluate sentiment --run runs/sentiment/20261122-101500
    """
    import_tensorflow_quietly()
    from rnnapps.runner import evaluate

    metrics = evaluate(name, run_dir=run_dir, output_dir=output_dir, data_dir=data_dir)
    for key, value in metrics.items():
        if isinstance(value, (int, float, str)):
            click.echo(f"{key}: {value}")


@cli.command("export")
@pipeline_argument
@click.option("--run", "run_dir", type=click.Path(file_okay=False, exists=True),
              help="Run directory (default: the latest run of NAME).")
@click.option("--output-dir", default="runs", show_default=True, help="Run root to search for the latest run.")
@click.option("--export-dir", default="saved_models", show_default=True, help="Export root.")
def export_command(name, run_dir, output_dir, export_dir):
    """Export a finished run of NAME as a SavedModel for TensorFlow Serving.

    \b
    Example:
      rnnapps export sentiment && saved_model_cli show --all --dir saved_models/sentiment/1
    """
    import_tensorflow_quietly()
    from rnnapps.runner import export

    click.echo(f"exported: {export(name, run_dir=run_dir, output_dir=output_dir, export_dir=export_dir)}")


@cli.group("predict", cls=PredictGroup)
def predict_group():
    """Use an exported model: each pipeline's task verb (classify, tag, translate, sample...).

    \b
    Examples:
      rnnapps predict sentiment "A wonderful, moving film."
      echo "Dull and far too long." | rnnapps predict sentiment
    """


def main(argv=None):
    quiet_tensorflow()
    return cli.main(args=argv, prog_name="rnnapps")


if __name__ == "__main__":
    sys.exit(main())
