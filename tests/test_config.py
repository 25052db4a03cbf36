import dataclasses
from typing import ClassVar

import pytest

from rnnapps.config import (
    TrainingConfig,
    apply_overrides,
    load_config,
    parse_set_options,
    resolve_config,
    save_config,
)
from rnnapps.errors import ConfigError


@dataclasses.dataclass
class ToyConfig(TrainingConfig):
    units: int = 8
    cell: str = "lstm"
    bidirectional: bool = True
    dropout: float = 0.1
    embeddings: str | None = None
    sizes: tuple[int, ...] = (1, 2)

    PRESETS: ClassVar[dict] = {"smoke": {"units": 2, "epochs": 1}, "cpu": {"units": 16}, "full": {"units": 64}}


def test_values_are_typed_by_the_dataclass():
    config = apply_overrides(
        ToyConfig(), {"units": "32", "bidirectional": "false", "dropout": "0.5", "embeddings": "none", "sizes": "3,4"}, "--set"
    )
    assert (config.units, config.bidirectional, config.dropout, config.embeddings, config.sizes) == (32, False, 0.5, None, (3, 4))


def test_precedence_preset_toml_set_flags(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('units = 100\ncell = "gru"\nepochs = 7\n')
    config = resolve_config(ToyConfig, "smoke", toml, {"cell": "simple_rnn", "epochs": "9"}, {"epochs": 3, "seed": None})
    assert config.units == 100  # toml beats preset
    assert config.cell == "simple_rnn"  # --set beats toml
    assert config.epochs == 3  # flag beats --set; None flags are ignored
    assert config.seed == ToyConfig().seed


@pytest.mark.parametrize(
    "overrides, message",
    [({"unitz": "3"}, "unknown config key 'unitz'"), ({"units": "many"}, "units='many' is not a valid int"),
     ({"bidirectional": "maybe"}, "not a valid bool")],
)
def test_bad_overrides_are_named(overrides, message):
    with pytest.raises(ConfigError, match=message):
        apply_overrides(ToyConfig(), overrides, "--set")


def test_set_options_need_equals_and_presets_exist():
    assert parse_set_options(["a=1", "b = x=y"]) == {"a": "1", "b": "x=y"}
    with pytest.raises(ConfigError, match="key=value"):
        parse_set_options(["novalue"])
    with pytest.raises(ConfigError, match="unknown preset"):
        resolve_config(ToyConfig, "huge")


def test_bad_toml_is_a_config_error(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("units = = 3")
    with pytest.raises(ConfigError, match="not valid TOML"):
        resolve_config(ToyConfig, "cpu", bad)
    with pytest.raises(ConfigError, match="does not exist"):
        resolve_config(ToyConfig, "cpu", tmp_path / "missing.toml")


def test_config_json_round_trip(tmp_path):
    config = resolve_config(ToyConfig, "full", set_options={"embeddings": "glove.txt"})
    save_config(config, tmp_path / "config.json")
    assert load_config(ToyConfig, tmp_path / "config.json") == config


def test_renamed_fields_of_older_runs_still_load(tmp_path):
    (tmp_path / "config.json").write_text('{"units": 4, "max_train_minutes": 2.5}')
    config = load_config(ToyConfig, tmp_path / "config.json")
    assert config.units == 4 and config.time_budget_minutes == 2.5
    (tmp_path / "config.json").write_text('{"no_such_field": 1}')
    with pytest.raises(ConfigError, match="no_such_field"):
        load_config(ToyConfig, tmp_path / "config.json")


def test_backups_default_to_every_few_minutes_and_can_be_epoch_only():
    assert TrainingConfig().backup_every_minutes == 5.0
    assert apply_overrides(TrainingConfig(), {"backup_every_minutes": "none"}, "--set").backup_every_minutes is None


@pytest.mark.parametrize(
    "pipeline, overrides, message",
    [
        ("translate", {"units": 0}, "units=0 must be >= 1"),
        ("translate", {"attention": "dot"}, "attention='dot' is not one of bahdanau, luong"),
        ("translate", {"label_smoothing": 1.0}, r"label_smoothing=1.0 must be in \[0, 1\)"),
        ("autoencoder", {"decoder_cell": "tree"}, "decoder_cell='tree' is not one of lstm, gru, simple_rnn"),
        ("draw", {"read_glimpse_size": 0}, "read_glimpse_size=0 must be >= 1"),
        ("pixelrnn", {"binarize": "maybe"}, "binarize='maybe' is not one of"),
        ("sentiment", {"explain_steps": 0}, "explain_steps=0 must be >= 1"),
    ],
)
def test_every_pipeline_config_names_the_bad_field_in_the_same_words(pipeline, overrides, message):
    from rnnapps.pipelines import get_pipeline

    config_class = get_pipeline(pipeline).config_class
    config = config_class()
    with pytest.raises(ConfigError, match=message):
        dataclasses.replace(config, **overrides)


def test_unset_optional_sizes_pass_the_minimum_check():
    from rnnapps.pipelines.draw import DrawConfig

    assert DrawConfig(read_glimpse_size=None).read_glimpse_size is None
    assert DrawConfig(read_glimpse_size=3).glimpse_sizes[0] == 3
