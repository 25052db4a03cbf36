"""One text per example, for models that read texts without labels (the sequence autoencoder).

Sources: IMDB reviews (train split, labels kept only for the test split's
pictures), the English side of Multi30k, or any UTF-8 file/folder with one
example a line. Splits are seeded and, for IMDB, the sentiment pipeline's own
validation split, so no review that sentiment validates on is pretrained on.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from rnnapps.data import imdb
from rnnapps.data.parallel_text import load_parallel_corpus
from rnnapps.data.text_corpus import load_corpus
from rnnapps.errors import ConfigError

#: the named sources besides a ``corpus`` file
DATASETS = ("imdb", "multi30k")


def load_text_examples(
    data_dir: Path | None,
    dataset: str = "imdb",
    corpus: str | None = None,
    validation_fraction: float = 0.1,
    seed: int = 0,
    max_train_examples: int | None = None,
) -> dict:
    """``{"train", "validation", "test": list[str], "test_labels": int array or None}``.

    Args:
        data_dir: the local data root (docs/data.md), or None for the downloaders.
        dataset: ``"imdb"`` or ``"multi30k"``; ignored when ``corpus`` is given.
        corpus: a UTF-8 text file or folder of ``*.txt``, one example a line.
        validation_fraction: IMDB: the share of train held out (sentiment's split); a corpus:
            the share of lines in validation and in test each.
        seed: the split seed.
        max_train_examples: keep at most this many training texts (None: all).
    """
    test_labels = None
    if corpus:
        lines = [line.strip() for line in load_corpus(data_dir, corpus).split("\n") if line.strip()]
        if len(lines) < 3:
            raise ConfigError(f"corpus {corpus!r} has {len(lines)} non-empty line(s); it needs at least 3")
        # Test first, then validation out of the rest, each validation_fraction of the lines.
        (rest, _), (test, _) = imdb.split_validation(lines, np.zeros(len(lines)), validation_fraction, seed)
        (train, _), (validation, _) = imdb.split_validation(
            rest, np.zeros(len(rest)), validation_fraction / (1 - validation_fraction), seed
        )
    elif dataset == "imdb":
        splits = imdb.load_imdb(data_dir)
        train, labels = splits["train"]
        if max_train_examples:
            train, labels = train[:max_train_examples], labels[:max_train_examples]
        (train, _), (validation, _) = imdb.split_validation(train, labels, validation_fraction, seed)
        test, test_labels = splits["test"]
    elif dataset == "multi30k":
        pairs = load_parallel_corpus("multi30k", "de", "en", data_dir, seed=seed)
        train, validation, test = ([english for _, english in pairs[split]] for split in ("train", "validation", "test"))
    else:
        raise ConfigError(f"dataset={dataset!r} is not one of {', '.join(DATASETS)} (or set corpus=PATH)")
    if max_train_examples:
        train = train[:max_train_examples]
    return {"train": list(train), "validation": list(validation), "test": list(test),
            "test_labels": None if test_labels is None else np.asarray(test_labels)}
