"""DRAW: a recurrent variational autoencoder that reads and writes with attention.

Gregor et al. 2015, "DRAW: A Recurrent Neural Network For Image Generation".
An encoder LSTM looks at the image (and at the error left by the current
canvas) through an N×N grid of Gaussian filters, emits a posterior
``N(μ_t, σ_t)`` for the latent ``z_t``, and a decoder LSTM writes a patch onto
the canvas through another filter grid. After ``T`` steps the canvas holds the
logits of the image distribution; the loss is the reconstruction negative
log-likelihood plus ``Σ_t KL(q(z_t) ‖ N(0, I))``.

The pieces:

- :func:`gaussian_filterbanks`: the filter matrices ``F_X``, ``F_Y``.
- :class:`AttentionReader` / :class:`AttentionWriter`: the read and write heads.
- :class:`DrawCell`: one DRAW step, wrapped in ``keras.layers.RNN`` over ``T``.
- :func:`latent_kl_divergence`: the per-step KL with
  ``tensorflow_probability.distributions``.
- :class:`DrawModel`: the whole model; ``fit(images)`` trains it.
- :func:`build_draw`: a built :class:`DrawModel` from plain keyword arguments.

Coordinates follow the paper: pixel ``a`` of a row of width ``A`` sits at
``a = 1 … A`` and filter ``i`` of ``N`` at ``i = 1 … N``, so a grid with centre
``(A + 1) / 2``, stride 1 and ``N = A`` puts filter ``i`` exactly on pixel ``i``.
"""

from __future__ import annotations

import math
import numbers

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from rnnapps.models.distribute import scale_loss_for_replicas

# The linear attention head predicts these five numbers, in this order.
ATTENTION_PARAMETERS = 5


