import gzip
import logging
import shutil

import numpy as np
import pytest
import tensorflow as tf

from rnnapps import text_ops
from rnnapps.data import conll
from rnnapps.data.embeddings import read_word_vectors, vector_file_words
from rnnapps.errors import DataNotFoundError
from tests.conftest import FIXTURE_DATA

CONLL = FIXTURE_DATA / "conll2003"


def test_iob1_to_iob2():
    assert conll.iob1_to_iob2(["O", "I-PER", "I-PER", "O"]) == ["O", "B-PER", "I-PER", "O"]
    assert conll.iob1_to_iob2(["I-PER", "B-PER", "I-PER"]) == ["B-PER", "B-PER", "I-PER"]
    assert conll.iob1_to_iob2(["I-ORG", "I-LOC", "I-LOC", "B-LOC"]) == ["B-ORG", "B-LOC", "I-LOC", "B-LOC"]
    iob2 = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]
    assert conll.iob1_to_iob2(iob2) == iob2
    assert conll.detect_scheme(["O", "I-PER"]) == "iob1"
    assert conll.detect_scheme(iob2) == "iob2"


def test_read_iob1_file_converts_and_drops_docstart():
    sentences = conll.read_conll(CONLL / "iob1" / "eng.train")
    assert len(sentences) == 4
    assert all(conll.DOCSTART not in s.tokens for s in sentences)
    assert sentences[0].tokens == ["EU", "rejects", "German", "call", "."]
    assert sentences[0].tags == ["B-ORG", "O", "B-MISC", "O", "O"]
    assert sentences[1].tags == ["B-PER", "I-PER"]
    assert sentences[2].tags == ["O", "O", "B-PER", "I-PER", "B-PER", "I-PER", "O", "B-LOC", "O"]
    assert sentences[3].tags == ["B-ORG", "B-LOC", "B-ORG", "I-ORG", "O"]


def test_read_iob2_splits_and_gz_copy(tmp_path):
    splits = conll.find_conll_splits(FIXTURE_DATA)
    assert splits == {split: FIXTURE_DATA / "conll2003" / f"{split}.txt" for split in conll.SPLITS}
    train = conll.read_conll(splits["train"])
    assert len(train) == 6 and train[0].tokens[:2] == ["Maria", "Lopez"]
    assert train[0].tags == ["B-PER", "I-PER", "O", "B-LOC", "O", "O", "O"]
    assert all(len(s.tokens) == len(s.tags) for s in train)
    # A gzipped copy (any file name) reads the same, and the loader finds it.
    (tmp_path / "conll2003").mkdir()
    for split in conll.SPLITS:
        with open(splits[split], "rb") as source, gzip.open(tmp_path / "conll2003" / f"{split}.txt.gz", "wb") as target:
            shutil.copyfileobj(source, target)
    loaded = conll.load_conll_splits(tmp_path)
    assert loaded["train"] == train
    assert [len(loaded[s]) for s in conll.SPLITS] == [6, 6, 6]


def test_original_layouts_are_found(tmp_path):
    for name in ("eng.train", "eng.testa", "eng.testb.gz"):
        shutil.copy(CONLL / "iob1" / "eng.train", tmp_path / name)
    found = conll.find_conll_splits(tmp_path)
    assert found == {"train": tmp_path / "eng.train", "valid": tmp_path / "eng.testa", "test": tmp_path / "eng.testb.gz"}
    nested = tmp_path / "nested" / "conll2003" / "iob1_original"
    nested.mkdir(parents=True)
    for name in ("eng.train", "eng.testa", "eng.testb"):
        shutil.copy(CONLL / "iob1" / "eng.train", nested / name)
    assert conll.find_conll_splits(tmp_path / "nested")["valid"] == nested / "eng.testa"


def test_missing_files_name_the_expected_layout(tmp_path):
    (tmp_path / "conll2003").mkdir()
    (tmp_path / "conll2003" / "train.txt").write_text("a O\n")
    with pytest.raises(DataNotFoundError, match=r"conll2003/\{train,valid,test\}\.txt.*eng\.\{train,testa,testb\}"):
        conll.find_conll_splits(tmp_path)


@pytest.mark.parametrize(
    "bad_line", ["lonely\n", "EU NNP I-NP ORG\n", "EU NNP I-NP E-ORG\n"]
)
def test_malformed_line_names_file_and_line(tmp_path, bad_line):
    path = tmp_path / "bad.txt"
    path.write_text("-DOCSTART- -X- -X- O\n\nEU NNP B-NP B-ORG\n\nrejects VBZ B-VP O\n" + bad_line)
    with pytest.raises(ValueError, match=rf"bad\.txt:6: .*{bad_line.strip()!r}"):
        conll.read_conll(path)


