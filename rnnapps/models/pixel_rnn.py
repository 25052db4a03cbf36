"""PixelRNN building blocks: masked convolutions and the Row LSTM.

Van den Oord, Kalchbrenner and Kavukcuoglu (2016), "Pixel Recurrent Neural
Networks" (ICML), sections 3.1 and 3.4. Pixels are modelled in raster order
(row by row, left to right), so every layer must keep the output at pixel
``(i, j)`` a function of the pixels before ``(i, j)`` only. Mask A (first layer)
also hides the centre pixel itself; mask B (every later layer) lets a feature
at ``(i, j)`` see the features already computed at ``(i, j)``.

Colour channels: with ``color_channels=3`` the channels of every feature map are
split into three contiguous blocks (R, G, B, in that order; the channel count
must be divisible by 3). At the centre pixel, block ``g`` of the output sees the
input blocks before ``g`` (mask A) or up to and including ``g`` (mask B), so R is
predicted before G, and G before B, as in section 3.4 of the paper.

The whole model and its use:

- :func:`build_pixel_rnn`: mask-A convolution → Row LSTM stack → 1×1 mask-B
  convolutions → one Bernoulli logit per pixel, from plain keyword arguments.
- :func:`bernoulli_nll`: its loss, nats per image.
- :func:`complete_images`: the autoregressive sampler (inpainting and
  unconditional samples) in a ``tf.while_loop``; :func:`inpaint_numpy` and
  :func:`sample_numpy` run it on NumPy arrays.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

MASK_TYPES = ("A", "B")


def _channel_groups(channels: int, color_channels: int) -> np.ndarray:
    """The colour block (0 .. color_channels-1) of each of ``channels`` channels."""
    return np.arange(channels) // (channels // color_channels)


def causal_kernel_mask(
    kernel_size: tuple[int, int],
    input_channels: int,
    output_channels: int,
    mask_type: str,
    color_channels: int = 1,
    output_groups: np.ndarray | None = None,
) -> np.ndarray:
    """The 0/1 float32 mask ``(kernel_height, kernel_width, in, out)`` of a causal kernel.

    Kernel positions in rows above the centre, and left of the centre in the
    centre row, are kept; positions right of and below the centre are zeroed. The
    centre itself is zero for mask A and one for mask B (per colour block pair
    when ``color_channels > 1``). ``output_groups`` overrides the colour block of
    each output channel (the Row LSTM lays out four gates, each split into
    colour blocks).
    """
    height, width = kernel_size
    center_row, center_col = height // 2, width // 2
    mask = np.zeros((height, width, input_channels, output_channels), dtype="float32")
    mask[:center_row] = 1.0
    mask[center_row, :center_col] = 1.0
    input_groups = _channel_groups(input_channels, color_channels)
    if output_groups is None:
        output_groups = _channel_groups(output_channels, color_channels)
    if mask_type == "A":
        center = input_groups[:, None] < output_groups[None, :]
    else:
        center = input_groups[:, None] <= output_groups[None, :]
    mask[center_row, center_col] = center.astype("float32")
    return mask


def _check_color_channels(color_channels, channels, what):
    if color_channels not in (1, 3):
        raise ValueError(
            f"Expected color_channels to be 1 or 3. Received: color_channels={color_channels!r}"
        )
    if channels is not None and channels % color_channels:
        raise ValueError(
            f"Expected {what} divisible by color_channels={color_channels} (one block of channels per colour). "
            f"Received: {what}={channels}"
        )


@keras.saving.register_keras_serializable(package="rnnapps")
class MaskedConv2D(keras.layers.Conv2D):
    """A 2-D convolution whose kernel only sees pixels earlier in raster order.

    PixelCNN/PixelRNN's masked convolution (van den Oord et al. 2016, "Pixel
    Recurrent Neural Networks", section 3.4). The mask is a constant built in
    ``build()`` and multiplied into the kernel on every call, so the masked-out
    weights keep receiving zero gradient and are never used, and no weight is
    ever reassigned. Padding is always ``"same"`` and strides 1: the output at
    ``(i, j)`` is the prediction for input pixel ``(i, j)``.

    Args:
        filters: number of output channels.
        kernel_size: an odd int or a pair of odd ints (the centre must be a pixel).
        mask_type: ``"A"`` excludes the centre pixel (use for the first layer, on
            the raw image), ``"B"`` includes it (every later layer).
        color_channels: 1 (greyscale/binary data), or 3 to split the channels into
            R, G, B blocks that are predicted one after another (see the module
            docstring). Input and output channels must then be divisible by 3.
        **kwargs: any other ``keras.layers.Conv2D`` argument (``activation``,
            ``use_bias``, initializers, regularizers, ``dilation_rate``, ...).

    Call arguments:
        inputs: float tensor ``(batch, height, width, channels)`` (channels last).

    Returns:
        ``(batch, height, width, filters)``.

    Example:

    >>> layer = MaskedConv2D(16, 7, mask_type="A")
    >>> tuple(layer(keras.ops.zeros((2, 28, 28, 1))).shape)
    (2, 28, 28, 16)
    """

    def __init__(self, filters, kernel_size, mask_type="B", color_channels=1, **kwargs):
        if mask_type not in MASK_TYPES:
            raise ValueError(
                f"Expected mask_type to be one of {MASK_TYPES}. Received: mask_type={mask_type!r}"
            )
        _check_color_channels(color_channels, int(filters), "filters")
        padding = kwargs.pop("padding", "same")
        if str(padding).lower() != "same":
            raise ValueError(
                f"MaskedConv2D needs padding='same' to keep pixels aligned. Received: padding={padding!r}"
            )
        strides = kwargs.pop("strides", 1)
        if tuple(np.broadcast_to(strides, (2,))) != (1, 1):
            raise ValueError(
                f"MaskedConv2D needs strides=1 to keep pixels aligned. Received: strides={strides!r}"
            )
        if kwargs.get("groups", 1) != 1:
            raise ValueError(
                f"MaskedConv2D does not support grouped convolutions. Received: groups={kwargs['groups']!r}"
            )
        if kwargs.get("data_format", "channels_last") not in (None, "channels_last"):
            raise ValueError(
                f"MaskedConv2D supports channels_last only. Received: data_format={kwargs['data_format']!r}"
            )
        sizes = tuple(int(size) for size in np.broadcast_to(kernel_size, (2,)))
        if any(size < 1 or size % 2 == 0 for size in sizes):
            raise ValueError(
                f"Expected odd kernel sizes (a centre pixel). Received: kernel_size={kernel_size!r}"
            )
        super().__init__(
            filters, sizes, strides=1, padding="same", data_format="channels_last", **kwargs
        )
        self.mask_type = mask_type
        self.color_channels = int(color_channels)
        self.kernel_mask = None

    def build(self, input_shape):
        input_channels = input_shape[-1]
        _check_color_channels(self.color_channels, input_channels, "input channels")
        super().build(input_shape)
        self.kernel_mask = causal_kernel_mask(
            self.kernel_size, input_channels, self.filters, self.mask_type, self.color_channels
        )

    def convolution_op(self, inputs, kernel):
        mask = ops.convert_to_tensor(self.kernel_mask, dtype=kernel.dtype)
        return super().convolution_op(inputs, kernel * mask)

    def get_config(self):
        config = super().get_config()
        # strides/padding/data_format are fixed by the masking, not user choices.
        for key in ("strides", "padding", "data_format", "groups"):
            config.pop(key, None)
        config.update(mask_type=self.mask_type, color_channels=self.color_channels)
        return config


@keras.saving.register_keras_serializable(package="rnnapps")
class RowLSTM(keras.layers.Layer):
    """Row LSTM: an LSTM that runs over the rows of an image, top to bottom.

    Van den Oord et al. 2016, "Pixel Recurrent Neural Networks", section 3.1. The
    gates of the whole image are computed at once before the loop by a masked
    (mask B) ``1 x input_kernel_size`` convolution along each row, the
    input-to-state component. The loop then walks the rows: the state-to-state
    component is a ``1 x kernel_size`` convolution over the previous row's
    hidden state, and each pixel of the row is an LSTM unit::

        [i, f, g, o] = [sigmoid, sigmoid, tanh, sigmoid](K_ss * h_{r-1} + K_is * x_r + b)
        c_r = f * c_{r-1} + i * g,    h_r = o * tanh(c_r)

    The receptive field is a triangle above each pixel plus the pixels to its
    left in its own row (the input-to-state kernel does not look right). The loop
    is ``keras.ops.scan`` over rows, which trains fastest on CPU without XLA.

    Args:
        units: hidden channels ``h`` per pixel (divisible by ``color_channels``).
        kernel_size: width ``k`` of the state-to-state convolution (odd, >= 1).
        input_kernel_size: width of the masked input-to-state convolution (odd).
        color_channels: 1, or 3 for R/G/B channel blocks (module docstring): the
            input-to-state mask then keeps each colour's gates blind to later
            colours of the same pixel. The previous row is entirely in the
            past, so the state-to-state convolution needs no mask.
        unit_forget_bias: start the forget gate bias at 1 (Jozefowicz et al. 2015).
        kernel_initializer: initializer of the input-to-state kernel.
        recurrent_initializer: initializer of the state-to-state kernel.
        bias_initializer: initializer of the gate bias.

    Call arguments:
        inputs: float tensor ``(batch, height, width, channels)``; with
            ``color_channels=3`` channels must be divisible by 3.

    Returns:
        ``(batch, height, width, units)``, the hidden state of every pixel.

    Example:

    >>> layer = RowLSTM(32)
    >>> tuple(layer(keras.ops.zeros((2, 28, 28, 16))).shape)
    (2, 28, 28, 32)
    """

    GATES = 4

    def __init__(
        self,
        units,
        kernel_size=3,
        input_kernel_size=3,
        color_channels=1,
        unit_forget_bias=True,
        kernel_initializer="glorot_uniform",
        recurrent_initializer="orthogonal",
        bias_initializer="zeros",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(units) < 1:
            raise ValueError(f"Expected units >= 1. Received: units={units!r}")
        for name, size in (("kernel_size", kernel_size), ("input_kernel_size", input_kernel_size)):
            if int(size) < 1 or int(size) % 2 == 0:
                raise ValueError(
                    f"Expected {name} to be an odd integer >= 1. Received: {name}={size!r}"
                )
        _check_color_channels(color_channels, int(units), "units")
        self.units = int(units)
        self.kernel_size = int(kernel_size)
        self.input_kernel_size = int(input_kernel_size)
        self.color_channels = int(color_channels)
        self.unit_forget_bias = bool(unit_forget_bias)
        self.kernel_initializer = keras.initializers.get(kernel_initializer)
        self.recurrent_initializer = keras.initializers.get(recurrent_initializer)
        self.bias_initializer = keras.initializers.get(bias_initializer)
        self.input_mask = None

    def build(self, input_shape):
        if len(input_shape) != 4 or input_shape[-1] is None:
            raise ValueError(
                f"RowLSTM expects inputs (batch, height, width, channels) with known channels. "
                f"Received: input_shape={input_shape}"
            )
        channels = int(input_shape[-1])
        _check_color_channels(self.color_channels, channels, "input channels")
        gate_units = self.GATES * self.units
        self.input_kernel = self.add_weight(
            name="input_kernel",
            shape=(1, self.input_kernel_size, channels, gate_units),
            initializer=self.kernel_initializer,
        )
        # The orthogonal initializer works on the flattened (k * units, 4 * units) matrix.
        self.recurrent_kernel = self.add_weight(
            name="recurrent_kernel",
            shape=(self.kernel_size, self.units, gate_units),
            initializer=self.recurrent_initializer,
        )
        if self.unit_forget_bias:
            units, base = self.units, self.bias_initializer

            def bias_initializer(shape, dtype=None):
                return ops.concatenate(
                    [
                        base((units,), dtype=dtype),
                        ops.ones((units,), dtype=dtype),
                        base((2 * units,), dtype=dtype),
                    ]
                )
        else:
            bias_initializer = self.bias_initializer
        self.bias = self.add_weight(name="bias", shape=(gate_units,), initializer=bias_initializer)
        # Gate order [i, f, g, o], each gate split into the same colour blocks as the hidden state.
        output_groups = np.tile(_channel_groups(self.units, self.color_channels), self.GATES)
        self.input_mask = causal_kernel_mask(
            (1, self.input_kernel_size),
            channels,
            gate_units,
            "B",
            self.color_channels,
            output_groups,
        )

    def call(self, inputs):
        input_kernel = self.input_kernel * ops.convert_to_tensor(
            self.input_mask, dtype=self.compute_dtype
        )
        input_gates = ops.conv(inputs, input_kernel, padding="same") + self.bias
        batch, width = ops.shape(inputs)[0], ops.shape(inputs)[2]
        # scan walks the leading axis, so rows go first: (height, batch, width, 4 * units).
        rows = ops.transpose(input_gates, (1, 0, 2, 3))
        zeros = ops.zeros((batch, width, self.units), dtype=self.compute_dtype)
        recurrent_kernel = self.recurrent_kernel

        def step(carry, row_gates):
            hidden, cell = carry
            gates = row_gates + ops.conv(hidden, recurrent_kernel, padding="same")
            input_gate, forget_gate, candidate_gate, output_gate = ops.split(gates, 4, axis=-1)
            cell = ops.sigmoid(forget_gate) * cell + ops.sigmoid(input_gate) * ops.tanh(
                candidate_gate
            )
            hidden = ops.sigmoid(output_gate) * ops.tanh(cell)
            return (hidden, cell), (hidden, cell)

        _, (hidden_rows, _) = ops.scan(step, (zeros, zeros), rows)
        return ops.transpose(hidden_rows, (1, 0, 2, 3))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:3]) + (self.units,)

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            kernel_size=self.kernel_size,
            input_kernel_size=self.input_kernel_size,
            color_channels=self.color_channels,
            unit_forget_bias=self.unit_forget_bias,
            kernel_initializer=keras.initializers.serialize(self.kernel_initializer),
            recurrent_initializer=keras.initializers.serialize(self.recurrent_initializer),
            bias_initializer=keras.initializers.serialize(self.bias_initializer),
        )
        return config


@keras.saving.register_keras_serializable(package="rnnapps")
def bernoulli_nll(targets, logits):
    """Negative log-likelihood in nats per image of 0/1 ``targets`` under Bernoulli ``logits``.

    The sigmoid cross-entropy summed over every pixel and channel, computed in
    float32 (exact under mixed precision). Registered as ``rnnapps>bernoulli_nll``,
    so a compiled PixelRNN's ``model.keras`` reloads with its loss.

    Args:
        targets: 0/1 images ``(batch, height, width, channels)``, any dtype.
        logits: the model's logits, same shape.

    Returns:
        float32 ``(batch,)``.

    Example:

    >>> nll = bernoulli_nll(keras.ops.ones((2, 4, 4, 1)), keras.ops.zeros((2, 4, 4, 1)))
    >>> [round(float(value), 3) for value in nll]  # 16 pixels of ln 2
    [11.09, 11.09]
    """
    targets = ops.cast(targets, "float32")
    logits = ops.cast(logits, "float32")
    per_pixel = ops.binary_crossentropy(targets, logits, from_logits=True)
    return ops.sum(ops.reshape(per_pixel, (ops.shape(per_pixel)[0], -1)), axis=-1)


def build_pixel_rnn(
    height: int = 28,
    width: int = 28,
    channels: int = 1,
    filters: int = 32,
    hidden_units: int = 32,
    row_lstm_layers: int = 2,
    residual: bool = True,
    state_kernel_size: int = 3,
    input_kernel_size: int = 3,
    output_units: int = 64,
) -> keras.Model:
    """An uncompiled PixelRNN (Row LSTM): a Bernoulli logit per pixel of a binary image.

    Mask-A 7×7 convolution → ``row_lstm_layers`` × [:class:`RowLSTM` (+ a 1×1
    mask-B projection to ``filters`` when ``hidden_units != filters``) + a
    residual connection] → ReLU → 1×1 mask-B convolution (``output_units``,
    ReLU) → 1×1 mask-B convolution to ``channels`` float32 logits (van den Oord
    et al. 2016, sections 3.1, 3.4 and 4). The logit at ``(i, j)`` depends only
    on the pixels before ``(i, j)`` in raster order. Compile it with
    :func:`bernoulli_nll`.

    Args:
        height, width, channels: the image shape (``channels`` 1: binary images).
        filters: channels of the mask-A convolution and of the residual stream.
        hidden_units: hidden units ``h`` of every Row LSTM layer.
        row_lstm_layers: how many Row LSTM layers.
        residual: add every Row LSTM's output to its input (``False``: a plain stack).
        state_kernel_size: width of the Row LSTM's state-to-state convolution.
        input_kernel_size: width of its masked input-to-state convolution.
        output_units: channels of the first 1×1 output convolution.

    Returns:
        A functional ``keras.Model`` named ``pixel_rnn`` mapping float 0/1
        images ``(batch, height, width, channels)`` to logits of the same shape.

    Example:

    >>> model = build_pixel_rnn(height=8, width=8, filters=4, hidden_units=4, row_lstm_layers=1, output_units=4)
    >>> tuple(model(keras.ops.zeros((2, 8, 8, 1))).shape)
    (2, 8, 8, 1)
    """
    images = keras.Input(shape=(height, width, channels), name="images")
    x = MaskedConv2D(filters, 7, mask_type="A", name="input_conv")(images)
    for index in range(row_lstm_layers):
        hidden = RowLSTM(
            hidden_units,
            kernel_size=state_kernel_size,
            input_kernel_size=input_kernel_size,
            name=f"row_lstm_{index + 1}",
        )(x)
        if not residual:
            x = hidden
            continue
        # A 1x1 convolution sees one pixel's own features only, so it keeps the model causal.
        if hidden_units != filters:
            hidden = MaskedConv2D(filters, 1, mask_type="B", name=f"residual_projection_{index + 1}")(hidden)
        x = keras.layers.Add(name=f"residual_{index + 1}")([x, hidden])
    x = keras.layers.ReLU(name="output_relu")(x)
    x = MaskedConv2D(output_units, 1, mask_type="B", activation="relu", name="output_conv")(x)
    # float32 logits keep the summed cross-entropy exact under mixed precision.
    logits = MaskedConv2D(channels, 1, mask_type="B", dtype="float32", name="logits")(x)
    return keras.Model(images, logits, name="pixel_rnn")


def complete_images(model, images, known, seed):
    """Sample every unknown pixel of ``images`` in raster order, conditioned on all known ones.

    Each sampled position costs one forward pass of the whole model on the
    current canvas (the Row LSTM has no cheaper incremental step here), so only
    positions where some image of the batch has an unknown pixel are visited:
    784 passes for an unconditional 28×28 sample, 392 for a hidden lower half.
    Graph code (a ``tf.while_loop``): call it inside a ``tf.function`` or a
    serving signature.

    Args:
        model: a PixelRNN mapping float ``(batch, height, width, 1)`` 0/1 images to logits.
        images: float ``(batch, height, width, 1)`` 0/1 values (unknown ones are ignored).
        known: bool, same shape; True where a pixel is given and must be kept.
        seed: int32 scalar; the same seed and inputs give the same completions
            (pixel ``p`` draws a stateless uniform with seed ``(seed, p)``).

    Returns:
        float32 ``(batch, height, width, 1)``: known pixels unchanged, the rest sampled.

    Example:

    >>> model = build_pixel_rnn(height=4, width=4, filters=4, hidden_units=4, row_lstm_layers=1, output_units=4)
    >>> images = tf.zeros([2, 4, 4, 1])
    >>> completed = complete_images(model, images, tf.zeros_like(images, tf.bool), tf.constant(0))
    >>> tuple(completed.shape)
    (2, 4, 4, 1)
    """
    images = tf.cast(images, tf.float32)
    known = tf.cast(known, tf.bool)
    shape = tf.shape(images)
    batch, height, width = shape[0], shape[1], shape[2]
    canvas = tf.where(known, images, tf.zeros_like(images))
    unknown_somewhere = tf.reduce_any(tf.reshape(tf.logical_not(known), [batch, height * width]), axis=0)
    positions = tf.cast(tf.reshape(tf.where(unknown_somewhere), [-1]), tf.int32)
    seed = tf.cast(seed, tf.int32)

    def step(index, canvas):
        position = positions[index]
        row, column = position // width, position % width
        logits = model(canvas, training=False)
        probability = tf.sigmoid(tf.cast(logits[:, row, column, 0], tf.float32))
        noise = tf.random.stateless_uniform([batch], seed=tf.stack([seed, position]))
        draw = tf.cast(noise < probability, tf.float32)[:, None, None, None]
        here = tf.reshape(tf.one_hot(position, height * width, on_value=True, off_value=False), [1, height, width, 1])
        canvas = tf.where(tf.logical_and(here, tf.logical_not(known)), draw, canvas)
        return index + 1, canvas

    _, canvas = tf.while_loop(lambda index, _: index < tf.size(positions), step, [tf.constant(0), canvas])
    return canvas


def _complete_numpy(model, images: np.ndarray, known: np.ndarray, seed: int) -> np.ndarray:
    completed = tf.function(lambda x, k, s: complete_images(model, x, k, s))(images, known, tf.constant(seed))
    return completed.numpy().astype(np.uint8)


def inpaint_numpy(model, images: np.ndarray, known: np.ndarray, samples: int = 1, seed: int = 0) -> np.ndarray:
    """``samples`` completions of every image by :func:`complete_images`, on NumPy arrays.

    Args:
        model: a PixelRNN (:func:`build_pixel_rnn`).
        images: uint8 0/1 images ``(N, H, W, 1)``.
        known: 0/1 (or bool) mask, same shape; 1 where a pixel is kept.
        samples: completions per image.
        seed: the sampling seed (same seed, same completions).

    Returns:
        uint8 0/1 ``(N, samples, H, W, 1)``.

    Example:

    >>> model = build_pixel_rnn(height=4, width=4, filters=4, hidden_units=4, row_lstm_layers=1, output_units=4)
    >>> images = np.ones((2, 4, 4, 1), np.uint8)
    >>> inpaint_numpy(model, images, np.ones_like(images), samples=3).shape
    (2, 3, 4, 4, 1)
    """
    repeated = np.repeat(images.astype("float32"), samples, axis=0)
    repeated_known = np.repeat(known.astype(bool), samples, axis=0)
    completed = _complete_numpy(model, repeated, repeated_known, seed)
    return completed.reshape((len(images), samples) + images.shape[1:])


def sample_numpy(model, count: int, seed: int = 0) -> np.ndarray:
    """``count`` unconditional samples of ``model`` (:func:`complete_images` on an empty canvas).

    Args:
        model: a PixelRNN (:func:`build_pixel_rnn`).
        count: how many images.
        seed: the sampling seed (same seed, same samples).

    Returns:
        uint8 0/1 ``(count, H, W, 1)``.

    Example:

    >>> model = build_pixel_rnn(height=4, width=4, filters=4, hidden_units=4, row_lstm_layers=1, output_units=4)
    >>> sample_numpy(model, 2).shape
    (2, 4, 4, 1)
    """
    zeros = np.zeros((count,) + tuple(model.input_shape[1:]), "float32")
    return _complete_numpy(model, zeros, zeros.astype(bool), seed)


def per_image_nll(model, dataset) -> np.ndarray:
    """Negative log-likelihood in nats of every image of an ``(images, images)`` dataset."""
    score = tf.function(lambda images: bernoulli_nll(images, model(images, training=False)), reduce_retracing=True)
    return np.concatenate([score(images).numpy() for images, _ in dataset]).astype("float64")
