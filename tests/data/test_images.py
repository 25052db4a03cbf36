
import numpy as np
import pytest
import scipy.io

from rnnapps.data import sources
from rnnapps.data.images import ImageDataError, binarize_images, load_images, make_dataset
from rnnapps.errors import DataNotFoundError
from tests.conftest import FIXTURE_DATA


def _digits(count, height=28, width=28, channels=None, seed=0):
    rng = np.random.default_rng(seed)
    shape = (count, height, width) + (() if channels is None else (channels,))
    return rng.integers(0, 256, size=shape, dtype=np.uint8)


def _write_binarized_mnist(directory, sizes=(6, 3, 3), flat=False, **overrides):
    (directory / "mnist").mkdir(parents=True, exist_ok=True)
    arrays = {}
    for seed, (key, count) in enumerate(zip(("x_train", "x_valid", "x_test"), sizes, strict=True)):
        images = (_digits(count, seed=seed) > 127).astype(np.uint8)
        arrays[key] = images.reshape(count, 784) if flat else images
    arrays.update(overrides)
    np.savez_compressed(directory / "mnist" / "binarized_mnist.npz", **arrays)
    return arrays


def _write_mnist(directory, train=12, test=4, **overrides):
    (directory / "mnist").mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": _digits(train, seed=1),
        "y_train": np.arange(train, dtype=np.uint8) % 10,
        "x_test": _digits(test, seed=2),
        "y_test": np.arange(test, dtype=np.uint8) % 10,
    }
    arrays.update(overrides)
    np.savez_compressed(directory / "mnist" / "mnist.npz", **arrays)
    return arrays


def write_svhn_mat(path, count, seed=0, labels=None):
    """A file in SVHN format 2's layout: X uint8 (32, 32, 3, N), y (N, 1) with 10 for digit 0."""
    images = _digits(count, 32, 32, 3, seed=seed)
    if labels is None:
        labels = np.arange(count) % 10 + 1
    arrays = {
        "X": np.transpose(images, (1, 2, 3, 0)),
        "y": np.asarray(labels, np.uint8).reshape(-1, 1),
    }
    scipy.io.savemat(str(path), arrays, do_compression=True)
    return images, np.asarray(labels)


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setattr(sources, "is_online", lambda timeout=3.0: False)
    monkeypatch.delenv(sources.DATA_DIR_ENV, raising=False)


# --- layouts that load ---------------------------------------------------------------


@pytest.mark.parametrize("flat", [False, True])
def test_binarized_mnist_npz(tmp_path, flat):
    arrays = _write_binarized_mnist(tmp_path, flat=flat)
    splits = load_images("binarized_mnist", tmp_path)
    assert {name: images.shape for name, images in splits.items()} == {
        "train": (6, 28, 28, 1),
        "validation": (3, 28, 28, 1),
        "test": (3, 28, 28, 1),
    }
    assert all(images.dtype == np.uint8 for images in splits.values())
    np.testing.assert_array_equal(
        splits["validation"][..., 0], arrays["x_valid"].reshape(3, 28, 28)
    )


def test_mnist_npz_holds_out_last_training_images(tmp_path):
    arrays = _write_mnist(tmp_path, train=12)
    splits = load_images("mnist", tmp_path, binarize=None, with_labels=True)
    train_images, train_labels = splits["train"]
    validation_images, validation_labels = splits["validation"]
    # A sixth of a small training set (10,000 of the real 60,000).
    assert train_images.shape == (10, 28, 28, 1) and validation_images.shape == (2, 28, 28, 1)
    np.testing.assert_array_equal(validation_images[..., 0], arrays["x_train"][10:])
    np.testing.assert_array_equal(validation_labels, arrays["y_train"][10:])
    np.testing.assert_array_equal(train_labels, arrays["y_train"][:10])
    assert splits["test"][0].shape == (4, 28, 28, 1)
    assert train_labels.dtype == np.int64


def test_mnist_fixed_binarisation(tmp_path):
    arrays = _write_mnist(tmp_path)
    splits = load_images("mnist", tmp_path, binarize="fixed")
    np.testing.assert_array_equal(splits["test"][..., 0], (arrays["x_test"] > 127).astype(np.uint8))
    assert set(np.unique(splits["train"])) <= {0, 1}


def test_mnist_stochastic_binarisation_is_seeded(tmp_path):
    _write_mnist(tmp_path)
    first = load_images("mnist", tmp_path, binarize="stochastic", seed=3)
    again = load_images("mnist", tmp_path, binarize="stochastic", seed=3)
    other = load_images("mnist", tmp_path, binarize="stochastic", seed=4)
    for split in first:
        np.testing.assert_array_equal(first[split], again[split])
        assert set(np.unique(first[split])) <= {0, 1}
    assert any(not np.array_equal(first[split], other[split]) for split in first)


