"""End-to-end smoke tests of the DRAW pipeline on the SVHN .mat and binarized-MNIST fixtures."""

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from click.testing import CliRunner
from PIL import Image

from rnnapps.cli import cli
from rnnapps.config import resolve_config
from rnnapps.data import sources
from rnnapps.errors import ConfigError, DataNotFoundError
from rnnapps.export import load_export
from rnnapps.image_plots import READ_BOX_RGB, WRITE_BOX_RGB, tile_images, write_grid_animation
from rnnapps.pipelines.draw import DrawConfig
from rnnapps.runner import run
from tests.conftest import FIXTURE_DATA

SHAPES = {"svhn": (32, 32, 3), "binarized_mnist": (28, 28, 1)}
SMOKE_STEPS = 3


def _train_and_move(root: Path, dataset: str, data_dir: Path, **options):
    result = run("draw", preset="smoke", set_options={"dataset": dataset, **options}, data_dir=str(data_dir),
                 output_dir=str(root / "runs"), export_dir=str(root / "exports"), verbose=0)
    # Serving must not depend on anything left at the training location.
    moved = root / "moved" / "1"
    shutil.move(str(result.export_path), moved)
    return result, moved


@pytest.fixture(scope="module")
def svhn(tmp_path_factory):
    root = tmp_path_factory.mktemp("draw_svhn")
    data_dir = root / "data"
    (data_dir / "svhn").mkdir(parents=True)
    for mat in (FIXTURE_DATA / "svhn").glob("*.mat"):
        shutil.copy(mat, data_dir / "svhn" / mat.name)
    # Also the cpu preset's weight averaging, through a pipeline whose model has its own train step.
    return _train_and_move(root, "svhn", data_dir, weight_averaging=0.5)


@pytest.fixture(scope="module")
def mnist(canonical_run):
    # The cpu preset's no-attention variant, end to end (SVHN above keeps the attention grids).
    shared = canonical_run("draw")
    return shared.result, shared.export


@pytest.mark.parametrize("dataset", ["svhn", "binarized_mnist"])
def test_smoke_run_reports_bound_and_pictures(dataset, request):
    result, _ = request.getfixturevalue("svhn" if dataset == "svhn" else "mnist")
    metrics = result.metrics
    dimensions = int(np.prod(SHAPES[dataset]))
    assert math.isfinite(metrics["test_nll_bound_nats"]) and metrics["test_nll_bound_nats"] > 0
    assert metrics["test_bits_per_dim"] == pytest.approx(metrics["test_nll_bound_nats"] / (dimensions * math.log(2)))
    assert metrics["test_examples"] == (6 if dataset == "svhn" else 8)
    assert len(metrics["test_kl_per_step_nats"]) == SMOKE_STEPS
    assert result.config.attention is (dataset == "svhn")
    for picture in ("samples.png", "reconstructions.png", "kl_per_step.png", "canvas.gif", "learning_curves.png"):
        assert (result.run_dir / picture).stat().st_size > 0, picture
    with Image.open(result.run_dir / "canvas.gif") as gif:
        assert gif.n_frames == SMOKE_STEPS
    # With attention, the reconstructions are also animated with their read and write boxes.
    if result.config.attention:
        assert metrics["attention_animation"] == str(result.run_dir / "attention.gif")
        with Image.open(result.run_dir / "attention.gif") as gif:
            assert gif.n_frames == SMOKE_STEPS
            frames = [np.asarray(gif.convert("RGB"), "int32") for frame in range(gif.n_frames) if not gif.seek(frame)]
        # The GIF palette may shift a colour a little: look for pixels near each box colour.
        for rgb in (READ_BOX_RGB, WRITE_BOX_RGB):
            assert any((np.abs(frame - rgb).max(axis=-1) < 40).any() for frame in frames), rgb
    else:
        assert "attention_animation" not in metrics and not (result.run_dir / "attention.gif").exists()
    assert (result.run_dir / "model.keras").exists()


