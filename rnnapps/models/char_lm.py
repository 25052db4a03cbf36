"""A character language model with explicit recurrent state, trained with truncated BPTT.

The functional model takes token ids and the initial state of every recurrent
layer and returns next-token logits and the final states. The same model then
serves three uses without rebuilding anything:

- training with truncated backpropagation through time (Williams & Peng 1990;
  Sutskever 2013, thesis section 2.8.6): the corpus is cut into ``batch_size``
  contiguous streams, each batch continues the previous one, and the final
  states of batch ``i`` (with gradients stopped) are the initial states of
  batch ``i + 1`` (:class:`TruncatedBPTTModel`);
- evaluation over a contiguous validation stream, carrying state the same way;
- generation one token at a time (:func:`step_function` with
  :func:`rnnapps.models.sampling.generate_tokens`).

States enter and leave the model as float32 even under mixed precision:
Keras' recurrent layers do not cast ``initial_state`` to the compute dtype
(keras-team/keras#20605), and carrying float16 state across hundreds of
batches would lose precision, so the model casts at its borders.
"""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from rnnapps.models.recurrent import recurrent_layer

# The cells whose states the truncated-BPTT model carries between batches (a subset of RecurrentStack's).
CELL_TYPES = ("lstm", "gru")


def state_names(cell: str, depth: int) -> list[str]:
    """Names of the state inputs/outputs, in model order (``h`` then ``c`` per layer)."""
    kinds = ("h", "c") if cell == "lstm" else ("h",)
    return [f"state_{index}_{kind}" for index in range(depth) for kind in kinds]


def build_char_lm(
    vocab_size: int,
    embedding_dim: int = 64,
    units: int = 256,
    cell: str = "lstm",
    depth: int = 1,
    dropout: float = 0.0,
    seed: int | None = None,
    name: str = "char_lm",
    recurrent_dropout: float = 0.0,
) -> keras.Model:
    """Embedding -> ``depth`` LSTM/GRU layers -> float32 logits, with explicit states.

    Dropout is applied to the output of every recurrent layer (so between layers
    and before the logits), as in Zaremba et al. 2014, "Recurrent Neural Network
    Regularization". ``recurrent_dropout`` adds variational dropout on the
    recurrent state (one mask per batch row and sequence, Gal & Ghahramani 2016),
    which regularises the single wide layer that overfits a small corpus. An
    LSTM then uses :class:`~rnnapps.models.recurrent.VariationalLSTMCell` (one
    mask for all gates, the fused step), which costs little on a CPU; on a GPU
    it rules out the cuDNN kernel.

    Args:
        vocab_size: number of token ids (the OOV id included).
        embedding_dim: width of the token embedding.
        units: hidden units of each recurrent layer.
        cell: ``"lstm"`` or ``"gru"``.
        depth: number of stacked recurrent layers (>= 1).
        dropout: dropout rate after each recurrent layer (0 disables it).
        seed: seed for the dropout masks.
        name: the model's name.
        recurrent_dropout: dropout rate on each layer's recurrent state (0 disables it).

    Returns:
        A functional ``keras.Model``. Inputs: ``[tokens, *states]`` with int32
        tokens ``(batch, time)`` and float32 states ``(batch, units)`` named by
        :func:`state_names`. Outputs: ``[logits, *final_states]`` with float32
        logits ``(batch, time, vocab_size)`` and float32 final states.

    Example:

    >>> model = build_char_lm(40, embedding_dim=8, units=16, depth=2)
    >>> tokens = keras.ops.zeros((3, 10), "int32")
    >>> logits, *states = model([tokens, *initial_states(model, 3)])
    >>> logits.shape, len(states), states[0].shape
    (TensorShape([3, 10, 40]), 4, TensorShape([3, 16]))
    """
    if cell not in CELL_TYPES:
        raise ValueError(f"Expected cell to be one of {CELL_TYPES}. Received: cell={cell!r}")
    for argument, value in (("vocab_size", vocab_size), ("embedding_dim", embedding_dim), ("units", units), ("depth", depth)):
        if int(value) < 1:
            raise ValueError(f"Expected {argument} >= 1. Received: {argument}={value}")
    for argument, rate in (("dropout", dropout), ("recurrent_dropout", recurrent_dropout)):
        if not 0.0 <= float(rate) < 1.0:
            raise ValueError(f"Expected 0 <= {argument} < 1. Received: {argument}={rate}")
    names = state_names(cell, int(depth))
    per_layer = len(names) // int(depth)

    tokens = keras.Input(shape=(None,), dtype="int32", name="tokens")
    state_inputs = [keras.Input(shape=(int(units),), dtype="float32", name=state_name) for state_name in names]
    outputs = keras.layers.Embedding(int(vocab_size), int(embedding_dim), name="embedding")(tokens)
    final_states = []
    for index in range(int(depth)):
        # A layer under the global policy casts its input to the compute dtype
        # (float16 under mixed precision), which the RNN layer does not do itself.
        initial = [
            keras.layers.Identity(name=f"{state_name}_to_compute_dtype")(state)
            for state_name, state in zip(
                names[index * per_layer : (index + 1) * per_layer],
                state_inputs[index * per_layer : (index + 1) * per_layer],
                strict=True,
            )
        ]
        rnn = recurrent_layer(
            cell,
            int(units),
            recurrent_dropout=float(recurrent_dropout),
            return_sequences=True,
            return_state=True,
            seed=None if seed is None else seed + index,
            name=f"{cell}_{index}",
        )
        outputs, *states = rnn(outputs, initial_state=initial)
        final_states.extend(states)
        if dropout > 0:
            outputs = keras.layers.Dropout(
                float(dropout), seed=None if seed is None else seed + 1000 + index, name=f"dropout_{index}"
            )(outputs)
    logits = keras.layers.Dense(int(vocab_size), dtype="float32", name="logits")(outputs)
    final_states = [
        keras.layers.Identity(dtype="float32", name=f"final_{state_name}")(state)
        for state_name, state in zip(names, final_states, strict=True)
    ]
    return keras.Model([tokens, *state_inputs], [logits, *final_states], name=name)


