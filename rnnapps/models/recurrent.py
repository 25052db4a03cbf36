"""The recurrent stack every rnnapps pipeline builds its encoder from."""

from __future__ import annotations

import keras
from keras import ops

CELL_TYPES = ("lstm", "gru", "simple_rnn")
#: The stock Keras layer of each cell type; every recurrent model here builds its layers from it.
RNN_LAYERS = {
    "lstm": keras.layers.LSTM,
    "gru": keras.layers.GRU,
    "simple_rnn": keras.layers.SimpleRNN,
}


@keras.saving.register_keras_serializable(package="rnnapps")
class VariationalLSTMCell(keras.layers.LSTMCell):
    """An LSTM cell whose recurrent dropout uses one mask for all four gates, keeping the fused step.

    Keras' ``LSTMCell`` draws a separate recurrent-dropout mask per gate and, to apply them, switches
    to its unfused implementation: eight matrix products a step instead of two. On a CPU, where an
    LSTM's time goes into per-step work, that made a 512-unit character model train 1.8x slower
    (docs/textgen.md). Here the state is masked once, before the fused ``[x, h] -> 4 gates`` product,
    which is the tied variant of variational dropout (Gal & Ghahramani 2016, "A Theoretically
    Grounded Application of Dropout in Recurrent Neural Networks"): the same units are dropped at
    every step of a sequence, for every gate. Without ``recurrent_dropout`` it is ``LSTMCell``.

    Args:
        units: hidden units.
        recurrent_dropout: fraction of the state's units dropped in training, in [0, 1).
        **kwargs: as for ``keras.layers.LSTMCell`` (``implementation`` is always 2, the fused step).

    Call arguments:
        inputs: float tensor ``(batch, features)``, one time step.
        states: ``[h, c]``, each ``(batch, units)``.
        training: whether the dropout masks are applied.

    Example:

    >>> layer = keras.layers.RNN(VariationalLSTMCell(16, recurrent_dropout=0.2), return_sequences=True)
    >>> tuple(layer(keras.ops.zeros((2, 5, 8)), training=True).shape)
    (2, 5, 16)
    """

    def __init__(self, units, recurrent_dropout: float = 0.0, **kwargs):
        kwargs.pop("implementation", None)
        super().__init__(units, recurrent_dropout=recurrent_dropout, **kwargs)
        # LSTMCell asks for four masks and the unfused step as soon as recurrent_dropout is set.
        self.implementation = 2
        self.dropout_mask_count = None

    def call(self, inputs, states, training=False):
        state, carry = states
        if training and 0.0 < self.recurrent_dropout < 1.0:
            state = state * self.get_recurrent_dropout_mask(state)
        return super().call(inputs, [state, carry], training=training)


def recurrent_layer(cell: str, units: int, recurrent_dropout: float = 0.0, **kwargs) -> keras.layers.Layer:
    """The recurrent layer of ``cell`` type: the stock Keras layer, except for an LSTM with recurrent
    dropout, which gets :class:`VariationalLSTMCell` (one mask for all gates, the fused step).

    Args:
        cell: one of :data:`CELL_TYPES`.
        units: hidden units.
        recurrent_dropout: dropout rate on the recurrent state (0 disables it).
        **kwargs: the recurrent layer's arguments (``return_sequences``, ``seed``, ``name``, ...).
    """
    if cell == "lstm" and recurrent_dropout:
        seed = kwargs.pop("seed", None)
        return keras.layers.RNN(VariationalLSTMCell(units, recurrent_dropout=recurrent_dropout, seed=seed), **kwargs)
    return RNN_LAYERS[cell](units, recurrent_dropout=recurrent_dropout, **kwargs)