def test_stochastic_binarisation_probabilities():
    levels = np.array([0, 64, 128, 255], np.uint8)
    images = np.broadcast_to(levels, (20_000, 4)).copy()
    binary = binarize_images(images, "stochastic", seed=0)
    np.testing.assert_allclose(binary.mean(axis=0), levels / 255, atol=0.015)
    assert binary[:, 0].max() == 0 and binary[:, 3].min() == 1


@pytest.mark.parametrize("folder", ["svhn", "."])
def test_svhn_original_mat_layout(tmp_path, folder):
    directory = tmp_path / folder
    directory.mkdir(exist_ok=True)
    train_images, _ = write_svhn_mat(directory / "train_32x32.mat", 12, seed=1)
    test_images, _ = write_svhn_mat(
        directory / "test_32x32.mat", 5, seed=2, labels=[10, 1, 2, 10, 9]
    )
    splits = load_images("svhn", tmp_path, with_labels=True)
    images, labels = splits["test"]
    assert images.shape == (5, 32, 32, 3) and images.dtype == np.uint8
    np.testing.assert_array_equal(images, test_images)
    np.testing.assert_array_equal(labels, [0, 1, 2, 0, 9])
    assert splits["train"][0].shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(splits["validation"][0], train_images[10:])
    # Training labels 1..10 cycle; 10 became 0.
    np.testing.assert_array_equal(splits["train"][1], [1, 2, 3, 4, 5, 6, 7, 8, 9, 0])


def test_svhn_npz_layout(tmp_path):
    (tmp_path / "svhn").mkdir()
    x_train, x_test = _digits(6, 32, 32, 3, seed=1), _digits(2, 32, 32, 3, seed=2)
    np.savez(
        tmp_path / "svhn" / "svhn.npz",
        x_train=x_train,
        y_train=np.array([1, 2, 3, 4, 5, 10]),
        x_test=x_test,
        y_test=np.array([0, 7]),
    )
    splits = load_images("svhn", tmp_path, with_labels=True)
    np.testing.assert_array_equal(splits["test"][0], x_test)
    np.testing.assert_array_equal(splits["test"][1], [0, 7])
    np.testing.assert_array_equal(splits["validation"][1], [0])


def test_committed_svhn_fixture_loads():
    splits = load_images("svhn", FIXTURE_DATA / "svhn", with_labels=True)
    assert splits["train"][0].shape[1:] == (32, 32, 3)
    assert len(splits["validation"][0]) >= 1 and len(splits["test"][0]) >= 1
    for _, labels in splits.values():
        assert labels.min() >= 0 and labels.max() <= 9
    assert 0 in np.concatenate([labels for _, labels in splits.values()])


# --- clear errors ------------------------------------------------------------------------


def test_wrong_dtype(tmp_path):
    _write_binarized_mnist(tmp_path, x_train=np.zeros((6, 28, 28), np.float32))
    with pytest.raises(
        ImageDataError, match=r"binarized_mnist.npz: x_train has dtype float32; expected uint8"
    ):
        load_images("binarized_mnist", tmp_path)


def test_wrong_shape(tmp_path):
    _write_mnist(tmp_path, x_test=np.zeros((4, 32, 32), np.uint8))
    with pytest.raises(
        ImageDataError,
        match=r"mnist.npz: x_test has shape \(4, 32, 32\); expected \(N, 28, 28, 1\)",
    ):
        load_images("mnist", tmp_path)


def test_binarized_values_must_be_binary(tmp_path):
    _write_binarized_mnist(tmp_path, x_test=np.full((3, 28, 28), 255, np.uint8))
    with pytest.raises(ImageDataError, match=r"x_test has values up to 255; expected 0/1"):
        load_images("binarized_mnist", tmp_path)


def test_missing_key(tmp_path):
    (tmp_path / "mnist").mkdir()
    np.savez(tmp_path / "mnist" / "mnist.npz", x_train=_digits(6), y_train=np.zeros(6, np.uint8))
    with pytest.raises(ImageDataError, match=r"missing arrays \['x_test', 'y_test'\]"):
        load_images("mnist", tmp_path)


def test_label_count_mismatch(tmp_path):
    _write_mnist(tmp_path, y_test=np.zeros(3, np.uint8))
    with pytest.raises(
        ImageDataError, match=r"y_test has shape \(3,\); expected \(4,\) or \(4, 1\)"
    ):
        load_images("mnist", tmp_path)


def test_svhn_mat_wrong_layout(tmp_path):
    # Images stored (N, 32, 32, 3) instead of the original (32, 32, 3, N).
    scipy.io.savemat(
        str(tmp_path / "train_32x32.mat"), {"X": _digits(4, 32, 32, 3), "y": np.ones((4, 1))}
    )
    write_svhn_mat(tmp_path / "test_32x32.mat", 2)
    with pytest.raises(
        ImageDataError,
        match=r"train_32x32.mat: X has shape \(4, 32, 32, 3\); expected \(32, 32, 3, N\)",
    ):
        load_images("svhn", tmp_path)


