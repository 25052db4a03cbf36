"""Where datasets come from: a local directory first, then the network.

Order (DESIGN.md, "Data"): ``--data-dir`` or ``$RNNAPPS_DATA_DIR`` in the local
layout of ``shared/data`` (see docs/data.md); else tensorflow-datasets; else
``keras.utils.get_file`` with a sha256 for datasets TFDS lacks. Offline with no
local copy, loaders raise :class:`DataNotFoundError` naming the files expected,
after a short connectivity probe rather than a download that may hang.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import socket
from collections.abc import Iterable, Iterator
from pathlib import Path

from rnnapps.errors import DataNotFoundError

DATA_DIR_ENV = "RNNAPPS_DATA_DIR"
# Hosts that TFDS and our get_file URLs download from; probed before a download.
_PROBE_HOSTS = (("storage.googleapis.com", 443), ("github.com", 443))


def resolve_data_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The local data directory: the argument, else ``$RNNAPPS_DATA_DIR``, else None."""
    chosen = data_dir if data_dir else os.environ.get(DATA_DIR_ENV)
    if not chosen:
        return None
    path = Path(chosen).expanduser()
    if not path.is_dir():
        raise DataNotFoundError(f"data directory {str(path)!r} does not exist")
    return path


def resolve_path(path: str | os.PathLike, data_dir: Path | None) -> Path:
    """``path`` as given if it exists, else relative to the data directory; a clear error otherwise."""
    candidate = Path(path).expanduser()
    if candidate.exists():
        return candidate
    if data_dir is not None and not candidate.is_absolute() and (data_dir / candidate).exists():
        return data_dir / candidate
    where = f" or in {str(data_dir)!r}" if data_dir else ""
    raise DataNotFoundError(f"{str(path)!r} not found (looked in the working directory{where})")


def find_local(data_dir: Path | None, candidates: Iterable[str]) -> Path | None:
    """The first existing path among ``candidates`` (relative to ``data_dir``).

    Each candidate is tried as written and with ``.gz`` added, so loaders
    accept plain and gzipped copies alike.
    """
    if data_dir is None:
        return None
    for candidate in candidates:
        for name in (candidate, candidate + ".gz"):
            path = data_dir / name
            if path.exists():
                return path
    return None


@contextlib.contextmanager
def open_text(path: str | os.PathLike) -> Iterator[io.TextIOBase]:
    """Open a UTF-8 text file, gzipped or not (by magic bytes, not by name)."""
    path = Path(path)
    with open(path, "rb") as probe:
        gzipped = probe.read(2) == b"\x1f\x8b"
    if gzipped:
        handle = gzip.open(path, "rt", encoding="utf-8", newline="")
    else:
        handle = open(path, encoding="utf-8", newline="")
    with handle:
        yield handle


def is_online(timeout: float = 3.0) -> bool:
    """Whether a download host answers within ``timeout`` seconds."""
    for host, port in _PROBE_HOSTS:
        try:
            with socket.create_connection((host, port), timeout=timeout):
                return True
        except OSError:
            continue
    return False


def missing(dataset: str, expected: Iterable[str], data_dir: Path | None, why: str = "") -> DataNotFoundError:
    """A one-line error naming the files a local copy must have."""
    where = f"in {str(data_dir)!r}" if data_dir else f"(set --data-dir or ${DATA_DIR_ENV})"
    files = ", ".join(expected)
    reason = f" {why}" if why else ""
    return DataNotFoundError(f"{dataset} not found: expected {files} {where}.{reason}")


def load_tfds(name: str, split, dataset: str, expected: Iterable[str], data_dir: Path | None, **kwargs):
    """``tfds.load`` with a clear error instead of a hang or a traceback offline."""
    if not is_online():
        raise missing(dataset, expected, data_dir, f"No network to download tfds '{name}' either.")
    import tensorflow_datasets as tfds

    try:
        return tfds.load(name, split=split, **kwargs)
    except Exception as error:  # tfds raises many types for network/build failures
        raise missing(dataset, expected, data_dir, f"Downloading tfds '{name}' failed: {error}") from error


def download(url: str, sha256: str, filename: str, dataset: str, expected: Iterable[str], data_dir: Path | None) -> Path:
    """``keras.utils.get_file`` with a sha256 check, cached under ``~/.keras/datasets/rnnapps``."""
    if not is_online():
        raise missing(dataset, expected, data_dir, f"No network to download {url} either.")
    import keras

    try:
        return Path(
            keras.utils.get_file(
                fname=filename, origin=url, file_hash=sha256, hash_algorithm="sha256", cache_subdir="datasets/rnnapps"
            )
        )
    except Exception as error:
        raise missing(dataset, expected, data_dir, f"Downloading {url} failed: {error}") from error