def _check_positive_int(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or int(value) < 1:
        raise ValueError(f"Expected {name} to be a positive integer. Received: {name}={value!r}")
    return int(value)


def gaussian_filterbanks(
    center_x,
    center_y,
    log_variance,
    log_stride,
    image_height,
    image_width,
    glimpse_size,
    epsilon=1e-8,
):
    """Build DRAW's horizontal and vertical Gaussian filterbanks.

    Filter ``i`` (1-based) of the grid is centred at
    ``μ^i = g + (i - N/2 - 0.5) δ`` and ``F[i, a] ∝ exp(-(a - μ^i)² / (2σ²))``
    over pixel positions ``a = 1 … A``; every row is normalised to sum to one
    (Gregor et al. 2015, eqs. 19-20).

    Args:
        center_x: grid centre ``g_X`` in pixel coordinates, ``(batch,)`` or
            ``(batch, 1)``.
        center_y: grid centre ``g_Y``, same shape.
        log_variance: ``log σ²`` of the isotropic filters, same shape.
        log_stride: ``log δ``, the distance in pixels between filter centres.
        image_height: ``B``, rows of the image.
        image_width: ``A``, columns of the image.
        glimpse_size: ``N``, filters per axis.
        epsilon: floor of a row sum, so a row whose filters all underflow
            (a grid far outside the image, a tiny variance) becomes zeros
            rather than NaN.

    Returns:
        ``(F_X, F_Y)``, float32 tensors ``(batch, N, image_width)`` and
        ``(batch, N, image_height)``.

    Example:

    >>> f_x, f_y = gaussian_filterbanks([4.5], [4.5], [0.0], [0.0], 8, 8, 3)
    >>> tuple(f_x.shape), tuple(f_y.shape)
    ((1, 3, 8), (1, 3, 8))
    """

    def column(value):
        # Filterbanks stay float32 even under mixed precision: a float16 exp of
        # -(a - μ)² / 2σ² underflows for moderate distances and the
        # normalisation would then divide by zero.
        return ops.reshape(ops.cast(value, "float32"), (-1, 1, 1))

    stride = ops.exp(column(log_stride))
    two_variances = 2.0 * ops.exp(column(log_variance))
    offsets = ops.arange(1, glimpse_size + 1, dtype="float32") - glimpse_size / 2.0 - 0.5
    offsets = ops.reshape(offsets, (1, glimpse_size, 1)) * stride

    def bank(center, size):
        means = column(center) + offsets
        positions = ops.reshape(ops.arange(1, size + 1, dtype="float32"), (1, 1, size))
        weights = ops.exp(-ops.square(positions - means) / two_variances)
        return weights / ops.maximum(ops.sum(weights, axis=-1, keepdims=True), epsilon)

    return bank(center_x, image_width), bank(center_y, image_height)


def attention_filterbanks(parameters, image_height, image_width, glimpse_size):
    """Turn the five raw attention outputs into filterbanks and a log-intensity.

    ``parameters[..., :5]`` are ``(g̃_X, g̃_Y, log σ², log δ̃, log γ)``; the grid
    centre is ``g_X = (A + 1)/2 (g̃_X + 1)``, ``g_Y = (B + 1)/2 (g̃_Y + 1)`` and
    the stride ``δ = (max(A, B) - 1)/(N - 1) δ̃`` (Gregor et al. 2015, eqs.
    22-24), so ``g̃ ∈ [-1, 1]`` spans the image and ``δ̃ = 1`` spreads the
    grid over it.

    Returns:
        ``(F_X, F_Y, log_gamma)``: float32 ``(batch, N, A)``, ``(batch, N, B)``
        and ``(batch, 1)``.
    """
    parameters = ops.cast(parameters, "float32")
    center_x, center_y, log_variance, log_stride, log_gamma = [
        parameters[:, index : index + 1] for index in range(ATTENTION_PARAMETERS)
    ]
    stride_scale = (max(image_height, image_width) - 1) / max(glimpse_size - 1, 1)
    # A one-pixel image has no extent to spread over; any positive scale works.
    log_stride = log_stride + math.log(stride_scale if stride_scale > 0 else 1.0)
    filter_x, filter_y = gaussian_filterbanks(
        (image_width + 1) / 2.0 * (center_x + 1.0),
        (image_height + 1) / 2.0 * (center_y + 1.0),
        log_variance,
        log_stride,
        image_height,
        image_width,
        glimpse_size,
    )
    return filter_x, filter_y, log_gamma


def _unpack_three(first, second, third, names):
    # Functional models hand a multi-input layer one list; direct calls may
    # pass the tensors positionally. Accept both.
    if second is None and third is None and isinstance(first, (list, tuple)):
        if len(first) != 3:
            raise ValueError(f"Expected a list of 3 inputs {names}. Received {len(first)} inputs.")
        return tuple(first)
    return first, second, third


class _GridAttentionHead(keras.layers.Layer):
    """What DRAW's read and write heads share: the image geometry, the glimpse size, and the
    Gaussian grid whose five parameters a linear layer reads off the decoder state.

    ``attention`` is the subclass's ``read_attention``/``write_attention`` argument (the name
    its config keeps); without it the head reads or writes whole images.
    """

    #: the constructor argument (and config key) that switches the grid on
    attention_argument = ""

    def __init__(self, glimpse_size: int, image_height: int, image_width: int, channels: int = 1,
                 attention: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.glimpse_size = _check_positive_int("glimpse_size", glimpse_size)
        self.image_height = _check_positive_int("image_height", image_height)
        self.image_width = _check_positive_int("image_width", image_width)
        self.channels = _check_positive_int("channels", channels)
        self.attention = bool(attention)

    def _grid_parameters_layer(self):
        return keras.layers.Dense(ATTENTION_PARAMETERS, name="attention_parameters") if self.attention else None

    def filterbanks(self, decoder_state):
        """``(F_X, F_Y, log_gamma)`` of this step's grid (:func:`attention_filterbanks`), in the compute dtype."""
        filter_x, filter_y, log_gamma = attention_filterbanks(
            self.attention_projection(decoder_state), self.image_height, self.image_width, self.glimpse_size
        )
        return ops.cast(filter_x, self.compute_dtype), ops.cast(filter_y, self.compute_dtype), log_gamma

    def grid_boxes(self, decoder_state):
        """Where this step's grid looks: float32 ``(batch, 4)`` corners ``(x0, y0, x1, y1)``.

        0-based pixel coordinates of the outermost filter centres (the span of the ``N × N``
        grid, as the paper's figures draw it); may reach outside the image.
        """
        parameters = ops.cast(self.attention_projection(decoder_state), "float32")
        center_x = (self.image_width + 1) / 2.0 * (parameters[:, 0] + 1.0)
        center_y = (self.image_height + 1) / 2.0 * (parameters[:, 1] + 1.0)
        stride_scale = (max(self.image_height, self.image_width) - 1) / max(self.glimpse_size - 1, 1)
        half = (self.glimpse_size - 1) / 2.0 * ops.exp(parameters[:, 3]) * (stride_scale if stride_scale > 0 else 1.0)
        # The filterbanks count pixels from 1 (gaussian_filterbanks); pictures count from 0.
        return ops.stack([center_x - half - 1.0, center_y - half - 1.0, center_x + half - 1.0,
                          center_y + half - 1.0], axis=-1)

    def get_config(self):
        config = super().get_config()
        config.update(
            glimpse_size=self.glimpse_size,
            image_height=self.image_height,
            image_width=self.image_width,
            channels=self.channels,
            **{self.attention_argument: self.attention},
        )
        return config


@keras.saving.register_keras_serializable(package="rnnapps")
class AttentionReader(_GridAttentionHead):
    """DRAW's read head: Gaussian glimpses of the image and of the error image.

    A linear layer maps the previous decoder state to the grid parameters, and
    ``read(x, x̂, h_dec) = γ [F_Y x F_Xᵀ, F_Y x̂ F_Xᵀ]`` (Gregor et al. 2015,
    section 3.2, eq. 27). Colour images use the same filterbank for every
    channel. With ``read_attention=False`` the layer is the paper's
    no-attention baseline and returns both images whole, flattened.

    Args:
        glimpse_size: ``N``, the glimpse is ``N × N`` pixels per channel.
        image_height: rows of the image.
        image_width: columns of the image.
        channels: colour channels of the image.
        read_attention: use the Gaussian grid (``True``) or read everything.

    Call arguments:
        image: ``(batch, height, width, channels)``.
        error_image: ``(batch, height, width, channels)``, the image minus the
            current canvas' probabilities.
        decoder_state: ``(batch, decoder_units)``, the previous ``h_dec``.
        The three may also be passed as one list.

    Returns:
        ``(batch, 2 · N · N · channels)`` (or ``2 · height · width · channels``
        without attention): the image glimpse first, then the error glimpse.

    Example:

    >>> reader = AttentionReader(2, 8, 8, 3)
    >>> images = keras.ops.zeros((4, 8, 8, 3))
    >>> tuple(reader(images, images, keras.ops.zeros((4, 16))).shape)
    (4, 24)
    """

    attention_argument = "read_attention"

    def __init__(self, glimpse_size: int, image_height: int, image_width: int, channels: int = 1,
                 read_attention: bool = True, **kwargs):
        super().__init__(glimpse_size, image_height, image_width, channels, read_attention, **kwargs)
        self.attention_projection = self._grid_parameters_layer()

    @property
    def read_attention(self) -> bool:
        return self.attention

    @property
    def output_width(self) -> int:
        if self.read_attention:
            return 2 * self.glimpse_size * self.glimpse_size * self.channels
        return 2 * self.image_height * self.image_width * self.channels

    def build(self, image_shape, error_image_shape=None, decoder_state_shape=None):
        if error_image_shape is None and decoder_state_shape is None and isinstance(image_shape[0], (list, tuple)):
            image_shape, error_image_shape, decoder_state_shape = image_shape
        if self.attention_projection is not None:
            if decoder_state_shape is None:
                raise ValueError("AttentionReader needs the decoder state shape to build its attention projection.")
            self.attention_projection.build(tuple(decoder_state_shape))

    def call(self, image, error_image=None, decoder_state=None):
        image, error_image, decoder_state = _unpack_three(
            image, error_image, decoder_state, "[image, error_image, decoder_state]"
        )
        if not self.attention:
            flat = self.image_height * self.image_width * self.channels
            return ops.concatenate([ops.reshape(image, (-1, flat)), ops.reshape(error_image, (-1, flat))], axis=-1)
        filter_x, filter_y, log_gamma = self.filterbanks(decoder_state)
        flat = self.glimpse_size * self.glimpse_size * self.channels

        def glimpse(picture):
            rows = ops.einsum("bnh,bhwc->bnwc", filter_y, ops.cast(picture, self.compute_dtype))
            return ops.reshape(ops.einsum("bnwc,bmw->bnmc", rows, filter_x), (-1, flat))

        gamma = ops.cast(ops.exp(log_gamma), self.compute_dtype)
        return gamma * ops.concatenate([glimpse(image), glimpse(error_image)], axis=-1)

    def compute_output_shape(self, image_shape, error_image_shape=None, decoder_state_shape=None):
        if isinstance(image_shape[0], (list, tuple)):
            image_shape = image_shape[0]
        return (image_shape[0], self.output_width)


@keras.saving.register_keras_serializable(package="rnnapps")
class AttentionWriter(_GridAttentionHead):
    """DRAW's write head: a patch placed on the canvas through a Gaussian grid.

    From the decoder state a linear layer predicts an ``N × N × C`` patch ``w``
    and another the grid parameters; ``write(h_dec) = 1/γ̂ F̂_Yᵀ w F̂_X``
    (Gregor et al. 2015, section 3.3, eqs. 28-29). With
    ``write_attention=False`` the whole canvas update is a linear function of
    the state (the no-attention baseline).

    Args:
        glimpse_size: ``N``, side of the written patch.
        image_height: rows of the canvas.
        image_width: columns of the canvas.
        channels: colour channels of the canvas.
        write_attention: write through the Gaussian grid or write everywhere.

    Call arguments:
        decoder_state: ``(batch, decoder_units)``.

    Returns:
        The canvas update ``(batch, height, width, channels)``.

    Example:

    >>> writer = AttentionWriter(5, 8, 8, 3)
    >>> tuple(writer(keras.ops.zeros((4, 16))).shape)
    (4, 8, 8, 3)
    """

    attention_argument = "write_attention"

    def __init__(self, glimpse_size: int, image_height: int, image_width: int, channels: int = 1,
                 write_attention: bool = True, **kwargs):
        super().__init__(glimpse_size, image_height, image_width, channels, write_attention, **kwargs)
        if self.attention:
            self.patch_projection = keras.layers.Dense(
                self.glimpse_size * self.glimpse_size * self.channels, name="patch"
            )
        else:
            self.patch_projection = keras.layers.Dense(
                self.image_height * self.image_width * self.channels, name="canvas_update"
            )
        self.attention_projection = self._grid_parameters_layer()

    @property
    def write_attention(self) -> bool:
        return self.attention

    def build(self, decoder_state_shape):
        self.patch_projection.build(tuple(decoder_state_shape))
        if self.attention_projection is not None:
            self.attention_projection.build(tuple(decoder_state_shape))

    def call(self, decoder_state):
        patch = self.patch_projection(decoder_state)
        if not self.attention:
            return ops.reshape(patch, (-1, self.image_height, self.image_width, self.channels))
        patch = ops.reshape(patch, (-1, self.glimpse_size, self.glimpse_size, self.channels))
        filter_x, filter_y, log_gamma = self.filterbanks(decoder_state)
        rows = ops.einsum("bnh,bnmc->bhmc", filter_y, patch)
        canvas = ops.einsum("bhmc,bmw->bhwc", rows, filter_x)
        inverse_gamma = ops.cast(ops.exp(-log_gamma), self.compute_dtype)
        return canvas * ops.reshape(inverse_gamma, (-1, 1, 1, 1))

    def compute_output_shape(self, decoder_state_shape):
        return (decoder_state_shape[0], self.image_height, self.image_width, self.channels)


def latent_kl_divergence(mean, log_sigma):
    """``KL(N(μ, σ²) ‖ N(0, 1))`` summed over the latent (last) axis, in float32.

    Uses ``tensorflow_probability.distributions`` (imported on first use, so
    importing this module stays cheap). Equal to the closed form
    ``0.5 Σ (μ² + σ² - 1 - log σ²)``.

    Args:
        mean: ``(..., latent_size)``.
        log_sigma: ``(..., latent_size)``, ``log σ``.

    Returns:
        ``(...)``: one KL per leading index, e.g. ``(batch, steps)``.
    """
    import tensorflow_probability as tfp

    distributions = tfp.distributions
    # KL terms feed the loss, which stays float32 under mixed precision.
    mean = ops.cast(mean, "float32")
    scale = ops.exp(ops.cast(log_sigma, "float32"))
    posterior = distributions.Normal(loc=mean, scale=scale)
    prior = distributions.Normal(loc=ops.zeros_like(mean), scale=ops.ones_like(mean))
    return ops.sum(distributions.kl_divergence(posterior, prior), axis=-1)


@keras.saving.register_keras_serializable(package="rnnapps")
class DrawCell(keras.layers.Layer):
    """One DRAW step as an RNN cell: read → encode → sample z → decode → write.

    ``keras.layers.RNN`` in Keras 3 passes no constants to a cell, so the image
    is part of every step's input, next to that step's standard-normal noise
    ``ε_t``: ``inputs_t = [flatten(x), ε_t]``. Drawing ε outside the loop keeps
    the cell a pure function of its inputs (export- and backend-friendly) and
    makes reconstructions reproducible from a seed (see :meth:`sample_noise`).
    One step (Gregor et al. 2015, eqs. 3-8):

    - ``x̂ = x - sigmoid(c_{t-1})``; ``r_t = read(x, x̂, h_dec_{t-1})``
    - ``h_enc_t = LSTM_enc(h_enc_{t-1}, [r_t, h_dec_{t-1}])``
    - ``μ_t, log σ_t = W(h_enc_t)``; ``z_t = μ_t + σ_t ε_t``
    - ``h_dec_t = LSTM_dec(h_dec_{t-1}, z_t)``; ``c_t = c_{t-1} + write(h_dec_t)``

    State: ``[h_enc, c_enc, h_dec, c_dec, canvas]``, the canvas flattened
    ``(batch, height · width · channels)`` and holding logits.

    Args:
        image_height, image_width, channels: the image shape.
        read_glimpse_size: ``N`` of the read grid.
        write_glimpse_size: ``N`` of the write grid.
        encoder_units: units of the encoder LSTM.
        decoder_units: units of the decoder LSTM.
        latent_size: dimension of each ``z_t``.
        read_attention: Gaussian read grid (``False``: read whole images).
        write_attention: Gaussian write grid (``False``: write whole canvases).
        seed: seed of the noise drawn by :meth:`sample_noise`.

    Call arguments:
        inputs: ``(batch, height · width · channels + latent_size)``, the
            flattened image followed by ``ε_t``.
        states: the five state tensors above.
        training: passed to the LSTM cells.

    Returns:
        ``(output, new_states)``; ``output`` is
        ``[canvas_t, μ_t, log σ_t]`` concatenated,
        ``(batch, height · width · channels + 2 · latent_size)``.

    Example:

    >>> cell = DrawCell(8, 8, 1, encoder_units=16, decoder_units=16, latent_size=4)
    >>> rnn = keras.layers.RNN(cell, return_sequences=True)
    >>> tuple(rnn(keras.ops.zeros((2, 3, 64 + 4))).shape)
    (2, 3, 72)
    """

    def __init__(
        self,
        image_height: int,
        image_width: int,
        channels: int = 1,
        read_glimpse_size: int = 2,
        write_glimpse_size: int = 5,
        encoder_units: int = 256,
        decoder_units: int = 256,
        latent_size: int = 100,
        read_attention: bool = True,
        write_attention: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.image_height = _check_positive_int("image_height", image_height)
        self.image_width = _check_positive_int("image_width", image_width)
        self.channels = _check_positive_int("channels", channels)
        self.read_glimpse_size = _check_positive_int("read_glimpse_size", read_glimpse_size)
        self.write_glimpse_size = _check_positive_int("write_glimpse_size", write_glimpse_size)
        self.encoder_units = _check_positive_int("encoder_units", encoder_units)
        self.decoder_units = _check_positive_int("decoder_units", decoder_units)
        self.latent_size = _check_positive_int("latent_size", latent_size)
        self.read_attention = bool(read_attention)
        self.write_attention = bool(write_attention)
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, numbers.Integral)):
            raise ValueError(f"Expected seed to be an integer or None. Received: seed={seed!r}")
        self.seed = None if seed is None else int(seed)
        self.image_size = self.image_height * self.image_width * self.channels

        self.reader = AttentionReader(
            self.read_glimpse_size, self.image_height, self.image_width, self.channels,
            read_attention=self.read_attention, name="reader",
        )
        self.encoder_cell = keras.layers.LSTMCell(self.encoder_units, name="encoder")
        self.latent_projection = keras.layers.Dense(2 * self.latent_size, name="latent")
        self.decoder_cell = keras.layers.LSTMCell(self.decoder_units, name="decoder")
        self.writer = AttentionWriter(
            self.write_glimpse_size, self.image_height, self.image_width, self.channels,
            write_attention=self.write_attention, name="writer",
        )
        self.seed_generator = keras.random.SeedGenerator(self.seed, name="noise_seed")

    @property
    def state_size(self):
        return [self.encoder_units, self.encoder_units, self.decoder_units, self.decoder_units, self.image_size]

    @property
    def output_size(self):
        return self.image_size + 2 * self.latent_size

    def build(self, input_shape):
        expected = self.image_size + self.latent_size
        if input_shape[-1] is not None and input_shape[-1] != expected:
            raise ValueError(
                f"DrawCell expects per-step inputs of width height*width*channels + latent_size = {expected} "
                f"(the flattened image, then the noise). Received: input_shape={tuple(input_shape)}"
            )
        image_shape = (None, self.image_height, self.image_width, self.channels)
        self.reader.build(image_shape, image_shape, (None, self.decoder_units))
        self.encoder_cell.build((None, self.reader.output_width + self.decoder_units))
        self.latent_projection.build((None, self.encoder_units))
        self.decoder_cell.build((None, self.latent_size))
        self.writer.build((None, self.decoder_units))

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in self.state_size]

    def decode_step(self, latent, decoder_hidden, decoder_memory, canvas, training=None):
        """The decoder half of a step: ``h_dec, c_dec, canvas`` after writing ``z``."""
        _, (decoder_hidden, decoder_memory) = self.decoder_cell(
            latent, [decoder_hidden, decoder_memory], training=training
        )
        update = ops.reshape(self.writer(decoder_hidden), (-1, self.image_size))
        return decoder_hidden, decoder_memory, canvas + ops.cast(update, canvas.dtype)

    def call(self, inputs, states, training=None):
        encoder_hidden, encoder_memory, decoder_hidden, decoder_memory, canvas = states
        image_flat = inputs[:, : self.image_size]
        noise = inputs[:, self.image_size :]
        image_shape = (-1, self.image_height, self.image_width, self.channels)
        image = ops.reshape(image_flat, image_shape)
        error_image = image - ops.reshape(ops.sigmoid(canvas), image_shape)
        glimpse = self.reader(image, error_image, decoder_hidden)
        _, (encoder_hidden, encoder_memory) = self.encoder_cell(
            ops.concatenate([glimpse, decoder_hidden], axis=-1), [encoder_hidden, encoder_memory], training=training
        )
        moments = self.latent_projection(encoder_hidden)
        mean = moments[:, : self.latent_size]
        log_sigma = moments[:, self.latent_size :]
        latent = mean + ops.exp(log_sigma) * ops.cast(noise, mean.dtype)
        decoder_hidden, decoder_memory, canvas = self.decode_step(
            latent, decoder_hidden, decoder_memory, canvas, training=training
        )
        output = ops.concatenate([canvas, mean, log_sigma], axis=-1)
        return output, [encoder_hidden, encoder_memory, decoder_hidden, decoder_memory, canvas]

    def sample_noise(self, batch_size, steps, seed=None):
        """Standard-normal noise ``(batch_size, steps, latent_size)``, float32.

        Args:
            batch_size: an int or a scalar tensor.
            steps: an int.
            seed: ``None`` (the cell's own ``SeedGenerator``: a new draw each
                call), an int (the same draw every time), a
                ``keras.random.SeedGenerator``, or a scalar integer tensor (a
                serving signature's seed input; the same draw as the equal int).
        """
        shape = (batch_size, steps, self.latent_size)
        if seed is None:
            seed = self.seed_generator
        if isinstance(seed, numbers.Integral) and not isinstance(seed, bool):
            seed = int(seed)
        if isinstance(seed, (int, keras.random.SeedGenerator)):
            return keras.random.normal(shape, seed=seed, dtype="float32")
        # keras.random takes no tensor seeds; a SavedModel signature gets its
        # seed as a tensor, so use the stateless TF op keras.random itself uses
        # for an int seed (seed pair [seed, 0]), which gives identical draws.
        import tensorflow as tf

        seed_pair = tf.stack([tf.cast(tf.reshape(seed, ()), tf.int32), tf.constant(0, tf.int32)])
        return tf.random.stateless_normal(shape, seed=seed_pair, dtype=tf.float32)

    def decode(self, noise):
        """Run the decoder alone on latents ``(batch, steps, latent_size)``.

        Returns the canvas logits after every step,
        ``(batch, steps, height, width, channels)``.
        """
        noise = ops.cast(noise, self.compute_dtype)
        batch_size = ops.shape(noise)[0]
        initial = (
            ops.zeros((batch_size, self.decoder_units), dtype=self.compute_dtype),
            ops.zeros((batch_size, self.decoder_units), dtype=self.compute_dtype),
            ops.zeros((batch_size, self.image_size), dtype=self.compute_dtype),
        )

        def step(carry, latent):
            carry = self.decode_step(latent, *carry)
            # The TensorFlow backend's scan wants per-step outputs shaped like
            # the carry, so emit the whole carry and keep the canvases after.
            return carry, carry

        _, history = ops.scan(step, initial, ops.transpose(noise, (1, 0, 2)))
        canvases = ops.transpose(history[2], (1, 0, 2))
        return ops.reshape(canvases, (batch_size, -1, self.image_height, self.image_width, self.channels))

    def generate(self, num, steps, seed=None):
        """Sample ``z_t ~ N(0, I)`` for ``steps`` steps and decode: canvas logits
        ``(num, steps, height, width, channels)``. ``seed`` as in :meth:`sample_noise`."""
        return self.decode(self.sample_noise(num, steps, seed))

    def get_config(self):
        config = super().get_config()
        config.update(
            image_height=self.image_height,
            image_width=self.image_width,
            channels=self.channels,
            read_glimpse_size=self.read_glimpse_size,
            write_glimpse_size=self.write_glimpse_size,
            encoder_units=self.encoder_units,
            decoder_units=self.decoder_units,
            latent_size=self.latent_size,
            read_attention=self.read_attention,
            write_attention=self.write_attention,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="rnnapps")
