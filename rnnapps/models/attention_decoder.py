"""An LSTM/GRU decoder with attention and input feeding, as a Keras RNN cell.

Keras 3's ``keras.layers.RNN`` no longer passes ``constants`` to its cell
(``keras/src/layers/rnn/rnn.py`` in 3.15 has no such argument), so the encoder
memory reaches the cell another way:

* :class:`AttentionDecoder` is the layer to put in a model:
  ``decoder(inputs, encoder_outputs, initial_state=...)`` runs the whole
  teacher-forced sequence (a ``keras.layers.RNN`` over the cell inside).
* :meth:`AttentionDecoderCell.step` runs one step with the memory as explicit
  arguments; inference loops (``rnnapps.models.decoding``) call it.
* ``with cell.attend_to(encoder_outputs, encoder_mask): keras.layers.RNN(cell)(x)``
  binds the memory for a stock ``RNN`` called eagerly or inside one traced
  function (which is what ``AttentionDecoder.call`` does).

The step (Luong et al. 2015, section 3.3, with either score function)::

    h_t, rnn_state = cell([x_t; ã_{t-1}], rnn_state)     # input feeding
    context_t, weights_t = attention(h_t, memory)
    ã_t = tanh(W_c [context_t; h_t])                     # the step's output

The state is ``[*rnn_state, ã]``: ``[h, c, ã]`` for an LSTM, ``[h, ã]`` for a GRU.
"""

from __future__ import annotations

import contextlib

import keras
from keras import ops

from rnnapps.models.attention import LUONG_SCORES, BahdanauAttention, LuongAttention

DECODER_CELL_TYPES = ("lstm", "gru")
ATTENTION_TYPES = ("bahdanau", "luong")


