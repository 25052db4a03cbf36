"""TokenFeatures and SequenceTagger (rnnapps.models.tagger) on their own: features, decoding, round trips."""

import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps.models import SequenceTagger, TokenFeatures
from tests.layer_checks import check_config_round_trip

TAGS = ["O", "B-PER", "I-PER"]
TOKENS = tf.constant([["Maria", "Lopez", "ran", ""], ["EU", "1996", "", ""]])


def _tagger(decoder="crf"):
    keras.utils.set_random_seed(0)
    tokens = keras.Input((None,), dtype="string")
    words, chars, case_ids = TokenFeatures(max_chars=6)(tokens)
    word_ids = keras.layers.StringLookup(vocabulary=["maria", "lopez", "ran", "eu"], mask_token="")(words)
    features = keras.layers.Concatenate()(
        [keras.layers.Embedding(6, 4)(word_ids), keras.layers.Embedding(8, 2)(case_ids)]
    )
    emissions = keras.layers.Dense(len(TAGS) + 1)(features)
    return SequenceTagger(keras.Model(tokens, emissions), tags=TAGS, decoder=decoder)


def test_token_features_pad_characters_and_categorise_case():
    layer = TokenFeatures(max_chars=3)
    check_config_round_trip(layer)
    words, chars, case_ids = layer(tf.constant([["Paris", ""]]))
    assert tuple(chars.shape) == (1, 2, 3)
    assert [c.decode() for c in chars.numpy()[0, 0]] == ["P", "a", "r"]
    assert chars.numpy()[0, 1].tolist() == [b"", b"", b""]
    assert words.numpy()[0, 0] == b"paris" and case_ids.dtype == tf.int32
    with pytest.raises(ValueError, match="max_chars"):
        TokenFeatures(max_chars=0)


@pytest.mark.parametrize("decoder", ["crf", "softmax"])
def test_tagger_tags_only_real_tokens_and_round_trips(decoder, tmp_path):
    tagger = _tagger(decoder)
    tags = tagger.tag(TOKENS).numpy()
    assert tags.shape == (2, 4)
    assert all(tag == b"" for tag in tags[TOKENS.numpy() == b""])
    assert all(tag.decode() in TAGS for tag in tags[TOKENS.numpy() != b""])

    path = tmp_path / "tagger.keras"
    tagger.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(reloaded.tag(TOKENS).numpy(), tags)
    np.testing.assert_allclose(reloaded(TOKENS), tagger(TOKENS), atol=1e-6)

    archive = keras.export.ExportArchive()
    archive.track(tagger)
    archive.add_endpoint("tag", lambda tokens: tagger.tag(tokens), input_signature=[tf.TensorSpec([None, None], tf.string)])
    archive.write_out(str(tmp_path / "first"), verbose=False)
    shutil.move(tmp_path / "first", tmp_path / "moved")
    served = tf.saved_model.load(str(tmp_path / "moved"))
    np.testing.assert_array_equal(served.tag(TOKENS).numpy(), tags)
    # Zero-width batches are padded to one step inside tag_ids and cut back.
    assert tuple(served.tag(tf.zeros([2, 0], tf.string)).shape) == (2, 0)


def test_tagger_rejects_a_mismatched_encoder():
    tokens = keras.Input((None,), dtype="string")
    ids = keras.layers.StringLookup(vocabulary=["a"], mask_token="")(tokens)
    with pytest.raises(ValueError, match="len\\(tags\\) \\+ 1"):
        SequenceTagger(keras.Model(tokens, keras.layers.Embedding(3, 7)(ids)), tags=TAGS)


@pytest.mark.parametrize("decoder", ["crf", "softmax"])
def test_confidence_is_the_probability_of_the_chosen_tag(decoder):
    tagger = _tagger(decoder)
    outputs = tagger.tag_with_confidence(TOKENS)
    np.testing.assert_array_equal(outputs["tags"].numpy(), tagger.tag(TOKENS).numpy())
    emissions, mask, _ = tagger._emissions(TOKENS)
    if decoder == "crf":
        probabilities = tagger.crf.marginals(emissions, mask).numpy()
    else:
        probabilities = tf.nn.softmax(emissions).numpy()
    ids = tagger.tag_ids(TOKENS).numpy()
    expected = np.take_along_axis(probabilities, ids[..., None], axis=-1)[..., 0] * mask.numpy()
    np.testing.assert_allclose(outputs["confidence"].numpy(), expected, atol=1e-6)
    real = outputs["confidence"].numpy()[TOKENS.numpy() != b""]
    assert (real > 0).all() and (real <= 1 + 1e-6).all()
    if decoder == "softmax":
        # The argmax of three real tags (padding ruled out) has at least a third of the mass.
        assert (real >= 1 / 3 - 1e-6).all()
    assert (outputs["confidence"].numpy()[TOKENS.numpy() == b""] == 0).all()


def test_n_best_tag_sequences_start_with_viterbi_and_need_a_crf():
    tagger = _tagger("crf")
    best = tagger.n_best(TOKENS, 4)
    tags, scores = best["tags"].numpy(), best["log_probabilities"].numpy()
    assert tags.shape == (2, 4, 4) and scores.shape == (2, 4)
    np.testing.assert_array_equal(tags[:, 0], tagger.tag(TOKENS).numpy())
    assert np.all(np.diff(scores, axis=1) <= 1e-6)
    assert (tags[:, :, 3] == b"").all() and all(len({tuple(row) for row in sentence}) == 4 for sentence in tags)
    with pytest.raises(ValueError, match="need a CRF decoder"):
        _tagger("softmax").n_best(TOKENS, 2)


def test_ner_tagger_word_dropout_acts_in_training_only_and_survives_a_keras_round_trip(tmp_path):
    from rnnapps.models.tagger import build_ner_tagger

    keras.utils.set_random_seed(0)
    words = keras.layers.StringLookup(vocabulary=["maria", "lopez", "ran", "eu"], mask_token="", oov_token="[UNK]")
    chars = keras.layers.StringLookup(vocabulary=list("marilopezn"), mask_token="", oov_token="[UNK]")
    tagger = build_ner_tagger(words, chars, TAGS, word_embedding_dim=4, char_filters=4, units=4,
                              dropout=0.0, word_dropout=0.5, seed=1)
    assert tagger.encoder.get_layer("word_dropout").rate == 0.5
    inference = [tagger.encoder(TOKENS, training=False) for _ in range(2)]
    np.testing.assert_array_equal(*(keras.ops.convert_to_numpy(e) for e in inference))
    training = [keras.ops.convert_to_numpy(tagger.encoder(TOKENS, training=True)) for _ in range(4)]
    assert any(np.abs(t - training[0]).max() > 1e-6 for t in training[1:])
    path = tmp_path / "tagger.keras"
    tagger.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(reloaded.tag_ids(TOKENS).numpy(), tagger.tag_ids(TOKENS).numpy())
