import itertools
import os

import numpy as np
import pytest
import tensorflow as tf

from rnnapps.models.decoding import DecodeResult, beam_search_decode, greedy_decode

PAD, START, END = 0, 1, 2


def markov_step_fn(tables):
    """A step function over per-row transition tables ``[rows, vocab, vocab]``.

    The state holds the row index (so tiling and reordering beams must keep it
    with its hypothesis) and a step counter; the extra is the fed token one-hot.
    """
    log_tables = tf.constant(np.log(np.maximum(tables, 1e-12)), tf.float32)
    vocab = tables.shape[-1]

    def step_fn(tokens, states):
        log_probs = tf.gather_nd(log_tables, tf.stack([states["row"], tokens], axis=1))
        new_states = {"row": states["row"], "count": states["count"] + 1.0}
        return log_probs, new_states, tf.one_hot(tokens, vocab)

    return step_fn


def initial_states(rows):
    return {"row": tf.range(rows, dtype=tf.int32), "count": tf.zeros([rows, 1])}


def trap_table():
    """Greedy takes A (0.55) and ends with A B EOS (0.178); B EOS (0.405) is better."""
    vocab = 6  # 0 pad, 1 start, 2 end, 3 A, 4 B, 5 C
    table = np.full((vocab, vocab), 1e-6)
    table[START, [3, 4]] = [0.55, 0.45]
    table[3, [2, 4, 5]] = [0.30, 0.36, 0.34]
    table[4, [2, 5]] = [0.9, 0.1]
    table[5, 2] = 1.0
    table[2, 2] = 1.0
    return (table / table.sum(-1, keepdims=True))[np.newaxis]


def brute_force_best(table, max_length, alpha):
    """Enumerate every token sequence (EOS-terminated or max_length long)."""
    best, best_score = None, -np.inf
    vocab = table.shape[-1]
    real_tokens = [token for token in range(1, vocab)]
    for length in range(1, max_length + 1):
        for sequence in itertools.product(real_tokens, repeat=length):
            if END in sequence[:-1] or (length < max_length and sequence[-1] != END):
                continue
            log_prob, previous = 0.0, START
            for token in sequence:
                log_prob += np.log(table[previous, token])
                previous = token
            score = log_prob / ((5.0 + length) / 6.0) ** alpha
            if score > best_score:
                best, best_score = list(sequence), score
    return best


def as_list(ids, length):
    return [int(token) for token in np.asarray(ids)[:length]]


def test_beam_search_finds_what_greedy_misses():
    tables = trap_table()
    step_fn = markov_step_fn(tables)
    greedy = greedy_decode(step_fn, initial_states(1), START, END, max_length=5, batch_size=1)
    beam = beam_search_decode(
        step_fn, initial_states(1), START, END, max_length=5, beam_width=2, length_penalty=0.0
    )
    assert as_list(greedy.ids[0], 5) == [3, 4, 2, 0, 0]
    assert as_list(beam.ids[0], 5) == [4, 2, 0, 0, 0]
    assert int(beam.lengths[0]) == 2 and int(greedy.lengths[0]) == 3
    np.testing.assert_allclose(float(beam.scores[0]), np.log(0.45 * 0.9), rtol=1e-4)
    np.testing.assert_allclose(float(greedy.scores[0]), np.log(0.55 * 0.36 * 0.9), rtol=1e-4)
    assert as_list(beam.ids[0], 2) == brute_force_best(tables[0], 4, alpha=0.0)


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_beam_search_matches_brute_force_on_random_chains(alpha):
    rng = np.random.default_rng(3)
    rows, vocab, max_length = 3, 4, 4
    tables = rng.dirichlet(np.full(vocab, 0.5), size=(rows, vocab))
    result = beam_search_decode(
        markov_step_fn(tables),
        initial_states(rows),
        START,
        END,
        max_length,
        beam_width=64,
        length_penalty=alpha,
    )
    for row in range(rows):
        # Padding is never emitted before EOS, so remove it from the reference as well.
        table = tables[row].copy()
        table[:, PAD] = 0.0
        expected = brute_force_best(table, max_length, alpha)
        length = int(result.lengths[row])
        assert as_list(result.ids[row], length) == expected
        assert as_list(result.ids[row], max_length)[length:] == [0] * (max_length - length)