@pytest.mark.parametrize("dataset", ["svhn", "binarized_mnist"])
def test_export_from_moved_dir_generates_and_reconstructs(dataset, request):
    _, export = request.getfixturevalue("svhn" if dataset == "svhn" else "mnist")
    height, width, channels = SHAPES[dataset]
    loaded = load_export(export)
    assert {"serving_default", "generate", "reconstruct"} <= set(loaded.signatures)

    generate = loaded.signatures["generate"]
    first = generate(num=tf.constant(3), seed=tf.constant(7))
    assert first["images"].dtype == tf.uint8 and tuple(first["images"].shape) == (3, height, width, channels)
    assert first["canvases"].dtype == tf.uint8
    assert tuple(first["canvases"].shape) == (3, SMOKE_STEPS, height, width, channels)
    np.testing.assert_array_equal(first["canvases"][:, -1], first["images"])
    again = loaded.signatures["serving_default"](num=tf.constant(3), seed=tf.constant(7))
    np.testing.assert_array_equal(again["images"], first["images"])  # a fixed seed reproduces
    other = generate(num=tf.constant(3), seed=tf.constant(8))
    assert not np.array_equal(other["canvases"], first["canvases"])

    rng = np.random.default_rng(0)
    if dataset == "svhn":
        images = rng.integers(0, 256, (2, height, width, channels), dtype=np.uint8)
    else:
        images = (rng.random((2, height, width, channels)) > 0.5).astype(np.uint8)
    reconstructed = loaded.signatures["reconstruct"](images=tf.constant(images))
    assert reconstructed["images"].dtype == tf.uint8 and tuple(reconstructed["images"].shape) == images.shape
    bound = reconstructed["nll_bound"].numpy()
    assert bound.shape == (2,) and bound.dtype == np.float32 and np.all(np.isfinite(bound)) and np.all(bound > 0)
    repeat = loaded.signatures["reconstruct"](images=tf.constant(images))["nll_bound"].numpy()
    np.testing.assert_array_equal(repeat, bound)
    if dataset == "binarized_mnist":
        # 0/1 and 0/255 pixels are the same binary image.
        scaled = loaded.signatures["reconstruct"](images=tf.constant(images * 255))["nll_bound"].numpy()
        np.testing.assert_allclose(scaled, bound, rtol=1e-6)


def test_a_weight_averaged_run_ends_on_the_average(svhn):
    import keras

    from rnnapps.training import AveragedAdam

    result, _ = svhn
    model = keras.saving.load_model(result.run_dir / "model.keras")
    assert isinstance(model.optimizer, AveragedAdam)
    averages = model.optimizer._model_variables_moving_average
    assert len(averages) == len(model.trainable_variables) > 0
    for variable, average in zip(model.optimizer._trainable_variables, averages, strict=True):
        np.testing.assert_allclose(variable.numpy(), average.numpy())


def test_missing_svhn_names_where_to_put_files(tmp_path, monkeypatch):
    monkeypatch.setattr(sources, "is_online", lambda timeout=3.0: False)
    with pytest.raises(DataNotFoundError, match=r"SVHN not found: expected svhn/svhn\.npz.*train_32x32\.mat"):
        run("draw", preset="smoke", data_dir=str(tmp_path), output_dir=str(tmp_path / "runs"), export_dir=None,
            verbose=0)
    result = CliRunner().invoke(cli, ["run", "draw", "--preset", "smoke", "--data-dir", str(tmp_path),
                                      "--output-dir", str(tmp_path / "runs"), "--no-export"])
    assert result.exit_code != 0 and "SVHN not found" in result.output and "Traceback" not in result.output