def test_svhn_mat_bad_labels(tmp_path):
    write_svhn_mat(tmp_path / "train_32x32.mat", 6, labels=[1, 2, 3, 11, 5, 6])
    write_svhn_mat(tmp_path / "test_32x32.mat", 2)
    with pytest.raises(ImageDataError, match=r"y has labels from 1 to 11; expected 0-9"):
        load_images("svhn", tmp_path)


def test_svhn_half_of_the_mat_files(tmp_path, offline):
    write_svhn_mat(tmp_path / "train_32x32.mat", 6)
    with pytest.raises(DataNotFoundError, match=r"Found train_32x32.mat .* but not test_32x32.mat"):
        load_images("svhn", tmp_path)


def test_offline_without_svhn_names_the_files(tmp_path, offline):
    with pytest.raises(DataNotFoundError) as caught:
        load_images("svhn", tmp_path)
    message = str(caught.value)
    for expected in (
        "svhn/svhn.npz",
        "train_32x32.mat",
        "test_32x32.mat",
        str(tmp_path),
        "svhn_cropped",
    ):
        assert expected in message


@pytest.mark.parametrize(
    "dataset, expected",
    [("binarized_mnist", "mnist/binarized_mnist.npz"), ("mnist", "mnist/mnist.npz")],
)
def test_offline_without_mnist_names_the_files(dataset, expected, offline):
    with pytest.raises(
        DataNotFoundError, match=rf"{expected}.*set --data-dir or \$RNNAPPS_DATA_DIR"
    ):
        load_images(dataset)


def test_tfds_is_tried_when_online_and_local_data_is_missing(tmp_path, monkeypatch):
    calls = []

    def fake_load_tfds(name, split, dataset, expected, data_dir, **kwargs):
        calls.append((name, tuple(split), kwargs))
        return [
            {"image": _digits(7, channels=1, seed=index), "label": np.arange(7)}
            for index, _ in enumerate(split)
        ]

    monkeypatch.setattr(sources, "load_tfds", fake_load_tfds)
    splits = load_images("mnist", tmp_path, binarize=None, with_labels=True)
    assert calls == [("mnist", ("train", "test"), {"batch_size": -1})]
    assert splits["train"][0].shape == (6, 28, 28, 1) and splits["validation"][0].shape == (
        1,
        28,
        28,
        1,
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"dataset": "cifar10"}, r"dataset to be one of .*Received: dataset='cifar10'"),
        ({"binarize": "otsu"}, r"binarize to be one of .*Received: binarize='otsu'"),
        ({"with_labels": True}, r"binarized_mnist has no labels"),
    ],
)
def test_argument_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        load_images(**kwargs)


# --- tf.data -----------------------------------------------------------------------------


def test_make_dataset_scales_to_unit_interval():
    grey = _digits(5, 4, 4, 1)
    batches = list(make_dataset(grey, batch_size=2))
    assert [tuple(batch.shape) for batch in batches] == [(2, 4, 4, 1), (2, 4, 4, 1), (1, 4, 4, 1)]
    assert batches[0].dtype == "float32"
    np.testing.assert_allclose(
        np.concatenate([b.numpy() for b in batches]), grey / 255.0, atol=1e-6
    )
    binary = (grey > 127).astype(np.uint8)
    values = np.concatenate([b.numpy() for b in make_dataset(binary, batch_size=5)])
    np.testing.assert_array_equal(values, binary)


def test_make_dataset_shuffle_is_seeded_and_keeps_labels():
    images = np.arange(8, dtype=np.uint8).reshape(8, 1, 1, 1) * 30
    labels = np.arange(8)

    def first_epoch(seed):
        pairs = [
            (x.numpy(), y.numpy())
            for x, y in make_dataset(images, 3, shuffle=True, seed=seed, labels=labels)
        ]
        return np.concatenate([x for x, _ in pairs]).ravel(), np.concatenate([y for _, y in pairs])

    values, order = first_epoch(7)
    again, _ = first_epoch(7)
    np.testing.assert_array_equal(values, again)
    np.testing.assert_allclose(values, order * 30 / 255.0, atol=1e-6)
    assert sorted(order) == list(range(8))


def test_make_dataset_errors():
    with pytest.raises(
        ValueError, match=r"uint8 \(N, height, width, channels\). Received: shape=\(2, 3, 3\)"
    ):
        make_dataset(np.zeros((2, 3, 3), np.uint8), 2)
    with pytest.raises(ValueError, match=r"dtype=float32"):
        make_dataset(np.zeros((2, 3, 3, 1), np.float32), 2)
    with pytest.raises(ValueError, match=r"batch_size >= 1. Received: batch_size=0"):
        make_dataset(np.zeros((2, 3, 3, 1), np.uint8), 0)
