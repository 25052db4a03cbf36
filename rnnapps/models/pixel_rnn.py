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
"""

from __future__ import annotations

import keras
import numpy as np
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
