"""Sampling the next token from a language model's logits, and a generation loop.

Greedy decoding picks the most likely token and tends to loop ("the the the");
sampling from the softmax gives diversity, a temperature below 1 sharpens the
distribution and above 1 flattens it, and top-k keeps only the k most likely
tokens so the long tail of implausible characters is never drawn (Graves 2013,
"Generating Sequences With Recurrent Neural Networks", section 2; Fan et al.
2018, "Hierarchical Neural Story Generation", for top-k).

Randomness is stateless (``tf.random.stateless_categorical`` with a seed pair,
folded with the step index), so a seed reproduces the same text in eager mode,
inside a ``tf.function`` and through a reloaded SavedModel. The loops are
``tf.while_loop``s for the same reason: a serving signature can run the whole
generation in the graph. These are decoding functions, not layers, so they use
``tf`` directly (DESIGN.md: ``tf.*`` where export-friendly loops need it).
"""

from __future__ import annotations

import tensorflow as tf

# Temperatures at or below this are treated as 0, i.e. greedy decoding.
GREEDY_TEMPERATURE = 1e-6


def _seed_pair(seed) -> tf.Tensor:
    """A shape-[2] int64 seed from an int, a scalar tensor or a seed pair."""
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        return tf.stack([seed, tf.constant(0, tf.int64)])
    return tf.reshape(seed, [2])


def sample_next(logits, temperature=1.0, top_k=0, seed=0) -> tf.Tensor:
    """Draws one token per row from ``softmax(logits / temperature)``.

    Args:
        logits: float ``(batch, vocab)``; any float dtype (computed in float32).
        temperature: a scalar or ``(batch,)``; ``<= 1e-6`` means greedy argmax.
        top_k: a scalar int; keep only the ``top_k`` largest logits of each row
            before sampling (``<= 0`` keeps all; ties with the k-th are kept).
        seed: an int, a scalar int tensor or an int pair ``(2,)``; the same
            seed and logits give the same tokens.

    Returns:
        int32 ``(batch,)`` token ids.

    Example:

    >>> sample_next(tf.constant([[0.0, 5.0, 1.0]]), temperature=0.0).numpy()
    array([1], dtype=int32)
    """
    logits = tf.cast(tf.convert_to_tensor(logits), tf.float32)
    temperature = tf.reshape(tf.cast(temperature, tf.float32), [-1])
    top_k = tf.cast(top_k, tf.int32)
    greedy = tf.argmax(logits, axis=-1, output_type=tf.int32)

    vocab_size = tf.shape(logits)[-1]
    kept = tf.clip_by_value(top_k, 1, vocab_size)
    kth_largest = tf.math.top_k(logits, k=kept).values[:, -1:]
    filtered = tf.where(logits < kth_largest, tf.constant(float("-inf"), tf.float32), logits)
    filtered = tf.where(top_k > 0, filtered, logits)

    # The division is guarded so a greedy row never produces inf/NaN logits.
    safe_temperature = tf.maximum(temperature, GREEDY_TEMPERATURE)
    scaled = filtered / safe_temperature[:, None]
    sampled = tf.random.stateless_categorical(scaled, 1, seed=_seed_pair(seed), dtype=tf.int32)[:, 0]
    return tf.where(temperature <= GREEDY_TEMPERATURE, greedy, sampled)


def _relax_batch(structure):
    """Shape invariants with an unknown batch dimension (the rest kept static)."""
    return tf.nest.map_structure(lambda tensor: tf.TensorShape([None]).concatenate(tensor.shape[1:]), structure)


def generate_tokens(
    step_fn,
    initial_state,
    prompt_ids,
    length,
    temperature=1.0,
    top_k=0,
    seed=0,
    start_id=0,
) -> tf.Tensor:
    """Feeds a prompt to a recurrent model, then samples ``length`` tokens.

    The prompt is consumed one token at a time, carrying the recurrent state;
    each sampled token is then fed back with the state, so the prefix is never
    re-run (generation costs one step per token). An empty prompt feeds
    ``start_id`` once (for example the id of ``"\\n"``) so the first sample has
    logits to come from. Runs eagerly, inside a ``tf.function`` and in an
    exported SavedModel.

    Args:
        step_fn: ``step_fn(token_ids, state) -> (logits, new_state)`` with
            int32 ``(batch,)`` ids, float ``(batch, vocab)`` logits and any
            nest of ``(batch, ...)`` tensors as state (same structure out).
        initial_state: the state before the prompt (usually zeros).
        prompt_ids: int ``(batch, prompt_length)``; ``prompt_length`` may be 0.
        length: number of tokens to sample (scalar int, may be a tensor).
        temperature: as in :func:`sample_next`; ``0`` is greedy.
        top_k: as in :func:`sample_next`; ``0`` disables it.
        seed: an int or an int pair; step ``i`` uses the seed folded with ``i``.
        start_id: the token fed when the prompt is empty.

    Returns:
        int32 ``(batch, length)``: the sampled ids (the prompt not included).

    Example:

    >>> def step_fn(ids, state):  # a model that always predicts "next id"
    ...     return tf.one_hot((ids + 1) % 5, 5) * 10.0, state
    >>> generate_tokens(step_fn, tf.zeros([1, 1]), tf.constant([[0, 1]]), 3, 0.0).numpy()
    array([[2, 3, 4]], dtype=int32)
    """
    prompt_ids = tf.cast(tf.convert_to_tensor(prompt_ids), tf.int32)
    length = tf.cast(length, tf.int32)
    seed = _seed_pair(seed)
    batch_size = tf.shape(prompt_ids)[0]
    prefix = tf.cond(
        tf.shape(prompt_ids)[1] > 0,
        lambda: prompt_ids,
        lambda: tf.fill([batch_size, 1], tf.cast(start_id, tf.int32)),
    )
    # tf.cond forgets the static batch size, which Keras' RNN loops check
    # against the state's.
    prefix.set_shape([prompt_ids.shape[0], None])
    prefix_length = tf.shape(prefix)[1]

    # The first step runs outside the loop so the logits' shape is known for
    # the loop variables.
    logits, state = step_fn(prefix[:, 0], initial_state)

    def feed_prompt(index, logits, state):
        logits, state = step_fn(tf.gather(prefix, index, axis=1), state)
        return index + 1, logits, state

    _, logits, state = tf.while_loop(
        lambda index, *_: index < prefix_length,
        feed_prompt,
        (tf.constant(1), logits, state),
        shape_invariants=(tf.TensorShape([]), _relax_batch(logits), _relax_batch(state)),
    )

    def sample_one(index, logits, state, tokens):
        token = sample_next(
            logits, temperature, top_k, tf.random.experimental.stateless_fold_in(seed, tf.cast(index, tf.int64))
        )
        tokens = tokens.write(index, token)
        # The last token needs no successor: skip the step that would compute it.
        logits, state = tf.cond(
            index + 1 < length,
            lambda: step_fn(token, state),
            lambda: (logits, state),
        )
        return index + 1, logits, state, tokens

    tokens = tf.TensorArray(tf.int32, size=length, element_shape=tf.TensorShape([None]))
    _, _, _, tokens = tf.while_loop(
        lambda index, *_: index < length,
        sample_one,
        (tf.constant(0), logits, state, tokens),
        shape_invariants=(
            tf.TensorShape([]),
            _relax_batch(logits),
            _relax_batch(state),
            tf.TensorShape(None),
        ),
    )
    # An empty TensorArray cannot be stacked without a fully known element shape.
    return tf.cond(
        length > 0,
        lambda: tf.transpose(tokens.stack()),
        lambda: tf.zeros([batch_size, 0], tf.int32),
    )