class DrawModel(keras.Model):
    """The DRAW variational autoencoder, trainable with ``fit(images)``.

    A :class:`DrawCell` unrolled by ``keras.layers.RNN`` over ``steps`` steps.
    The loss (Gregor et al. 2015, eqs. 9-12), per image, in nats:
    ``-log p(x | sigmoid(c_T))`` (Bernoulli, summed over pixels; for
    intensities in ``[0, 1]`` the same cross-entropy, as public DRAW
    implementations do) ``+ Σ_t KL(N(μ_t, σ_t) ‖ N(0, I))``; its mean over
    the batch is the training loss. ``compute_loss`` is overridden, so compile
    with an optimizer only; ``loss``, ``reconstruction`` and ``kl`` are logged.

    Args:
        image_shape: ``(height, width, channels)``.
        steps: ``T``, glimpses per image.
        read_glimpse_size: ``N`` of the read grid (paper: 2 for MNIST, 12 for SVHN).
        write_glimpse_size: ``N`` of the write grid (paper: 5 for MNIST, 12 for SVHN).
        encoder_units: encoder LSTM units.
        decoder_units: decoder LSTM units.
        latent_size: dimension of each ``z_t``.
        attention: Gaussian read and write grids (``False``: the paper's
            no-attention baseline).
        seed: seed of the reparameterisation noise.

    Call arguments:
        images: float ``(batch, height, width, channels)`` in ``[0, 1]``.
        training: passed to the cell.

    Returns (call):
        a dict: ``canvas_logits`` ``(batch, steps, height, width, channels)``,
        ``mean`` and ``log_sigma`` ``(batch, steps, latent_size)``.

    Example:

    >>> model = DrawModel((8, 8, 1), steps=3, encoder_units=16, decoder_units=16, latent_size=4)
    >>> model.compile(optimizer="adam")
    >>> tuple(model.generate(2, seed=1).shape)
    (2, 3, 8, 8, 1)
    """

    def __init__(
        self,
        image_shape=(28, 28, 1),
        steps: int = 64,
        read_glimpse_size: int = 2,
        write_glimpse_size: int = 5,
        encoder_units: int = 256,
        decoder_units: int = 256,
        latent_size: int = 100,
        attention: bool = True,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(image_shape, (list, tuple)) or len(image_shape) != 3:
            raise ValueError(
                f"Expected image_shape to be (height, width, channels). Received: image_shape={image_shape!r}"
            )
        for value in image_shape:
            _check_positive_int("image_shape", value)
        self.image_shape = tuple(int(value) for value in image_shape)
        self.steps = _check_positive_int("steps", steps)
        self.read_glimpse_size = _check_positive_int("read_glimpse_size", read_glimpse_size)
        self.write_glimpse_size = _check_positive_int("write_glimpse_size", write_glimpse_size)
        self.encoder_units = _check_positive_int("encoder_units", encoder_units)
        self.decoder_units = _check_positive_int("decoder_units", decoder_units)
        self.latent_size = _check_positive_int("latent_size", latent_size)
        self.attention = bool(attention)
        self.seed = seed
        height, width, channels = self.image_shape
        self.image_size = height * width * channels
        self.draw_cell = DrawCell(
            height,
            width,
            channels,
            read_glimpse_size=self.read_glimpse_size,
            write_glimpse_size=self.write_glimpse_size,
            encoder_units=self.encoder_units,
            decoder_units=self.decoder_units,
            latent_size=self.latent_size,
            read_attention=self.attention,
            write_attention=self.attention,
            seed=seed,
            name="draw_cell",
        )
        self.draw_rnn = keras.layers.RNN(self.draw_cell, return_sequences=True, name="draw_rnn")
        self.reconstruction_tracker = keras.metrics.Mean(name="reconstruction")
        self.kl_tracker = keras.metrics.Mean(name="kl")

    def build(self, input_shape=None):
        self.draw_rnn.build((None, self.steps, self.image_size + self.latent_size))

    def _forward(self, images, noise, training=None):
        images = ops.cast(images, self.compute_dtype)
        flat = ops.reshape(images, (-1, 1, self.image_size))
        # The cell gets no constants from keras.layers.RNN, so every step sees
        # the image again; T copies of one image are cheap next to the LSTMs.
        repeated = ops.repeat(flat, self.steps, axis=1)
        sequence = ops.concatenate([repeated, ops.cast(noise, self.compute_dtype)], axis=-1)
        outputs = self.draw_rnn(sequence, training=training)
        canvases = ops.reshape(outputs[..., : self.image_size], (-1, self.steps) + self.image_shape)
        return {
            "canvas_logits": canvases,
            "mean": outputs[..., self.image_size : self.image_size + self.latent_size],
            "log_sigma": outputs[..., self.image_size + self.latent_size :],
        }

    def call(self, images, training=None):
        noise = self.draw_cell.sample_noise(ops.shape(images)[0], self.steps)
        return self._forward(images, noise, training=training)

    def loss_terms(self, images, outputs):
        """Per-image reconstruction NLL and total KL, both float32 ``(batch,)``."""
        targets = ops.reshape(ops.cast(images, "float32"), (-1, self.image_size))
        logits = ops.reshape(ops.cast(outputs["canvas_logits"][:, -1], "float32"), (-1, self.image_size))
        reconstruction = ops.sum(ops.binary_crossentropy(targets, logits, from_logits=True), axis=-1)
        kl = ops.sum(latent_kl_divergence(outputs["mean"], outputs["log_sigma"]), axis=-1)
        return reconstruction, kl

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        targets = x if y is None else y
        reconstruction, kl = self.loss_terms(targets, y_pred)
        per_image = reconstruction + kl
        if sample_weight is not None:
            weights = ops.reshape(ops.cast(sample_weight, "float32"), (-1,))
            loss = ops.sum(per_image * weights) / ops.maximum(ops.sum(weights), 1e-8)
        else:
            loss = ops.mean(per_image)
        for extra in self.losses:
            loss = loss + ops.cast(ops.sum(extra), "float32")
        self.reconstruction_tracker.update_state(reconstruction, sample_weight=sample_weight)
        self.kl_tracker.update_state(kl, sample_weight=sample_weight)
        return scale_loss_for_replicas(loss)

    def reconstruct(self, images, seed=None):
        """Encode and redraw ``images``.

        Args:
            images: float ``(batch, height, width, channels)`` in ``[0, 1]``.
            seed: as in :meth:`DrawCell.sample_noise`; an int or a tensor
                makes the result reproducible.

        Returns:
            ``(canvases, nll_bound)``: Bernoulli probabilities after every step
            ``(batch, steps, height, width, channels)`` float32, and the
            negative ELBO per image in nats ``(batch,)`` float32.
        """
        noise = self.draw_cell.sample_noise(ops.shape(images)[0], self.steps, seed)
        outputs = self._forward(images, noise, training=False)
        reconstruction, kl = self.loss_terms(images, outputs)
        return ops.sigmoid(ops.cast(outputs["canvas_logits"], "float32")), reconstruction + kl

    def attention_trace(self, images, seed=0):
        """Reconstruct ``images`` step by step, recording where each step read and wrote.

        Returns:
            ``{"canvases", "read_boxes", "write_boxes"}``: canvas probabilities after every step
            ``(batch, steps, H, W, C)`` (those of :meth:`reconstruct` with the same seed), and
            the read grid of each step (placed from the previous decoder state) and its write
            grid, ``(batch, steps, 4)`` corners ``(x0, y0, x1, y1)`` in pixels
            (:meth:`AttentionReader.grid_boxes`); a box is None without that attention.
            Eager, one step at a time: for pictures, not for serving.
        """
        if not self.built:
            self.build()
        cell = self.draw_cell
        images = ops.cast(images, "float32")
        batch = ops.shape(images)[0]
        noise = cell.sample_noise(batch, self.steps, seed)
        flat = ops.cast(ops.reshape(images, (batch, -1)), cell.compute_dtype)
        states = cell.get_initial_state(batch)
        canvases, reads, writes = [], [], []
        for step in range(self.steps):
            if cell.read_attention:
                reads.append(cell.reader.grid_boxes(states[2]))
            _, states = cell(ops.concatenate([flat, ops.cast(noise[:, step], flat.dtype)], axis=-1), states)
            if cell.write_attention:
                writes.append(cell.writer.grid_boxes(states[2]))
            canvases.append(ops.sigmoid(ops.cast(states[4], "float32")))
        return {
            "canvases": ops.reshape(ops.stack(canvases, axis=1), (batch, self.steps) + self.image_shape),
            "read_boxes": ops.stack(reads, axis=1) if reads else None,
            "write_boxes": ops.stack(writes, axis=1) if writes else None,
        }

    def kl_per_step(self, images, seed=None):
        """``KL(q(z_t) ‖ N(0, I))`` per image and step, float32 ``(batch, steps)``."""
        noise = self.draw_cell.sample_noise(ops.shape(images)[0], self.steps, seed)
        outputs = self._forward(images, noise, training=False)
        return latent_kl_divergence(outputs["mean"], outputs["log_sigma"])

    def generate(self, num, seed=None):
        """Draw ``num`` images from the prior: Bernoulli probabilities of the
        canvas after every step, float32 ``(num, steps, height, width, channels)``."""
        if not self.built:
            self.build()
        return ops.sigmoid(ops.cast(self.draw_cell.generate(num, self.steps, seed), "float32"))

    def get_config(self):
        config = super().get_config()
        config.update(
            image_shape=list(self.image_shape),
            steps=self.steps,
            read_glimpse_size=self.read_glimpse_size,
            write_glimpse_size=self.write_glimpse_size,
            encoder_units=self.encoder_units,
            decoder_units=self.decoder_units,
            latent_size=self.latent_size,
            attention=self.attention,
            seed=self.seed,
        )
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)


