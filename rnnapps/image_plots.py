"""Pictures of images: tiled grids (PNG), animated grids (GIF) and per-step bar charts.

Used by the generative pipelines (DRAW's samples, reconstructions and the
canvas drawn step by step; PixelRNN's samples and inpaintings). Images are
NumPy arrays ``(N, H, W, C)`` with ``C`` 1 (greyscale) or 3 (RGB), either
float in ``[0, 1]`` or ``uint8`` ``0-255``. PNG and GIF files are written with Pillow (a matplotlib dependency),
charts with matplotlib's headless Agg backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

GUTTER_VALUE = 90  # dark grey between tiles, distinct from a black background


def to_uint8(images) -> np.ndarray:
    """``uint8`` 0-255 copies of float ``[0, 1]`` or ``uint8`` images (floats are clipped)."""
    images = np.asarray(images)
    if images.dtype == np.uint8:
        return images
    return np.round(np.clip(images.astype("float64"), 0.0, 1.0) * 255.0).astype(np.uint8)


def tile_images(images, columns: int = 8, scale: int = 2, gutter: int = 2) -> np.ndarray:
    """One ``uint8`` picture ``(rows·(H+g)+g, columns·(W+g)+g, C)`` of ``images`` in rows of ``columns``.

    Args:
        images: ``(N, H, W, C)`` (or ``(N, H, W)``), float ``[0, 1]`` or ``uint8``.
        columns: tiles per row; the last row is padded with gutter colour.
        scale: each pixel becomes a ``scale × scale`` block (28-pixel digits are tiny).
        gutter: pixels of gutter between tiles (before scaling).
    """
    images = to_uint8(images)
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or len(images) == 0:
        raise ValueError(f"Expected a non-empty batch of images (N, H, W, C). Received: shape={images.shape}")
    if columns < 1 or scale < 1 or gutter < 0:
        raise ValueError(f"Expected columns >= 1, scale >= 1, gutter >= 0. Received: {columns=}, {scale=}, {gutter=}")
    count, height, width, channels = images.shape
    columns = min(columns, count)
    rows = -(-count // columns)
    canvas = np.full(
        (rows * (height + gutter) + gutter, columns * (width + gutter) + gutter, channels), GUTTER_VALUE, np.uint8
    )
    for index, image in enumerate(images):
        top = gutter + (index // columns) * (height + gutter)
        left = gutter + (index % columns) * (width + gutter)
        canvas[top : top + height, left : left + width] = image
    return np.repeat(np.repeat(canvas, scale, axis=0), scale, axis=1)


def _pillow_image(picture: np.ndarray):
    from PIL import Image

    return Image.fromarray(picture[..., 0] if picture.shape[-1] == 1 else picture)


def write_image_grid(images, path, columns: int = 8, scale: int = 2) -> Path:
    """Write ``images`` as one tiled PNG (see :func:`tile_images`); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _pillow_image(tile_images(images, columns, scale)).save(path, format="PNG")
    return path


def write_inpainting_grid(originals, known, completions, path, scale: int = 2) -> Path:
    """Write the PixelRNN paper's inpainting figure: one row per image, occluded | completions | original.

    Args:
        originals: ``(N, H, W, C)`` images, float ``[0, 1]`` or ``uint8``
            (binary 0/1 images: pass them as floats).
        known: ``(N, H, W, C)``, nonzero where a pixel was visible; hidden
            pixels of the occluded image are shown mid-grey.
        completions: ``(N, K, H, W, C)``, ``K`` completions of every image, as ``originals``.
        path: the ``.png`` to write.
        scale: as in :func:`tile_images`.

    Example:

    >>> images = np.ones((2, 4, 4, 1), "float32")
    >>> known = np.ones_like(images)
    >>> path = write_inpainting_grid(images, known, images[:, None], "/tmp/inpainting.png")
    """
    originals = to_uint8(originals)
    completions = to_uint8(completions)
    occluded = np.where(np.asarray(known) > 0, originals, np.uint8(128))
    rows = np.concatenate([occluded[:, None], completions, originals[:, None]], axis=1)
    return write_image_grid(rows.reshape((-1,) + rows.shape[2:]), path, columns=rows.shape[1], scale=scale)


