import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps import runtime
from rnnapps.errors import ConfigError, TrainingError
from rnnapps.pipelines.base import Datasets


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_precision_auto_picks_mixed_float16_only_on_gpu():
    assert runtime.choose_precision("auto", gpus=1) == "mixed_float16"
    assert runtime.choose_precision("auto", gpus=0) == "float32"
    assert runtime.choose_precision("mixed_bfloat16", gpus=0) == "mixed_bfloat16"
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        runtime.choose_precision("fp8")


def test_strategy_choice():
    assert isinstance(runtime.choose_strategy("auto", gpus=0), type(tf.distribute.get_strategy()))
    assert isinstance(runtime.choose_strategy("mirrored", gpus=0), tf.distribute.MirroredStrategy)
    with pytest.raises(ConfigError, match="unknown strategy"):
        runtime.choose_strategy("ring")


def test_multiworker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        runtime.choose_strategy("multiworker")


def test_run_dirs_are_unique_and_latest_is_found(tmp_path):
    first = runtime.new_run_dir(tmp_path, "toy")
    (first / "config.json").write_text("{}")
    second = runtime.new_run_dir(tmp_path, "toy")
    (second / "config.json").write_text("{}")
    assert first != second and runtime.latest_run_dir(tmp_path, "toy") == max(first, second)
    with pytest.raises(ConfigError, match="no runs of 'other'"):
        runtime.latest_run_dir(tmp_path, "other")


class _Config:
    epochs = 2
    steps_per_epoch = None
    early_stopping_patience = 0
    learning_rate = 1e-3
    clipnorm = 1.0


def _toy_datasets(poison=False):
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    if poison:
        x[5:] = np.nan
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    return Datasets(dataset, dataset, dataset)


def _toy_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(runtime.make_optimizer(_Config), "mse")
    return model


def test_fit_writes_history_checkpoints_and_logs(tmp_path):
    runtime.fit(_toy_model(), _toy_datasets(), _Config, tmp_path, "val_loss", "min", verbose=0)
    history = runtime.read_history(tmp_path / "history.csv")
    assert len(history["loss"]) == 2 and all(math.isfinite(v) for v in history["val_loss"])
    assert (tmp_path / "checkpoints" / "best.weights.h5").exists()
    assert any((tmp_path / "logs").rglob("*"))
    assert (tmp_path / "backup").exists()  # kept after training, so --resume can extend the run


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    with pytest.raises(TrainingError, match="loss became NaN"):
        runtime.fit(_toy_model(), _toy_datasets(poison=True), _Config, tmp_path, "val_loss", "min", verbose=0)


def test_mixed_precision_keeps_float32_outputs(restore_policy):
    runtime.apply_precision(runtime.choose_precision("auto", gpus=1))
    from rnnapps.pipelines.sentiment import SentimentConfig, SentimentPipeline

    config = SentimentConfig(vocab_size=20, embedding_dim=4, units=4, max_length=8)
    datasets = Datasets(None, None, None, info={"vocabulary": ["", "[UNK]", "good", "bad"]})
    model = SentimentPipeline().build_model(config, datasets)
    assert model.get_layer("encoder").compute_dtype == "float16"
    output = model(tf.constant(["good movie", ""]))
    assert output.dtype == tf.float32
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"


def test_time_budget_stops_training_and_keeps_history(tmp_path):
    class Budget(_Config):
        epochs = 50
        time_budget_minutes = 1e-9

    runtime.fit(_toy_model(), _toy_datasets(), Budget, tmp_path, "val_loss", "min", verbose=0)
    assert len(runtime.read_history(tmp_path / "history.csv")["loss"]) == 1
    with pytest.raises(ConfigError, match="time_budget_minutes"):
        runtime.TimeBudget(0)


def test_extra_callbacks_can_add_the_monitored_metric(tmp_path):
    class AddScore(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_score"] = float(epoch)  # improves every epoch

    class Patient(_Config):
        epochs = 3
        early_stopping_patience = 1

    runtime.fit(_toy_model(), _toy_datasets(), Patient, tmp_path, "val_score", "max", extra_callbacks=[AddScore()], verbose=0)
    assert runtime.read_history(tmp_path / "history.csv")["val_score"] == [0.0, 1.0, 2.0]


def test_learning_rate_decays_once_per_epoch(tmp_path):
    class Decaying(_Config):
        epochs = 3
        learning_rate_decay = 0.5

    seen = []

    class RecordRate(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    runtime.fit(_toy_model(), _toy_datasets(), Decaying, tmp_path, "val_loss", "min", extra_callbacks=[RecordRate()], verbose=0)
    assert seen == pytest.approx([1e-3, 5e-4, 2.5e-4])
    assert runtime.learning_rate_decay_callback(1e-3, 1.0) is None
    with pytest.raises(ConfigError, match="learning_rate_decay"):
        runtime.learning_rate_decay_callback(1e-3, 1.5)
    with pytest.raises(ConfigError, match="learning_rate_hold_epochs"):
        runtime.learning_rate_decay_callback(1e-3, 0.5, hold_epochs=-1)
    # A hold with no decay would silently do nothing.
    with pytest.raises(ConfigError, match="learning_rate_decay=1 means no decay"):
        runtime.learning_rate_decay_callback(1e-3, 1.0, hold_epochs=3)


def test_learning_rate_is_held_before_it_decays(tmp_path):
    class Held(_Config):
        epochs = 4
        learning_rate_decay = 0.5
        learning_rate_hold_epochs = 2

    runtime.fit(_toy_model(), _toy_datasets(), Held, tmp_path, "val_loss", "min", verbose=0)
    assert runtime.read_history(tmp_path / "history.csv")["learning_rate"] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])