@keras.saving.register_keras_serializable(package="rnnapps")
class AttentionDecoderCell(keras.layers.Layer):
    """One decoder step: LSTM/GRU cell, attention, attentional output, input feeding.

    The attention query is the new hidden state ``h_t`` (Luong's order, also
    used with Bahdanau's additive score by OpenNMT and the TensorFlow NMT
    tutorial); the attentional vector ``tanh(W_c [context; h])`` is the output
    and is concatenated to the next step's input (input feeding), so the
    decoder knows what it attended to before.

    References: Luong, Pham and Manning (2015), "Effective Approaches to
    Attention-based Neural Machine Translation"; Bahdanau, Cho and Bengio
    (2015), "Neural Machine Translation by Jointly Learning to Align and
    Translate".

    Args:
        units: width of the recurrent state and of the attentional output.
        cell: ``"lstm"`` or ``"gru"``.
        attention: ``"bahdanau"`` (additive) or ``"luong"`` (multiplicative).
        attention_units: hidden width of the Bahdanau scoring network
            (default ``units``); ignored for Luong.
        luong_score: ``"general"`` or ``"dot"`` (``dot`` needs encoder outputs
            of width ``units``); ignored for Bahdanau.

    Call arguments (as a cell of ``keras.layers.RNN``, inside ``attend_to``):
        inputs: ``(batch, features)``, the step's input (e.g. a target embedding).
        states: list ``[*rnn_state, attentional]``, each ``(batch, units)``.
        training: passed to the wrapped cell.

    Example:

    >>> cell = AttentionDecoderCell(16, cell="gru", attention="luong")
    >>> memory = keras.ops.ones((2, 7, 10))
    >>> states = cell.get_initial_state(batch_size=2)
    >>> output, states, weights = cell.step(keras.ops.ones((2, 8)), states, memory)
    >>> tuple(output.shape), tuple(weights.shape)
    ((2, 16), (2, 7))
    """

    def __init__(
        self,
        units: int,
        cell: str = "lstm",
        attention: str = "bahdanau",
        attention_units: int | None = None,
        luong_score: str = "general",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if int(units) < 1:
            raise ValueError(f"Expected units >= 1. Received: units={units}")
        if cell not in DECODER_CELL_TYPES:
            raise ValueError(
                f"Expected cell to be one of {DECODER_CELL_TYPES}. Received: cell={cell!r}"
            )
        if attention not in ATTENTION_TYPES:
            raise ValueError(
                f"Expected attention to be one of {ATTENTION_TYPES}. Received: attention={attention!r}"
            )
        if attention_units is not None and int(attention_units) < 1:
            raise ValueError(
                f"Expected attention_units >= 1. Received: attention_units={attention_units}"
            )
        if luong_score not in LUONG_SCORES:
            raise ValueError(
                f"Expected luong_score to be one of {LUONG_SCORES}. Received: luong_score={luong_score!r}"
            )
        self.units = int(units)
        self.cell = cell
        self.attention = attention
        self.attention_units = None if attention_units is None else int(attention_units)
        self.luong_score = luong_score

        cell_class = keras.layers.LSTMCell if cell == "lstm" else keras.layers.GRUCell
        self.recurrent_cell = cell_class(self.units, name=f"{cell}_cell")
        if attention == "bahdanau":
            self.attention_layer = BahdanauAttention(
                self.attention_units or self.units, name="attention"
            )
        else:
            self.attention_layer = LuongAttention(luong_score, name="attention")
        self.attentional_projection = keras.layers.Dense(
            self.units, activation="tanh", use_bias=False, name="attentional_projection"
        )
        self._memory = None
        self._emit_attention = False

    @property
    def state_size(self):
        recurrent = [self.units, self.units] if self.cell == "lstm" else [self.units]
        return recurrent + [self.units]

    @property
    def output_size(self):
        return self.units

    @property
    def num_recurrent_states(self) -> int:
        """States of the wrapped LSTM/GRU cell (the last state is the attentional vector)."""
        return len(self.state_size) - 1

    def build(self, input_shape, memory_shape=None):
        """Build the wrapped cell; attention and ``W_c`` too once the memory width is known.

        ``memory_shape`` is ``(batch, Tv, d)``; it defaults to the shape of the
        memory bound with :meth:`attend_to`. Without either, those sublayers
        build on the first :meth:`step` (which must then not run inside a loop).
        """
        input_width = input_shape[-1]
        self.recurrent_cell.build((None, input_width + self.units))
        if memory_shape is None and self._memory is not None:
            memory_shape = tuple(self._memory[0].shape)
        if memory_shape is not None:
            self._build_attention(tuple(memory_shape))
        self.built = True

    def _build_attention(self, memory_shape):
        if not self.attention_layer.built:
            self.attention_layer.build((None, self.units), memory_shape)
        if not self.attentional_projection.built:
            self.attentional_projection.build((None, memory_shape[-1] + self.units))

    def get_initial_state(self, batch_size=None):
        return [ops.zeros((batch_size, size), dtype=self.compute_dtype) for size in self.state_size]

    def precompute_keys(self, encoder_outputs):
        """The key projection of the attention, computed once per source sentence."""
        self._build_attention(tuple(encoder_outputs.shape))
        return self.attention_layer.precompute_keys(encoder_outputs)

    def step(
        self, inputs, states, encoder_outputs, encoder_mask=None, projected_keys=None, training=None
    ):
        """One decoding step outside ``keras.layers.RNN`` (for greedy or beam search).

        Args:
            inputs: ``(batch, features)``, e.g. the embedding of the previous token.
            states: list ``[*rnn_state, attentional]``, each ``(batch, units)``.
            encoder_outputs: ``(batch, Tv, d)``, the memory attended to.
            encoder_mask: optional boolean ``(batch, Tv)``, ``True`` on real tokens.
            projected_keys: optional ``precompute_keys(encoder_outputs)``.
            training: passed to the wrapped cell.

        Returns:
            ``(output, new_states, attention_weights)``: the attentional vector
            ``(batch, units)``, the new state list and float32 ``(batch, Tv)``.
        """
        states = list(states)
        if len(states) != len(self.state_size):
            raise ValueError(
                f"Expected {len(self.state_size)} states ({self.cell} state + attentional vector). "
                f"Received: {len(states)} states"
            )
        self._build_attention(tuple(encoder_outputs.shape))
        if projected_keys is None:
            projected_keys = self.attention_layer.precompute_keys(encoder_outputs)
        recurrent_states, previous_attentional = states[:-1], states[-1]
        cell_input = ops.concatenate(
            [inputs, ops.cast(previous_attentional, inputs.dtype)], axis=-1
        )
        hidden, new_recurrent = self.recurrent_cell(cell_input, recurrent_states, training=training)
        if not isinstance(new_recurrent, (list, tuple)):
            new_recurrent = [new_recurrent]
        context, weights = self.attention_layer(
            hidden, encoder_outputs, mask=encoder_mask, projected_key=projected_keys
        )
        attentional = self.attentional_projection(
            ops.concatenate([ops.cast(context, hidden.dtype), hidden], axis=-1)
        )
        return attentional, [*new_recurrent, attentional], weights

    @contextlib.contextmanager
    def attend_to(
        self, encoder_outputs, encoder_mask=None, projected_keys=None, emit_attention=False
    ):
        """Bind the memory that ``call`` (and so ``keras.layers.RNN(cell)``) attends to.

        With ``emit_attention=True`` each step outputs ``[attentional; weights]``,
        ``(batch, units + Tv)``, which :class:`AttentionDecoder` splits again.
        """
        if projected_keys is None:
            projected_keys = self.precompute_keys(encoder_outputs)
        previous = self._memory, self._emit_attention
        self._memory = (encoder_outputs, encoder_mask, projected_keys)
        self._emit_attention = bool(emit_attention)
        try:
            yield self
        finally:
            self._memory, self._emit_attention = previous

    def call(self, inputs, states, training=None):
        if self._memory is None:
            raise ValueError(
                "AttentionDecoderCell has no encoder outputs to attend to: use AttentionDecoder, "
                "AttentionDecoderCell.step(...), or run keras.layers.RNN(cell) inside `with cell.attend_to(...)`."
            )
        encoder_outputs, encoder_mask, projected_keys = self._memory
        output, new_states, weights = self.step(
            inputs, states, encoder_outputs, encoder_mask, projected_keys, training=training
        )
        if self._emit_attention:
            output = ops.concatenate([output, ops.cast(weights, output.dtype)], axis=-1)
        return output, new_states

    def get_config(self):
        config = super().get_config()
        config.update(
            units=self.units,
            cell=self.cell,
            attention=self.attention,
            attention_units=self.attention_units,
            luong_score=self.luong_score,
        )
        return config


@keras.saving.register_keras_serializable(package="rnnapps")
class AttentionDecoder(keras.layers.Layer):
    """Runs :class:`AttentionDecoderCell` over a (teacher-forced) target sequence.

    This is the explicit replacement for Keras 2's
    ``RNN(cell)(inputs, constants=[memory])``: the memory is a call argument,
    its key projection is computed once, and the cell runs inside a stock
    ``keras.layers.RNN`` (so masking and the backend's loop come for free).
    The same cell is reachable as ``decoder.cell`` for step-wise inference.

    Reference: Luong, Pham and Manning (2015), "Effective Approaches to
    Attention-based Neural Machine Translation", section 3.3.

    Args:
        units, cell, attention, attention_units, luong_score: as for
            :class:`AttentionDecoderCell`.
        return_state: also return the final states ``[*rnn_state, attentional]``.
        return_attention: also return the attention weights of every step.

    Call arguments:
        inputs: ``(batch, Tq, features)``, e.g. embeddings of the shifted target.
            They share the cell's input with the fed-back attentional vector,
            which soon reaches ~0.7 per unit: keep them on a similar scale (the
            translator uses unit-variance embeddings; Keras's default
            ``uniform(±0.05)`` ones are drowned and the decoder stops reading
            its tokens).
        encoder_outputs: ``(batch, Tv, d)``.
        initial_state: optional list: either the full state ``[*rnn_state,
            attentional]`` or only the LSTM/GRU state (e.g. the encoder's final
            state), in which case the attentional vector starts at zero.
            Default: all zeros.
        inputs_mask: optional boolean ``(batch, Tq)``; padded target steps keep
            the state and output zeros. Taken from ``inputs``' Keras mask.
        encoder_outputs_mask: optional boolean ``(batch, Tv)``; padded source
            tokens get zero attention. Taken from ``encoder_outputs``' Keras mask.
        training: passed to the cell.

    Returns:
        ``outputs`` ``(batch, Tq, units)``, or a list ``[outputs]`` +
        ``[attention (batch, Tq, Tv) float32]`` if ``return_attention`` +
        ``states`` if ``return_state``.

    Example:

    >>> decoder = AttentionDecoder(16, cell="gru", return_attention=True)
    >>> outputs, attention = decoder(keras.ops.ones((2, 4, 8)), keras.ops.ones((2, 7, 10)))
    >>> tuple(outputs.shape), tuple(attention.shape)
    ((2, 4, 16), (2, 4, 7))
    """

    def __init__(
        self,
        units: int,
        cell: str = "lstm",
        attention: str = "bahdanau",
        attention_units: int | None = None,
        luong_score: str = "general",
        return_state: bool = False,
        return_attention: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        decoder_cell = AttentionDecoderCell(
            units,
            cell=cell,
            attention=attention,
            attention_units=attention_units,
            luong_score=luong_score,
            name="attention_decoder_cell",
        )
        self.units = decoder_cell.units
        self.return_state = bool(return_state)
        self.return_attention = bool(return_attention)
        self.supports_masking = True
        self.rnn = keras.layers.RNN(
            decoder_cell,
            return_sequences=True,
            return_state=True,
            zero_output_for_mask=True,
            name="rnn",
        )

    @property
    def cell(self) -> AttentionDecoderCell:
        return self.rnn.cell

    def build(self, inputs_shape, encoder_outputs_shape, initial_state_shape=None):
        self.cell.build(tuple(inputs_shape), memory_shape=tuple(encoder_outputs_shape))
        self.rnn.build(tuple(inputs_shape))
        self.built = True

    def _full_initial_state(self, initial_state, inputs):
        if initial_state is None:
            return None
        states = (
            list(initial_state) if isinstance(initial_state, (list, tuple)) else [initial_state]
        )
        if len(states) == self.cell.num_recurrent_states:
            states.append(ops.zeros((ops.shape(inputs)[0], self.units), dtype=states[0].dtype))
        if len(states) != len(self.cell.state_size):
            raise ValueError(
                f"Expected initial_state with {self.cell.num_recurrent_states} ({self.cell.cell} state) or "
                f"{len(self.cell.state_size)} (plus attentional vector) tensors. Received: {len(states)} tensors"
            )
        return states

    def call(
        self,
        inputs,
        encoder_outputs,
        initial_state=None,
        inputs_mask=None,
        encoder_outputs_mask=None,
        training=None,
    ):
        states = self._full_initial_state(initial_state, inputs)
        with self.cell.attend_to(
            encoder_outputs, encoder_outputs_mask, emit_attention=self.return_attention
        ):
            outputs, *final_states = self.rnn(
                inputs, initial_state=states, mask=inputs_mask, training=training
            )
        results = [outputs[..., : self.units]]
        if self.return_attention:
            results.append(ops.cast(outputs[..., self.units :], "float32"))
        if self.return_state:
            results.extend(final_states)
        return results[0] if len(results) == 1 else results

    def compute_mask(self, inputs, previous_mask=None):
        if not (self.return_attention or self.return_state):
            return previous_mask
        extra = int(self.return_attention) + (len(self.cell.state_size) if self.return_state else 0)
        return [previous_mask] + [None] * extra

    def compute_output_shape(self, inputs_shape, encoder_outputs_shape, initial_state_shape=None):
        batch, steps = inputs_shape[0], inputs_shape[1]
        shapes = [(batch, steps, self.units)]
        if self.return_attention:
            shapes.append((batch, steps, encoder_outputs_shape[1]))
        if self.return_state:
            shapes.extend((batch, size) for size in self.cell.state_size)
        return shapes[0] if len(shapes) == 1 else shapes

    def compute_output_spec(self, inputs, encoder_outputs, initial_state=None, **kwargs):
        shapes = self.compute_output_shape(inputs.shape, encoder_outputs.shape)
        if not isinstance(shapes, list):
            return keras.KerasTensor(shapes, dtype=self.compute_dtype)
        dtypes = [self.compute_dtype] + (["float32"] if self.return_attention else [])
        dtypes += [self.compute_dtype] * (len(shapes) - len(dtypes))
        return [
            keras.KerasTensor(shape, dtype=dtype)
            for shape, dtype in zip(shapes, dtypes, strict=True)
        ]

    def step(
        self, inputs, states, encoder_outputs, encoder_mask=None, projected_keys=None, training=None
    ):
        """One decoding step; see :meth:`AttentionDecoderCell.step`."""
        return self.cell.step(
            inputs, states, encoder_outputs, encoder_mask, projected_keys, training=training
        )

    def get_config(self):
        config = super().get_config()
        cell_config = self.cell.get_config()
        config.update(
            units=self.units,
            cell=cell_config["cell"],
            attention=cell_config["attention"],
            attention_units=cell_config["attention_units"],
            luong_score=cell_config["luong_score"],
            return_state=self.return_state,
            return_attention=self.return_attention,
        )
        return config
