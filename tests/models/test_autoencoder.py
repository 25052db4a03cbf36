"""Seq2SeqAutoencoder, the autoencoder pipeline on the fixtures, and transfer into the sentiment model."""

import json

import keras
import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner

from rnnapps import runner
from rnnapps.cli import cli
from rnnapps.config import resolve_config
from rnnapps.data.text import build_vocabulary
from rnnapps.errors import ConfigError
from rnnapps.models.autoencoder import Seq2SeqAutoencoder, reconstruction_metrics
from rnnapps.models.seq2seq import END_ID, START_ID, teacher_forcing_pairs, with_markers
from rnnapps.pipelines.autoencoder import PIPELINE, AutoencoderConfig
from rnnapps.plots import principal_components
from rnnapps.text_ops import detokenize
from rnnapps.transfer import describe_encoder, init_sentiment_from_autoencoder
from tests.conftest import FIXTURE_DATA
from tests.layer_checks import check_layer

TEXTS = ["", "Ça alors — très émouvant 🎬", "The film was great.", "zzzz qqqq"]
# A tiny corpus of random word strings: a decoder that ignores the code cannot tell them apart.
WORDS = "red blue green cat dog bird runs sits flies big".split()
CORPUS = [" ".join(np.random.default_rng(index).choice(WORDS, size=2 + index % 4)) for index in range(24)]


def tiny_model(vocabulary=None, **kwargs):
    settings = dict(embedding_dim=8, cell="lstm", units=8, code_size=16, decoder_units=16, max_length=8, seed=1)
    settings.update(kwargs)
    return Seq2SeqAutoencoder(vocabulary or with_markers(build_vocabulary(CORPUS, 100)), **settings)


# --- the model -------------------------------------------------------------------------------

@pytest.mark.parametrize(
    "code_at_every_step, pooling, tie_embeddings",
    [(False, "none", False), (True, "none", False), (True, "max", False), (False, "mean", False),
     (True, "none", True)],
)
def test_model_round_trips(tmp_path, code_at_every_step, pooling, tie_embeddings):
    model = tiny_model(cell="gru", decoder_cell="lstm", depth=2, word_dropout=0.3, dropout=0.1,
                       code_at_every_step=code_at_every_step, pooling=pooling, tie_embeddings=tie_embeddings)
    ids = model.token_ids(tf.constant(CORPUS[:3])).numpy()
    check_layer(model, ids, tmp_path, expected_output_shape=(3, ids.shape[1] + 1, len(model.vocabulary)))


