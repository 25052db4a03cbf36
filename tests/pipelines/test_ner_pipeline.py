"""NER end to end on the tiny fixture: run → F1 → export → move → reload → tag tokens and text; CLI; metric."""

import dataclasses
import json
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from rnnapps.cli import cli
from rnnapps.config import resolve_config
from rnnapps.errors import ConfigError
from rnnapps.metrics import entity_confidence, entity_spans, span_scores
from rnnapps.models.embedding import PartlyFrozenEmbedding
from rnnapps.pipelines.ner import (
    PIPELINE,
    NerConfig,
    annotate,
)
from tests.conftest import FIXTURE_DATA

GLOVE = FIXTURE_DATA / "conll2003" / "glove.txt"
TAGS = {"", "O", "B-PER", "I-PER", "B-LOC", "I-LOC", "B-ORG", "I-ORG", "B-MISC", "I-MISC"}
SENTENCES = [
    ["Maria", "Lopez", "visited", "Paris", "."],
    ["Xyzzy", "Qwerty", "Blorpville", "", ""],  # unknown words, padded row
    ["", "", "", "", ""],  # an empty sentence in a batch
]


@pytest.fixture(scope="module")
def smoke_run(canonical_run):
    shared = canonical_run("ner")
    return shared.root, shared.result, shared.export


def test_run_reports_span_f1_per_type_and_plots(smoke_run):
    _, result, _ = smoke_run
    for name in ("config.json", "model.keras", "metrics.json", "history.csv", "per_type_f1.png", "learning_curves.png",
                 "reliability_diagram.png"):
        assert (result.run_dir / name).exists(), name
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    for split in ("valid", "test"):
        assert 0.0 <= metrics[f"{split}_f1"] <= 1.0
        assert metrics[f"{split}_sentences"] == 6
        calibration = metrics[f"{split}_entity_calibration"]
        assert 0.0 <= metrics[f"{split}_entity_ece"] <= 1.0 and calibration["ece"] == metrics[f"{split}_entity_ece"]
        # One calibration answer per predicted entity.
        assert calibration["count"] == sum(row["count"] for row in calibration["bins"])
    assert set(metrics["test_per_type"]) == {"PER", "LOC", "ORG", "MISC"}
    assert sum(row["support"] for row in metrics["test_per_type"].values()) == 10


def test_export_reloads_from_a_moved_dir_and_tags(smoke_run, tmp_path):
    _, result, export = smoke_run
    # The shared export was moved once already; move a copy of it again, off the training location.
    shutil.copytree(export, tmp_path / "copy")
    moved = tmp_path / "moved"
    shutil.move(tmp_path / "copy", moved)
    _check_moved_export(moved, result.run_dir)


def _check_moved_export(moved, run_dir):
    loaded = tf.saved_model.load(str(moved))
    assert set(loaded.signatures) == {"serving_default", "tag_text", "n_best"}

    tags = loaded.signatures["serving_default"](tokens=tf.constant(SENTENCES))["tags"].numpy()
    assert tags.shape == (3, 5)
    decoded = [[tag.decode() for tag in row] for row in tags]
    assert {tag for row in decoded for tag in row} <= TAGS
    assert decoded[1][3:] == ["", ""] and decoded[2] == [""] * 5
    assert all(tag for tag in decoded[0])
    # The export (CRF Viterbi in a signature of unknown batch and time) decodes exactly as the trained model
    # reloaded from model.keras does eagerly.
    model = keras.saving.load_model(run_dir / "model.keras")
    np.testing.assert_array_equal(tags, model.tag(tf.constant(SENTENCES)).numpy())
    assert loaded.signatures["serving_default"](tokens=tf.zeros([2, 0], tf.string))["tags"].shape == (2, 0)

    outputs = loaded.signatures["tag_text"](text=tf.constant(["Maria Lopez visited Paris.", ""]))
    tokens = outputs["tokens"].numpy()
    assert [t.decode() for t in tokens[0]] == ["Maria", "Lopez", "visited", "Paris", "."]
    assert (tokens[1] == b"").all() and (outputs["tags"].numpy()[1] == b"").all()
    assert outputs["tags"].shape == outputs["tokens"].shape
    only_empty = loaded.signatures["tag_text"](text=tf.constant([""]))
    assert only_empty["tags"].numpy().tolist() == [[b""]]
    # Each token's confidence is the CRF marginal of its tag, as the reloaded model computes it.
    confidence = outputs["confidence"].numpy()
    assert confidence.shape == tokens.shape and (confidence[1] == 0).all()
    assert ((confidence[0] > 0) & (confidence[0] <= 1 + 1e-6)).all()
    expected = model.tag_with_confidence(outputs["tokens"])
    np.testing.assert_allclose(confidence, expected["confidence"].numpy(), atol=1e-5)
    np.testing.assert_array_equal(outputs["tags"].numpy(), expected["tags"].numpy())


