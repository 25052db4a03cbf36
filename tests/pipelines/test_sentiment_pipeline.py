"""End to end on the tiny fixture: run → evaluate → export → move → reload → serve; and resume."""

import json
import shutil
from pathlib import Path

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from rnnapps import run_dirs, runner
from rnnapps.cli import cli
from rnnapps.pipelines.sentiment import FUSED_MAX_BATCH
from tests.conftest import FIXTURE_DATA

TEXTS = ["A wonderful, moving film!", "", "Boring, dull and awful.", "Ça alors — très émouvant 🎬", "zzzz qqqq"]


@pytest.fixture(scope="module")
def smoke_run(canonical_run):
    shared = canonical_run("sentiment")
    return shared.root, shared.result


def test_run_writes_every_artifact(smoke_run):
    _, result = smoke_run
    for name in ("config.json", "model.keras", "history.csv", "metrics.json", "learning_curves.png",
                 "confusion_matrix.png", "checkpoints/best.weights.h5"):
        assert (result.run_dir / name).exists(), name
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["test_examples"] == 32 and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert np.array(metrics["confusion_matrix"]).sum() == 32
    assert json.loads((result.run_dir / "config.json").read_text())["vocab_size"] == 400


def test_smoke_model_learns_the_fixture(smoke_run):
    # The fixture's labels follow sentiment words, so even the smoke model beats chance.
    assert smoke_run[1].metrics["test_auc"] > 0.8


def test_export_reloads_from_a_moved_dir_and_matches_the_model(smoke_run, canonical_run, tmp_path):
    _, result = smoke_run
    moved = tmp_path / "moved"
    shutil.copytree(canonical_run("sentiment").export, tmp_path / "copy")
    shutil.move(tmp_path / "copy", moved)
    serving = tf.saved_model.load(str(moved)).signatures["serving_default"]
    assert list(serving.structured_input_signature[1]) == ["text"]
    outputs = serving(text=tf.constant(TEXTS))
    probabilities = outputs["probability"].numpy()
    assert probabilities.dtype == np.float32 and probabilities.shape == (len(TEXTS),)
    assert ((probabilities >= 0) & (probabilities <= 1)).all()
    model = keras.saving.load_model(result.run_dir / "model.keras")
    expected = model(tf.constant(TEXTS)).numpy().reshape(-1)
    np.testing.assert_allclose(probabilities, expected, atol=1e-5)
    labels = [label.decode() for label in outputs["label"].numpy()]
    assert labels == ["positive" if p >= 0.5 else "negative" for p in probabilities]
    # A batch of only empty strings must not break the recurrent layers.
    assert serving(text=tf.constant([""]))["probability"].shape == (1,)
    # serving_default runs the fused LSTM (BlockLSTMV2) up to FUSED_MAX_BATCH reviews and Keras'
    # layers above; serving_keras always the latter. All three paths give the model's answers.
    loaded = tf.saved_model.load(str(moved))
    many = (TEXTS * 9)[: FUSED_MAX_BATCH + 3]
    for texts in (TEXTS, many):
        for name in ("serving_default", "serving_keras"):
            np.testing.assert_allclose(loaded.signatures[name](text=tf.constant(texts))["probability"],
                                       model(tf.constant(texts)).numpy().reshape(-1), atol=1e-5)
    assert "BlockLSTMV2" in exported_ops(moved) and FUSED_MAX_BATCH < len(many)
    # The XLA signature pads steps and batch but must give the same answers.
    fast = loaded.signatures["serving_xla"]
    for texts in (TEXTS, TEXTS[:3], [""]):
        fast_outputs = fast(text=tf.constant(texts))
        assert fast_outputs["probability"].shape == (len(texts),)
        np.testing.assert_allclose(fast_outputs["probability"], model(tf.constant(texts)).numpy().reshape(-1), atol=1e-5)


def exported_ops(export_dir) -> set[str]:
    """Every op type in a SavedModel's graph and its function library."""
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((Path(export_dir) / "saved_model.pb").read_bytes())
    graph = saved.meta_graphs[0].graph_def
    return {node.op for node in graph.node} | {
        node.op for function in graph.library.function for node in function.node_def
    }