@keras.saving.register_keras_serializable(package="rnnapps")
class RecurrentStack(keras.layers.Layer):
    """A stack of (bidirectional) LSTM/GRU/SimpleRNN layers with dropout and residuals.

    Each layer is a stock Keras recurrent layer, so masking, cuDNN kernels on a GPU
    (post-padded masks, ``recurrent_dropout=0``) and ``Bidirectional`` come free.
    Dropout is applied to the input of every layer after the first; with
    ``residual=True`` a layer's input is added to its output whenever the two
    widths agree (Wu et al. 2016, "Google's NMT", section 3.2).

    Args:
        units: hidden units per direction of each layer.
        cell: one of ``"lstm"``, ``"gru"``, ``"simple_rnn"``.
        depth: number of stacked recurrent layers (>= 1).
        bidirectional: run each layer forwards and backwards and concatenate.
        dropout: dropout rate between layers (0 disables it).
        recurrent_dropout: dropout on the recurrent state (disables cuDNN); an LSTM
            then runs :class:`VariationalLSTMCell`.
        residual: add each layer's input to its output when widths agree.
        return_sequences: return the whole output sequence (many-to-many)
            instead of the last step (many-to-one; for a bidirectional stack
            the forward last step and the backward first step, mask-aware).
        return_state: also return the final states of the last layer, as
            ``[output, *states]`` (forward states first when bidirectional).
        seed: seed for the dropout masks.

    Call arguments:
        inputs: float tensor ``(batch, time, features)``.
        mask: optional boolean ``(batch, time)``; ``True`` marks real steps.
            Padding must be at the end (post-padding) for cuDNN.
        training: whether dropout is active.

    Example:

    >>> stack = RecurrentStack(32, cell="gru", depth=2, return_sequences=True)
    >>> tuple(stack(keras.ops.zeros((4, 10, 8))).shape)
    (4, 10, 64)
    """

    def __init__(
        self,
        units: int,
        cell: str = "lstm",
        depth: int = 1,
        bidirectional: bool = True,
        dropout: float = 0.0,
        recurrent_dropout: float = 0.0,
        residual: bool = False,
        return_sequences: bool = False,
        return_state: bool = False,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if cell not in CELL_TYPES:
            raise ValueError(f"Expected cell to be one of {CELL_TYPES}. Received: cell={cell!r}")
        if int(depth) < 1:
            raise ValueError(f"Expected depth >= 1. Received: depth={depth}")
        if int(units) < 1:
            raise ValueError(f"Expected units >= 1. Received: units={units}")
        for name, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= float(rate) < 1.0:
                raise ValueError(f"Expected 0 <= {name} < 1. Received: {name}={rate}")
        self.units = int(units)
        self.cell = cell
        self.depth = int(depth)
        self.bidirectional = bool(bidirectional)
        self.dropout = float(dropout)
        self.recurrent_dropout = float(recurrent_dropout)
        self.residual = bool(residual)
        self.return_sequences = bool(return_sequences)
        self.return_state = bool(return_state)
        self.seed = seed
        self.supports_masking = True

        self.recurrent_layers = []
        self.dropout_layers = []
        for index in range(self.depth):
            last = index == self.depth - 1
            rnn = recurrent_layer(
                cell,
                self.units,
                return_sequences=self.return_sequences or not last,
                return_state=self.return_state and last,
                recurrent_dropout=self.recurrent_dropout,
                seed=None if seed is None else seed + index,
                name=f"{cell}_{index}",
            )
            if self.bidirectional:
                rnn = keras.layers.Bidirectional(rnn, name=f"bidirectional_{cell}_{index}")
            self.recurrent_layers.append(rnn)
            self.dropout_layers.append(
                keras.layers.Dropout(
                    self.dropout,
                    seed=None if seed is None else seed + 1000 + index,
                    name=f"dropout_{index}",
                )
                if index > 0 and self.dropout > 0
                else None
            )

    @property
    def output_width(self) -> int:
        return self.units * (2 if self.bidirectional else 1)

    def build(self, input_shape):
        shape = tuple(input_shape)
        for rnn in self.recurrent_layers:
            rnn.build(shape)
            shape = shape[:-1] + (self.output_width,)
        self.built = True

    def call(self, inputs, mask=None, training=None):
        outputs = inputs
        states = []
        for index, (rnn, drop) in enumerate(zip(self.recurrent_layers, self.dropout_layers, strict=True)):
            layer_input = outputs
            if drop is not None:
                layer_input = drop(layer_input, training=training)
            result = rnn(layer_input, mask=mask, training=training)
            if isinstance(result, (list, tuple)):
                result, *states = result
            if (
                self.residual
                and index > 0
                and (self.return_sequences or index < self.depth - 1)
                and outputs.shape[-1] == self.output_width
            ):
                result = result + outputs
            outputs = result
        if self.return_state:
            return [outputs, *states]
        return outputs

    def compute_mask(self, inputs, mask=None):
        output_mask = mask if self.return_sequences else None
        if self.return_state:
            return [output_mask] + [None] * self._num_states()
        return output_mask

    def _num_states(self) -> int:
        per_direction = 2 if self.cell == "lstm" else 1
        return per_direction * (2 if self.bidirectional else 1)

    def compute_output_shape(self, input_shape):
        batch, time = input_shape[0], input_shape[1]
        output = (batch, time, self.output_width) if self.return_sequences else (batch, self.output_width)
        if self.return_state:
            return [output] + [(batch, self.units)] * self._num_states()
        return output

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            cell=self.cell,
            depth=self.depth,
            bidirectional=self.bidirectional,
            dropout=self.dropout,
            recurrent_dropout=self.recurrent_dropout,
            residual=self.residual,
            return_sequences=self.return_sequences,
            return_state=self.return_state,
            seed=self.seed,
        )
        return config


