"""Inference-only re-implementation of :class:`RecurrentStack` in core TensorFlow ops, for serving.

Keras runs a recurrent layer as a graph ``while`` loop of a dozen small ops per time
step plus the mask bookkeeping; on a CPU that per-step overhead (about 40 µs a token),
not the arithmetic, is what one review costs. TensorFlow Serving runs no custom ops and
no XLA unless started with a flag, so the fast path here uses stock ops only:

* LSTM: ``tf.raw_ops.BlockLSTMV2``, one fused op whose loop over time runs in C++.
  Its gate layout is Keras' own (i, f, c, o; the V1 ``BlockLSTM`` op uses i, c, f, o),
  it adds no forget bias (Keras folds ``unit_forget_bias`` into the bias at init), and
  with ``cell_clip=-1`` and no peepholes it computes exactly Keras' LSTM cell.
* GRU and SimpleRNN (and LSTM with ``lstm_impl="loop"``): the input projection
  ``x @ W`` of all steps at once, then a ``tf.while_loop`` doing only ``h @ U`` and the
  gate arithmetic per step. There is no block GRU op for Keras' GRU: ``GRUBlockCell``
  applies the reset gate before the recurrent matmul, Keras' default
  (``reset_after=True``) after it.

Masks must be post-padded (real steps first), as every rnnapps text pipeline makes
them; the backward direction reverses each row's real steps only
(``tf.reverse_sequence``), so the padding never enters a recurrence that matters.
Outputs at padded steps are made to equal what Keras returns on the CPU: zeros under
``Bidirectional`` (it sets ``zero_output_for_mask`` when returning sequences), the last
real output repeated for a unidirectional layer, zeros throughout for an empty row.

:class:`FusedClassifier` (:func:`fused_classifier`) applies the same to a whole
sentiment classifier from its token ids on.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from rnnapps.models.recurrent import RecurrentStack, SequencePooling, VariationalLSTMCell

LSTM_IMPLEMENTATIONS = ("block", "loop")
#: Layers that are the identity at inference; the classifier walk skips them.
_INFERENCE_IDENTITY = (keras.layers.Dropout, keras.layers.GaussianDropout, keras.layers.GaussianNoise,
                       keras.layers.AlphaDropout)


def fused_stack_call(stack: RecurrentStack, inputs, mask=None, *, lstm_impl: str = "block",
                     validate_mask: bool = True):
    """What ``stack(inputs, mask=mask, training=False)`` returns, computed with fused core-TF ops.

    Reads the stack's current weights on every call (nothing is copied), so it follows
    later ``set_weights`` and saves with the variables when a ``tf.Module`` tracks them.
    Works eagerly and inside a ``tf.function`` with unknown batch and time dimensions.

    Args:
        stack: a :class:`RecurrentStack` (built here if not yet) of LSTM, GRU (``reset_after=True``, the
            Keras default) or SimpleRNN layers with their default activations, with or
            without ``Bidirectional`` (``merge_mode="concat"``). ``return_state=True`` is
            not supported.
        inputs: float32 ``(batch, time, features)``, ``time >= 1``.
        mask: optional boolean ``(batch, time)``, ``True`` on real steps, post-padded
            (each row's real steps first). Rows may be empty.
        lstm_impl: ``"block"`` (``BlockLSTMV2``, the fast one) or ``"loop"`` (the
            hoisted-projection ``while`` loop that GRU and SimpleRNN always use).
        validate_mask: check in the graph that ``mask`` is post-padded (an
            ``InvalidArgumentError`` if not): a pre-padded mask would silently give
            wrong numbers. Costs a few ops per call; skip it where the mask comes from
            post-padded token ids.

    Returns:
        float32 ``(batch, time, width)`` when ``stack.return_sequences``, else
        ``(batch, width)``; ``width = stack.output_width``.

    Raises:
        NotImplementedError: for a configuration this module does not reproduce
            (named in the message).

    Example:

    >>> stack = RecurrentStack(8, cell="lstm", bidirectional=True)
    >>> x, mask = tf.random.normal((2, 5, 3)), tf.sequence_mask([5, 2], 5)
    >>> fast = fused_stack_call(stack, x, mask)
    >>> float(tf.reduce_max(tf.abs(fast - stack(x, mask=mask, training=False)))) < 1e-5
    True
    """
    if lstm_impl not in LSTM_IMPLEMENTATIONS:
        raise ValueError(f"Expected lstm_impl to be one of {LSTM_IMPLEMENTATIONS}. Received: lstm_impl={lstm_impl!r}")
    check_stack(stack)
    inputs = tf.convert_to_tensor(inputs)
    if inputs.dtype != tf.float32:
        raise NotImplementedError(f"{stack.name}: fused path runs float32 only, got inputs of {inputs.dtype.name}")
    if not stack.built:
        stack.build(inputs.shape)

    # Time-major throughout: both BlockLSTMV2 and the while loop want it, and one transpose
    # in and one out beat one per layer.
    sequence = tf.transpose(inputs, [1, 0, 2])
    time = tf.shape(sequence)[0]
    lengths = steps = valid = None
    if mask is not None:
        mask = tf.cast(mask, tf.bool)
        lengths = tf.reduce_sum(tf.cast(mask, tf.int32), axis=1)
        if validate_mask:
            with tf.control_dependencies([tf.debugging.assert_equal(
                mask, tf.sequence_mask(lengths, time),
                message="fused_stack_call needs a post-padded mask (every row's real steps first)",
            )]):
                lengths = tf.identity(lengths)
        # No step past the longest row changes an output that is read.
        steps = tf.maximum(tf.reduce_max(lengths), 0)
        valid = tf.expand_dims(tf.transpose(mask), -1)

    depth = len(stack.recurrent_layers)
    for index, rnn in enumerate(stack.recurrent_layers):
        want_sequence = stack.return_sequences or index < depth - 1
        result = _layer(rnn, sequence, lengths, steps, valid, want_sequence, lstm_impl)
        # The same condition as RecurrentStack.call (dropout before a layer is the identity here).
        if (
            stack.residual
            and index > 0
            and want_sequence
            and sequence.shape[-1] == stack.output_width
        ):
            result = result + sequence
        sequence = result
    return tf.transpose(sequence, [1, 0, 2]) if stack.return_sequences else sequence


def _layer(rnn, sequence, lengths, steps, valid, want_sequence: bool, lstm_impl: str):
    """One (bidirectional) layer on a time-major ``sequence``: ``(T, B, width)`` or ``(B, width)``."""
    if isinstance(rnn, keras.layers.Bidirectional):
        forward = _direction(rnn.forward_layer, sequence, steps, lstm_impl)
        backward_in_reverse = _direction(rnn.backward_layer, _reverse(sequence, lengths), steps, lstm_impl)
        if not want_sequence:
            return tf.concat([_last(forward, lengths), _last(backward_in_reverse, lengths)], axis=-1)
        both = tf.concat([forward, _reverse(backward_in_reverse, lengths)], axis=-1)
        # Bidirectional forces zero_output_for_mask when it returns sequences.
        return both if valid is None else tf.where(valid, both, tf.zeros_like(both))
    outputs = _direction(rnn, sequence, steps, lstm_impl)
    last = _last(outputs, lengths)
    if not want_sequence:
        return last
    # A plain Keras RNN on the CPU carries its last real output over the padded steps.
    return outputs if valid is None else tf.where(valid, outputs, tf.expand_dims(last, 0))


def _reverse(sequence, lengths):
    if lengths is None:
        return tf.reverse(sequence, axis=[0])
    return tf.reverse_sequence(sequence, lengths, seq_axis=0, batch_axis=1)


def _last(outputs, lengths):
    """Each row's output at its last real step; zeros for an empty row (Keras never updates its state)."""
    if lengths is None:
        return outputs[-1]
    batch = tf.shape(outputs)[1]
    positions = tf.stack([tf.maximum(lengths - 1, 0), tf.range(batch)], axis=1)
    last = tf.gather_nd(outputs, positions)
    return tf.where(tf.expand_dims(lengths > 0, -1), last, tf.zeros_like(last))


def _activation_name(function) -> str | None:
    return getattr(function, "__name__", None)


_KINDS = {keras.layers.LSTM: "lstm", keras.layers.GRU: "gru", keras.layers.SimpleRNN: "simple_rnn"}


def _kind(layer) -> str | None:
    # An LSTM trained with recurrent dropout is a plain RNN around VariationalLSTMCell; at inference
    # it computes what an LSTM with the same weights does.
    if type(layer) is keras.layers.RNN and type(layer.cell) is VariationalLSTMCell:
        return "lstm"
    return _KINDS.get(type(layer))


def _check_direction(layer, backwards_ok: bool) -> str:
    """The cell kind of one Keras RNN layer, or NotImplementedError for what this module cannot reproduce.

    ``backwards_ok``: the layer is Bidirectional's backward half, whose reversal the
    caller does.
    """
    kind = _kind(layer)
    if kind is None:
        raise NotImplementedError(f"{layer.name}: {type(layer).__name__} is not supported by the fused path")
    if layer.stateful:
        raise NotImplementedError(f"{layer.name}: stateful=True is not supported by the fused path")
    if layer.go_backwards and not backwards_ok:
        raise NotImplementedError(f"{layer.name}: go_backwards=True outside Bidirectional is not supported")
    cell = layer.cell
    expected = {"activation": "tanh", **({} if kind == "simple_rnn" else {"recurrent_activation": "sigmoid"})}
    for attribute, name in expected.items():
        if _activation_name(getattr(cell, attribute)) != name:
            raise NotImplementedError(f"{layer.name}: {attribute} must be {name!r} for the fused path")
    if kind == "gru" and not cell.reset_after:
        raise NotImplementedError(f"{layer.name}: GRU with reset_after=False is not supported by the fused path")
    if layer.compute_dtype != "float32":
        raise NotImplementedError(f"{layer.name}: compute dtype {layer.compute_dtype} (the fused path runs float32)")
    return kind


def check_stack(stack) -> None:
    """Raise NotImplementedError, naming the reason, if :func:`fused_stack_call` cannot run ``stack``.

    :func:`fused_stack_call` checks the same when it traces; this tells a caller up front,
    e.g. to keep a Keras signature for a mixed-precision model.

    Args:
        stack: the layer to check (a :class:`RecurrentStack` is the only kind accepted).

    Returns:
        None.

    Example:

    >>> check_stack(RecurrentStack(4, cell="gru"))
    >>> check_stack(RecurrentStack(4, return_state=True))
    Traceback (most recent call last):
    ...
    NotImplementedError: recurrent_stack...: return_state=True is not supported by the fused path
    """
    if not isinstance(stack, RecurrentStack):
        raise NotImplementedError(f"fused_stack_call takes a RecurrentStack, not {type(stack).__name__}")
    if stack.return_state:
        raise NotImplementedError(f"{stack.name}: return_state=True is not supported by the fused path")
    for rnn in stack.recurrent_layers:
        if isinstance(rnn, keras.layers.Bidirectional):
            if rnn.merge_mode != "concat":
                raise NotImplementedError(f"{rnn.name}: merge_mode={rnn.merge_mode!r} (only 'concat' is supported)")
            _check_direction(rnn.forward_layer, backwards_ok=False)
            _check_direction(rnn.backward_layer, backwards_ok=True)
        else:
            _check_direction(rnn, backwards_ok=False)


def _direction(layer, sequence, steps, lstm_impl: str):
    """Run one Keras RNN layer forwards over time-major ``sequence``: ``(T, B, units)``, zeros past ``steps``."""
    kind = _kind(layer)
    cell = layer.cell
    kernel, recurrent = tf.convert_to_tensor(cell.kernel), tf.convert_to_tensor(cell.recurrent_kernel)
    units = cell.units
    time, batch = tf.shape(sequence)[0], tf.shape(sequence)[1]
    if steps is None:
        steps = time
    if kind == "lstm" and lstm_impl == "block":
        bias = tf.convert_to_tensor(cell.bias) if cell.use_bias else tf.zeros([4 * units])
        zeros, no_peephole = tf.zeros(tf.stack([batch, units])), tf.zeros([units])
        return tf.raw_ops.BlockLSTMV2(
            seq_len_max=tf.cast(steps, tf.int64), x=sequence, cs_prev=zeros, h_prev=zeros,
            w=tf.concat([kernel, recurrent], axis=0), wci=no_peephole, wcf=no_peephole, wco=no_peephole,
            b=bias, cell_clip=-1.0, use_peephole=False,
        ).h

    width = {"lstm": 4, "gru": 3, "simple_rnn": 1}[kind] * units
    input_bias, recurrent_bias = None, None
    if cell.use_bias:
        bias = tf.convert_to_tensor(cell.bias)
        input_bias, recurrent_bias = (bias[0], bias[1]) if kind == "gru" else (bias, None)
    # One GEMM for every step's input projection: (T*B, F) @ (F, G), instead of T small ones.
    projected = tf.matmul(tf.reshape(sequence, [-1, tf.shape(sequence)[2]]), kernel)
    if input_bias is not None:
        projected = tf.nn.bias_add(projected, input_bias)
    projected = tf.TensorArray(tf.float32, size=time, element_shape=tf.TensorShape([None, width])).unstack(
        tf.reshape(projected, tf.stack([time, batch, width]))
    )
    step = {"lstm": _lstm_step, "gru": _gru_step, "simple_rnn": _simple_rnn_step}[kind]
    zeros = tf.zeros(tf.stack([batch, units]))
    states = (zeros, zeros) if kind == "lstm" else (zeros,)
    written = tf.TensorArray(tf.float32, size=steps, element_shape=tf.TensorShape([None, units]))

    def body(t, states, written):
        states = step(projected.read(t), states, recurrent, recurrent_bias, units)
        return t + 1, states, written.write(t, states[0])

    _, _, written = tf.while_loop(lambda t, *_: t < steps, body, (tf.constant(0), states, written),
                                  maximum_iterations=time)
    outputs = written.stack()
    # Same contract as BlockLSTMV2 past seq_len_max: zeros.
    return tf.pad(outputs, [[0, time - steps], [0, 0], [0, 0]])


def _lstm_step(x_projected, states, recurrent, recurrent_bias, units):
    h, c = states
    i, f, g, o = tf.split(x_projected + tf.matmul(h, recurrent), 4, axis=1)
    c = tf.sigmoid(f) * c + tf.sigmoid(i) * tf.tanh(g)
    return tf.sigmoid(o) * tf.tanh(c), c


def _gru_step(x_projected, states, recurrent, recurrent_bias, units):
    # Keras' reset_after GRU: the reset gate scales the recurrent candidate after its matmul.
    (h,) = states
    inner = tf.matmul(h, recurrent)
    if recurrent_bias is not None:
        inner = tf.nn.bias_add(inner, recurrent_bias)
    x_zr, x_h = tf.split(x_projected, [2 * units, units], axis=1)
    inner_zr, inner_h = tf.split(inner, [2 * units, units], axis=1)
    z, r = tf.split(tf.sigmoid(x_zr + inner_zr), 2, axis=1)
    candidate = tf.tanh(x_h + r * inner_h)
    return (candidate + z * (h - candidate),)


def _simple_rnn_step(x_projected, states, recurrent, recurrent_bias, units):
    (h,) = states
    return (tf.tanh(x_projected + tf.matmul(h, recurrent)),)


class FusedClassifier(tf.Module):
    """Token ids → the classifier's output, with :func:`fused_stack_call` for its recurrent encoder.

    Build it with :func:`fused_classifier`; see there.
    """

    def __init__(self, model: keras.Model, start: str = "clip_length", lstm_impl: str = "block",
                 keras_above_batch: int | None = None):
        super().__init__(name="fused_classifier")
        if lstm_impl not in LSTM_IMPLEMENTATIONS:
            raise ValueError(f"Expected lstm_impl to be one of {LSTM_IMPLEMENTATIONS}. Received: lstm_impl={lstm_impl!r}")
        if keras_above_batch is not None and int(keras_above_batch) < 1:
            raise ValueError(f"Expected keras_above_batch >= 1 or None. Received: keras_above_batch={keras_above_batch}")
        self._lstm_impl = lstm_impl
        self._chain = _layers_after(model, start)
        self._keras_above_batch = None if keras_above_batch is None else int(keras_above_batch)
        # Built once here, not per trace: each sub-model clones the layers' calls.
        self._keras = (None if keras_above_batch is None
                       else keras.Model(model.get_layer(start).output, model.output, name=f"{model.name}_from_ids"))
        # Tracked, so that a SavedModel of a function calling this one saves the weights it reads.
        self._weights = [weight for layer in self._chain for weight in layer.weights]

    def __call__(self, ids):
        if self._keras_above_batch is None:
            return self._fused(ids)
        # BlockLSTMV2's cost grows about linearly with the batch, Keras' loop far less: above a
        # few dozen rows the Keras layers win (benchmarks/fused_serving_probe.py).
        return tf.cond(tf.shape(ids)[0] <= self._keras_above_batch, lambda: self._fused(ids),
                       lambda: self._keras(ids, training=False))

    def _fused(self, ids):
        x, mask = ids, None
        for layer in self._chain:
            if isinstance(layer, keras.layers.Embedding):
                x = tf.gather(layer.embeddings, x)
                mask = tf.not_equal(ids, 0) if layer.mask_zero else None
            elif isinstance(layer, _INFERENCE_IDENTITY):
                continue
            elif isinstance(layer, RecurrentStack):
                # Token ids are post-padded (0 = padding, at the end), so the mask check is skipped.
                x = fused_stack_call(layer, x, mask, lstm_impl=self._lstm_impl, validate_mask=False)
                mask = mask if layer.return_sequences else None
            elif isinstance(layer, SequencePooling):
                x, mask = layer(x, mask=mask), None
            else:  # keras.layers.Dense, the head; its Keras call is plain matmul, bias and activation.
                x = layer(x)
        return x


def _layers_after(model: keras.Model, start: str) -> list:
    """The layers from ``start``'s output to ``model``'s, checked to form a chain this module runs.

    Walks back from the output through each tensor's producing call (``_keras_history``),
    not through ``model.layers``: a sub-model such as ``keras.Model(clip.output,
    model.output)`` clones the calls, so a layer can have several inbound nodes.
    """
    supported = (keras.layers.Embedding, RecurrentStack, SequencePooling, keras.layers.Dense,
                 *_INFERENCE_IDENTITY)
    if len(model.outputs) != 1:
        raise NotImplementedError(f"{model.name}: {len(model.outputs)} outputs (the fused classifier has one)")
    try:
        model.get_layer(start)
    except ValueError:
        raise NotImplementedError(f"{model.name}: no layer named {start!r} to start the fused classifier from") from None
    chain, tensor = [], model.outputs[0]
    while True:
        layer, node_index, tensor_index = tensor._keras_history
        if layer.name == start:
            break
        if isinstance(layer, keras.layers.InputLayer):
            raise NotImplementedError(f"{model.name}: layer {start!r} is not on the way from its output to "
                                      "its input (the fused classifier starts there)")
        node = layer._inbound_nodes[node_index]
        arguments = node.arguments
        if not isinstance(layer, supported):
            raise NotImplementedError(f"{model.name}: layer {layer.name!r} ({type(layer).__name__}) "
                                      "is not supported by the fused classifier")
        # One tensor in, one out; the mask Keras threads through and the training flag are all
        # the rest a plain chain passes.
        if tensor_index != 0 or len(arguments.args) != 1 or not set(arguments.kwargs) <= {"mask", "training"}:
            raise NotImplementedError(f"{model.name}: layer {layer.name!r} is not part of a plain chain from "
                                      f"{start!r} (the fused classifier runs only such a chain)")
        chain.append(layer)
        tensor = arguments.args[0]
    chain.reverse()
    if not chain or not isinstance(chain[0], keras.layers.Embedding):
        first = chain[0].name if chain else "(none)"
        raise NotImplementedError(f"{model.name}: layer {first!r}: the fused classifier needs an Embedding "
                                  f"right after {start!r}")
    for layer in chain:
        if isinstance(layer, RecurrentStack):
            check_stack(layer)
        if isinstance(layer, keras.layers.Embedding) and layer is not chain[0]:
            raise NotImplementedError(f"{model.name}: layer {layer.name!r}: only one Embedding, right after {start!r}")
        if isinstance(layer, keras.layers.Embedding) and getattr(layer, "quantization_mode", None):
            raise NotImplementedError(f"{model.name}: layer {layer.name!r}: quantized embeddings are not supported")
        if isinstance(layer, keras.layers.Dense) and layer is not chain[-1]:
            raise NotImplementedError(f"{model.name}: layer {layer.name!r}: a Dense layer is supported only as the head")
    return chain


def fused_classifier(model: keras.Model, *, start: str = "clip_length", lstm_impl: str = "block",
                     keras_above_batch: int | None = None) -> FusedClassifier:
    """The fast, portable inference of a sentiment-style classifier from its token ids.

    Walks the layers after ``start``: an ``Embedding`` (``mask_zero`` gives the mask),
    dropout-like layers (the identity at inference), a :class:`RecurrentStack` (run by
    :func:`fused_stack_call`), :class:`SequencePooling`, and a ``Dense`` head. The result
    equals ``keras.Model(model.get_layer(start).output, model.output)(ids, training=False)``
    to float32 rounding, and uses core TensorFlow ops only (TensorFlow Serving runs it
    without XLA or custom ops).

    Args:
        model: the Keras classifier, e.g. ``SentimentPipeline.build_model``'s
            (``clip_length`` → ``embedding`` → [``embedding_dropout``] → ``encoder`` →
            [``pooling``] → [``dropout``] → ``probability``).
        start: the layer whose output (post-padded int token ids, 0 = padding) the
            returned callable takes.
        lstm_impl: ``"block"`` (``BlockLSTMV2``) or ``"loop"`` (hoisted-projection
            ``while`` loop), see :func:`fused_stack_call`.
        keras_above_batch: if set, batches of more rows than this run the Keras layers
            instead (a ``tf.cond`` in the graph): the fused LSTM is several times faster for
            one review but slower than Keras for a batch of 64 on a 2-core CPU.

    Returns:
        A :class:`FusedClassifier` (a ``tf.Module``, which tracks the weights it reads):
        call it with int ids ``(batch, time)``, ``time >= 1``, to get the model's output,
        e.g. the probability ``(batch, 1)``.

    Raises:
        NotImplementedError: naming the first layer it cannot run, or why the layers do
            not form a plain chain; raised here, before anything is traced.

    Example:

    >>> fast = fused_classifier(model, keras_above_batch=16)  # doctest: +SKIP
    >>> to_ids = keras.Model(model.input, model.get_layer("clip_length").output)  # doctest: +SKIP
    >>> fast(to_ids(tf.constant(["A wonderful film."]), training=False))  # doctest: +SKIP
    <tf.Tensor: shape=(1, 1), dtype=float32, numpy=array([[0.93]], dtype=float32)>
    """
    return FusedClassifier(model, start=start, lstm_impl=lstm_impl, keras_above_batch=keras_above_batch)