def test_reconstruction_targets_add_markers_and_keep_padding():
    decoder_inputs, labels = teacher_forcing_pairs(tf.constant([[5, 6, 7], [8, 0, 0], [0, 0, 0]]))
    assert decoder_inputs.numpy().tolist() == [[START_ID, 5, 6, 7], [START_ID, 8, 0, 0], [START_ID, 0, 0, 0]]
    assert labels.numpy().tolist() == [[5, 6, 7, END_ID], [8, END_ID, 0, 0], [END_ID, 0, 0, 0]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(vocabulary=["", "[UNK]", "a"]), r"vocabulary\[2:4\] == \['<s>', '</s>'\]"),
        (dict(cell="rnn"), "Expected cell to be one of .* Received: cell='rnn'"),
        (dict(decoder_cell="transformer"), "decoder_cell='transformer'"),
        (dict(code_size=0), "Expected code_size >= 1. Received: code_size=0"),
        (dict(word_dropout=1.0), "Expected 0 <= word_dropout < 1. Received: word_dropout=1.0"),
        (dict(pooling="sum"), "Expected pooling to be one of .* Received: pooling='sum'"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_model(**kwargs)


@pytest.mark.filterwarnings("ignore:.*shuffle=True")
@pytest.mark.parametrize("code_at_every_step, pooling, tie_embeddings",
                         [(False, "none", False), (True, "none", False), (True, "max", False), (True, "none", True)])
def test_reconstructs_the_fixture_corpus_and_needs_the_code(code_at_every_step, pooling, tie_embeddings):
    keras.utils.set_random_seed(0)
    model = tiny_model(cell="gru", units=32, code_size=32, decoder_units=32, embedding_dim=16,
                       code_at_every_step=code_at_every_step, pooling=pooling, tie_embeddings=tie_embeddings)
    model.compile(optimizer=keras.optimizers.Adam(0.01), jit_compile=False)
    ids = model.token_ids(tf.constant(CORPUS))
    # Tied logits are dot products with 16-number embeddings that start random: at this toy size they
    # need more steps (200 reached 83%); at Multi30k's they learn far faster (docs/autoencoder.md).
    steps = 400 if tie_embeddings else 200
    model.fit(tf.data.Dataset.from_tensor_slices(ids).batch(8).repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
    scores = reconstruction_metrics(model, CORPUS)
    assert scores["token_accuracy"] >= 0.9 and scores["exact_match"] >= 0.75, scores
    codes = model.encode(ids)
    _, labels = teacher_forcing_pairs(ids)

    def token_accuracy(codes):
        hypotheses = model.greedy_reconstruct(codes).ids.numpy()[:, : labels.shape[1]]
        real = labels.numpy() != 0
        return float(((hypotheses == labels.numpy()) & real).sum() / real.sum())

    # With the code zeroed every sentence decodes the same way: the decoder must be reading the code.
    zeroed = token_accuracy(tf.zeros_like(codes))
    assert zeroed < scores["token_accuracy"] - 0.4, (zeroed, scores["token_accuracy"])
    # Another sentence's code gives that other sentence back.
    rolled = model.ids_to_text(model.greedy_reconstruct(tf.roll(codes, 1, axis=0)).ids).numpy()
    assert np.mean([a.decode() == b for a, b in zip(rolled, np.roll(CORPUS, 1), strict=True)]) >= 0.75
    # A beam search reorders the code with its hypotheses: it reconstructs as well as greedy decoding does.
    beam = reconstruction_metrics(model, CORPUS, beam_width=3)
    assert beam["token_accuracy"] >= 0.9 and beam["exact_match"] >= 0.75, beam
    rolled = model.ids_to_text(model.reconstruct_ids(tf.roll(codes, 1, axis=0), beam_width=3).ids).numpy()
    assert np.mean([a.decode() == b for a, b in zip(rolled, np.roll(CORPUS, 1), strict=True)]) >= 0.75


@pytest.mark.parametrize("pooling", ["max", "mean"])
def test_pooling_reads_only_the_real_steps(pooling):
    model = tiny_model(pooling=pooling)
    outputs = tf.constant(np.random.default_rng(0).normal(size=(3, 4, 2)), tf.float32)
    mask = tf.constant([[True, True, False, False], [True, True, True, True], [False] * 4])
    pooled = model.pool(outputs, mask).numpy()
    reduce = np.max if pooling == "max" else np.mean
    np.testing.assert_allclose(pooled[0], reduce(outputs.numpy()[0, :2], axis=0), rtol=1e-6)
    np.testing.assert_allclose(pooled[1], reduce(outputs.numpy()[1], axis=0), rtol=1e-6)
    np.testing.assert_array_equal(pooled[2], [0.0, 0.0])  # no real step (an empty text): zeros, not -1e4
    # The code sees the pooled outputs: changing a middle word changes it, an empty text gets a finite one.
    codes = model.encode_text(tf.constant(["a dog runs in the park", "a dog sits in the park", ""])).numpy()
    assert np.isfinite(codes).all() and not np.allclose(codes[0], codes[1])


def test_tied_embeddings_score_words_with_their_own_embedding():
    model = tiny_model(tie_embeddings=True, code_at_every_step=True)
    assert not hasattr(model, "projection")
    model.output_bias.assign(np.linspace(-1, 1, len(model.vocabulary)).astype("float32"))
    outputs = tf.constant(np.random.default_rng(0).normal(size=(2, 3, model.decoder_units)), tf.float32)
    expected = (model.output_to_embedding(outputs).numpy() @ model.embedding.embeddings.numpy().T
                + model.output_bias.numpy())
    np.testing.assert_allclose(model.logits(outputs).numpy(), expected, rtol=1e-5, atol=1e-6)
    # The output side trains the embedding the encoder reads: one matrix, two uses.
    with tf.GradientTape() as tape:
        score = tf.reduce_sum(model.logits(outputs)[..., 5])
    gradient = tf.convert_to_tensor(tape.gradient(score, model.embedding.embeddings)).numpy()
    assert np.abs(gradient[5]).sum() > 0 and np.abs(np.delete(gradient, 5, axis=0)).sum() == 0
    untied = tiny_model(code_at_every_step=True)
    assert model.count_params() == untied.count_params() - untied.projection.count_params() + (
        model.output_to_embedding.count_params() + len(model.vocabulary))


def test_word_dropout_acts_only_in_training():
    model = tiny_model(word_dropout=0.5)
    ids = model.token_ids(tf.constant(CORPUS[:6]))
    code = model.encode(ids)
    inference = model.decode_teacher_forced(code, ids, training=False)
    np.testing.assert_allclose(model.decode_teacher_forced(code, ids, training=False), inference)
    assert not np.allclose(model.decode_teacher_forced(code, ids, training=True), inference)
    plain = tiny_model(word_dropout=0.0)
    np.testing.assert_allclose(plain.decode_teacher_forced(code, ids, training=True),
                               plain.decode_teacher_forced(code, ids, training=False))


@pytest.mark.parametrize("code_at_every_step, pooling, tie_embeddings",
                         [(False, "none", False), (True, "max", False), (True, "none", True)])
def test_mixed_float16_keeps_logits_and_loss_float32(code_at_every_step, pooling, tie_embeddings):
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = tiny_model(code_at_every_step=code_at_every_step, pooling=pooling, tie_embeddings=tie_embeddings)
        ids = model.token_ids(tf.constant(CORPUS[:4]))
        logits = model(ids)
        assert logits.dtype == "float32" and model.embedding.embeddings.dtype == "float32"
        loss = model.compute_loss(x=ids, y_pred=logits)
        assert loss.dtype == "float32" and np.isfinite(float(loss))
        assert model.reconstruct_text(tf.constant(TEXTS))["text"].shape == (len(TEXTS),)
        assert model.encode_text(tf.constant(TEXTS)).dtype == tf.float32
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_principal_components_match_a_known_direction():
    rng = np.random.default_rng(0)
    points = np.outer(rng.normal(size=200), [3.0, 4.0, 0.0]) + rng.normal(scale=0.01, size=(200, 3))
    projected, share = principal_components(points)
    assert projected.shape == (200, 2) and share[0] > 0.99
    np.testing.assert_allclose(np.abs(projected[:, 0]), np.abs((points - points.mean(0)) @ [0.6, 0.8, 0.0]), atol=0.05)


# --- the pipeline ----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def smoke_run(canonical_run):
    # The export was moved away from the run: nothing in it may point back at the training files.
    shared = canonical_run("autoencoder")
    return shared.result, shared.export, tf.saved_model.load(str(shared.export))


def test_reconstruction_metrics_count_unknown_reference_tokens():
    model = tiny_model(with_markers(["", "[UNK]", "film", "good"]))
    # References: "film [UNK] </s>" and "good </s>": 1 of 5 tokens is [UNK].
    scores = reconstruction_metrics(model, ["film zzz", "good"])
    assert scores["tokens"] == 5 and scores["unknown_share"] == pytest.approx(0.2)
    assert 0.0 <= scores["token_accuracy"] <= 1.0


def test_run_reports_reconstruction_metrics_and_the_pca_picture(smoke_run):
    result, _, _ = smoke_run
    metrics = json.loads((result.run_dir / "metrics.json").read_text())
    assert metrics["test_examples"] == 32 and metrics["test_tokens"] > 32
    assert 0.0 <= metrics["test_unknown_share"] < 1.0
    for name in ("test_token_accuracy", "test_exact_match", "test_teacher_forced_token_accuracy",
                 "test_beam_token_accuracy", "test_beam_exact_match"):
        assert 0.0 <= metrics[name] <= 1.0
    assert (result.run_dir / "embedding_pca.png").stat().st_size > 0 and len(metrics["pca_variance_share"]) == 2
    samples = (result.run_dir / "test_reconstructions.jsonl").read_text().splitlines()
    assert len(samples) == 32 and set(json.loads(samples[0])) == {"text", "reconstruction"}
    assert "val_token_accuracy" in (result.run_dir / "history.csv").read_text()


def test_export_reloads_from_a_moved_dir_and_runs_on_empty_and_unicode_text(smoke_run):
    result, _, loaded = smoke_run
    assert {"serving_default", "encode", "reconstruct", "vocabulary"} <= set(loaded.signatures)
    embedding = loaded.signatures["encode"](text=tf.constant(TEXTS))["embedding"].numpy()
    assert embedding.dtype == np.float32 and embedding.shape == (len(TEXTS), 16)
    default = loaded.signatures["serving_default"](text=tf.constant(TEXTS))["embedding"].numpy()
    np.testing.assert_allclose(default, embedding)
    model = keras.saving.load_model(result.run_dir / "model.keras")
    np.testing.assert_allclose(embedding, model.encode_text(tf.constant(TEXTS)).numpy(), atol=1e-5)
    reconstructions = loaded.signatures["reconstruct"](text=tf.constant(TEXTS))["text"].numpy()
    # The run asked for beam_width=2: the export reconstructs with that beam search, not greedily.
    expected = detokenize(model.reconstruct_text(tf.constant(TEXTS), beam_width=2)["text"]).numpy()
    assert reconstructions.tolist() == expected.tolist()
    assert reconstructions.shape == (len(TEXTS),) and not any(b"<s>" in text or b"</s>" in text for text in reconstructions)
    assert loaded.signatures["encode"](text=tf.constant([""]))["embedding"].shape == (1, 16)
    tokens = [token.decode() for token in loaded.signatures["vocabulary"]()["tokens"].numpy()]
    assert tokens == model.vocabulary


def test_cli_predict_prints_norm_and_reconstruction(smoke_run):
    _, moved, loaded = smoke_run
    output = CliRunner().invoke(cli, ["predict", "autoencoder", "--model", str(moved), "--show-embedding",
                                      "The film was great.", "Ça 🎬"])
    assert output.exit_code == 0, output.output
    lines = output.output.strip("\n").split("\n")
    assert len(lines) == 2
    norm, _, vector = lines[0].split("\t")
    expected = loaded.signatures["encode"](text=tf.constant(["The film was great."]))["embedding"].numpy()[0]
    assert float(norm) == pytest.approx(np.linalg.norm(expected), abs=1e-3)
    assert np.allclose(json.loads(vector), expected, atol=1e-5)
    piped = CliRunner().invoke(cli, ["predict", "autoencoder", "--model", str(moved)], input="a film\n\nthe cast\n")
    assert piped.exit_code == 0 and len(piped.output.strip().splitlines()) == 2


def test_multi30k_and_corpus_sources(tmp_path):
    multi30k = PIPELINE.load_data(resolve_config(AutoencoderConfig, "smoke", set_options={"dataset": "multi30k"}),
                                  FIXTURE_DATA)
    assert multi30k.info.sizes["train"] == 6 and multi30k.info.test_labels is None
    assert "dogs" in multi30k.info.vocabulary and multi30k.info.vocabulary[2:4] == ["<s>", "</s>"]
    (tmp_path / "corpus.txt").write_text("\n".join(CORPUS) + "\n\n")
    config = resolve_config(AutoencoderConfig, "smoke", set_options={"corpus": str(tmp_path / "corpus.txt")})
    datasets = PIPELINE.load_data(config, None)
    assert sum(datasets.info.sizes.values()) == len(CORPUS) and datasets.info.sizes["test"] >= 2
    batch = next(iter(datasets.train))
    assert batch.dtype == tf.int32 and batch.shape[1] <= config.max_length
    (tmp_path / "short.txt").write_text("one line\n")
    with pytest.raises(ConfigError, match="needs at least 3"):
        PIPELINE.load_data(resolve_config(AutoencoderConfig, "smoke", set_options={"corpus": str(tmp_path / "short.txt")}), None)
    with pytest.raises(ConfigError, match="dataset='wiki'"):
        resolve_config(AutoencoderConfig, "smoke", set_options={"dataset": "wiki"}).validate()
    with pytest.raises(ConfigError, match="pooling='last' is not one of none, max, mean"):
        resolve_config(AutoencoderConfig, "smoke", set_options={"pooling": "last"}).validate()
    with pytest.raises(ConfigError, match="beam_width=0 must be >= 1"):
        resolve_config(AutoencoderConfig, "smoke", set_options={"beam_width": "0"}).validate()
    tied = resolve_config(AutoencoderConfig, "smoke", set_options={"dataset": "multi30k", "tie_embeddings": "true"})
    model = PIPELINE.build_model(tied, multi30k)
    assert model.tie_embeddings and model.get_config()["tie_embeddings"] is True


# --- transfer into sentiment -----------------------------------------------------------------

@pytest.fixture(scope="module")
def sentiment():
    from rnnapps.pipelines.sentiment import PIPELINE as SENTIMENT

    def build(**overrides):
        config = resolve_config(SENTIMENT.config_class, "smoke", set_options=overrides)
        return SENTIMENT.build_model(config, datasets)

    datasets = SENTIMENT.load_data(resolve_config(SENTIMENT.config_class, "smoke"), FIXTURE_DATA)
    return build


def snapshot(model):
    return {weight.path: weight.numpy().copy() for weight in model.weights}


def assert_only_transferred(before, model, autoencoder):
    """Encoder = the autoencoder's; embedding rows of shared tokens = its rows, other rows and layers untouched."""
    vocabulary = model.get_layer("vectorizer").get_vocabulary()
    rows = {token: row for row, token in enumerate(autoencoder.vocabulary) if row > 0}
    source_encoder = [weight.numpy() for weight in autoencoder.encoder.weights]
    target_encoder = model.get_layer("encoder").weights
    assert len(source_encoder) == len(target_encoder) > 0
    for source, target in zip(source_encoder, target_encoder, strict=True):
        np.testing.assert_array_equal(target.numpy(), source)
    table = model.get_layer("embedding").embeddings.numpy()
    source_table = autoencoder.embedding.embeddings.numpy()
    for row, token in enumerate(vocabulary):
        expected = source_table[rows[token]] if row > 0 and token in rows else before["embedding/embeddings"][row]
        np.testing.assert_array_equal(table[row], expected)
    changed = {"embedding/embeddings"} | {weight.path for weight in target_encoder}
    for weight in model.weights:
        if weight.path not in changed:
            np.testing.assert_array_equal(weight.numpy(), before[weight.path], err_msg=weight.path)


def test_transfer_from_a_run_and_an_export_copies_exactly_the_intended_weights(smoke_run, sentiment):
    result, moved, _ = smoke_run
    autoencoder = keras.saving.load_model(result.run_dir / "model.keras")
    for source in (result.run_dir, moved):
        model = sentiment()
        before = snapshot(model)
        report = init_sentiment_from_autoencoder(model, source)
        assert report.coverage == 1.0 and report.encoder_weights_copied == 6
        assert_only_transferred(before, model, autoencoder)
    # The same through the sentiment config.
    configured = sentiment(init_from=str(result.run_dir))
    for source, target in zip(autoencoder.encoder.weights, configured.get_layer("encoder").weights, strict=True):
        np.testing.assert_array_equal(target.numpy(), source.numpy())


def test_a_sentiment_run_records_what_the_transfer_copied(smoke_run, tmp_path):
    result, _, _ = smoke_run
    run = runner.run("sentiment", "smoke", epochs=1, set_options={"init_from": str(result.run_dir)},
                     data_dir=str(FIXTURE_DATA), output_dir=str(tmp_path / "runs"), export_dir=None, verbose=0)
    recorded = json.loads((run.run_dir / "metrics.json").read_text())["init_from"]
    assert recorded["source"] == str(result.run_dir / "model.keras")
    assert recorded["coverage"] == 1.0 and recorded["encoder_weights_copied"] == 6
    # A later evaluation of the run scores a reloaded model.keras, which holds no transfer report:
    # the run's build record still goes into its metrics (the multi-worker chief's case too).
    assert runner.evaluate("sentiment", run_dir=str(run.run_dir), data_dir=str(FIXTURE_DATA))["init_from"] == recorded


def test_transfer_remaps_a_partly_shared_vocabulary(sentiment, tmp_path):
    autoencoder = tiny_model(with_markers(["", "[UNK]", "film", "zzz", "the"]), units=8, embedding_dim=8)
    autoencoder.save(tmp_path / "partial.keras")
    model = sentiment()
    before = snapshot(model)
    with pytest.warns(UserWarning, match="of the sentiment vocabulary is in the autoencoder's"):
        report = init_sentiment_from_autoencoder(model, tmp_path / "partial.keras")
    assert report.embedding_rows_copied == 3  # [UNK], film, the
    assert_only_transferred(before, model, autoencoder)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(units="4"), r"units \(8 in the autoencoder, 4 in sentiment\)"),
        (dict(cell="gru"), r"cell \('lstm' in the autoencoder, 'gru' in sentiment\)"),
        (dict(bidirectional="false", embedding_dim="6"), r"bidirectional .*embedding_dim \(8 in the autoencoder, 6"),
    ],
)
def test_transfer_refuses_different_encoders_and_changes_nothing(smoke_run, sentiment, overrides, message):
    model = sentiment(**overrides)
    before = snapshot(model)
    with pytest.raises(ConfigError, match=message):
        init_sentiment_from_autoencoder(model, smoke_run[0].run_dir)
    for weight in model.weights:
        np.testing.assert_array_equal(weight.numpy(), before[weight.path])


