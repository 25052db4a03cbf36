"""Typed pipeline configuration: dataclasses, named presets, and overrides.

Precedence, lowest to highest (written down, as OpenNMT-tf's runner does):
dataclass defaults < ``--preset`` < ``--config file.toml`` < ``--set key=value``
< the dedicated flags (``--epochs``, ``--batch-size``, ``--seed``). The resolved
config is saved as ``config.json`` beside the run's outputs.
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
import types
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, ClassVar

from rnnapps.errors import ConfigError

PRESET_NAMES = ("smoke", "cpu", "full")
#: ``--precision``: a Keras dtype policy, or ``auto`` (rnnapps.devices.choose_precision).
PRECISIONS = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
#: ``--strategy``: a ``tf.distribute`` strategy, or ``auto`` (rnnapps.devices.choose_strategy).
STRATEGIES = ("auto", "default", "mirrored", "multiworker")


@dataclasses.dataclass
class TrainingConfig:
    """Knobs every pipeline shares. Pipelines subclass this and add their own.

    Presets are a class attribute ``PRESETS`` mapping ``smoke`` (seconds, for
    tests), ``cpu`` (a good result on 2 CPU cores in minutes) and ``full`` (the
    paper-sized model for a GPU) to field overrides.

    Validation has one hook: :meth:`validate`, which ``__post_init__`` runs, so every
    construction and every ``dataclasses.replace`` (each preset, file, ``--set`` and flag
    override) is checked. A pipeline's config extends it and calls ``super().validate()``.
    """

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {"smoke": {}, "cpu": {}, "full": {}}

    epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 1e-3
    # Multiply the learning rate by this after every epoch (1.0: constant). Annealing lets a
    # time-budgeted run settle into a minimum instead of stopping mid-stride.
    learning_rate_decay: float = 1.0
    # Epochs at the full learning rate before the decay starts (0: decay from the second epoch).
    learning_rate_hold_epochs: int = 0
    clipnorm: float = 1.0
    seed: int = 1337
    # Stop after this many epochs without improvement of the validation metric (0 disables).
    early_stopping_patience: int = 2
    # Cap on optimizer steps per epoch (None: a full pass over the training data).
    steps_per_epoch: int | None = None
    # Use at most this many training examples (None: all); for quick experiments.
    max_train_examples: int | None = None
    # Validate and test on at most this many examples each (None: all). The smoke presets set it so
    # that they take seconds on the real datasets too; a result reported as a test score must not.
    max_eval_examples: int | None = None
    # Stop training after this many minutes (None: no limit); the best epoch's weights are kept.
    # The budget is per session: `--resume` continues a budgeted run for another one.
    time_budget_minutes: float | None = None
    # Also back the training state up mid-epoch once this many minutes have passed since the last
    # backup (None or 0: at epoch ends only), so a crash in a long epoch loses at most this much.
    backup_every_minutes: float | None = 5.0
    # Serving: the most examples one request to an exported signature may carry. A request over it
    # is refused with an InvalidArgument error naming this limit (rnnapps/request_limits.py).
    max_request_batch: int = 1024
    # Halve the learning rate when the validation loss has not improved for this many epochs
    # (0: off). One learning-rate policy per run: this or learning_rate_decay, not both.
    lr_decay_patience: int = 0
    # Polyak averaging: validate, checkpoint and export an exponential moving average of the weights
    # with this momentum (warmed up over the first steps; 0: off, the last step's weights). Averaging
    # lets a run keep a useful learning rate to its end and still be scored on settled weights.
    weight_averaging: float = 0.0

    def __post_init__(self):
        self.validate()

    def check_at_least(self, minimum: int, *names: str) -> None:
        """Raise :class:`ConfigError` for the first of ``names`` below ``minimum`` (``None`` passes: "unset")."""
        for name in names:
            value = getattr(self, name)
            if value is not None and value < minimum:
                raise ConfigError(f"{name}={value!r} must be >= {minimum}")

    def check_choices(self, **choices: Iterable[str]) -> None:
        """Raise :class:`ConfigError` for the first field whose value is not among its choices."""
        for name, allowed in choices.items():
            allowed = tuple(allowed)
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name}={getattr(self, name)!r} is not one of {', '.join(allowed)}")

    def check_rates(self, *names: str) -> None:
        """Raise :class:`ConfigError` for the first of ``names`` outside ``[0, 1)`` (dropout rates and the like)."""
        for name in names:
            if not 0.0 <= getattr(self, name) < 1.0:
                raise ConfigError(f"{name}={getattr(self, name)!r} must be in [0, 1)")

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first invalid field; subclasses extend it."""
        self.check_at_least(1, "epochs", "batch_size", "max_request_batch")
        if not self.learning_rate > 0:
            raise ConfigError(f"learning_rate={self.learning_rate!r} must be > 0")
        check_learning_rate_schedule(self.learning_rate_decay, self.learning_rate_hold_epochs)
        self.check_rates("weight_averaging")
        if self.lr_decay_patience < 0:
            raise ConfigError(f"lr_decay_patience={self.lr_decay_patience!r} must be >= 0 (0: off)")
        if self.lr_decay_patience and self.learning_rate_decay != 1.0:
            raise ConfigError(
                f"lr_decay_patience={self.lr_decay_patience!r} and learning_rate_decay={self.learning_rate_decay!r} "
                f"are two learning-rate policies; choose one (set the other to its default)"
            )
        check_backup_interval(self.backup_every_minutes)
        if self.time_budget_minutes is not None and not self.time_budget_minutes > 0:
            raise ConfigError(f"time_budget_minutes must be > 0, got {self.time_budget_minutes}")


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