def test_n_best_starts_with_the_viterbi_tags_and_never_gets_more_probable(smoke_run):
    _, _, export = smoke_run
    loaded = tf.saved_model.load(str(export))
    texts = tf.constant(["EU rejects German call to boycott British lamb .", "Peter Blackburn", ""])
    best = loaded.signatures["n_best"](text=texts, k=tf.constant(5))
    tags, scores = best["tags"].numpy(), best["log_probabilities"].numpy()
    assert tags.shape[:2] == (3, 5) and scores.shape == (3, 5)
    viterbi = loaded.signatures["tag_text"](text=texts)["tags"].numpy()
    np.testing.assert_array_equal(tags[:, 0], viterbi)
    real = scores[:2]
    assert np.all(np.diff(real, axis=1) <= 1e-5) and np.all(real <= 1e-5)
    # Distinct sequences: a k-best list that repeated its best path would be worthless.
    assert len({tuple(row) for row in tags[0]}) == 5
    # Two probabilities of five sequences of one sentence cannot sum to more than one.
    assert np.exp(real).sum(axis=1).max() <= 1 + 1e-4
    assert scores[2, 0] == 0.0 and np.isneginf(scores[2, 1:]).all()
    for bad, message in ((0, "k=0 is below 1"), (9, "k=9 is over max_n_best=8")):
        with pytest.raises(tf.errors.InvalidArgumentError, match=message):
            loaded.signatures["n_best"](text=texts, k=tf.constant(bad))


def test_predict_command_prints_entities_with_confidence(smoke_run):
    _, result, export = smoke_run
    text = "EU rejects German call to boycott British lamb ."
    invoked = CliRunner().invoke(cli, ["predict", "ner", "--model", str(export), text])
    assert invoked.exit_code == 0, invoked.output
    lines = invoked.output.splitlines()
    tags = tf.saved_model.load(str(export)).signatures["tag_text"](text=tf.constant([text]))["tags"].numpy()[0]
    spans = entity_spans(tags)
    # The sentence with its entities bracketed, then one line per entity.
    assert lines[0].count("[") == len(spans) and lines[0].replace("[", "").replace("]", "").split()[-2:] == ["lamb", "."]
    assert len(lines) == 1 + max(len(spans), 1)
    for line in lines[1:]:
        if line != "  (no entities)":
            entity_type, span, words, confidence = line.strip().split("\t")
            assert entity_type in {"PER", "LOC", "ORG", "MISC"} and 0 < float(confidence) <= 1
            start, end = map(int, span.split(":"))
            assert words == " ".join(text.split()[start:end])
            assert f"[{entity_type} {words} {confidence}]" in lines[0]
    ranked = CliRunner().invoke(cli, ["predict", "ner", "--model", str(export), "--n-best", "3", text])
    assert ranked.exit_code == 0, ranked.output
    probabilities = [float(line.split("\t")[1][2:]) for line in ranked.output.splitlines() if line.startswith("  #")]
    assert len(probabilities) == 3 and probabilities == sorted(probabilities, reverse=True)
    too_many = CliRunner().invoke(cli, ["predict", "ner", "--model", str(export), "--n-best", "99", text])
    assert too_many.exit_code != 0 and "max_n_best=8" in too_many.output
    help_text = CliRunner().invoke(cli, ["predict", "ner", "--help"]).output
    assert "rnnapps predict ner" in help_text and "--n-best" in help_text