def test_predict_cli_writes_png_and_gif(mnist, tmp_path):
    _, export = mnist
    output = tmp_path / "pictures"
    arguments = ["predict", "draw", "--samples", "4", "--seed", "3", "--model", str(export), "--output", str(output)]
    result = CliRunner().invoke(cli, [*arguments, "--animate"])
    assert result.exit_code == 0, result.output
    png, gif = output / "draw_samples.png", output / "draw_canvas.gif"
    assert str(png) in result.output and str(gif) in result.output
    assert png.stat().st_size > 0 and gif.stat().st_size > 0
    first = np.asarray(Image.open(png))
    assert CliRunner().invoke(cli, arguments).exit_code == 0
    np.testing.assert_array_equal(np.asarray(Image.open(png)), first)

    empty = CliRunner().invoke(cli, ["predict", "draw", "--export-dir", str(tmp_path / "none")])
    assert empty.exit_code != 0 and "no export of 'draw'" in empty.output


def test_config_presets_and_errors():
    smoke = resolve_config(DrawConfig, "smoke")
    assert smoke.dataset == "svhn" and smoke.glimpse_sizes == (2, 3)
    assert resolve_config(DrawConfig, "full").glimpse_sizes == (12, 12)
    assert resolve_config(DrawConfig, "full", set_options={"dataset": "binarized_mnist"}).glimpse_sizes == (2, 5)
    cpu = resolve_config(DrawConfig, "cpu", set_options={"dataset": "binarized_mnist"})
    assert cpu.attention is True and cpu.glimpse_sizes == (8, 20)  # the measured model draws with attention
    with pytest.raises(ConfigError, match="dataset='cifar'"):
        resolve_config(DrawConfig, "smoke", set_options={"dataset": "cifar"})
    with pytest.raises(ConfigError, match="likelihood='logistic' is not implemented"):
        resolve_config(DrawConfig, "smoke", set_options={"likelihood": "logistic"})
    with pytest.raises(ConfigError, match="steps=0"):
        resolve_config(DrawConfig, "smoke", set_options={"steps": "0"})


def test_image_grid_and_animation_helpers(tmp_path):
    images = np.zeros((5, 4, 3, 1), np.float32)
    images[1] = 1.0
    grid = tile_images(images, columns=2, scale=1, gutter=1)
    assert grid.shape == (3 * 5 + 1, 2 * 4 + 1, 1) and grid.dtype == np.uint8
    assert grid[2, 6, 0] == 255 and grid[1, 1, 0] == 0 and grid[0, 0, 0] == 90  # the second tile is white, the first black
    # Distinct frames: Pillow merges identical consecutive ones.
    frames = np.broadcast_to(np.arange(4, dtype=np.uint8)[None, :, None, None, None] * 60, (2, 4, 6, 6, 3))
    path = write_grid_animation(frames, tmp_path / "a.gif", columns=2)
    with Image.open(path) as gif:
        assert gif.n_frames == 4
    with pytest.raises(ValueError, match="frames"):
        write_grid_animation(np.zeros((2, 6, 6, 3)), tmp_path / "b.gif")
    # A box is an outline on its own tile, clipped to the image: tile 1 of a 2-column grid, scale 1.
    boxes = np.zeros((2, 4, 4)) + [[[0.0, 0.0, 0.0, 0.0]], [[1.0, 2.0, 3.0, 99.0]]]
    path = write_grid_animation(np.zeros((2, 4, 6, 6, 1), np.uint8), tmp_path / "c.gif", columns=2, scale=1,
                                boxes=[(boxes, (255, 0, 0))])
    with Image.open(path) as gif:
        picture = np.asarray(gif.convert("RGB"))
    left, top = 2 + 6 + 2, 2  # the second tile's corner (gutter 2)
    red = np.argwhere((picture == [255, 0, 0]).all(axis=-1))
    red = red[red[:, 1] >= left]  # tile 1's box
    assert red[:, 1].min() == left + 1 and red[:, 1].max() == left + 3  # x from 1 to 3
    assert red[:, 0].min() == top + 2 and red[:, 0].max() == top + 5  # y from 2 to the clipped bottom row
    assert picture[2, 2].tolist() == [255, 0, 0]  # tile 0's one-pixel box
    with pytest.raises(ValueError, match="box corners"):
        write_grid_animation(np.zeros((2, 4, 6, 6, 1)), tmp_path / "d.gif", boxes=[(np.zeros((2, 3, 4)), (0, 0, 0))])
