"""Serving graph code for image models: request images in, model images out.

The exported signatures of the image pipelines (PixelRNN, DRAW) take ``uint8``
images and hand the model float32 images in ``[0, 1]``; these functions are the
one place that conversion lives, so every signature reads pixels the same way:

- :func:`serving_image_batch`: a run-time shape check (for signatures whose
  image input has unknown rank) and the reshape to ``(batch, H, W, C)``.
- :func:`serving_images_to_float`: ``uint8`` → float32 ``[0, 1]`` (after that
  check, when given a shape); binary data accepts 0/1 or 0-255 pixels
  (thresholded at 128), colour is divided by 255.
- :func:`assert_same_shape`: a mask must have the shape of its images.
- :func:`unit_float_to_uint8`: model probabilities back to 0-255 bytes.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from rnnapps.errors import ConfigError


def _padded_shape(tensor, length: int):
    """The dynamic shape of ``tensor`` padded with ones to at least ``length`` entries."""
    return tf.concat([tf.shape(tensor), tf.ones([length], tf.int32)], axis=0)[:length]


def serving_image_batch(images, height: int, width: int, channels: int = 1, name: str = "images"):
    """Check a request's image batch at run time and reshape it to ``(batch, height, width, channels)``.

    A signature whose image input has unknown rank (to take both layouts)
    calls this first, so a wrong shape fails with a message naming the input
    rather than deep inside the model.

    Args:
        images: a tensor ``(batch, height, width)`` (only when ``channels`` is
            1) or ``(batch, height, width, channels)``, any dtype.
        height, width, channels: the shape the model takes.
        name: the input's name in the error message.

    Returns:
        ``images`` reshaped to ``(batch, height, width, channels)``, same dtype.

    Raises:
        tf.errors.InvalidArgumentError: at run time, for any other shape:
            ``images must be uint8 [batch, 28, 28] or [batch, 28, 28, 1]; got shape [...]``.

    Example:

    >>> batch = serving_image_batch(tf.zeros([2, 28, 28], tf.uint8), 28, 28)
    >>> tuple(batch.shape)
    (2, 28, 28, 1)
    """
    shape = _padded_shape(images, 4)
    rank = tf.rank(images)
    four_dimensional = tf.logical_and(tf.equal(rank, 4), tf.equal(shape[3], channels))
    layouts = tf.logical_or(tf.logical_and(tf.equal(rank, 3), channels == 1), four_dimensional)
    valid = tf.logical_and(layouts, tf.logical_and(tf.equal(shape[1], height), tf.equal(shape[2], width)))
    expected = f"[batch, {height}, {width}, {channels}]"
    if channels == 1:
        expected = f"[batch, {height}, {width}] or {expected}"
    check = tf.debugging.Assert(valid, [f"{name} must be uint8 {expected}; got shape", tf.shape(images)])
    with tf.control_dependencies([check]):
        return tf.reshape(images, [-1, height, width, channels])


def serving_images_to_float(images, binary: bool = True, image_shape=None, name: str = "images"):
    """A request's ``uint8`` images → the model's float32 ``[0, 1]`` images, and the request's scale.

    The one conversion of every image serving signature (PixelRNN's
    ``inpaint``/``log_prob``, DRAW's ``reconstruct``).

    Args:
        images: ``uint8`` tensor.
        binary: ``True`` for binary data: a batch whose largest value is at
            most 1 holds 0/1 pixels (``> 0`` is on), any other 0-255 pixels
            (``> 127`` is on, i.e. thresholded at 128); the floats are 0/1.
            ``False`` for colour or grey intensities: ``images / 255``.
        image_shape: ``(height, width, channels)`` to check ``images``
            against at run time and reshape to (see :func:`serving_image_batch`),
            for a signature whose image input has unknown rank; ``None``: any
            shape, kept.
        name: the input's name in the shape error message.

    Returns:
        ``(floats, scale)``: float32 images, and a ``uint8`` scalar, the value
        of a full pixel in the request's range (1 for a 0/1 request, else 255),
        so ``model_output * scale`` answers in the range the client sent.

    Example:

    >>> floats, scale = serving_images_to_float(tf.constant([[0, 200, 255]], tf.uint8))
    >>> floats.numpy().tolist(), int(scale)
    ([[0.0, 1.0, 1.0]], 255)
    >>> floats, scale = serving_images_to_float(tf.ones([2, 28, 28], tf.uint8), image_shape=(28, 28, 1))
    >>> tuple(floats.shape), int(scale)
    ((2, 28, 28, 1), 1)
    """
    if image_shape is not None:
        images = serving_image_batch(images, *image_shape, name=name)
    if not binary:
        return tf.cast(images, tf.float32) / 255.0, tf.constant(255, tf.uint8)
    full_range = tf.reduce_max(images) > 1
    on = tf.where(full_range, images > 127, images > 0)
    return tf.cast(on, tf.float32), tf.where(full_range, tf.constant(255, tf.uint8), tf.constant(1, tf.uint8))


def assert_same_shape(images, mask, name: str = "mask"):
    """A ``tf.debugging.Assert`` op that fails unless ``mask`` has exactly the shape of ``images``.

    Args:
        images: a tensor of rank at most 5.
        mask: the tensor that must match it.
        name: the mask's name in the error message.

    Returns:
        The assert op, for ``tf.control_dependencies``: ``mask must have the
        shape of images; got mask [...] images [...]``.

    Example:

    >>> check = assert_same_shape(tf.zeros([2, 4, 4]), tf.zeros([2, 4, 4]))
    """
    same = tf.logical_and(
        tf.equal(tf.rank(images), tf.rank(mask)),
        tf.reduce_all(tf.equal(_padded_shape(images, 5), _padded_shape(mask, 5))),
    )
    return tf.debugging.Assert(
        same, [f"{name} must have the shape of images; got {name}", tf.shape(mask), "images", tf.shape(images)]
    )


def unit_float_to_uint8(probabilities):
    """Float ``[0, 1]`` tensor → ``uint8`` 0-255, clipped and rounded (a model's pixels for a response).

    Args:
        probabilities: a float tensor of any shape.

    Returns:
        ``uint8``, same shape.

    Example:

    >>> unit_float_to_uint8(tf.constant([0.0, 0.5, 1.2])).numpy().tolist()
    [0, 128, 255]
    """
    return tf.cast(tf.round(tf.clip_by_value(tf.cast(probabilities, tf.float32), 0.0, 1.0) * 255.0), tf.uint8)


def occlusion_mask(shape, occlude: str, seed: int = 0) -> np.ndarray:
    """uint8 mask (1 = known) for ``shape`` ``(N, H, W[, 1])``.

    ``bottom``/``bottom-half``: the lower half hidden; ``right``/``right-half``: the
    right half; ``random``: each pixel hidden with probability 1/2 (seeded);
    ``box:r0,c0,r1,c1``: rows r0..r1-1 and columns c0..c1-1 hidden.
    """
    mask = np.ones(shape, dtype=np.uint8)
    height, width = shape[1], shape[2]
    kind = occlude.split("-")[0] if not occlude.startswith("box:") else "box"
    if kind == "bottom":
        mask[:, height // 2:] = 0
    elif kind == "right":
        mask[:, :, width // 2:] = 0
    elif kind == "random":
        mask = (np.random.default_rng(seed).random(shape) >= 0.5).astype(np.uint8)
    elif kind == "box":
        try:
            r0, c0, r1, c1 = (int(value) for value in occlude[4:].split(","))
        except ValueError:
            raise ConfigError(f"--occlude {occlude!r}: expected box:r0,c0,r1,c1 with four integers") from None
        if not (0 <= r0 < r1 <= height and 0 <= c0 < c1 <= width):
            raise ConfigError(f"--occlude {occlude!r}: the box must lie inside the {height}x{width} image")
        mask[:, r0:r1, c0:c1] = 0
    else:
        raise ConfigError(f"--occlude {occlude!r}: choose bottom, right, random or box:r0,c0,r1,c1")
    return mask