def test_transfer_refuses_what_is_not_a_usable_autoencoder(sentiment, tmp_path):
    model = sentiment()
    disjoint = tiny_model(with_markers(["", "[UNK]", "qqq"]))
    disjoint.save(tmp_path / "disjoint.keras")
    with pytest.raises(ConfigError, match="the vocabularies share no word"):
        init_sentiment_from_autoencoder(model, tmp_path / "disjoint.keras")
    model.save(tmp_path / "sentiment.keras")
    with pytest.raises(ConfigError, match="not a Seq2SeqAutoencoder"):
        init_sentiment_from_autoencoder(model, tmp_path / "sentiment.keras")
    with pytest.raises(ConfigError, match="neither an autoencoder run directory"):
        init_sentiment_from_autoencoder(model, tmp_path / "nowhere")


def test_describe_encoder_reads_the_architecture_from_weight_paths():
    shapes = {
        "bidirectional_gru_0/forward_gru_0/gru_cell/kernel": (8, 30),
        "bidirectional_gru_0/forward_gru_0/gru_cell/recurrent_kernel": (10, 30),
        "bidirectional_gru_1/forward_gru_1/gru_cell/kernel": (20, 30),
    }
    assert describe_encoder(shapes) == dict(cell="gru", units=10, depth=2, bidirectional=True, embedding_dim=8)


