"""Image datasets for the generative pipelines (PixelRNN, DRAW): MNIST variants and SVHN.

``load_images`` returns NumPy ``uint8`` arrays ``(N, H, W, C)`` per split;
``make_dataset`` turns one split into float32 ``[0, 1]`` ``tf.data`` batches.

Sources, first found wins (see ``rnnapps.data.sources``):

* ``binarized_mnist`` (Larochelle & Murray 2011, fixed binarisation, 50k/10k/10k):
  ``mnist/binarized_mnist.npz`` with ``x_train``, ``x_valid``, ``x_test`` (values
  0/1), else tfds ``binarized_mnist``.
* ``mnist``: ``mnist/mnist.npz`` with ``x_train``, ``y_train``, ``x_test``,
  ``y_test`` (uint8 0-255), else tfds ``mnist``. Validation is the last 10,000
  training images (one sixth of a smaller training set), always the same ones.
  Binarised with a fixed threshold (``> 127``) or stochastically (each pixel a
  seeded Bernoulli draw with probability ``intensity / 255``), or kept 0-255.
* ``svhn`` (cropped digits, 32x32x3): ``svhn/svhn.npz`` (``x_train``, ``y_train``,
  ``x_test``, ``y_test``), else the original ``train_32x32.mat`` and
  ``test_32x32.mat`` in ``svhn/`` or directly in the data directory, else tfds
  ``svhn_cropped``. Label 10 (the original files' digit 0) becomes 0.
  Validation is the last 5,000 training images (one sixth of a smaller set).

Offline with no local copy, a :class:`~rnnapps.errors.DataNotFoundError` names
the files and where to put them. A file with the wrong keys, shapes, dtypes or
values raises :class:`ImageDataError` (a ``ValueError``) naming the file and
what was expected.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from rnnapps.data import sources
from rnnapps.errors import RnnappsError

DATASETS = ("binarized_mnist", "mnist", "svhn")
BINARIZE_MODES = ("fixed", "stochastic", None)
SPLITS = ("train", "validation", "test")
FIXED_THRESHOLD = 127

_MNIST_SHAPE = (28, 28, 1)
_SVHN_SHAPE = (32, 32, 3)
_VALIDATION_SIZE = {"mnist": 10_000, "svhn": 5_000}
_DISPLAY_NAMES = {"binarized_mnist": "binarized MNIST", "mnist": "MNIST", "svhn": "SVHN"}
_EXPECTED = {
    "binarized_mnist": ["mnist/binarized_mnist.npz (x_train, x_valid, x_test; uint8 0/1)"],
    "mnist": ["mnist/mnist.npz (x_train, y_train, x_test, y_test; uint8)"],
    "svhn": [
        "svhn/svhn.npz (x_train, y_train, x_test, y_test)",
        "or the original train_32x32.mat and test_32x32.mat (SVHN format 2) in svhn/ or the data directory itself",
    ],
}


class ImageDataError(RnnappsError, ValueError):
    """A local image file exists but does not hold what the loader expects."""


def load_images(
    dataset: str = "binarized_mnist",
    data_dir=None,
    binarize: str | None = "fixed",
    seed: int = 0,
    with_labels: bool = False,
) -> dict:
    """Load an image dataset as ``{"train", "validation", "test"}`` NumPy splits.

    Args:
        dataset: ``"binarized_mnist"``, ``"mnist"`` or ``"svhn"``.
        data_dir: local data directory (else ``$RNNAPPS_DATA_DIR``, else tfds).
        binarize: for ``"mnist"`` only: ``"fixed"`` (pixel > 127), ``"stochastic"``
            (Bernoulli of intensity / 255, seeded) or ``None`` (keep 0-255).
            ``binarized_mnist`` is binary already and SVHN stays in colour.
        seed: seed of the stochastic binarisation; the same seed gives the same
            images, and each split draws from its own stream.
        with_labels: return ``(images, labels)`` pairs (labels int64 0-9)
            instead of images alone; binarized MNIST has no labels.

    Returns:
        A dict of split name to ``uint8`` arrays ``(N, H, W, C)``, or to
        ``(images, labels)`` tuples with ``with_labels=True``.
    """
    if dataset not in DATASETS:
        raise ValueError(f"Expected dataset to be one of {DATASETS}. Received: dataset={dataset!r}")
    if binarize not in BINARIZE_MODES:
        raise ValueError(
            f"Expected binarize to be one of {BINARIZE_MODES}. Received: binarize={binarize!r}"
        )
    if with_labels and dataset == "binarized_mnist":
        raise ValueError(
            "binarized_mnist has no labels; use dataset='mnist' for labelled digits. "
            "Received: with_labels=True"
        )
    directory = sources.resolve_data_dir(data_dir)
    loader = {
        "binarized_mnist": _load_binarized_mnist,
        "mnist": _load_mnist,
        "svhn": _load_svhn,
    }[dataset]
    splits = loader(directory)
    if dataset == "mnist" and binarize is not None:
        splits = {
            name: (_binarize(images, binarize, seed, SPLITS.index(name)), labels)
            for name, (images, labels) in splits.items()
        }
    if with_labels:
        return splits
    return {name: images for name, (images, _) in splits.items()}


def binarize_images(images: np.ndarray, mode: str = "fixed", seed: int = 0) -> np.ndarray:
    """Binarise uint8 0-255 images to uint8 0/1 (``"fixed"`` or seeded ``"stochastic"``)."""
    if mode not in ("fixed", "stochastic"):
        raise ValueError(f"Expected mode to be 'fixed' or 'stochastic'. Received: mode={mode!r}")
    return _binarize(np.asarray(images), mode, seed, 0)


def _binarize(images: np.ndarray, mode: str, seed: int, stream: int) -> np.ndarray:
    if mode == "fixed":
        return (images > FIXED_THRESHOLD).astype("uint8")
    # u uniform on {0, ..., 254} gives P(u < x) = x / 255 exactly, in uint8 memory.
    generator = np.random.default_rng([int(seed), stream])
    draws = generator.integers(0, 255, size=images.shape, dtype=np.uint8)
    return (draws < images).astype("uint8")


def make_dataset(
    images: np.ndarray,
    batch_size: int,
    shuffle: bool = False,
    seed: int = 0,
    labels: np.ndarray | None = None,
    binary: bool | None = None,
    drop_remainder: bool = False,
):
    """A ``tf.data.Dataset`` of float32 ``[0, 1]`` image batches: cache → shuffle → batch → prefetch.

    The cache holds the compact uint8 images; the conversion to float runs on
    whole batches after batching, which is cheaper than per image.

    Args:
        images: ``uint8`` array ``(N, H, W, C)``, as returned by ``load_images``.
        batch_size: images per batch.
        shuffle: reshuffle every epoch (with ``seed``, so runs repeat).
        seed: shuffle seed.
        labels: optional ``(N,)`` labels; batches are then ``(images, labels)``.
        binary: whether values are 0/1 (used as they are) rather than 0-255
            (divided by 255). ``None`` infers it: binary when no value exceeds 1.
        drop_remainder: drop the last incomplete batch.
    """
    import tensorflow as tf

    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(
            "Expected images as uint8 (N, height, width, channels). "
            f"Received: shape={images.shape}, dtype={images.dtype}"
        )
    if int(batch_size) < 1:
        raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size!r}")
    if labels is not None and len(labels) != len(images):
        raise ValueError(
            f"Expected one label per image. Received: {len(labels)} labels for {len(images)} images"
        )
    if binary is None:
        binary = images.size == 0 or int(images.max()) <= 1
    scale = 1.0 if binary else 1.0 / 255.0

    def to_float(batch, *rest):
        batch = tf.cast(batch, tf.float32) * scale
        return (batch, *rest) if rest else batch

    elements = images if labels is None else (images, np.asarray(labels))
    dataset = tf.data.Dataset.from_tensor_slices(elements).cache()
    if shuffle:
        dataset = dataset.shuffle(max(len(images), 1), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.batch(int(batch_size), drop_remainder=drop_remainder)
    dataset = dataset.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)
    return dataset.prefetch(tf.data.AUTOTUNE)


# ---------------------------------------------------------------------------
# Loaders: each returns {split: (uint8 images (N, H, W, C), int64 labels or None)}.


def _load_binarized_mnist(directory: Path | None) -> dict:
    path = sources.find_local(directory, ["mnist/binarized_mnist.npz", "binarized_mnist.npz"])
    if path is None:
        splits = _from_tfds(
            "binarized_mnist", ["train", "validation", "test"], "binarized_mnist", directory
        )
        return {name: (images, None) for name, (images, _) in splits.items()}
    arrays = _read_npz(path, ("x_train", "x_valid", "x_test"))
    result = {}
    for split, key in zip(SPLITS, ("x_train", "x_valid", "x_test"), strict=True):
        images = _check_images(arrays[key], path, key, _MNIST_SHAPE)
        _check_range(images, path, key, 1, "0/1 (binarized)")
        result[split] = (images, None)
    return result


def _load_mnist(directory: Path | None) -> dict:
    path = sources.find_local(directory, ["mnist/mnist.npz", "mnist.npz"])
    if path is None:
        splits = _from_tfds("mnist", ["train", "test"], "mnist", directory)
    else:
        arrays = _read_npz(path, ("x_train", "y_train", "x_test", "y_test"))
        splits = {}
        for split in ("train", "test"):
            images = _check_images(arrays[f"x_{split}"], path, f"x_{split}", _MNIST_SHAPE)
            labels = _check_labels(arrays[f"y_{split}"], len(images), path, f"y_{split}")
            splits[split] = (images, labels)
    return _split_validation(splits, _VALIDATION_SIZE["mnist"])


def _load_svhn(directory: Path | None) -> dict:
    npz = sources.find_local(directory, ["svhn/svhn.npz", "svhn.npz"])
    if npz is not None:
        arrays = _read_npz(npz, ("x_train", "y_train", "x_test", "y_test"))
        splits = {}
        for split in ("train", "test"):
            images = _check_images(arrays[f"x_{split}"], npz, f"x_{split}", _SVHN_SHAPE)
            labels = _check_labels(arrays[f"y_{split}"], len(images), npz, f"y_{split}")
            splits[split] = (images, labels)
        return _split_validation(splits, _VALIDATION_SIZE["svhn"])
    mat_dir = _find_svhn_mat_dir(directory)
    if mat_dir is not None:
        splits = {
            split: _read_svhn_mat(mat_dir / f"{split}_32x32.mat") for split in ("train", "test")
        }
        return _split_validation(splits, _VALIDATION_SIZE["svhn"])
    return _split_validation(
        _from_tfds("svhn_cropped", ["train", "test"], "svhn", directory),
        _VALIDATION_SIZE["svhn"],
    )


def _find_svhn_mat_dir(directory: Path | None) -> Path | None:
    if directory is None:
        return None
    for folder in (directory / "svhn", directory):
        present = [(folder / f"{split}_32x32.mat").is_file() for split in ("train", "test")]
        if all(present):
            return folder
        if any(present):
            have, lack = ("train", "test") if present[0] else ("test", "train")
            raise sources.missing(
                "SVHN",
                _EXPECTED["svhn"],
                directory,
                f"Found {have}_32x32.mat in {str(folder)!r} but not {lack}_32x32.mat beside it.",
            )
    return None


def _from_tfds(name: str, splits: list[str], dataset: str, directory: Path | None) -> dict:
    shape = _SVHN_SHAPE if dataset == "svhn" else _MNIST_SHAPE
    where = Path(f"tfds:{name}")
    loaded = sources.load_tfds(
        name, splits, _DISPLAY_NAMES[dataset], _EXPECTED[dataset], directory, batch_size=-1
    )
    result = {}
    # Our split names are tfds' own ("train", "validation", "test").
    for split, features in zip(splits, loaded, strict=True):
        images = _check_images(np.asarray(features["image"]), where, split, shape)
        labels = np.asarray(features["label"], dtype=np.int64) if "label" in features else None
        result[split] = (images, labels)
    return result


def _split_validation(splits: dict, standard_size: int) -> dict:
    """Hold out the last training images (a fixed, documented choice) as validation."""
    images, labels = splits["train"]
    size = min(standard_size, len(images) // 6)
    cut = len(images) - size
    return {
        "train": (images[:cut], None if labels is None else labels[:cut]),
        "validation": (images[cut:], None if labels is None else labels[cut:]),
        "test": splits["test"],
    }


# ---------------------------------------------------------------------------
# Readers and checks.


def _read_npz(path: Path, keys: tuple[str, ...]) -> dict:
    try:
        with np.load(path, allow_pickle=False) as archive:
            found = list(archive.files)
            missing = [key for key in keys if key not in found]
            if missing:
                raise ImageDataError(
                    f"{path}: missing arrays {missing}; expected keys {list(keys)}, found {found}"
                )
            return {key: archive[key] for key in keys}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        if isinstance(error, ImageDataError):
            raise
        raise ImageDataError(f"{path}: not a readable .npz file ({error})") from error


def _read_svhn_mat(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """SVHN format 2: ``X`` uint8 (32, 32, 3, N) and ``y`` (N, 1) with 10 meaning digit 0."""
    import scipy.io

    try:
        contents = scipy.io.loadmat(str(path), variable_names=["X", "y"])
    except (NotImplementedError, ValueError, OSError, TypeError) as error:
        raise ImageDataError(
            f"{path}: not a readable MATLAB v5 .mat file ({error}); "
            "expected SVHN format 2 (cropped digits) with arrays X and y"
        ) from error
    for key in ("X", "y"):
        if key not in contents:
            raise ImageDataError(
                f"{path}: missing array {key!r}; expected SVHN format 2 with X (32, 32, 3, N) and y (N, 1)"
            )
    raw = contents["X"]
    if raw.ndim != 4 or raw.shape[:3] != _SVHN_SHAPE:
        raise ImageDataError(
            f"{path}: X has shape {raw.shape}; expected (32, 32, 3, N) as in SVHN format 2"
        )
    images = _check_images(np.transpose(raw, (3, 0, 1, 2)), path, "X", _SVHN_SHAPE)
    labels = _check_labels(contents["y"], len(images), path, "y")
    return images, labels


def _check_images(array: np.ndarray, path: Path, key: str, shape: tuple[int, int, int]):
    """Require uint8 ``(N, *shape)``; greyscale may come without the channel axis or flattened."""
    height, width, channels = shape
    original_shape = array.shape
    if array.dtype != np.uint8:
        raise ImageDataError(f"{path}: {key} has dtype {array.dtype}; expected uint8")
    if channels == 1 and array.ndim == 2 and array.shape[1] == height * width:
        array = array.reshape(-1, height, width)
    if channels == 1 and array.ndim == 3:
        array = array[..., None]
    if array.ndim != 4 or array.shape[1:] != shape:
        accepted = f"(N, {height}, {width}, {channels})"
        if channels == 1:
            accepted += f", (N, {height}, {width}) or (N, {height * width})"
        raise ImageDataError(f"{path}: {key} has shape {original_shape}; expected {accepted}")
    return array


def _check_range(images: np.ndarray, path: Path, key: str, maximum: int, what: str):
    if images.size and int(images.max()) > maximum:
        raise ImageDataError(
            f"{path}: {key} has values up to {int(images.max())}; expected {what} values"
        )


def _check_labels(array: np.ndarray, count: int, path: Path, key: str) -> np.ndarray:
    """Require ``count`` integer labels 0-10 (``(N,)`` or ``(N, 1)``); map SVHN's 10 to 0."""
    if not np.issubdtype(array.dtype, np.integer) and not (
        np.issubdtype(array.dtype, np.floating) and np.all(np.mod(array, 1) == 0)
    ):
        raise ImageDataError(f"{path}: {key} has dtype {array.dtype}; expected integer labels")
    if array.ndim == 2 and array.shape[1] == 1:
        array = array[:, 0]
    if array.shape != (count,):
        raise ImageDataError(
            f"{path}: {key} has shape {array.shape}; expected ({count},) or ({count}, 1), "
            "one label per image"
        )
    labels = array.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() > 10):
        raise ImageDataError(
            f"{path}: {key} has labels from {labels.min()} to {labels.max()}; expected 0-9 "
            "(or 1-10 with 10 for digit 0, as in SVHN's .mat files)"
        )
    return np.where(labels == 10, 0, labels)