def write_grid_animation(
    frames, path, columns: int = 8, scale: int = 2, frame_ms: int = 120, hold_last_ms: int = 1500,
    boxes: Sequence[tuple[np.ndarray, tuple[int, int, int]]] = (),
) -> Path:
    """Write an animated GIF whose frame ``t`` is the grid of ``frames[:, t]``.

    Args:
        frames: ``(N, T, H, W, C)``: ``N`` images seen at ``T`` moments (DRAW's
            canvas after every step), float ``[0, 1]`` or ``uint8``.
        path: the ``.gif`` to write.
        columns, scale: as in :func:`tile_images`.
        frame_ms: display time of every frame.
        hold_last_ms: display time of the last frame, so the result is seen
            before the animation loops.
        boxes: ``(corners, rgb)`` pairs: ``corners`` ``(N, T, 4)`` are ``(x0, y0, x1, y1)`` in
            0-based pixel coordinates of each image, drawn as an ``rgb`` rectangle on image ``n``
            in frame ``t`` (DRAW's read and write grids); parts outside the image are clipped.
    """
    frames = to_uint8(frames)
    if frames.ndim != 5 or frames.shape[1] == 0:
        raise ValueError(f"Expected frames (N, T, H, W, C) with T >= 1. Received: shape={frames.shape}")
    for corners, _ in boxes:
        if np.shape(corners) != frames.shape[:2] + (4,):
            raise ValueError(f"Expected box corners {frames.shape[:2] + (4,)}. Received: shape={np.shape(corners)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pictures = []
    for step in range(frames.shape[1]):
        picture = _pillow_image(tile_images(frames[:, step], columns, scale))
        if boxes:
            picture = _draw_boxes(picture.convert("RGB"), [(corners[:, step], rgb) for corners, rgb in boxes],
                                  frames.shape[2:4], min(columns, len(frames)), scale)
        pictures.append(picture)
    durations = [frame_ms] * (len(pictures) - 1) + [hold_last_ms]
    pictures[0].save(
        path, format="GIF", save_all=True, append_images=pictures[1:], duration=durations, loop=0, optimize=False
    )
    return path


#: outline colours of DRAW's read and write grids in :func:`write_attention_animation`
READ_BOX_RGB, WRITE_BOX_RGB = (0, 200, 0), (230, 0, 0)


def write_attention_animation(trace: dict, path, columns: int = 8, scale: int = 3, frame_ms: int = 250) -> Path:
    """A GIF of images being redrawn step by step, with where each step read (green) and wrote (red).

    Args:
        trace: ``DrawModel.attention_trace``'s outputs: ``canvases`` ``(N, T, H, W, C)`` and
            ``read_boxes``/``write_boxes`` ``(N, T, 4)`` (either may be None: no such attention).
        path, columns, scale, frame_ms: as in :func:`write_grid_animation`.
    """
    boxes = [(np.asarray(trace[key]), rgb) for key, rgb in (("read_boxes", READ_BOX_RGB),
                                                              ("write_boxes", WRITE_BOX_RGB)) if trace[key] is not None]
    return write_grid_animation(np.asarray(trace["canvases"]), path, columns=columns, scale=scale,
                                frame_ms=frame_ms, boxes=boxes)


def _draw_boxes(picture, boxes, image_size: tuple[int, int], columns: int, scale: int, gutter: int = 2):
    """Rectangles on the tiles of a :func:`tile_images` picture (same layout), clipped to each tile."""
    from PIL import ImageDraw

    height, width = image_size
    draw = ImageDraw.Draw(picture)
    for corners, rgb in boxes:
        for index, (x0, y0, x1, y1) in enumerate(np.asarray(corners, dtype="float64")):
            top = gutter + (index // columns) * (height + gutter)
            left = gutter + (index % columns) * (width + gutter)
            x0, x1 = np.clip([x0, x1], 0, width - 1)
            y0, y1 = np.clip([y0, y1], 0, height - 1)
            draw.rectangle([(left + x0) * scale, (top + y0) * scale, (left + x1 + 1) * scale - 1,
                            (top + y1 + 1) * scale - 1], outline=tuple(rgb))
    return picture


def write_step_bars(values: Sequence[float], path, title: str = "", ylabel: str = "", xlabel: str = "step") -> Path:
    """A bar chart of one value per step (``1 … T``), e.g. DRAW's KL per glimpse."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    values = np.asarray(values, dtype="float64").reshape(-1)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure, axis = plt.subplots(figsize=(max(4.0, 0.18 * len(values) + 2.5), 3.2))
    axis.bar(np.arange(1, len(values) + 1), values, color="tab:blue")
    axis.set_xlabel(xlabel)
    axis.set_ylabel(ylabel)
    if title:
        axis.set_title(title)
    axis.grid(axis="y", alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path