@pytest.mark.parametrize("preset", ["cpu", "full"])
def test_the_autoencoder_preset_encoder_matches_the_sentiment_preset_it_pretrains(preset):
    # `rnnapps run sentiment --set init_from=RUN` with the same preset on both sides must find the
    # same encoder shape; a preset change on one side alone would make that run fail.
    from rnnapps.pipelines.sentiment import SentimentConfig

    autoencoder, sentiment = resolve_config(AutoencoderConfig, preset), resolve_config(SentimentConfig, preset)
    fields = ("embedding_dim", "cell", "units", "depth", "bidirectional")
    assert {name: getattr(autoencoder, name) for name in fields} == {name: getattr(sentiment, name) for name in fields}
    # IMDB's validation split is a seeded permutation's head: with the same seed and a share at least
    # as large, every sentiment validation review is held out of the pretraining too.
    assert autoencoder.seed == sentiment.seed
    assert autoencoder.validation_fraction >= sentiment.validation_fraction


def test_a_smaller_validation_share_is_a_subset_of_a_larger_one():
    from rnnapps.data.imdb import split_validation

    texts, labels = [f"review {index}" for index in range(200)], np.arange(200) % 2
    (_, _), (small, _) = split_validation(texts, labels, 0.04, seed=5)
    (_, _), (large, _) = split_validation(texts, labels, 0.1, seed=5)
    assert len(small) == 8 and set(small) < set(large)