def test_beam_width_one_equals_greedy():
    rng = np.random.default_rng(0)
    rows, vocab, max_length = 4, 7, 6
    tables = rng.dirichlet(np.full(vocab, 0.3), size=(rows, vocab))
    step_fn = markov_step_fn(tables)
    greedy = greedy_decode(step_fn, initial_states(rows), START, END, max_length, batch_size=rows)
    beam = beam_search_decode(step_fn, initial_states(rows), START, END, max_length, beam_width=1)
    np.testing.assert_array_equal(beam.ids, greedy.ids)
    np.testing.assert_array_equal(beam.lengths, greedy.lengths)
    np.testing.assert_allclose(beam.scores, greedy.scores, rtol=1e-5)
    np.testing.assert_allclose(beam.extras, greedy.extras)


def test_end_of_sequence_handling():
    """After EOS: padding ids, frozen score and length, zero extras; early stop when all end."""
    tables = trap_table()
    step_fn = markov_step_fn(tables)
    for result in (
        greedy_decode(step_fn, initial_states(1), START, END, max_length=8, batch_size=1),
        beam_search_decode(step_fn, initial_states(1), START, END, max_length=8, beam_width=3),
    ):
        length = int(result.lengths[0])
        ids = np.asarray(result.ids[0])
        assert ids.shape == (8,) and ids[length - 1] == END and END not in ids[: length - 1]
        assert np.all(ids[length:] == PAD)
        extras = np.asarray(result.extras[0])
        assert extras.shape == (8, 6)
        assert np.all(extras[length:] == 0)
        # The extra of step t is the one-hot of the token fed at step t.
        np.testing.assert_array_equal(
            np.argmax(extras[:length], -1), [START] + list(ids[: length - 1])
        )


def test_no_end_token_stops_at_max_length():
    table = np.full((1, 4, 4), 1e-6)
    table[0, :, 3] = 1.0  # always token 3, never EOS
    for result in (
        greedy_decode(markov_step_fn(table), initial_states(1), START, END, 5, batch_size=1),
        beam_search_decode(markov_step_fn(table), initial_states(1), START, END, 5, beam_width=2),
    ):
        assert as_list(result.ids[0], 5) == [3] * 5
        assert int(result.lengths[0]) == 5


def test_none_extra_is_allowed():
    base = markov_step_fn(trap_table())

    def step_fn(tokens, states):
        log_probs, states, _ = base(tokens, states)
        return log_probs, states, None

    assert greedy_decode(step_fn, initial_states(1), START, END, 4, batch_size=1).extras is None
    assert (
        beam_search_decode(step_fn, initial_states(1), START, END, 4, beam_width=2).extras is None
    )


