"""Greedy and beam-search decoding as graph loops, exportable in a SavedModel.

Both decoders drive a user ``step_fn``::

    step_fn(token_ids: int32[batch], states) -> (log_probs: float32[batch, vocab], new_states, extra)

``states`` is any nested structure (``tf.nest``) of tensors whose first axis is
the batch; put the encoder outputs, their mask and their projected keys in it
too (unchanged by the step), so beam search tiles and reorders them with the
decoder state. ``extra`` is a tensor (or nested tensors, or ``None``) per step,
e.g. attention weights ``[batch, Tv]``; it is gathered along the best beam.

Conventions: token id 0 is padding. Hypotheses never emit it before EOS (its
log-probability is ignored), and after EOS a hypothesis is finished: it emits
0, its score and length are frozen and its extras are zero. ``lengths`` count
the tokens up to and including EOS. The loops are ``tf.while_loop`` (plain
TensorFlow, not ``keras.ops``, because they must run inside a ``tf.function``
and be exported); they stop early once every hypothesis is finished.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import tensorflow as tf

PAD_ID = 0
# A score no real hypothesis reaches; finite so that sums never become NaN.
_IMPOSSIBLE = -1e9


class DecodeResult(NamedTuple):
    """What a decoder returns for each batch row (the best beam for beam search).

    ids: int32 ``[batch, max_length]``, 0 after EOS.
    lengths: int32 ``[batch]``, tokens up to and including EOS (``max_length``
        if EOS never came).
    scores: float32 ``[batch]``, the sum of the chosen tokens' log-probabilities.
    extras: the step's extras stacked over time, ``[batch, max_length, ...]``
        (zeros after EOS), or ``None``.
    """

    ids: tf.Tensor
    lengths: tf.Tensor
    scores: tf.Tensor
    extras: Any


def _validate(max_length, start_id, end_id):
    if int(max_length) < 1:
        raise ValueError(f"Expected max_length >= 1. Received: max_length={max_length}")
    for name, value in (("start_id", start_id), ("end_id", end_id)):
        if int(value) == PAD_ID:
            raise ValueError(
                f"Expected {name} != {PAD_ID} (the padding id). Received: {name}={value}"
            )


def _forbid_padding(log_probs):
    """Make the padding id unreachable for unfinished hypotheses."""
    vocab = tf.shape(log_probs)[-1]
    is_pad = tf.equal(tf.range(vocab), PAD_ID)
    return tf.where(is_pad, tf.cast(_IMPOSSIBLE, log_probs.dtype), log_probs)


def _flatten_extra(extra):
    return [] if extra is None else tf.nest.flatten(extra)


def _zero_where(finished, tensor):
    """Zero the rows of ``tensor`` (batch-major) whose ``finished`` flag is set."""
    flags = tf.reshape(
        finished,
        tf.concat(
            [tf.shape(finished), tf.ones([tf.rank(tensor) - tf.rank(finished)], tf.int32)], 0
        ),
    )
    return tf.where(flags, tf.zeros_like(tensor), tensor)


def greedy_decode(
    step_fn, initial_states, start_id, end_id, max_length, batch_size
) -> DecodeResult:
    """Pick the most probable token at every step until EOS or ``max_length``.

    Args:
        step_fn: ``(token_ids, states) -> (log_probs, new_states, extra)``.
        initial_states: nested tensors, batch first.
        start_id: the token fed at the first step.
        end_id: the token that ends a hypothesis.
        max_length: the most tokens generated (EOS included).
        batch_size: an int or scalar int32 tensor.

    Returns:
        A :class:`DecodeResult`.

    Example:

    >>> def step_fn(tokens, states):  # always prefers token 3
    ...     log_probs = tf.math.log(tf.tile([[0.1, 0.1, 0.2, 0.6]], [tf.shape(tokens)[0], 1]))
    ...     return log_probs, states, None
    >>> result = greedy_decode(step_fn, tf.zeros([2, 1]), 1, 2, max_length=3, batch_size=2)
    >>> result.ids.numpy().tolist()
    [[3, 3, 3], [3, 3, 3]]
    """
    _validate(max_length, start_id, end_id)
    max_length = int(max_length)
    tokens = tf.fill([batch_size], tf.constant(start_id, tf.int32))
    finished = tf.zeros([batch_size], tf.bool)
    lengths = tf.zeros([batch_size], tf.int32)
    scores = tf.zeros([batch_size], tf.float32)

    def advance(log_probs, extra, finished, lengths, scores):
        log_probs = _forbid_padding(tf.cast(log_probs, tf.float32))
        chosen = tf.argmax(log_probs, axis=-1, output_type=tf.int32)
        chosen = tf.where(finished, PAD_ID, chosen)
        chosen_log_prob = tf.gather(log_probs, chosen, batch_dims=1)
        scores = scores + tf.where(finished, 0.0, chosen_log_prob)
        lengths = lengths + tf.where(finished, 0, 1)
        if extra is not None:
            extra = tf.nest.map_structure(lambda item: _zero_where(finished, item), extra)
        finished = finished | tf.equal(chosen, end_id)
        return chosen, extra, finished, lengths, scores

    # The first step runs outside the loop: it reveals the structure and shape of ``extra``.
    log_probs, states, extra = step_fn(tokens, initial_states)
    tokens, extra, finished, lengths, scores = advance(log_probs, extra, finished, lengths, scores)
    flat_extra = _flatten_extra(extra)
    id_array = tf.TensorArray(tf.int32, size=max_length, element_shape=tokens.shape).write(
        0, tokens
    )
    extra_arrays = [
        tf.TensorArray(item.dtype, size=max_length, element_shape=item.shape).write(0, item)
        for item in flat_extra
    ]

    def condition(step, tokens, states, finished, lengths, scores, id_array, extra_arrays):
        return tf.logical_and(step < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(step, tokens, states, finished, lengths, scores, id_array, extra_arrays):
        log_probs, states, extra = step_fn(tokens, states)
        tokens, extra, finished, lengths, scores = advance(
            log_probs, extra, finished, lengths, scores
        )
        id_array = id_array.write(step, tokens)
        extra_arrays = [
            array.write(step, item)
            for array, item in zip(extra_arrays, _flatten_extra(extra), strict=True)
        ]
        return step + 1, tokens, states, finished, lengths, scores, id_array, extra_arrays

    step, _, _, _, lengths, scores, id_array, extra_arrays = tf.while_loop(
        condition,
        body,
        (tf.constant(1), tokens, states, finished, lengths, scores, id_array, extra_arrays),
        maximum_iterations=max_length - 1,
    )

    def time_major_to_padded(array):
        stacked = array.stack()[:step]
        padding = [[0, max_length - step]] + [[0, 0]] * (stacked.shape.rank - 1)
        padded = tf.pad(stacked, padding)
        perm = [1, 0] + list(range(2, stacked.shape.rank))
        return tf.transpose(padded, perm)

    ids = time_major_to_padded(id_array)
    ids.set_shape([None, max_length])
    extras = None
    if flat_extra:
        extras = tf.nest.pack_sequence_as(
            extra, [time_major_to_padded(array) for array in extra_arrays]
        )
    return DecodeResult(ids, lengths, scores, extras)


def gnmt_length_penalty(lengths, alpha):
    """GNMT's length normalisation ``((5 + length) / 6) ** alpha`` (Wu et al. 2016, eq. 14)."""
    return tf.pow((5.0 + tf.cast(lengths, tf.float32)) / 6.0, alpha)