def build_draw(height: int = 28, width: int = 28, channels: int = 1, **options) -> DrawModel:
    """A built, uncompiled :class:`DrawModel` named ``draw`` for ``height × width × channels`` images.

    Built (its weights exist) so that a training run's ``BackupAndRestore`` can
    restore into it before ``fit``; compile it with an optimizer only (the
    model computes its own loss).

    Args:
        height, width, channels: the image shape.
        **options: the other :class:`DrawModel` arguments, by keyword, with
            its defaults: ``steps``, ``read_glimpse_size``,
            ``write_glimpse_size``, ``encoder_units``, ``decoder_units``,
            ``latent_size``, ``attention``, ``seed`` (and ``name``).

    Returns:
        The :class:`DrawModel`.

    Example:

    >>> model = build_draw(height=8, width=8, steps=3, encoder_units=16, decoder_units=16, latent_size=4)
    >>> model.compile(optimizer="adam")
    >>> tuple(model.generate(2, seed=1).shape)
    (2, 3, 8, 8, 1)
    """
    model = DrawModel((height, width, channels), **{"name": "draw", **options})
    model.build((None, height, width, channels))
    return model


def nll_bounds(model: DrawModel, dataset, seed: int = 0) -> np.ndarray:
    """The negative ELBO in nats of every image of a dataset of float image batches (float64 ``(N,)``).

    Batch ``k`` uses noise seed ``seed + k``: reproducible, and the batches do not share one noise draw.
    """
    bound = tf.function(lambda images, batch_seed: model.reconstruct(images, seed=batch_seed)[1],
                        reduce_retracing=True)
    values = [bound(images, tf.constant(seed + index, tf.int32)).numpy() for index, images in enumerate(dataset)]
    return np.concatenate(values).astype("float64")