def test_evaluate_export_and_predict_commands(smoke_run):
    root, result = smoke_run
    cli_runner = CliRunner()
    evaluated = cli_runner.invoke(cli, ["evaluate", "sentiment", "--run", str(result.run_dir), "--data-dir", str(FIXTURE_DATA)])
    assert evaluated.exit_code == 0, evaluated.output
    assert f"test_accuracy: {result.metrics['test_accuracy']}" in evaluated.output
    exported = cli_runner.invoke(
        cli, ["export", "sentiment", "--run", str(result.run_dir), "--export-dir", str(root / "exports")]
    )
    assert exported.exit_code == 0, exported.output
    version = Path(exported.output.split("exported: ")[1].strip())
    predicted = cli_runner.invoke(cli, ["predict", "sentiment", "--model", str(version), "great superb", "awful"])
    assert predicted.exit_code == 0, predicted.output
    lines = predicted.output.strip().splitlines()
    assert len(lines) == 2 and lines[0].split("\t")[0] in ("positive", "negative")
    piped = cli_runner.invoke(cli, ["predict", "sentiment", "--model", str(version)], input="loved it\n\nhated it\n")
    assert piped.exit_code == 0 and len(piped.output.strip().splitlines()) == 2


class _InterruptAfter(keras.callbacks.Callback):
    def __init__(self, epoch, batch):
        super().__init__()
        self.at = (epoch, batch)
        self.epoch = 0

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch

    def on_train_batch_end(self, batch, logs=None):
        if (self.epoch, batch) == self.at:
            raise KeyboardInterrupt