def test_vocabularies_come_from_train_only():
    splits = conll.load_conll_splits(FIXTURE_DATA)
    vocab = conll.Vocabularies.from_sentences(splits["train"], min_word_count=1)
    assert "oslo" not in vocab.words and "lopez" in vocab.words
    assert "0000-00-00" in vocab.words and "1996-08-22" not in vocab.words
    assert vocab.tags[0] == "O" and set(vocab.tags) == {"O"} | {f"{p}-{t}" for p in "BI" for t in ("PER", "LOC", "ORG", "MISC")}
    assert vocab.num_tag_ids == len(vocab.tags) + 1
    frequent = conll.Vocabularies.from_sentences(splits["train"], min_word_count=2, extra_words=["oslo", "acme"])
    assert "acme" in frequent.words and "maria" not in frequent.words and frequent.words[-1] == "oslo"
    # A file word seen in training (a singleton here) comes before the file-only words, so the
    # rows training can reach are a prefix of the lookup.
    with_singleton = conll.Vocabularies.from_sentences(splits["train"], min_word_count=2, extra_words=["oslo", "maria"])
    assert with_singleton.words[-2:] == ["maria", "oslo"]
    assert with_singleton.trained_word_rows == 2 + len(with_singleton.words) - 1
    assert conll.Vocabularies(words=["a", "b"], chars=[], tags=[]).trained_word_rows == 4
    assert with_singleton.updated_word_rows == with_singleton.trained_word_rows
    # Keeping the vectors fixed: training words without a vector first, so the rows training
    # updates are a prefix; the same words, and a file word seen in training is still a row.
    fixed = conll.Vocabularies.from_sentences(splits["train"], min_word_count=2, extra_words=["the", "maria", "oslo"],
                                              keep_vectors_fixed=True)
    leading = fixed.words[: fixed.updated_word_rows - 2]
    assert leading and "the" not in leading and "maria" not in leading
    assert set(fixed.words) == set(conll.Vocabularies.from_sentences(
        splits["train"], min_word_count=2, extra_words=["the", "maria", "oslo"]).words)
    assert fixed.words[fixed.updated_word_rows - 2:] == ["the", "maria", "oslo"]
    assert fixed.trained_word_rows == 2 + len(fixed.words) - 1
    with pytest.raises(ValueError, match="min_word_count"):
        conll.Vocabularies.from_sentences(splits["train"], min_word_count=0)


def test_normalise_word_matches_graph_version():
    words = ["Paris", "1996-08-22", "U.S.", "3,000", ""]
    assert [text_ops.normalise_word(w) for w in words] == ["paris", "0000-00-00", "u.s.", "0,000", ""]
    graph = text_ops.normalise_words(tf.constant(words)).numpy().astype(str).tolist()
    assert graph == [text_ops.normalise_word(w) for w in words]


def test_case_feature_ids():
    tokens = ["", "lamb", "EU", "U.S.", "Peter", "McDonald", "1996", "3,000.5", "1996-08-22", "A4", ".", "--", "A", "don't"]
    expected = ["padding", "lower", "upper", "upper", "title", "mixed", "numeric", "numeric",
                "has_digit", "has_digit", "other", "other", "upper", "lower"]
    ids = text_ops.case_feature_ids(tf.constant(tokens)).numpy()
    assert ids.dtype == np.int32
    assert [text_ops.CASE_CATEGORIES[i] for i in ids] == expected


def _lookups():
    vocab = conll.Vocabularies.from_sentences(conll.load_conll_splits(FIXTURE_DATA)["train"])
    return vocab, conll.make_lookup_layers(vocab)


def test_featurize_shapes_padding_and_oov():
    vocab, (word_lookup, char_lookup, tag_lookup) = _lookups()
    tokens = tf.constant([["Maria", "visited", "Oslo", ""], ["Acme", "", "", ""]])
    features = conll.featurize(tokens, word_lookup, char_lookup)
    assert features["word_ids"].shape == (2, 4) and features["case_ids"].shape == (2, 4)
    assert features["char_ids"].shape == (2, 4, 7)
    word_ids = features["word_ids"].numpy()
    assert word_ids[0, 2] == 1 and word_ids[0, 3] == 0 and (word_ids[1, 1:] == 0).all()
    assert word_ids[0, 0] == vocab.words.index("maria") + 2
    char_ids = features["char_ids"].numpy()
    assert (char_ids[0, 3] == 0).all() and (char_ids[1, 0, 4:] == 0).all() and (char_ids[1, 0, :4] > 0).all()
    assert char_ids[0, 0, 0] == vocab.chars.index("M") + 2
    truncated = conll.featurize(tokens[0], word_lookup, char_lookup, max_chars=3)
    assert truncated["char_ids"].shape == (4, 3)
    padded = conll.featurize(tf.constant([["a", ""]]), word_lookup, char_lookup, max_chars=5)["char_ids"]
    assert padded.shape == (1, 2, 5)
    tag_ids = tag_lookup(tf.constant([["O", "B-PER", ""]])).numpy()
    assert tag_ids.tolist() == [[1, vocab.tags.index("B-PER") + 1, 0]]
    decoded = conll.make_tag_decoder(vocab)(tf.constant(tag_ids)).numpy().astype(str)
    assert decoded.tolist() == [["O", "B-PER", ""]]