def test_entity_confidence_is_the_weakest_token_and_annotation_brackets_spans():
    confidence = np.array([0.9, 0.6, 0.99, 0.8])
    assert entity_confidence(("PER", 0, 2), confidence) == pytest.approx(0.6)
    tokens = ["Peter", "Blackburn", "visited", "Brussels"]
    spans = [("PER", 0, 2), ("LOC", 3, 4)]
    assert annotate(tokens, spans, confidence) == "[PER Peter Blackburn 0.60] visited [LOC Brussels 0.80]"
    assert annotate(tokens, [], confidence) == "Peter Blackburn visited Brussels"


def test_softmax_decoder_builds_and_trains_one_step():
    config = dataclasses.replace(resolve_config(NerConfig, "smoke"), decoder="softmax")
    datasets = PIPELINE.load_data(config, FIXTURE_DATA)
    model = PIPELINE.build_model(config, datasets)
    assert model.crf is None
    history = model.fit(datasets.train.take(1), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
    tags = model.tag(tf.constant(SENTENCES[:2])).numpy()
    assert tags.shape == (2, 5) and tags[1, 3] == b"" and tags[0, 0] in {t.encode() for t in TAGS - {""}}


def test_word_dropout_none_picks_the_measured_rate_by_whether_vectors_are_loaded():
    plain = dataclasses.replace(resolve_config(NerConfig, "smoke"), word_dropout=None)
    with_vectors = dataclasses.replace(plain, embeddings=str(GLOVE), word_embedding_dim=3)
    assert resolve_config(NerConfig, "cpu").word_dropout is None
    for config, rate in ((plain, NerConfig.WORD_DROPOUT_WITHOUT_VECTORS), (with_vectors, NerConfig.WORD_DROPOUT_WITH_VECTORS)):
        config.validate()
        model = PIPELINE.build_model(config, PIPELINE.load_data(config, FIXTURE_DATA))
        assert model.encoder.get_layer("word_dropout").rate == rate
    assert NerConfig.WORD_DROPOUT_WITHOUT_VECTORS > NerConfig.WORD_DROPOUT_WITH_VECTORS
    # A rate the user sets wins, and is still checked.
    assert dataclasses.replace(with_vectors, word_dropout=0.2).word_dropout_rate == 0.2
    with pytest.raises(ConfigError, match="word_dropout=1.0 must be in"):
        dataclasses.replace(plain, word_dropout=1.0).validate()


def test_pretrained_vectors_initialise_the_word_embedding(tmp_path):
    config = dataclasses.replace(resolve_config(NerConfig, "smoke"), embeddings=str(GLOVE), word_embedding_dim=3)
    datasets = PIPELINE.load_data(config, FIXTURE_DATA)
    model = PIPELINE.build_model(config, datasets)
    vocabulary = model.encoder.get_layer("word_lookup").get_vocabulary()
    embedding = model.encoder.get_layer("word_embedding")
    matrix = keras.ops.convert_to_numpy(embedding.embedding_matrix())
    np.testing.assert_allclose(matrix[vocabulary.index("rome")], [-0.1, 0.4, 0.3])
    # "oslo" is only in the vector file (and the test split): its row is fixed; training words' rows train.
    assert isinstance(embedding, PartlyFrozenEmbedding)
    assert vocabulary.index("oslo") >= embedding.trainable_rows == datasets.info.vocabularies.trained_word_rows
    assert vocabulary.index("rome") < embedding.trainable_rows
    np.testing.assert_allclose(matrix[vocabulary.index("oslo")], [0.3, -0.2, 0.1])
    # "0000" and "1996" both normalise to "0000": the file's first vector wins.
    np.testing.assert_allclose(matrix[vocabulary.index("0000")], [0.9, 0.9, 0.9])
    with pytest.raises(ConfigError, match="3-dimensional vectors but word_embedding_dim=8"):
        PIPELINE.load_data(dataclasses.replace(config, word_embedding_dim=8), FIXTURE_DATA)
    # Training moves the training words' rows only, and the split embedding saves and reloads.
    model.fit(datasets.train.take(2), epochs=1, verbose=0)
    trained = keras.ops.convert_to_numpy(embedding.embedding_matrix())
    np.testing.assert_array_equal(trained[embedding.trainable_rows:], matrix[embedding.trainable_rows:])
    assert not np.allclose(trained[: embedding.trainable_rows], matrix[: embedding.trainable_rows])
    sentence = tf.constant([["Oslo", "and", "Rome", "."]])
    model.save(tmp_path / "ner.keras")
    reloaded = keras.saving.load_model(tmp_path / "ner.keras")
    np.testing.assert_allclose(reloaded.encoder(sentence).numpy(), model.encoder(sentence).numpy(), atol=1e-5)


def test_fixed_vectors_train_only_the_words_without_one():
    config = dataclasses.replace(resolve_config(NerConfig, "smoke"), embeddings=str(GLOVE), word_embedding_dim=3,
                                 fine_tune_vectors=False)
    datasets = PIPELINE.load_data(config, FIXTURE_DATA)
    model = PIPELINE.build_model(config, datasets)
    vocabulary = model.encoder.get_layer("word_lookup").get_vocabulary()
    embedding = model.encoder.get_layer("word_embedding")
    vocab = datasets.info.vocabularies
    assert embedding.trainable_rows == vocab.updated_word_rows < vocab.trained_word_rows
    # "rome" is a training word with a vector: fixed now; "lopez" has none: trained.
    assert vocabulary.index("rome") >= embedding.trainable_rows > vocabulary.index("lopez")
    before = keras.ops.convert_to_numpy(embedding.embedding_matrix())
    model.fit(datasets.train.take(2), epochs=1, verbose=0)
    after = keras.ops.convert_to_numpy(embedding.embedding_matrix())
    np.testing.assert_array_equal(after[vocabulary.index("rome")], np.float32([-0.1, 0.4, 0.3]))
    np.testing.assert_array_equal(after[embedding.trainable_rows:], before[embedding.trainable_rows:])
    assert not np.allclose(after[: embedding.trainable_rows], before[: embedding.trainable_rows])
    # Without a vector file the setting changes nothing.
    plain = dataclasses.replace(config, embeddings=None, word_embedding_dim=8)
    assert PIPELINE.load_data(plain, FIXTURE_DATA).info.vocabularies.words_without_vectors is None


def test_bad_decoder_is_a_config_error():
    with pytest.raises(ConfigError, match="decoder='beam' is not one of crf, softmax"):
        PIPELINE.load_data(dataclasses.replace(NerConfig(), decoder="beam"), FIXTURE_DATA)


def test_span_f1_matches_a_hand_count():
    gold = [["B-PER", "I-PER", "O", "B-LOC"], ["B-ORG", "O"]]
    predicted = [["B-PER", "I-PER", "O", "B-ORG"], ["I-ORG", "O"]]
    # Gold spans: PER, LOC, ORG. Predicted: PER (right), ORG at 3 (wrong); a stray I-ORG is no span
    # in strict IOB2. Precision 1/2, recall 1/3, F1 = 2PR / (P + R) = 0.4.
    scores = span_scores(gold, predicted)
    assert scores["precision"] == pytest.approx(0.5)
    assert scores["recall"] == pytest.approx(1 / 3)
    assert scores["f1"] == pytest.approx(0.4)
    assert scores["per_type"]["PER"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 1}
    assert scores["per_type"]["LOC"]["recall"] == 0.0 and scores["per_type"]["ORG"]["precision"] == 0.0
    assert entity_spans(predicted[0]) == [("PER", 0, 2), ("ORG", 3, 4)]
    assert entity_spans(["I-ORG", "B-LOC", "I-LOC", "I-PER"]) == [("LOC", 1, 3)]
