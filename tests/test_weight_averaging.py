"""Polyak averaging (``weight_averaging``): the warmed-up average, what fit scores and ends on, and resume."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps import run_dirs, training
from rnnapps.config import TrainingConfig
from rnnapps.errors import ConfigError
from rnnapps.pipelines.base import Datasets

_Averaged = TrainingConfig(epochs=3, early_stopping_patience=0, backup_every_minutes=None, learning_rate=0.05,
                           weight_averaging=0.9)


def _datasets():
    x = np.random.default_rng(0).normal(size=(32, 3)).astype("float32")
    dataset = tf.data.Dataset.from_tensor_slices((x, x @ np.array([[1.0], [-2.0], [0.5]], "float32"))).batch(8)
    return Datasets(dataset, dataset, dataset)


def _model(config=_Averaged):
    keras.utils.set_random_seed(3)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(1)])
    model.compile(training.make_optimizer(config), "mse")
    return model


def _average_of(model):
    optimizer = model.optimizer
    return [average.numpy() for average in optimizer._model_variables_moving_average]


def test_the_average_warms_up_to_its_momentum():
    variable = keras.Variable(np.zeros(2, "float32"))
    optimizer = training.AveragedAdam(learning_rate=0.1, ema_momentum=0.6)
    expected = None
    for step in range(8):
        optimizer.apply([tf.constant([1.0, -1.0])], [variable])
        value = variable.numpy()
        momentum = 0.0 if step == 0 else min(0.6, (1 + step) / (10 + step))
        expected = value if expected is None else momentum * expected + (1 - momentum) * value
        np.testing.assert_allclose(optimizer._model_variables_moving_average[0].numpy(), expected, rtol=1e-6)
    # After the warm-up the average lags the weights: it is not a copy of them.
    assert not np.allclose(expected, variable.numpy())


def test_weight_averaging_is_a_rate_in_0_1():
    with pytest.raises(ConfigError, match="weight_averaging=1.0 must be in"):
        TrainingConfig(weight_averaging=1.0)
    assert isinstance(training.make_optimizer(TrainingConfig()), keras.optimizers.Adam)
    assert not isinstance(training.make_optimizer(TrainingConfig()), training.AveragedAdam)


def test_the_optimizer_round_trips_through_a_keras_file(tmp_path):
    model = _model()
    model.fit(*next(iter(_datasets().train)), verbose=0)
    model.save(tmp_path / "model.keras")
    reloaded = keras.saving.load_model(tmp_path / "model.keras")
    assert isinstance(reloaded.optimizer, training.AveragedAdam)
    assert reloaded.optimizer.ema_momentum == pytest.approx(0.9) and reloaded.optimizer.use_ema


def test_fit_validates_on_and_ends_with_the_average_and_backs_up_the_raw_weights(tmp_path):
    model = _model()
    training.fit(model, _datasets(), _Averaged, tmp_path, "val_loss", "min", verbose=0)
    final = [variable.numpy() for variable in model.trainable_variables]
    for value, average in zip(final, _average_of(model), strict=True):
        np.testing.assert_allclose(value, average)
    # The last epoch's logged validation loss is that of the weights the run ends with.
    logged = run_dirs.read_history(tmp_path / "history.csv")["val_loss"][-1]
    assert model.evaluate(_datasets().validation, verbose=0) == pytest.approx(logged, rel=1e-5)
    # The backup holds the raw weights training goes on from, and the average beside them.
    backup = training.read_backup(tmp_path / "backup")
    restored = _model()
    restored.optimizer.build(restored.trainable_variables)
    restored.load_weights(tmp_path / "backup" / backup["weights"])
    raw = [variable.numpy() for variable in restored.trainable_variables]
    assert not all(np.allclose(r, f) for r, f in zip(raw, final, strict=True))
    for average, value in zip(_average_of(restored), final, strict=True):
        np.testing.assert_allclose(average, value)


class _InterruptAtEpoch(keras.callbacks.Callback):
    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt


def test_a_resumed_run_ends_where_an_uninterrupted_one_does(tmp_path):
    straight = _model()
    training.fit(straight, _datasets(), _Averaged, tmp_path / "straight", "val_loss", "min", verbose=0)
    with pytest.raises(KeyboardInterrupt):
        training.fit(_model(), _datasets(), _Averaged, tmp_path / "resumed", "val_loss", "min",
                     extra_callbacks=[_InterruptAtEpoch(2)], verbose=0)
    resumed = _model()
    training.fit(resumed, _datasets(), _Averaged, tmp_path / "resumed", "val_loss", "min", verbose=0)
    for a, b in zip(straight.get_weights(), resumed.get_weights(), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)


def test_early_stopping_keeps_the_best_epochs_average(tmp_path):
    Patient = dataclasses.replace(_Averaged, epochs=4, early_stopping_patience=1)

    model = _model(Patient)
    training.fit(model, _datasets(), Patient, tmp_path, "val_loss", "min", verbose=0)
    best = min(run_dirs.read_history(tmp_path / "history.csv")["val_loss"])
    assert model.evaluate(_datasets().validation, verbose=0) == pytest.approx(best, rel=1e-5)


@pytest.fixture
def mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy("float32")


def test_under_mixed_float16_the_loss_scale_optimizer_averages_and_fit_ends_on_the_average(tmp_path, mixed_precision):
    # The GPU path's logic on the CPU: compile wraps AveragedAdam in a LossScaleOptimizer.
    model = _model()
    assert type(model.optimizer).__name__ == "LossScaleOptimizer"
    assert isinstance(model.optimizer.inner_optimizer, training.AveragedAdam)
    training.fit(model, _datasets(), _Averaged, tmp_path, "val_loss", "min", verbose=0)
    averages = model.optimizer.inner_optimizer._model_variables_moving_average
    for variable, average in zip(model.trainable_variables, averages, strict=True):
        np.testing.assert_allclose(variable.numpy(), average.numpy())
    logged = run_dirs.read_history(tmp_path / "history.csv")["val_loss"][-1]
    assert model.evaluate(_datasets().validation, verbose=0) == pytest.approx(logged, rel=1e-3)