def test_featurize_runs_in_dataset_map_and_a_traced_signature():
    _, (word_lookup, char_lookup, _) = _lookups()
    featurizer = conll.make_featurizer(word_lookup, char_lookup)
    sentences = tf.data.Dataset.from_generator(
        lambda: iter([["Maria", "won"], ["Acme"]]), output_signature=tf.TensorSpec([None], tf.string)
    )
    batches = sentences.padded_batch(2, padded_shapes=[None], padding_values="").map(featurizer)
    batch = next(iter(batches))
    assert batch["char_ids"].shape == (2, 2, 5)
    serving = tf.function(featurizer, input_signature=[tf.TensorSpec([None, None], tf.string)])
    eager = featurizer(tf.constant([["Maria", "won"], ["Acme", ""]]))
    traced = serving(tf.constant([["Maria", "won"], ["Acme", ""]]))
    for key in eager:
        np.testing.assert_array_equal(traced[key].numpy(), eager[key].numpy())
        np.testing.assert_array_equal(batch[key].numpy(), eager[key].numpy())


def test_read_word_vectors(tmp_path, caplog):
    vocabulary = ["", "[UNK]", "paris", "unseen", "0000", "rome"]
    with caplog.at_level(logging.INFO, logger="rnnapps.data.embeddings"):
        matrix = read_word_vectors(CONLL / "glove.txt", vocabulary, seed=1)
    assert "3 of 5" in caplog.text
    assert matrix.shape == (6, 3) and matrix.dtype == np.float32
    np.testing.assert_array_equal(matrix[0], 0.0)
    np.testing.assert_allclose(matrix[2], [0.5, -0.5, 0.25])
    np.testing.assert_allclose(matrix[4], [0.9, 0.9, 0.9])
    assert np.abs(matrix[3]).sum() > 0 and np.abs(matrix[3]).max() < 5
    np.testing.assert_array_equal(matrix, read_word_vectors(CONLL / "glove.txt", vocabulary, seed=1))
    # Normalised file words: the first vector of "1996" -> "0000" loses to the earlier "0000".
    gz = tmp_path / "vectors.txt.gz"
    with open(CONLL / "glove.txt", "rb") as source, gzip.open(gz, "wb") as target:
        shutil.copyfileobj(source, target)
    normalised = read_word_vectors(gz, vocabulary, dim=3, normalise=text_ops.normalise_word)
    np.testing.assert_allclose(normalised[4], [0.9, 0.9, 0.9])
    assert vector_file_words(gz, normalise=text_ops.normalise_word) == ["the", "paris", "rome", "0000", "acme", "oslo"]


def test_read_word_vectors_errors(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("the 0.1 0.2\nparis 0.3\n")
    with pytest.raises(ValueError, match=r"bad\.txt:2: expected a word and 2 values"):
        read_word_vectors(bad, ["", "the"])
    with pytest.raises(ValueError, match=r"bad\.txt:1: expected a word and 3 values"):
        read_word_vectors(bad, ["", "the"], dim=3)
    bad.write_text("the 0.1 x\n")
    with pytest.raises(ValueError, match=r"bad\.txt:1: values of 'the'"):
        read_word_vectors(bad, ["", "the"])
    with pytest.raises(ValueError, match="dim"):
        read_word_vectors(bad, ["the"], dim=0)


def test_featurize_exports_in_a_saved_model(tmp_path):
    import keras

    _, (word_lookup, char_lookup, _) = _lookups()
    archive = keras.export.ExportArchive()
    archive.track(word_lookup)
    archive.track(char_lookup)
    featurizer = conll.make_featurizer(word_lookup, char_lookup, max_chars=4)
    archive.add_endpoint("featurize", featurizer, input_signature=[tf.TensorSpec([None, None], tf.string)])
    archive.write_out(str(tmp_path / "first"), verbose=False)
    shutil.move(tmp_path / "first", tmp_path / "moved")
    reloaded = tf.saved_model.load(str(tmp_path / "moved"))
    tokens = tf.constant([["Maria", "Oslo", ""]])
    for key, value in featurizer(tokens).items():
        np.testing.assert_array_equal(reloaded.featurize(tokens)[key].numpy(), value.numpy())