def check_backup_interval(minutes: float | None) -> None:
    """Raise :class:`ConfigError` for a negative ``backup_every_minutes``."""
    if minutes is not None and minutes < 0:
        raise ConfigError(f"backup_every_minutes={minutes!r} must be >= 0 (0 or none: back up at epoch ends only)")


def _field_types(config_cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(config_cls)
    return {field.name: hints[field.name] for field in dataclasses.fields(config_cls)}


def _strip_optional(annotation):
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        if len(args) == 1:
            return args[0], True
    return annotation, False


def coerce(key: str, annotation, value):
    """Convert ``value`` (a string from the CLI, or a TOML/JSON value) to ``annotation``."""
    inner, optional = _strip_optional(annotation)
    if optional and (value is None or (isinstance(value, str) and value.lower() in ("none", "null", ""))):
        return None
    try:
        if inner is bool:
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if inner is int:
            if isinstance(value, float) and not value.is_integer():
                raise ValueError(value)
            return int(value)
        if inner is float:
            return float(value)
        if inner is str:
            return str(value)
        origin = typing.get_origin(inner)
        if origin in (tuple, list):
            (item_type, *_rest) = typing.get_args(inner) or (str,)
            items = value if isinstance(value, (list, tuple)) else [v for v in str(value).split(",") if v.strip()]
            converted = [coerce(key, item_type, item) for item in items]
            return tuple(converted) if origin is tuple else converted
    except (TypeError, ValueError):
        type_name = getattr(inner, "__name__", str(inner))
        raise ConfigError(f"{key}={value!r} is not a valid {type_name}") from None
    return value


def apply_overrides(config, overrides: Mapping[str, Any], source: str):
    """A copy of ``config`` with ``overrides`` applied; unknown keys are an error naming the source."""
    types_by_name = _field_types(type(config))
    changes = {}
    for key, value in overrides.items():
        name = key.replace("-", "_")
        if name not in types_by_name:
            known = ", ".join(sorted(types_by_name))
            raise ConfigError(f"unknown config key {key!r} in {source}; known keys: {known}")
        changes[name] = coerce(name, types_by_name[name], value)
    return dataclasses.replace(config, **changes)


def parse_set_options(pairs: Iterable[str]) -> dict[str, str]:
    """``["a=1", "b=x"]`` → ``{"a": "1", "b": "x"}`` with a clear error for a missing ``=``."""
    parsed = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        parsed[key.strip()] = value.strip()
    return parsed


def read_toml(path: str | Path) -> dict[str, Any]:
    try:
        with open(path, "rb") as handle:
            return tomllib.load(handle)
    except FileNotFoundError:
        raise ConfigError(f"config file {str(path)!r} does not exist") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {str(path)!r} is not valid TOML: {error}") from None


def resolve_config(
    config_cls: type,
    preset: str = "cpu",
    toml_path: str | Path | None = None,
    set_options: Mapping[str, Any] | None = None,
    flags: Mapping[str, Any] | None = None,
):
    """Build the config for a run, applying every source in precedence order."""
    if preset not in config_cls.PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {', '.join(config_cls.PRESETS)}")
    config = apply_overrides(config_cls(), config_cls.PRESETS[preset], f"preset {preset!r}")
    if toml_path:
        config = apply_overrides(config, read_toml(toml_path), str(toml_path))
    if set_options:
        config = apply_overrides(config, set_options, "--set")
    if flags:
        config = apply_overrides(config, {k: v for k, v in flags.items() if v is not None}, "flags")
    return config


def config_to_dict(config) -> dict[str, Any]:
    return dataclasses.asdict(config)


def save_config(config, path: str | Path) -> None:
    Path(path).write_text(json.dumps(config_to_dict(config), indent=2, sort_keys=True) + "\n")


# Fields renamed since a run could have saved them: old name -> new name.
RENAMED_FIELDS = {"max_train_minutes": "time_budget_minutes"}


def load_config(config_cls: type, path: str | Path):
    """Read a ``config.json`` written by :func:`save_config` back into ``config_cls``.

    Fields saved under a name listed in :data:`RENAMED_FIELDS` are read under
    their new name, so older run directories still evaluate, export and resume.
    """
    try:
        values = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise ConfigError(f"{str(path)!r} not found: is this a run directory?") from None
    for old, new in RENAMED_FIELDS.items():
        if old in values and new not in values:
            values[new] = values.pop(old)
    return apply_overrides(config_cls(), values, str(path))
