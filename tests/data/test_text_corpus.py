import gzip

import numpy as np
import pytest
import tensorflow as tf

from rnnapps import text_ops
from rnnapps.data import sources
from rnnapps.data.text_corpus import (
    build_char_vocabulary,
    load_corpus,
    split_corpus,
    text_to_ids,
)
from rnnapps.errors import DataNotFoundError
from rnnapps.text_ops import decode_ids, encode_text, make_char_lookup

POEM = "Shall I compare thee\nto a summer’s day?\n"


def test_single_file(tmp_path):
    path = tmp_path / "poem.txt"
    path.write_text(POEM, encoding="utf-8")
    assert load_corpus(corpus=path) == POEM
    assert load_corpus(corpus=str(path)) == POEM


def test_gzipped_file(tmp_path):
    path = tmp_path / "poem.txt.gz"
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(POEM)
    assert load_corpus(corpus=path) == POEM


def test_folder_in_sorted_order(tmp_path):
    (tmp_path / "b.txt").write_text("second\n", encoding="utf-8")
    (tmp_path / "a.txt").write_text("first", encoding="utf-8")
    with gzip.open(tmp_path / "c.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("third\n")
    (tmp_path / "notes.md").write_text("ignored", encoding="utf-8")
    assert load_corpus(corpus=tmp_path) == "first\nsecond\nthird\n"


def test_relative_corpus_resolved_against_data_dir(tmp_path):
    (tmp_path / "poem.txt").write_text(POEM, encoding="utf-8")
    assert load_corpus(data_dir=tmp_path, corpus="poem.txt") == POEM


def test_local_tiny_shakespeare(tmp_path):
    (tmp_path / "shakespeare").mkdir()
    with gzip.open(tmp_path / "shakespeare" / "input.txt.gz", "wt", encoding="utf-8") as handle:
        handle.write("First Citizen:\n")
    assert load_corpus(data_dir=tmp_path) == "First Citizen:\n"


def test_tfds_splits_are_joined(tmp_path, monkeypatch):
    def fake_load_tfds(name, split, *args, **kwargs):
        assert name == "tiny_shakespeare"
        texts = {"train": "First ", "validation": "Citizen", "test": ":\n"}
        return [tf.data.Dataset.from_tensor_slices({"text": [texts[part]]}) for part in split]

    monkeypatch.setattr(sources, "load_tfds", fake_load_tfds)
    assert load_corpus(data_dir=tmp_path) == "First Citizen:\n"


def test_empty_corpus_is_an_error(tmp_path):
    path = tmp_path / "empty.txt"
    path.write_text("", encoding="utf-8")
    (tmp_path / "folder_without_text").mkdir()
    with pytest.raises(ValueError, match="empty"):
        load_corpus(corpus=path)
    with pytest.raises(DataNotFoundError, match="no \\*.txt"):
        load_corpus(corpus=tmp_path / "folder_without_text")


def test_non_utf8_names_the_file(tmp_path):
    path = tmp_path / "latin1.txt"
    path.write_bytes("caf\xe9\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin1.txt.*not UTF-8"):
        load_corpus(corpus=path)


def test_missing_corpus_path(tmp_path):
    with pytest.raises(DataNotFoundError, match="missing.txt"):
        load_corpus(corpus=tmp_path / "missing.txt")


def test_offline_without_local_copy_names_expected_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "is_online", lambda timeout=3.0: False)
    with pytest.raises(DataNotFoundError, match="shakespeare/input.txt.*No network"):
        load_corpus(data_dir=tmp_path)


def test_split_is_contiguous():
    text = "".join(chr(ord("a") + index % 26) for index in range(200))
    train, validation, test = split_corpus(text)
    assert (len(train), len(validation), len(test)) == (180, 10, 10)
    assert train + validation + test == text
    with pytest.raises(ValueError, match="fractions"):
        split_corpus(text, (0.5, 0.2))
    with pytest.raises(ValueError, match="empty"):
        split_corpus("abc", (0.9, 0.05, 0.05))


def test_vocabulary_lookup_and_unknown_characters():
    vocabulary = build_char_vocabulary(POEM)
    assert vocabulary == sorted(set(POEM)) and "’" in vocabulary and "\n" in vocabulary
    lookup, inverse = make_char_lookup(vocabulary)
    assert lookup.vocabulary_size() == len(vocabulary) + 1
    ids = text_to_ids(POEM, lookup)
    assert ids.dtype == np.int32 and len(ids) == len(POEM) and ids.min() >= 1
    assert decode_ids(ids, inverse).numpy().decode("utf-8") == POEM
    unknown = encode_text(tf.constant("Zé!"), lookup).numpy()
    np.testing.assert_array_equal(unknown, [0, 0, 0])
    assert decode_ids(unknown, inverse).numpy() == b"[UNK][UNK][UNK]"
    with pytest.raises(ValueError, match="single characters"):
        make_char_lookup(["ab"])


def test_lookup_runs_in_graph():
    lookup, _ = make_char_lookup(build_char_vocabulary("abc"))
    encode = tf.function(lambda text: encode_text(text, lookup), input_signature=[tf.TensorSpec([], tf.string)])
    np.testing.assert_array_equal(encode(tf.constant("cab?")), [3, 1, 2, 0])
    assert text_ops.OOV_TOKEN == "[UNK]"