@keras.saving.register_keras_serializable(package="rnnapps")
class SequencePooling(keras.layers.Layer):
    """Mask-aware pooling of a sequence into one vector (max, mean, or both).

    Max-over-time and mean pooling of all hidden states beat the last state alone
    for long-document classification (Lai et al. 2015; Conneau et al. 2017,
    "InferSent"): the signal of an early sentence does not have to survive
    hundreds of recurrent steps.

    Args:
        modes: a tuple of ``"max"`` and/or ``"mean"``; outputs are concatenated
            in this order.

    Call arguments:
        inputs: ``(batch, time, features)``.
        mask: optional boolean ``(batch, time)``; padded steps are ignored. A row
            with no real step pools to zeros.

    Example:

    >>> tuple(SequencePooling(("max", "mean"))(keras.ops.ones((2, 5, 3))).shape)
    (2, 6)
    """

    MODES = ("max", "mean")

    def __init__(self, modes=("max", "mean"), **kwargs):
        super().__init__(**kwargs)
        modes = (modes,) if isinstance(modes, str) else tuple(modes)
        if not modes or any(mode not in self.MODES for mode in modes):
            raise ValueError(f"Expected modes from {self.MODES}. Received: modes={modes!r}")
        self.modes = modes
        self.supports_masking = True

    def call(self, inputs, mask=None):
        if mask is None:
            mask = ops.ones(ops.shape(inputs)[:2], dtype="bool")
        weights = ops.expand_dims(ops.cast(mask, inputs.dtype), -1)
        any_real = ops.cast(ops.sum(weights, axis=1) > 0, inputs.dtype)
        pooled = []
        for mode in self.modes:
            if mode == "max":
                lowest = ops.convert_to_tensor(-1e4 if inputs.dtype == "float16" else -1e9, inputs.dtype)
                masked = ops.where(ops.expand_dims(mask, -1), inputs, lowest)
                pooled.append(ops.max(masked, axis=1) * any_real)
            else:
                total = ops.sum(inputs * weights, axis=1)
                pooled.append(total / ops.maximum(ops.sum(weights, axis=1), 1.0))
        return pooled[0] if len(pooled) == 1 else ops.concatenate(pooled, axis=-1)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1] * len(self.modes))

    def get_config(self):
        config = super().get_config()
        config.update(modes=list(self.modes))
        return config
