import gzip
import shutil

import numpy as np
import pytest

from rnnapps.data import imdb, sources
from rnnapps.errors import DataFormatError, DataNotFoundError
from tests.conftest import FIXTURE_DATA


def test_reads_fixture_csv_layout():
    splits = imdb.load_imdb(FIXTURE_DATA)
    texts, labels = splits["train"]
    assert len(texts) == 96 and labels.dtype == np.int32 and set(labels) == {0, 1}
    assert "<br />" in " ".join(texts)  # raw text is kept; cleaning happens in the graph
    assert len(splits["test"][0]) == 32


def test_reads_gzipped_csv(tmp_path):
    (tmp_path / "imdb").mkdir()
    for split in ("train", "test"):
        with open(FIXTURE_DATA / "imdb" / f"{split}.csv", "rb") as source, gzip.open(tmp_path / "imdb" / f"{split}.csv.gz", "wb") as target:
            shutil.copyfileobj(source, target)
    plain, gzipped = imdb.load_imdb(FIXTURE_DATA), imdb.load_imdb(tmp_path)
    assert plain["train"][0] == gzipped["train"][0]


def test_reads_acl_imdb_folder(tmp_path):
    for split in ("train", "test"):
        for label in ("pos", "neg"):
            folder = tmp_path / "aclImdb" / split / label
            folder.mkdir(parents=True)
            for index in range(3):
                (folder / f"{index}_{8 if label == 'pos' else 2}.txt").write_text(f"{label} review {index} é", encoding="utf-8")
    texts, labels = imdb.load_imdb(tmp_path)["train"]
    assert len(texts) == 6 and labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert texts[0] == "neg review 0 é"


@pytest.mark.parametrize(
    "content, message",
    [
        ("text,label\n\"good\",1\n\"bad\",2\n", r"train.csv:3: expected 2 fields"),
        ("text,label\n\"good\",1,extra\n", r"train.csv:2: expected 2 fields"),
        ("review,sentiment\n\"good\",1\n", r"train.csv:1: expected the header"),
        ("", "empty file"),
        ("text,label\n", "no reviews"),
    ],
)
def test_malformed_csv_names_file_and_line(tmp_path, content, message):
    path = tmp_path / "train.csv"
    path.write_text(content)
    with pytest.raises(DataFormatError, match=message):
        imdb.read_csv(path)


def test_missing_local_files_name_expected_layout(tmp_path):
    with pytest.raises(DataNotFoundError, match=r"imdb/train.csv.gz, imdb/test.csv.gz"):
        imdb.load_imdb(tmp_path)


def test_offline_without_data_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(sources, "is_online", lambda timeout=3.0: False)
    with pytest.raises(DataNotFoundError, match=r"IMDB not found: expected imdb/train.csv.gz.*No network"):
        imdb.load_imdb(None)


def test_data_dir_must_exist(tmp_path):
    with pytest.raises(DataNotFoundError, match="does not exist"):
        sources.resolve_data_dir(tmp_path / "nope")


def test_validation_split_is_seeded_and_disjoint():
    texts = [f"t{i}" for i in range(50)]
    labels = np.arange(50) % 2
    (train_a, _), (val_a, _) = imdb.split_validation(texts, labels, 0.2, seed=3)
    (train_b, _), (val_b, _) = imdb.split_validation(texts, labels, 0.2, seed=3)
    assert val_a == val_b and len(val_a) == 10 and not set(val_a) & set(train_a)
    (_, _), (val_c, _) = imdb.split_validation(texts, labels, 0.2, seed=4)
    assert val_c != val_a
