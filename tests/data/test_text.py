import numpy as np
import pytest
import tensorflow as tf

from rnnapps.data.text import bucket_boundaries, build_vocabulary, text_label_dataset
from rnnapps.models import ClipSequenceLength
from rnnapps.text_ops import make_vectorizer, standardize_text, token_counts, tokenize_words
from tests.layer_checks import check_layer


def test_standardize_lowercases_drops_br_and_splits_punctuation():
    out = standardize_text(tf.constant(["Great movie!<br /><br />Don't MISS it, ÉTÉ 10/10"])).numpy()[0].decode()
    assert out == "great movie ! don't miss it , été 10 / 10"


def test_token_counts_match_vectorizer_lengths():
    texts = ["a b c", "", "Hello, world!", "x"]
    vectorizer = make_vectorizer(build_vocabulary(texts, 50))
    ids = vectorizer(tf.constant(texts)).numpy()
    assert token_counts(tf.constant(texts)).numpy().tolist() == (ids > 0).sum(axis=1).tolist() == [3, 0, 4, 1]


def test_bucketing_groups_similar_lengths():
    rng = np.random.default_rng(0)
    texts = [" ".join(["w"] * int(n)) for n in rng.integers(1, 100, size=200)]
    dataset = text_label_dataset(texts, np.zeros(200, "int32"), batch_size=8, max_length=80, bucket_width=20, shuffle=True, seed=0)
    seen = 0
    for text, _ in dataset:
        lengths = np.minimum(token_counts(text).numpy(), 80)
        assert lengths.max() // 20 == lengths.min() // 20 or lengths.max() == 80, lengths
        seen += len(lengths)
    assert seen == 200
    assert bucket_boundaries(80, 20) == [20, 40, 60, 80]


def test_clip_sequence_length(tmp_path):
    ids = np.arange(1, 11, dtype="int64").reshape(2, 5)
    check_layer(ClipSequenceLength(3), ids, tmp_path, expected_output_shape=(2, 3))
    empty = ClipSequenceLength(4, min_length=1)(np.zeros((2, 0), "int64"))
    assert tuple(empty.shape) == (2, 1)


def test_clip_sequence_length_keeps_head_tail_or_both(tmp_path):
    ids = np.array([[1, 2, 3, 4, 5, 6, 7, 8], [9, 10, 11, 0, 0, 0, 0, 0]], "int64")
    np.testing.assert_array_equal(ClipSequenceLength(4, keep="head")(ids), [[1, 2, 3, 4], [9, 10, 11, 0]])
    np.testing.assert_array_equal(ClipSequenceLength(4, keep="tail")(ids), [[5, 6, 7, 8], [9, 10, 11, 0]])
    np.testing.assert_array_equal(ClipSequenceLength(4, keep="head_tail")(ids), [[1, 6, 7, 8], [9, 10, 11, 0]])
    np.testing.assert_array_equal(ClipSequenceLength(10, keep="tail")(ids), ids)
    check_layer(ClipSequenceLength(4, keep="head_tail"), ids, tmp_path, expected_output_shape=(2, 4))
    with pytest.raises(ValueError, match="keep"):
        ClipSequenceLength(4, keep="middle")


def test_tokenize_words_splits_like_conll_and_keeps_case():
    tokens = tokenize_words(tf.constant(['EU rejects German call to boycott British lamb.', 'U.S. troops, (Germany\'s) "won" 3,000.', ""]))
    rows = [[t.decode() for t in row if t] for row in tokens.numpy()]
    assert rows[0] == ["EU", "rejects", "German", "call", "to", "boycott", "British", "lamb", "."]
    assert rows[1] == ["U.S.", "troops", ",", "(", "Germany", "'s", ")", '"', "won", '"', "3,000", "."]
    assert rows[2] == []
    assert tokenize_words(tf.constant(["", ""])).numpy().tolist() == [[b""], [b""]]