def _tile_beams(tensor, beam_width):
    """``[batch, ...] -> [batch * beam, ...]``, each row repeated ``beam`` times in a row."""
    return tf.repeat(tensor, beam_width, axis=0)


def beam_search_decode(
    step_fn, initial_states, start_id, end_id, max_length, beam_width, length_penalty=0.6, n_best=False
) -> DecodeResult:
    """Keep the ``beam_width`` best hypotheses per row; return the best one.

    At every step each live hypothesis is extended by every token and the
    ``beam_width`` best candidates per row survive, ranked by the summed
    log-probability divided by GNMT's length penalty ``((5 + length) / 6) ** α``
    (Wu et al. 2016, "Google's Neural Machine Translation System", eq. 14;
    α = 0 ranks by the raw sum and favours short outputs). A finished
    hypothesis stays one candidate with its score frozen, so it competes with
    longer ones until the end. With ``beam_width=1`` this is greedy decoding.

    Args:
        step_fn: ``(token_ids, states) -> (log_probs, new_states, extra)``; it
            is called on ``batch * beam_width`` rows (row ``b * beam + k``).
        initial_states: nested tensors, batch first (tiled here per beam).
        start_id: the token fed at the first step.
        end_id: the token that ends a hypothesis.
        max_length: the most tokens generated (EOS included).
        beam_width: hypotheses kept per row (>= 1).
        length_penalty: α of the length penalty (>= 0).
        n_best: return every surviving hypothesis, not only the best one.

    Returns:
        A :class:`DecodeResult` for the best hypothesis of every row; ``scores``
        are its summed log-probabilities (before the length penalty). With
        ``n_best=True`` every field gains a beam axis after the batch
        (``ids`` ``[batch, beam_width, max_length]``), best first by the
        length-penalised score that the search ranks by.

    Example:

    >>> def step_fn(tokens, states):  # 3 is likelier, but 2 (EOS) ends sooner
    ...     log_probs = tf.math.log(tf.tile([[0.1, 0.1, 0.4, 0.4]], [tf.shape(tokens)[0], 1]))
    ...     return log_probs, states, None
    >>> result = beam_search_decode(step_fn, tf.zeros([1, 1]), 1, 2, max_length=3, beam_width=2)
    >>> result.ids.numpy().tolist(), result.lengths.numpy().tolist()
    ([[2, 0, 0]], [1])
    """
    alpha = float(length_penalty)
    _validate(max_length, start_id, end_id)
    if int(beam_width) < 1:
        raise ValueError(f"Expected beam_width >= 1. Received: beam_width={beam_width}")
    if alpha < 0:
        raise ValueError(f"Expected length_penalty >= 0. Received: length_penalty={alpha}")
    max_length = int(max_length)
    beam = int(beam_width)
    flat_initial = tf.nest.flatten(initial_states)
    if not flat_initial:
        raise ValueError(
            "beam_search_decode needs at least one state tensor to know the batch size"
        )
    batch = tf.shape(flat_initial[0])[0]
    states = tf.nest.map_structure(lambda state: _tile_beams(state, beam), initial_states)
    tokens = tf.fill([batch * beam], tf.constant(start_id, tf.int32))
    # Only the first beam is alive at the start, so the first step does not pick one token `beam` times.
    scores = tf.tile(
        tf.concat([[0.0], tf.fill([beam - 1], _IMPOSSIBLE)], 0)[tf.newaxis], [batch, 1]
    )
    finished = tf.zeros([batch, beam], tf.bool)
    lengths = tf.zeros([batch, beam], tf.int32)
    batch_offsets = tf.range(batch)[:, tf.newaxis] * beam

    def advance(
        step, log_probs, new_states, extra, scores, finished, lengths, sequences, extra_buffers
    ):
        vocab = tf.shape(log_probs)[-1]
        log_probs = tf.reshape(
            _forbid_padding(tf.cast(log_probs, tf.float32)), [batch, beam, vocab]
        )
        # A finished hypothesis has one continuation, the padding token, at no cost.
        only_padding = tf.where(tf.equal(tf.range(vocab), PAD_ID), 0.0, _IMPOSSIBLE)
        log_probs = tf.where(finished[..., tf.newaxis], only_padding, log_probs)
        totals = scores[..., tf.newaxis] + log_probs
        candidate_lengths = lengths + tf.where(finished, 0, 1)
        ranked = totals / gnmt_length_penalty(candidate_lengths, alpha)[..., tf.newaxis]
        _, best = tf.math.top_k(tf.reshape(ranked, [batch, beam * vocab]), k=beam)
        parents = best // vocab
        chosen = best % vocab

        scores = tf.gather(tf.reshape(totals, [batch, beam * vocab]), best, batch_dims=1)
        parent_finished = tf.gather(finished, parents, batch_dims=1)
        lengths = tf.gather(candidate_lengths, parents, batch_dims=1)
        finished = parent_finished | tf.equal(chosen, end_id)

        rows = tf.reshape(batch_offsets + parents, [-1])
        new_states = tf.nest.map_structure(lambda state: tf.gather(state, rows), new_states)
        position = tf.one_hot(step, max_length, dtype=tf.int32)
        sequences = tf.gather(sequences, parents, batch_dims=1) + chosen[..., tf.newaxis] * position

        updated_buffers = []
        for buffer, item in zip(extra_buffers, _flatten_extra(extra), strict=True):
            item = tf.reshape(item, tf.concat([[batch, beam], tf.shape(item)[1:]], 0))
            item = _zero_where(parent_finished, tf.gather(item, parents, batch_dims=1))
            buffer = tf.gather(buffer, parents, batch_dims=1)
            # Write ``item`` at time ``step`` of the [batch, beam, time, ...] buffer.
            mask = tf.reshape(
                tf.one_hot(step, max_length, dtype=buffer.dtype),
                tf.concat([[1, 1, max_length], tf.ones([tf.rank(item) - 2], tf.int32)], 0),
            )
            updated_buffers.append(buffer * (1 - mask) + tf.expand_dims(item, 2) * mask)
        return (
            tf.reshape(chosen, [-1]),
            new_states,
            scores,
            finished,
            lengths,
            sequences,
            updated_buffers,
        )

    sequences = tf.zeros([batch, beam, max_length], tf.int32)
    log_probs, new_states, extra = step_fn(tokens, states)
    flat_extra = _flatten_extra(extra)
    extra_buffers = [
        tf.zeros(tf.concat([[batch, beam, max_length], tf.shape(item)[1:]], 0), item.dtype)
        for item in flat_extra
    ]
    tokens, states, scores, finished, lengths, sequences, extra_buffers = advance(
        0, log_probs, new_states, extra, scores, finished, lengths, sequences, extra_buffers
    )

    def condition(step, tokens, states, scores, finished, lengths, sequences, extra_buffers):
        return tf.logical_and(step < max_length, tf.logical_not(tf.reduce_all(finished)))

    def body(step, tokens, states, scores, finished, lengths, sequences, extra_buffers):
        log_probs, new_states, extra = step_fn(tokens, states)
        tokens, states, scores, finished, lengths, sequences, extra_buffers = advance(
            step, log_probs, new_states, extra, scores, finished, lengths, sequences, extra_buffers
        )
        return step + 1, tokens, states, scores, finished, lengths, sequences, extra_buffers

    _, _, _, scores, finished, lengths, sequences, extra_buffers = tf.while_loop(
        condition,
        body,
        (tf.constant(1), tokens, states, scores, finished, lengths, sequences, extra_buffers),
        maximum_iterations=max_length - 1,
    )

    ranked = scores / gnmt_length_penalty(lengths, alpha)
    if n_best:
        best = tf.argsort(ranked, axis=-1, direction="DESCENDING", stable=True)
    else:
        best = tf.argmax(ranked, axis=-1, output_type=tf.int32)
    ids = tf.gather(sequences, best, batch_dims=1)
    extras = None
    if flat_extra:
        extras = tf.nest.pack_sequence_as(
            extra, [tf.gather(buffer, best, batch_dims=1) for buffer in extra_buffers]
        )
    return DecodeResult(
        ids,
        tf.gather(lengths, best, batch_dims=1),
        tf.gather(scores, best, batch_dims=1),
        extras,
    )
