"""Plain-text corpora for character language models, and truncated-BPTT streams.

Sources, in order: a file or folder given as ``corpus`` (any UTF-8 text; a
folder's ``*.txt`` / ``*.txt.gz`` files are concatenated in sorted order);
Tiny Shakespeare from the local data directory (``shakespeare/input.txt``,
plain or gzipped); else tensorflow-datasets' ``tiny_shakespeare``, whose
train/validation/test examples are consecutive slices of the same text and are
joined back into one.

Characters are unicode code points, mapped to ids by a ``StringLookup`` over
``tf.strings.unicode_split`` so the same mapping runs in ``tf.data`` and inside
an exported model; id 0 is the out-of-vocabulary bucket.

For truncated BPTT (Sutskever 2013, thesis section 2.8.6) the id stream is cut
into ``batch_size`` contiguous rows and each batch takes the next
``sequence_length`` characters of every row, so row ``r`` of batch ``i + 1``
continues row ``r`` of batch ``i`` and the recurrent state can be carried over.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import tensorflow as tf

from rnnapps.data import sources
from rnnapps.errors import DataNotFoundError
from rnnapps.text_ops import encode_text

DATASET = "Tiny Shakespeare"
EXPECTED_FILES = ("shakespeare/input.txt",)
TFDS_NAME = "tiny_shakespeare"
TFDS_SPLITS = ("train", "validation", "test")


def _read_text(path: Path) -> str:
    try:
        with sources.open_text(path) as handle:
            return handle.read()
    except UnicodeDecodeError as error:
        raise ValueError(f"{str(path)!r} is not UTF-8 text: {error}") from error


def _corpus_files(folder: Path) -> list[Path]:
    return sorted(path for path in folder.iterdir() if path.is_file() and path.name.endswith((".txt", ".txt.gz")))


def _read_corpus(corpus: str | os.PathLike, data_dir: Path | None) -> str:
    path = Path(corpus).expanduser()
    if not path.exists() and data_dir is not None and (data_dir / path).exists():
        path = data_dir / path
    if path.is_file():
        return _read_text(path)
    if path.is_dir():
        files = _corpus_files(path)
        if not files:
            raise DataNotFoundError(f"corpus folder {str(path)!r} has no *.txt or *.txt.gz files")
        texts = [_read_text(file) for file in files]
        # Keep the last line of one file from running into the first of the next.
        return "".join(text if text.endswith("\n") or not text else text + "\n" for text in texts)
    raise DataNotFoundError(f"corpus {str(corpus)!r} is neither a file nor a folder")


def _load_tiny_shakespeare(data_dir: Path | None) -> str:
    local = sources.find_local(data_dir, EXPECTED_FILES)
    if local is not None:
        return _read_text(local)
    splits = sources.load_tfds(TFDS_NAME, list(TFDS_SPLITS), DATASET, EXPECTED_FILES, data_dir)
    parts = []
    for split in splits:
        for example in split:
            parts.append(example["text"].numpy().decode("utf-8"))
    return "".join(parts)


def load_corpus(data_dir: str | os.PathLike | None = None, corpus: str | os.PathLike | None = None) -> str:
    """The whole corpus as one string.

    Args:
        data_dir: the local data directory (else ``$RNNAPPS_DATA_DIR``); used
            for Tiny Shakespeare, and to resolve a relative ``corpus`` path that
            does not exist in the working directory.
        corpus: a UTF-8 text file (plain or gzipped) or a folder of ``*.txt``
            files; ``None`` means Tiny Shakespeare.

    Returns:
        The text, line endings untouched.

    Raises:
        DataNotFoundError: the corpus is missing (offline: naming the files expected).
        ValueError: a file is not UTF-8 (the file is named) or the text is empty.

    Example:

    >>> text = load_corpus(corpus="my_poems/")  # doctest: +SKIP
    """
    resolved = sources.resolve_data_dir(data_dir)
    if corpus:
        text = _read_corpus(corpus, resolved)
        where = str(corpus)
    else:
        text = _load_tiny_shakespeare(resolved)
        where = DATASET
    if not text:
        raise ValueError(f"corpus {where!r} is empty: a language model needs some text")
    return text


def split_corpus(text: str, fractions=(0.9, 0.05, 0.05)) -> tuple[str, ...]:
    """Cuts ``text`` into consecutive parts (train, validation, test) by position.

    Contiguous splits keep each part a readable stream, which truncated BPTT
    needs, and keep validation text unseen in training.

    Args:
        text: the corpus.
        fractions: non-negative shares summing to 1, one per part.

    Returns:
        A tuple of strings, one per fraction, concatenating back to ``text``.

    Example:

    >>> split_corpus("abcdefghijklmnopqrst", (0.8, 0.1, 0.1))
    ('abcdefghijklmnop', 'qr', 'st')
    """
    fractions = tuple(float(share) for share in fractions)
    if not fractions or any(share < 0 for share in fractions) or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"Expected non-negative fractions summing to 1. Received: fractions={fractions}")
    bounds = np.rint(np.cumsum((0.0,) + fractions) * len(text)).astype(int)
    bounds[-1] = len(text)
    parts = tuple(text[start:stop] for start, stop in zip(bounds[:-1], bounds[1:], strict=True))
    for index, (share, part) in enumerate(zip(fractions, parts, strict=True)):
        if share > 0 and not part:
            raise ValueError(
                f"Split {index} of a {len(text)}-character corpus is empty. Received: fractions={fractions}"
            )
    return parts


def build_char_vocabulary(text: str) -> list[str]:
    """The sorted unique unicode characters (code points) of ``text``.

    Example:

    >>> build_char_vocabulary("hello")
    ['e', 'h', 'l', 'o']
    """
    return sorted(set(text))


def text_to_ids(text: str, lookup) -> np.ndarray:
    """The whole text as an int32 NumPy array of ids."""
    return encode_text(tf.constant(text), lookup).numpy()


def make_stream_dataset(ids, batch_size: int, sequence_length: int) -> tf.data.Dataset:
    """Contiguous ``(inputs, targets)`` batches for truncated BPTT.

    The stream is cut into ``batch_size`` equal rows; batch ``i`` holds
    characters ``[i * sequence_length, (i + 1) * sequence_length)`` of every row,
    targets are the inputs shifted by one character, and the tail that cannot
    fill a whole batch is dropped, so every batch has exactly ``batch_size``
    rows. Nothing is shuffled: the order is what carries the state.

    Args:
        ids: 1-D int array, the encoded corpus.
        batch_size: number of parallel streams (rows).
        sequence_length: characters per row and batch (the truncation length).

    Returns:
        A ``tf.data.Dataset`` of int32 ``(batch_size, sequence_length)`` pairs.

    Example:

    >>> ds = make_stream_dataset(np.arange(21), batch_size=2, sequence_length=3)
    >>> [x.numpy().tolist() for x, _ in ds]
    [[[0, 1, 2], [10, 11, 12]], [[3, 4, 5], [13, 14, 15]], [[6, 7, 8], [16, 17, 18]]]
    """
    ids = np.asarray(ids)
    if ids.ndim != 1:
        raise ValueError(f"Expected 1-D ids. Received: ids with shape {ids.shape}")
    if int(batch_size) < 1:
        raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size}")
    if int(sequence_length) < 1:
        raise ValueError(f"Expected sequence_length >= 1. Received: sequence_length={sequence_length}")
    batch_size, sequence_length = int(batch_size), int(sequence_length)
    # One character more than the inputs is needed for the last target.
    row_length = (len(ids) - 1) // batch_size
    num_batches = row_length // sequence_length
    if num_batches < 1:
        raise ValueError(
            f"{len(ids)} ids are too few for one batch of {batch_size} rows x {sequence_length} characters "
            f"(need at least {batch_size * sequence_length + 1})"
        )
    used = num_batches * sequence_length
    ids = ids.astype(np.int32)
    inputs = ids[: batch_size * row_length].reshape(batch_size, row_length)[:, :used]
    targets = ids[1 : batch_size * row_length + 1].reshape(batch_size, row_length)[:, :used]

    def by_batch(rows):
        return rows.reshape(batch_size, num_batches, sequence_length).transpose(1, 0, 2)

    dataset = tf.data.Dataset.from_tensor_slices((by_batch(inputs), by_batch(targets)))
    return dataset.prefetch(tf.data.AUTOTUNE)
