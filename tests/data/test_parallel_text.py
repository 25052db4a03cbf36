import gzip
import logging
import shutil

import pytest

from rnnapps.data import parallel_text, sources
from rnnapps.data.parallel_text import (
    MULTI30K_COMMIT,
    load_parallel_corpus,
    read_anki,
    read_parallel_files,
    split_by_source_sentence,
)
from rnnapps.errors import DataNotFoundError
from tests.conftest import FIXTURE_DATA


def test_multi30k_fixture_both_directions():
    corpus = load_parallel_corpus("multi30k", "de", "en", data_dir=FIXTURE_DATA)
    assert {split: len(pairs) for split, pairs in corpus.items()} == {
        "train": 6,
        "validation": 3,
        "test": 3,
    }
    assert corpus["train"][1] == ("Ein Mann fährt Fahrrad.", "A man rides a bicycle.")
    assert corpus["test"][0] == ("Eine Frau fährt Fahrrad.", "A woman rides a bicycle.")
    reverse = load_parallel_corpus("multi30k", "en", "de", data_dir=FIXTURE_DATA)
    assert reverse["validation"] == [(en, de) for de, en in corpus["validation"]]
    # The dataset folder itself is accepted as data_dir; source/target default to de -> en.
    assert load_parallel_corpus("multi30k", data_dir=FIXTURE_DATA / "multi30k") == corpus


def test_multi30k_plain_files_and_upstream_test_name(tmp_path):
    folder = tmp_path / "multi30k"
    folder.mkdir()
    for path in (FIXTURE_DATA / "multi30k").glob("*.gz"):
        stem = path.name[: -len(".gz")].replace("test2016", "test_2016_flickr")
        (folder / stem).write_bytes(gzip.decompress(path.read_bytes()))
    assert load_parallel_corpus("multi30k", data_dir=tmp_path) == load_parallel_corpus(
        "multi30k", data_dir=FIXTURE_DATA
    )


def test_mismatched_line_counts_name_both_files(tmp_path):
    (tmp_path / "a.de").write_text("eins\nzwei\ndrei\n", encoding="utf-8")
    (tmp_path / "a.en").write_text("one\ntwo\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"a\.de.* 3 lines .*a\.en.* 2"):
        read_parallel_files(tmp_path / "a.de", tmp_path / "a.en")


def test_empty_lines_are_dropped_with_a_count(tmp_path, caplog):
    (tmp_path / "b.de").write_text("eins\n\ndrei \nvier\n", encoding="utf-8")
    (tmp_path / "b.en").write_text("one\ntwo\n three\n \n", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="rnnapps.data.parallel_text"):
        pairs = read_parallel_files(tmp_path / "b.de", tmp_path / "b.en")
    assert pairs == [("eins", "one"), ("drei", "three")]
    assert "dropped 2 pair(s)" in caplog.text


def test_missing_multi30k_names_the_files(tmp_path):
    with pytest.raises(
        DataNotFoundError, match=r"multi30k/train\.de\.gz.*multi30k/test2016\.en\.gz"
    ):
        load_parallel_corpus("multi30k", data_dir=tmp_path)


def test_multi30k_download_uses_pinned_urls_and_checksums(monkeypatch):
    calls = []

    def fake_download(url, sha256, filename, dataset, expected, data_dir):
        calls.append((url, sha256, filename))
        local = filename.replace("multi30k_", "").replace("test_2016_flickr", "test2016")
        return FIXTURE_DATA / "multi30k" / local

    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)
    monkeypatch.setattr(sources, "download", fake_download)
    corpus = load_parallel_corpus("multi30k", "de", "en")
    assert len(corpus["train"]) == 6
    assert len(calls) == 6
    urls = {url for url, _, _ in calls}
    assert (
        f"https://raw.githubusercontent.com/multi30k/dataset/{MULTI30K_COMMIT}/data/task1/raw/test_2016_flickr.en.gz"
        in urls
    )
    sha_by_file = {filename: sha for _, sha, filename in calls}
    assert sha_by_file["multi30k_train.de.gz"].startswith("726e39b2")
    assert sha_by_file["multi30k_test_2016_flickr.en.gz"].startswith("611d361c")


def test_anki_split_is_seeded_and_keeps_sentences_together():
    corpus = load_parallel_corpus("anki", "en", "es", data_dir=FIXTURE_DATA, seed=0)
    all_pairs = read_anki(FIXTURE_DATA / "anki" / "spa-eng.txt.gz")
    assert len(all_pairs) == 12 and all_pairs[0] == ("Go.", "Ve.")
    assert sorted(p for pairs in corpus.values() for p in pairs) == sorted(all_pairs)
    assert [len(corpus[split]) for split in ("validation", "test")] in ([1, 1], [2, 1], [1, 2])
    # The two translations of "Go." share a split.
    assert len({split for split, pairs in corpus.items() for en, _ in pairs if en == "Go."}) == 1
    assert load_parallel_corpus("anki", "en", "es", data_dir=FIXTURE_DATA, seed=0) == corpus
    others = [
        load_parallel_corpus("anki", "en", "es", data_dir=FIXTURE_DATA, seed=s) for s in (1, 2, 3)
    ]
    assert any(other != corpus for other in others)
    # Default direction es -> en reverses the pairs, same split.
    reverse = load_parallel_corpus("anki", data_dir=FIXTURE_DATA, seed=0)
    assert reverse["train"] == [(es, en) for en, es in corpus["train"]]


def test_split_fractions():
    pairs = [(f"s{i}", f"t{i}") for i in range(100)]
    splits = split_by_source_sentence(pairs, seed=4)
    assert [len(splits[name]) for name in ("train", "validation", "test")] == [80, 10, 10]
    assert splits["train"] == sorted(splits["train"], key=pairs.index)


def test_anki_bad_line_and_extra_columns(tmp_path):
    path = tmp_path / "spa.txt"
    path.write_text("Go.\tVe.\tCC-BY 2.0 (France) Attribution\n\nHi.\tHola.\n", encoding="utf-8")
    assert read_anki(path) == [("Go.", "Ve."), ("Hi.", "Hola.")]
    path.write_text("Go.\tVe.\nno tab here\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"line 2: expected 'English<TAB>Spanish'"):
        read_anki(path)


def test_anki_local_layouts_and_missing_file(tmp_path):
    shutil.copy(FIXTURE_DATA / "anki" / "spa-eng.txt.gz", tmp_path / "spa-eng.txt.gz")
    assert len(load_parallel_corpus("anki", data_dir=tmp_path)["train"]) >= 8
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataNotFoundError, match=r"anki/spa-eng\.txt\.gz.*manythings\.org/anki"):
        load_parallel_corpus("anki", data_dir=empty)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": "wmt14"}, "dataset"),
        ({"dataset": "multi30k", "source": "fr"}, "source"),
        ({"dataset": "anki", "source": "de"}, "source"),
        ({"dataset": "anki", "source": "en", "target": "en"}, "different"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_parallel_corpus(data_dir=FIXTURE_DATA, **kwargs)


def test_module_constants_cover_every_split():
    assert set(parallel_text.MULTI30K_SHA256) == {
        (split, language) for split in parallel_text.SPLITS for language in ("de", "en")
    }