def test_decoders_inside_tf_function_and_saved_model(tmp_path):
    rng = np.random.default_rng(5)
    tables = rng.dirichlet(np.full(6, 0.4), size=(3, 6))
    step_fn = markov_step_fn(tables)

    class Decoder(tf.Module):
        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
        def beam(self, rows):
            states = {"row": rows, "count": tf.zeros([tf.shape(rows)[0], 1])}
            result = beam_search_decode(step_fn, states, START, END, max_length=6, beam_width=3)
            return {
                "ids": result.ids,
                "lengths": result.lengths,
                "scores": result.scores,
                "extras": result.extras,
            }

        @tf.function(input_signature=[tf.TensorSpec([None], tf.int32)])
        def greedy(self, rows):
            states = {"row": rows, "count": tf.zeros([tf.shape(rows)[0], 1])}
            result = greedy_decode(
                step_fn, states, START, END, max_length=6, batch_size=tf.shape(rows)[0]
            )
            return {"ids": result.ids, "lengths": result.lengths, "scores": result.scores}

    module = Decoder()
    rows = tf.constant([0, 1, 2], tf.int32)
    eager_beam = beam_search_decode(step_fn, initial_states(3), START, END, 6, beam_width=3)
    eager_greedy = greedy_decode(step_fn, initial_states(3), START, END, 6, batch_size=3)
    path = os.path.join(str(tmp_path), "decoder")
    tf.saved_model.save(module, path)
    reloaded = tf.saved_model.load(path)
    for candidate in (module, reloaded):
        beam = candidate.beam(rows)
        greedy = candidate.greedy(rows)
        assert beam["ids"].shape == (3, 6) and greedy["ids"].shape == (3, 6)
        np.testing.assert_array_equal(beam["ids"], eager_beam.ids)
        np.testing.assert_allclose(beam["scores"], eager_beam.scores, rtol=1e-5)
        np.testing.assert_allclose(beam["extras"], eager_beam.extras)
        np.testing.assert_array_equal(greedy["ids"], eager_greedy.ids)
        np.testing.assert_array_equal(greedy["lengths"], eager_greedy.lengths)


def test_result_is_a_named_tuple():
    result = greedy_decode(
        markov_step_fn(trap_table()), initial_states(1), START, END, 3, batch_size=1
    )
    assert isinstance(result, DecodeResult)
    assert (
        result.ids.dtype == tf.int32
        and result.lengths.dtype == tf.int32
        and result.scores.dtype == tf.float32
    )


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"beam_width": 0}, "beam_width"),
        ({"max_length": 0}, "max_length"),
        ({"length_penalty": -1.0}, "length_penalty"),
        ({"end_id": 0}, "end_id"),
    ],
)
def test_bad_arguments_are_named(kwargs, message):
    arguments = {"start_id": START, "end_id": END, "max_length": 3, "beam_width": 2, **kwargs}
    with pytest.raises(ValueError, match=message):
        beam_search_decode(markov_step_fn(trap_table()), initial_states(1), **arguments)


def test_n_best_keeps_every_hypothesis_best_first():
    rng = np.random.default_rng(5)
    rows, vocab, max_length, beam = 3, 5, 4, 3
    tables = rng.dirichlet(np.full(vocab, 0.5), size=(rows, vocab))
    arguments = (markov_step_fn(tables), initial_states(rows), START, END, max_length, beam)
    best = beam_search_decode(*arguments, length_penalty=0.6)
    every = beam_search_decode(*arguments, length_penalty=0.6, n_best=True)
    assert tuple(every.ids.shape) == (rows, beam, max_length) and tuple(every.scores.shape) == (rows, beam)
    np.testing.assert_array_equal(every.ids[:, 0], best.ids)
    np.testing.assert_allclose(every.scores[:, 0], best.scores, rtol=1e-6)
    np.testing.assert_array_equal(every.extras[:, 0], best.extras)
    ranked = every.scores.numpy() / ((5.0 + every.lengths.numpy()) / 6.0) ** 0.6
    assert (np.diff(ranked, axis=1) <= 1e-6).all(), "hypotheses are not best first"
    for row in range(rows):
        hypotheses = {tuple(as_list(every.ids[row, k], int(every.lengths[row, k]))) for k in range(beam)}
        assert len(hypotheses) == beam, "the beam holds the same hypothesis twice"
        for k in range(beam):
            # Each score is the summed log-probability of its own tokens.
            tokens, previous, log_prob = as_list(every.ids[row, k], int(every.lengths[row, k])), START, 0.0
            for token in tokens:
                log_prob += np.log(max(tables[row, previous, token], 1e-12))
                previous = token
            np.testing.assert_allclose(float(every.scores[row, k]), log_prob, rtol=1e-4)
