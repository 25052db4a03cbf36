import dataclasses
import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps import devices, run_dirs, training
from rnnapps.config import TrainingConfig, check_backup_interval
from rnnapps.errors import ConfigError, TrainingError
from rnnapps.pipelines.base import Datasets


@pytest.fixture
def restore_policy():
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_precision_auto_picks_mixed_float16_only_on_gpu():
    assert devices.choose_precision("auto", gpus=1) == "mixed_float16"
    assert devices.choose_precision("auto", gpus=0) == "float32"
    assert devices.choose_precision("mixed_bfloat16", gpus=0) == "mixed_bfloat16"
    with pytest.raises(ConfigError, match="unknown precision 'fp8'"):
        devices.choose_precision("fp8")


def test_strategy_choice():
    assert isinstance(devices.choose_strategy("auto", gpus=0), type(tf.distribute.get_strategy()))
    assert isinstance(devices.choose_strategy("mirrored", gpus=0), tf.distribute.MirroredStrategy)
    with pytest.raises(ConfigError, match="unknown strategy"):
        devices.choose_strategy("ring")


def test_multiworker_needs_tf_config(monkeypatch):
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG"):
        devices.choose_strategy("multiworker")


def test_run_dirs_are_unique_and_latest_is_found(tmp_path):
    first = run_dirs.new_run_dir(tmp_path, "toy")
    (first / "config.json").write_text("{}")
    second = run_dirs.new_run_dir(tmp_path, "toy")
    (second / "config.json").write_text("{}")
    assert first != second and run_dirs.latest_run_dir(tmp_path, "toy") == max(first, second)
    with pytest.raises(ConfigError, match="no runs of 'other'"):
        run_dirs.latest_run_dir(tmp_path, "other")


# TrainingConfig's fields as class attributes, so that a test changes one by subclassing.
_Config = type("_Config", (), {
    **{field.name: field.default for field in dataclasses.fields(TrainingConfig)},
    "epochs": 2, "steps_per_epoch": None, "early_stopping_patience": 0, "learning_rate": 1e-3, "clipnorm": 1.0,
    "backup_every_minutes": None,
})


def _toy_datasets(poison=False):
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    if poison:
        x[5:] = np.nan
    dataset = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    return Datasets(dataset, dataset, dataset)


def _toy_model():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(training.make_optimizer(_Config), "mse")
    return model


def test_fit_writes_history_checkpoints_and_logs(tmp_path):
    training.fit(_toy_model(), _toy_datasets(), _Config, tmp_path, "val_loss", "min", verbose=0)
    history = run_dirs.read_history(tmp_path / "history.csv")
    assert len(history["loss"]) == 2 and all(math.isfinite(v) for v in history["val_loss"])
    assert (tmp_path / "checkpoints" / "best.weights.h5").exists()
    assert any((tmp_path / "logs").rglob("*"))
    assert (tmp_path / "backup").exists()  # kept after training, so --resume can extend the run


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    class Backed(_Config):
        backup_every_minutes = 1e-9

    with pytest.raises(TrainingError, match="loss became NaN"):
        training.fit(_toy_model(), _toy_datasets(poison=True), Backed, tmp_path, "val_loss", "min", verbose=0)
    assert training.read_backup(tmp_path / "backup") is None  # the NaN weights were never backed up


def test_mixed_precision_keeps_float32_outputs(restore_policy):
    devices.apply_precision(devices.choose_precision("auto", gpus=1))
    from rnnapps.pipelines.sentiment import SentimentConfig, SentimentData, SentimentPipeline

    config = SentimentConfig(vocab_size=20, embedding_dim=4, units=4, max_length=8)
    datasets = Datasets(None, None, None, info=SentimentData(sizes={}, vocabulary=["", "[UNK]", "good", "bad"]))
    model = SentimentPipeline().build_model(config, datasets)
    assert model.get_layer("encoder").compute_dtype == "float16"
    output = model(tf.constant(["good movie", ""]))
    assert output.dtype == tf.float32
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"


def test_time_budget_stops_training_and_keeps_history(tmp_path):
    class Budget(_Config):
        epochs = 50
        time_budget_minutes = 1e-9

    training.fit(_toy_model(), _toy_datasets(), Budget, tmp_path, "val_loss", "min", verbose=0)
    assert len(run_dirs.read_history(tmp_path / "history.csv")["loss"]) == 1
    with pytest.raises(ConfigError, match="time_budget_minutes"):
        training.TimeBudget(0)


