"""IMDB movie reviews (Maas et al. 2011): 25,000 train and 25,000 test, labelled 0/1.

Sources, in order: ``imdb/{train,test}.csv[.gz]`` (header ``text,label``) or an
extracted ``aclImdb/{train,test}/{pos,neg}/*.txt`` folder in the local data
directory; else tensorflow-datasets ``imdb_reviews``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from rnnapps.data import sources
from rnnapps.errors import DataFormatError

EXPECTED_FILES = ("imdb/train.csv.gz", "imdb/test.csv.gz")
SPLITS = ("train", "test")


def read_csv(path: str | Path) -> tuple[list[str], np.ndarray]:
    """Read a ``text,label`` CSV (plain or gzipped); errors name the file and line."""
    texts, labels = [], []
    with sources.open_text(path) as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader)
        except StopIteration:
            raise DataFormatError(f"{path}: empty file, expected a header 'text,label'") from None
        except csv.Error as error:
            raise DataFormatError(f"{path}:1: {error}") from None
        if [column.strip().lower() for column in header] != ["text", "label"]:
            raise DataFormatError(f"{path}:1: expected the header 'text,label', got {','.join(header)!r}")
        try:
            for row in reader:
                if not row:
                    continue
                if len(row) != 2 or row[1].strip() not in ("0", "1"):
                    raise DataFormatError(
                        f"{path}:{reader.line_num}: expected 2 fields 'text,label' with label 0 or 1, "
                        f"got {len(row)} field(s): {','.join(row)[:80]!r}"
                    )
                texts.append(row[0])
                labels.append(int(row[1]))
        except csv.Error as error:
            raise DataFormatError(f"{path}:{reader.line_num}: {error}") from None
    if not texts:
        raise DataFormatError(f"{path}: no reviews after the header")
    return texts, np.asarray(labels, dtype="int32")


def read_acl_folder(split_dir: str | Path) -> tuple[list[str], np.ndarray]:
    """Read ``aclImdb/<split>/{pos,neg}/*.txt`` in a fixed (sorted) order."""
    split_dir = Path(split_dir)
    texts, labels = [], []
    for label, folder in ((0, "neg"), (1, "pos")):
        files = sorted((split_dir / folder).glob("*.txt"))
        if not files:
            raise DataFormatError(f"{split_dir / folder}: no review files (*.txt)")
        for file in files:
            try:
                texts.append(file.read_text(encoding="utf-8").strip())
            except UnicodeDecodeError as error:
                raise DataFormatError(f"{file}: not UTF-8 text ({error})") from None
            labels.append(label)
    return texts, np.asarray(labels, dtype="int32")


def _acl_root(data_dir: Path) -> Path | None:
    for candidate in (data_dir / "aclImdb", data_dir / "imdb" / "aclImdb", data_dir):
        if (candidate / "train" / "pos").is_dir() and (candidate / "test" / "pos").is_dir():
            return candidate
    return None


def _from_tfds(data_dir: Path | None) -> dict[str, tuple[list[str], np.ndarray]]:
    import tensorflow_datasets as tfds

    splits = {}
    for split in SPLITS:
        dataset = sources.load_tfds("imdb_reviews", split, "IMDB", EXPECTED_FILES, data_dir, as_supervised=True)
        texts, labels = [], []
        for text, label in tfds.as_numpy(dataset):
            texts.append(text.decode("utf-8"))
            labels.append(int(label))
        splits[split] = (texts, np.asarray(labels, dtype="int32"))
    return splits


def load_imdb(data_dir: Path | None) -> dict[str, tuple[list[str], np.ndarray]]:
    """``{"train": (texts, labels), "test": (texts, labels)}`` from the first source that has them."""
    if data_dir is not None:
        paths = {split: sources.find_local(data_dir, [f"imdb/{split}.csv"]) for split in SPLITS}
        if all(paths.values()):
            return {split: read_csv(path) for split, path in paths.items()}
        acl = _acl_root(data_dir)
        if acl is not None:
            return {split: read_acl_folder(acl / split) for split in SPLITS}
        raise sources.missing(
            "IMDB", [*EXPECTED_FILES, "or aclImdb/{train,test}/{pos,neg}/*.txt"], data_dir
        )
    return _from_tfds(data_dir)


def split_validation(texts: list[str], labels: np.ndarray, fraction: float, seed: int):
    """Carve a seeded, deterministic validation split out of the training data."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(texts))
    count = max(1, int(round(len(texts) * fraction)))
    validation, train = order[:count], order[count:]
    pick = lambda idx: ([texts[i] for i in idx], labels[idx])  # noqa: E731
    return pick(train), pick(validation)