def initial_states(model: keras.Model, batch_size) -> list:
    """Zero float32 states for every state input of a :func:`build_char_lm` model."""
    return [ops.zeros((batch_size, int(spec.shape[-1])), dtype="float32") for spec in model.inputs[1:]]


def step_function(model: keras.Model):
    """A one-token step for :func:`rnnapps.models.sampling.generate_tokens`.

    Args:
        model: a :func:`build_char_lm` model.

    Returns:
        ``step_fn(token_ids, states) -> (logits, new_states)`` with int32
        ``(batch,)`` ids, float32 ``(batch, vocab)`` logits and a list of float32
        ``(batch, units)`` states.

    Example:

    >>> model = build_char_lm(40, embedding_dim=8, units=16)
    >>> step = step_function(model)
    >>> logits, states = step(tf.constant([1, 2]), initial_states(model, 2))
    >>> logits.shape
    TensorShape([2, 40])
    """

    def step_fn(token_ids, states):
        logits, *new_states = model([token_ids[:, None], *states], training=False)
        return logits[:, 0], list(new_states)

    return step_fn


@keras.saving.register_keras_serializable(package="rnnapps")
class TruncatedBPTTModel(keras.Model):
    """Trains a :func:`build_char_lm` model with truncated BPTT, carrying state.

    The states live in non-trainable float32 variables of shape
    ``(batch_size, units)``: ``train_step`` feeds them as the initial states,
    and writes the final states back (gradients stopped), so that a batch
    continues where the same rows of the previous batch stopped. ``test_step``
    does the same with separate evaluation states, zeroed at the start of every
    ``evaluate`` (also the validation pass inside ``fit``). Reset the training
    states at each epoch with :class:`ResetStatesAtEpochStart`. Gradient
    clipping comes from the optimizer (``clipnorm``). The batch size is fixed:
    batch the data with ``drop_remainder`` (as
    :func:`rnnapps.data.text_corpus.make_stream_dataset` does). Calling the
    model (``predict``) runs from zero states and touches no state variable.
    One replica only: a distribution strategy would split each batch's rows.

    Args:
        language_model: a :func:`build_char_lm` model.
        batch_size: the fixed number of rows (streams) per batch.

    Call arguments:
        inputs: int32 tokens ``(batch, time)``; returns float32 logits
            ``(batch, time, vocab)``.

    Example:

    >>> model = TruncatedBPTTModel(build_char_lm(40, embedding_dim=8, units=16), batch_size=4)
    >>> model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> model(keras.ops.zeros((4, 10), "int32")).shape
    TensorShape([4, 10, 40])
    """

    def __init__(self, language_model: keras.Model, batch_size: int, **kwargs):
        super().__init__(**kwargs)
        if int(batch_size) < 1:
            raise ValueError(f"Expected batch_size >= 1. Received: batch_size={batch_size}")
        if len(language_model.inputs) < 2:
            raise ValueError(
                "Expected language_model to take [tokens, *states] (see build_char_lm). "
                f"Received: language_model with {len(language_model.inputs)} input(s)"
            )
        self.language_model = language_model
        self.batch_size = int(batch_size)
        widths = [int(spec.shape[-1]) for spec in language_model.inputs[1:]]
        self.train_states = [
            self.add_weight(shape=(self.batch_size, width), initializer="zeros", dtype="float32", trainable=False, name=f"train_state_{index}")
            for index, width in enumerate(widths)
        ]
        self.eval_states = [
            self.add_weight(shape=(self.batch_size, width), initializer="zeros", dtype="float32", trainable=False, name=f"eval_state_{index}")
            for index, width in enumerate(widths)
        ]
        # The wrapped model is built and the state variables exist: nothing is
        # left for a deferred build.
        self.built = True

    def call(self, inputs, training=False):
        states = initial_states(self.language_model, ops.shape(inputs)[0])
        return self.language_model([inputs, *states], training=training)[0]

    def reset_states(self):
        """Zeroes the training states (start of an epoch)."""
        for variable in self.train_states:
            variable.assign(ops.zeros(variable.shape, dtype="float32"))

    def reset_eval_states(self):
        """Zeroes the evaluation states (start of an evaluation pass)."""
        for variable in self.eval_states:
            variable.assign(ops.zeros(variable.shape, dtype="float32"))

    def _run_carrying(self, tokens, variables, training):
        outputs = self.language_model([tokens, *[variable.value for variable in variables]], training=training)
        return outputs[0], outputs[1:]

    @staticmethod
    def _store(variables, states):
        for variable, state in zip(variables, states, strict=True):
            variable.assign(tf.stop_gradient(ops.cast(state, "float32")))

    def _update_metrics(self, loss, targets, logits, sample_weight):
        for metric in self.metrics:
            if metric.name == "loss":
                metric.update_state(loss)
            else:
                metric.update_state(targets, logits, sample_weight=sample_weight)
        return {metric.name: metric.result() for metric in self.metrics}

    def train_step(self, data):
        tokens, targets, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        with tf.GradientTape() as tape:
            logits, final_states = self._run_carrying(tokens, self.train_states, training=True)
            loss = self.compute_loss(x=tokens, y=targets, y_pred=logits, sample_weight=sample_weight, training=True)
            # Under mixed precision the optimizer is a LossScaleOptimizer.
            scaled_loss = self.optimizer.scale_loss(loss)
        weights = self.trainable_weights
        gradients = tape.gradient(scaled_loss, weights)
        self.optimizer.apply_gradients(zip(gradients, weights, strict=True))
        self._store(self.train_states, final_states)
        return self._update_metrics(loss, targets, logits, sample_weight)

    def test_step(self, data):
        tokens, targets, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        logits, final_states = self._run_carrying(tokens, self.eval_states, training=False)
        loss = self.compute_loss(x=tokens, y=targets, y_pred=logits, sample_weight=sample_weight, training=False)
        self._store(self.eval_states, final_states)
        return self._update_metrics(loss, targets, logits, sample_weight)

    def evaluate(self, *args, **kwargs):
        # Every evaluation pass reads its stream from the start, so it starts
        # from zero states; fit() calls this method for validation too.
        self.reset_eval_states()
        return super().evaluate(*args, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.update(
            language_model=keras.saving.serialize_keras_object(self.language_model),
            batch_size=self.batch_size,
        )
        return config

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        config["language_model"] = keras.saving.deserialize_keras_object(config["language_model"])
        return cls(**config)


class ResetStatesAtEpochStart(keras.callbacks.Callback):
    """Zeroes a :class:`TruncatedBPTTModel`'s training states before each epoch.

    Each epoch reads the streams from their start again, so the state carried
    from the end of the previous epoch would belong to the wrong text.

    Example:

    >>> callback = ResetStatesAtEpochStart()
    >>> # model.fit(stream, epochs=3, callbacks=[callback])
    """

    def on_epoch_begin(self, epoch, logs=None):
        self.model.reset_states()


class ResetStatesEvery(keras.callbacks.Callback):
    """Zeroes a :class:`TruncatedBPTTModel`'s training states every ``interval`` batches.

    Carrying the state across a whole epoch teaches the model nothing about
    starting from zero, which is how evaluation and generation start: a few
    resets per epoch keep that regime in the training data.

    Example:

    >>> callback = ResetStatesEvery(10)
    >>> # model.fit(stream, epochs=3, callbacks=[ResetStatesAtEpochStart(), callback])
    """

    def __init__(self, interval: int):
        super().__init__()
        if int(interval) < 1:
            raise ValueError(f"Expected interval >= 1. Received: interval={interval}")
        self.interval = int(interval)

    def on_train_batch_begin(self, batch, logs=None):
        if batch % self.interval == 0:
            self.model.reset_states()


def stream_cross_entropy(language_model: keras.Model, ids, chunk_length: int = 1000) -> float:
    """Mean next-character cross-entropy (nats) over ``ids`` read as one stream.

    The text is fed in chunks with the recurrent state carried from one chunk
    to the next, so every character but the first is predicted from all the
    text before it, and no character is dropped (unlike the batched streams).
    """
    ids = np.asarray(ids, dtype=np.int32)
    if len(ids) < 2:
        raise ValueError(f"Expected at least 2 characters to score. Received: {len(ids)}")

    @tf.function(reduce_retracing=True)
    def chunk_loss(inputs, targets, states):
        logits, *states = language_model([inputs, *states], training=False)
        losses = tf.nn.sparse_softmax_cross_entropy_with_logits(targets, tf.cast(logits, tf.float32))
        return tf.reduce_sum(losses), states

    states = initial_states(language_model, 1)
    total = 0.0
    for start in range(0, len(ids) - 1, chunk_length):
        stop = min(start + chunk_length, len(ids) - 1)
        loss, states = chunk_loss(ids[None, start:stop], ids[None, start + 1 : stop + 1], states)
        total += float(loss)
    return total / (len(ids) - 1)