def test_extra_callbacks_can_add_the_monitored_metric(tmp_path):
    class AddScore(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_score"] = float(epoch)  # improves every epoch

    class Patient(_Config):
        epochs = 3
        early_stopping_patience = 1

    training.fit(_toy_model(), _toy_datasets(), Patient, tmp_path, "val_score", "max", extra_callbacks=[AddScore()], verbose=0)
    assert run_dirs.read_history(tmp_path / "history.csv")["val_score"] == [0.0, 1.0, 2.0]


def test_learning_rate_decays_once_per_epoch(tmp_path):
    class Decaying(_Config):
        epochs = 3
        learning_rate_decay = 0.5

    seen = []

    class RecordRate(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))

    training.fit(_toy_model(), _toy_datasets(), Decaying, tmp_path, "val_loss", "min", extra_callbacks=[RecordRate()], verbose=0)
    assert seen == pytest.approx([1e-3, 5e-4, 2.5e-4])
    assert training.learning_rate_decay_callback(1e-3, 1.0) is None
    with pytest.raises(ConfigError, match="learning_rate_decay"):
        training.learning_rate_decay_callback(1e-3, 1.5)
    with pytest.raises(ConfigError, match="learning_rate_hold_epochs"):
        training.learning_rate_decay_callback(1e-3, 0.5, hold_epochs=-1)
    # A hold with no decay would silently do nothing.
    with pytest.raises(ConfigError, match="learning_rate_decay=1 means no decay"):
        training.learning_rate_decay_callback(1e-3, 1.0, hold_epochs=3)


def test_learning_rate_is_held_before_it_decays(tmp_path):
    class Held(_Config):
        epochs = 4
        learning_rate_decay = 0.5
        learning_rate_hold_epochs = 2

    training.fit(_toy_model(), _toy_datasets(), Held, tmp_path, "val_loss", "min", verbose=0)
    assert run_dirs.read_history(tmp_path / "history.csv")["learning_rate"] == pytest.approx([1e-3, 1e-3, 1e-3, 5e-4])


class _Interrupt(keras.callbacks.Callback):
    """Raise KeyboardInterrupt (a crash, as far as fit knows) before ``batch`` of ``epoch``."""

    def __init__(self, epoch, batch):
        super().__init__()
        self.at, self.epoch = (epoch, batch), None

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_begin(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


class _Backed(_Config):
    epochs = 3
    backup_every_minutes = 1e-9  # after every batch


def test_a_mid_epoch_backup_resumes_that_step_and_logs_each_epoch_once(tmp_path):
    with pytest.raises(KeyboardInterrupt):
        training.fit(_toy_model(), _toy_datasets(), _Backed, tmp_path, "val_loss", "min",
                    extra_callbacks=[_Interrupt(epoch=1, batch=2)], verbose=0)
    backup = training.read_backup(tmp_path / "backup")
    assert (backup["epoch"], backup["batch"]) == (1, 1)  # after batch 2 of the second epoch
    assert [p.name for p in (tmp_path / "backup").glob("*.weights.h5")] == [backup["weights"]]
    # As if the kill had come after epoch 1's row was logged but before its backup: the row must not count twice.
    with open(tmp_path / "history.csv", "a") as handle:
        handle.write("1,9.0,9.0\n")
    # A kill during a later write leaves a partial file and a temporary metadata file behind: both ignored.
    (tmp_path / "backup" / "state-99.weights.h5").write_bytes(b"\x89HDF half")
    (tmp_path / "backup" / ".training_metadata.json.tmp").write_text("{")
    model = _toy_model()
    training.fit(model, _toy_datasets(), _Backed, tmp_path, "val_loss", "min", verbose=0)
    assert run_dirs.read_history(tmp_path / "history.csv")["epoch"] == [0.0, 1.0, 2.0]
    # 4 batches of epoch 0 and 2 of epoch 1 restored, then epoch 1 again from its start and epoch 2.
    assert int(model.optimizer.iterations.numpy()) == 4 + 2 + 4 + 4
    assert training.read_backup(tmp_path / "backup")["epoch"] == 3
    assert len(list((tmp_path / "backup").glob("*.weights.h5"))) == 1


def test_backup_interval_is_checked():
    check_backup_interval(None)
    check_backup_interval(0)
    with pytest.raises(ConfigError, match="backup_every_minutes=-1"):
        check_backup_interval(-1)


def test_the_first_epoch_knows_its_step_count(tmp_path):
    x = np.arange(40, dtype="float32").reshape(20, 2)
    # Filtering (like bucketing) leaves the cardinality unknown: 10 examples kept, 3 batches of 4.
    train = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).filter(lambda a, b: a[0] % 4 == 0).batch(4)
    assert int(train.cardinality()) == int(tf.data.UNKNOWN_CARDINALITY)
    assert int(training.with_known_length(train).cardinality()) == 3
    steps = []

    class RecordSteps(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            steps.append(self.params["steps"])

    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(training.make_optimizer(_Config), "mse")
    training.fit(model, Datasets(train, train, train), _Config, tmp_path, "val_loss", "min",
                extra_callbacks=[RecordSteps()], verbose=0)
    assert steps == [3]


def test_only_the_chief_writes_and_worker_scratch_is_removed(tmp_path, monkeypatch):
    default = tf.distribute.get_strategy()
    assert devices.is_chief(default) and devices.task_of(default) == ("chief", 0)
    monkeypatch.delenv(devices.WORKER_DIR_ENV, raising=False)
    with devices.worker_scratch_dir(default) as scratch:
        (scratch / "history.csv").write_text("epoch\n")
    assert not scratch.exists()
    monkeypatch.setenv(devices.WORKER_DIR_ENV, str(tmp_path / "kept"))
    with devices.worker_scratch_dir(default) as scratch:
        (scratch / "model.keras").write_text("")
    assert (tmp_path / "kept" / "model.keras").exists()
