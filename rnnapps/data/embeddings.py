"""Pretrained word vectors in GloVe's text format, as an embedding matrix."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

from rnnapps.data import sources

logger = logging.getLogger(__name__)
PADDING = ""


def _vector_lines(path, dim):
    """Yield ``(line_number, word, value_texts)``, checking every line's width.

    A first line of exactly two integers is word2vec's header and is skipped.
    """
    expected = dim
    with sources.open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.rstrip("\r\n").split(" ")
            if line_number == 1 and len(parts) == 2 and all(part.isdigit() for part in parts):
                continue
            if not line.strip():
                continue
            if expected is None:
                expected = len(parts) - 1
            if len(parts) - 1 != expected or expected < 1:
                raise ValueError(
                    f"{path}:{line_number}: expected a word and {expected} values separated by single spaces. "
                    f"Got {len(parts) - 1} values in line {line[:80].rstrip()!r}"
                )
            yield line_number, parts[0], parts[1:]


def vector_file_words(path: str | os.PathLike, normalise: Callable[[str], str] | None = None) -> list[str]:
    """The words of a vector file in file order (normalised and deduplicated when asked).

    Useful as ``Vocabularies.from_sentences(..., extra_words=...)``, so words
    rare in the training data keep their pretrained vectors.
    """
    seen = {}
    for _, word, _ in _vector_lines(path, None):
        key = normalise(word) if normalise else word
        seen.setdefault(key, None)
    return list(seen)


def read_word_vectors(
    path: str | os.PathLike,
    vocabulary: Sequence[str],
    dim: int | None = None,
    seed: int = 0,
    normalise: Callable[[str], str] | None = None,
) -> np.ndarray:
    """An embedding matrix for ``vocabulary`` from a GloVe-style text file.

    Each line is ``word v1 ... vd`` (plain or gzipped). Row ``i`` is the vector
    of ``vocabulary[i]``; the padding entry ``""`` gets a zero row; words without
    a vector get random normal rows with the standard deviation of the vectors
    found, so they start on the same scale. With ``normalise`` (for example
    ``rnnapps.text_ops.normalise_word``) the file's words are normalised first and the
    first (most frequent, in GloVe's order) vector of each key wins. Logs the
    coverage.

    Args:
        path: the vector file.
        vocabulary: the words of the rows (e.g. ``StringLookup.get_vocabulary()``).
        dim: expected vector width; ``None`` takes the first line's.
        seed: seed of the random rows.
        normalise: optional function applied to the file's words.

    Returns:
        float32 array ``(len(vocabulary), dim)``.

    Raises:
        ValueError: for a line of the wrong width or with a non-number; the
            message names the file and the line number.
    """
    if dim is not None and (isinstance(dim, bool) or not isinstance(dim, int) or dim < 1):
        raise ValueError(f"Expected dim to be an integer >= 1 or None. Received: dim={dim!r}")
    rows: dict[str, list[int]] = {}
    for index, word in enumerate(vocabulary):
        rows.setdefault(word, []).append(index)
    found: dict[str, np.ndarray] = {}
    width = dim
    for line_number, word, values in _vector_lines(path, dim):
        width = len(values)
        key = normalise(word) if normalise else word
        if key in rows and key not in found:
            try:
                found[key] = np.asarray(values, dtype=np.float32)
            except ValueError:
                raise ValueError(f"{path}:{line_number}: values of {word!r} are not all numbers") from None
    if width is None:
        raise ValueError(f"{path}: no word vectors in the file")
    found_values = np.stack(list(found.values())) if found else np.zeros((1, width), np.float32)
    scale = float(found_values.std()) if found else 1.0
    matrix = np.random.default_rng(seed).normal(0.0, scale or 1.0, size=(len(vocabulary), width)).astype(np.float32)
    for word, vector in found.items():
        matrix[rows[word]] = vector
    if PADDING in rows:
        matrix[rows[PADDING]] = 0.0
    real = sum(1 for word in rows if word != PADDING)
    logger.info(
        "word vectors from %s: %d of %d vocabulary words found (%.1f%%), dim %d",
        path,
        len(found),
        real,
        100.0 * len(found) / max(real, 1),
        width,
    )
    return matrix


def optional_word_vectors(
    path: str | os.PathLike, data_dir, vocabulary: Sequence[str], seed: int = 0, optional: bool = False,
    consequence: str = "",
) -> np.ndarray | None:
    """:func:`read_word_vectors` of ``path`` (as given, or in ``data_dir``); with ``optional``, None if it is missing.

    A missing optional file is a warning that names the file and ``consequence`` (what the run
    loses without it), not an error, so a preset that prefers pretrained vectors still runs.
    """
    import warnings

    from rnnapps.errors import DataNotFoundError

    try:
        resolved = sources.resolve_path(path, data_dir)
    except DataNotFoundError as error:
        if not optional:
            raise
        warnings.warn(f"{error}; {consequence}", stacklevel=3)
        return None
    return read_word_vectors(resolved, vocabulary, seed=seed)