def test_interrupted_run_resumes_and_completes(tmp_path):
    common = dict(data_dir=str(FIXTURE_DATA), output_dir=str(tmp_path / "runs"), export_dir=None, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        runner.run("sentiment", "smoke", set_options={"early_stopping_patience": "0"}, extra_callbacks=[_InterruptAfter(1, 3)], **common)
    run_dir = run_dirs.latest_run_dir(tmp_path / "runs", "sentiment")
    assert (run_dir / "backup").exists() and not (run_dir / "model.keras").exists()
    assert len(run_dirs.read_history(run_dir / "history.csv")["loss"]) == 1  # epoch 0 finished before the stop
    resumed = runner.run("sentiment", resume=True, **common)
    assert resumed.run_dir == run_dir
    history = run_dirs.read_history(run_dir / "history.csv")
    assert history["epoch"] == [0.0, 1.0, 2.0]  # continues at epoch 1, not from scratch
    assert (run_dir / "model.keras").exists() and "test_accuracy" in resumed.metrics


def test_a_finished_run_is_extended_by_resume_and_keeps_its_best_epoch(tmp_path):
    common = dict(data_dir=str(FIXTURE_DATA), output_dir=str(tmp_path / "runs"), export_dir=None, verbose=0)
    first = runner.run("sentiment", "smoke", epochs=2, set_options={
        "early_stopping_patience": "5", "learning_rate_decay": "0.9", "learning_rate_hold_epochs": "5"}, **common)
    history = run_dirs.read_history(first.run_dir / "history.csv")
    assert history["epoch"] == [0.0, 1.0] and (first.run_dir / "backup").exists()
    best_before = max(history["val_accuracy"])
    # The resumed epochs also follow a new learning-rate schedule: held to epoch 2, then halved an epoch.
    schedule = {"learning_rate_hold_epochs": "2", "learning_rate_decay": "0.5"}
    extended = runner.run("sentiment", resume=first.run_dir, epochs=4,
                          set_options={"early_stopping_patience": "7", **schedule}, **common)
    saved = json.loads((first.run_dir / "config.json").read_text())
    assert (saved["early_stopping_patience"], saved["learning_rate_hold_epochs"], saved["learning_rate_decay"]) == (
        7, 2, 0.5)
    history = run_dirs.read_history(first.run_dir / "history.csv")
    assert history["epoch"] == [0.0, 1.0, 2.0, 3.0]  # continued after epoch 1, not from scratch
    rate = extended.config.learning_rate
    assert history["learning_rate"][-2:] == pytest.approx([rate, rate * 0.5], rel=1e-5)
    # The saved model is the best epoch of both sessions: its validation accuracy is the logged best.
    model = keras.saving.load_model(first.run_dir / "model.keras")
    assert max(history["val_accuracy"]) >= best_before
    validation = runner.get_pipeline("sentiment").load_data(extended.config, FIXTURE_DATA).validation
    accuracy = model.evaluate(validation, return_dict=True, verbose=0)["accuracy"]
    assert accuracy == pytest.approx(max(history["val_accuracy"]), abs=1e-6)


def test_resume_refuses_a_finished_run_without_a_backup(tmp_path):
    from rnnapps.errors import ConfigError

    common = dict(data_dir=str(FIXTURE_DATA), output_dir=str(tmp_path / "runs"), export_dir=None, verbose=0)
    first = runner.run("sentiment", "smoke", epochs=1, **common)
    saved_config = (first.run_dir / "config.json").read_text()
    # A resumed run keeps its model, data and optimiser: only how long it trains may change.
    with pytest.raises(ConfigError, match="only early_stopping_patience, epochs, learning_rate_decay, .* not units"):
        runner.run("sentiment", resume=True, set_options={"units": "16", "epochs": "3"}, **common)
    with pytest.raises(ConfigError, match="not --config/--batch-size/--seed"):
        runner.run("sentiment", resume=True, seed=3, **common)
    with pytest.raises(ConfigError, match="trained without a learning-rate schedule .* cannot add one"):
        runner.run("sentiment", resume=True, set_options={"learning_rate_decay": "0.5"}, **common)
    # A hold without a decay would do nothing; refused before config.json is rewritten.
    with pytest.raises(ConfigError, match="learning_rate_decay=1 means no decay"):
        runner.run("sentiment", resume=True, set_options={"learning_rate_hold_epochs": "3"}, **common)
    assert (first.run_dir / "config.json").read_text() == saved_config
    # ... and, for a new run, before its run directory is made.
    with pytest.raises(ConfigError, match="learning_rate_decay=1 means no decay"):
        runner.run("sentiment", "smoke", set_options={"learning_rate_hold_epochs": "3"}, **common)
    assert [path.name for path in (tmp_path / "runs" / "sentiment").iterdir()] == [first.run_dir.name]
    shutil.rmtree(first.run_dir / "backup")
    with pytest.raises(ConfigError, match="cannot be continued"):
        runner.run("sentiment", resume=True, **common)
    assert len(run_dirs.read_history(first.run_dir / "history.csv")["epoch"]) == 1


def test_pretrained_embeddings_initialise_the_embedding(tmp_path):
    from rnnapps.config import resolve_config
    from rnnapps.data.sources import resolve_path
    from rnnapps.errors import DataNotFoundError
    from rnnapps.pipelines.sentiment import PIPELINE

    (tmp_path / "glove").mkdir()
    vectors = tmp_path / "glove" / "vectors.txt"
    vectors.write_text("wonderful 1 2 3\nawful -1 -2 -3\nfilm 0.5 0.5 0.5\n")
    assert resolve_path("glove/vectors.txt", tmp_path) == vectors  # relative to the data dir
    with pytest.raises(DataNotFoundError, match="glove/missing.txt"):
        resolve_path("glove/missing.txt", tmp_path)
    config = resolve_config(PIPELINE.config_class, "smoke", set_options={"embeddings": str(vectors)})
    datasets = PIPELINE.load_data(config, FIXTURE_DATA)
    model = PIPELINE.build_model(config, datasets)
    vocabulary = datasets.info.vocabulary
    table = model.get_layer("embedding").get_weights()[0]
    assert table.shape == (len(vocabulary), 3)
    np.testing.assert_allclose(table[vocabulary.index("wonderful")], [1, 2, 3])
    np.testing.assert_allclose(table[vocabulary.index("awful")], [-1, -2, -3])
    np.testing.assert_allclose(table[0], [0, 0, 0])


def test_missing_optional_embeddings_warn_and_train_from_scratch(tmp_path):
    from rnnapps.config import resolve_config
    from rnnapps.errors import DataNotFoundError
    from rnnapps.pipelines.sentiment import PIPELINE

    optional = resolve_config(
        PIPELINE.config_class, "smoke", set_options={"embeddings": "glove/absent.txt", "embeddings_optional": "true"}
    )
    with pytest.warns(UserWarning, match="training the embedding from scratch"):
        datasets = PIPELINE.load_data(optional, FIXTURE_DATA)
    assert datasets.info.embedding_matrix is None
    required = resolve_config(PIPELINE.config_class, "smoke", set_options={"embeddings": "glove/absent.txt"})
    with pytest.raises(DataNotFoundError, match="glove/absent.txt"):
        PIPELINE.load_data(required, FIXTURE_DATA)
