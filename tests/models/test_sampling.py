import os
import shutil

import numpy as np
import pytest
import tensorflow as tf

from rnnapps.models.sampling import generate_tokens, sample_next

VOCAB = 5
# A deterministic Markov chain: the most likely successor of token t is NEXT[t].
NEXT = np.array([3, 0, 4, 2, 1])


def markov_step(token_ids, state):
    logits = tf.one_hot(tf.gather(tf.constant(NEXT, tf.int32), token_ids), VOCAB) * 8.0
    return logits, [state[0] + 1.0]


def greedy_markov(prompt, length):
    token, out = prompt[-1], []
    for _ in range(length):
        token = int(NEXT[token])
        out.append(token)
    return out


def random_logits(rows=16, vocab=10, seed=0):
    return tf.constant(np.random.default_rng(seed).normal(size=(rows, vocab)).astype("float32"))


@pytest.mark.parametrize("temperature", [0.0, 1e-9, -1.0])
def test_zero_temperature_is_greedy(temperature):
    logits = random_logits()
    expected = np.argmax(logits.numpy(), axis=-1)
    np.testing.assert_array_equal(sample_next(logits, temperature, seed=3), expected)
    np.testing.assert_array_equal(sample_next(tf.cast(logits, tf.float16), temperature, seed=3), expected)


def test_top_k_one_is_greedy():
    logits = random_logits(seed=1)
    expected = np.argmax(logits.numpy(), axis=-1)
    for seed in range(3):
        np.testing.assert_array_equal(sample_next(logits, 1.5, top_k=1, seed=seed), expected)


def test_fixed_seed_reproduces():
    logits = tf.zeros((64, 10))
    first = sample_next(logits, 1.0, seed=42).numpy()
    np.testing.assert_array_equal(sample_next(logits, 1.0, seed=42), first)
    np.testing.assert_array_equal(sample_next(logits, 1.0, seed=[42, 0]), first)
    assert not np.array_equal(sample_next(logits, 1.0, seed=43).numpy(), first)


@pytest.mark.parametrize("temperature, top_k", [(1.0, 0), (2.0, 0), (0.5, 0), (1.0, 2)])
def test_distribution_matches_softmax(temperature, top_k):
    probabilities = np.array([0.2, 0.3, 0.5])
    draws = 6000
    logits = tf.constant(np.tile(np.log(probabilities), (draws, 1)), tf.float32)
    tokens = sample_next(logits, temperature, top_k=top_k, seed=7).numpy()
    scaled = np.log(probabilities) / temperature
    if top_k:
        scaled[np.argsort(scaled)[:-top_k]] = -np.inf
    expected = np.exp(scaled - scaled.max())
    expected /= expected.sum()
    observed = np.bincount(tokens, minlength=3) / draws
    np.testing.assert_allclose(observed, expected, atol=0.03)


def test_generate_greedy_follows_markov_chain():
    prompt = [[2, 4], [1, 0]]
    tokens = generate_tokens(markov_step, [tf.zeros((2, 1))], tf.constant(prompt), 6, temperature=0.0)
    assert tokens.dtype == tf.int32
    np.testing.assert_array_equal(tokens, [greedy_markov(row, 6) for row in prompt])


def test_prompt_fed_token_by_token_once():
    fed = []

    def recording_step(token_ids, state):
        fed.append(token_ids.numpy().tolist())
        return markov_step(token_ids, state)

    tokens = generate_tokens(recording_step, [tf.zeros((1, 1))], tf.constant([[1, 2, 3]]), 4, temperature=0.0)
    sampled = tokens.numpy()[0].tolist()
    # Each prompt token once, then each sampled token but the last: no prefix re-runs.
    assert fed == [[1], [2], [3]] + [[token] for token in sampled[:-1]]


def test_state_is_carried_through_prompt_and_generation():
    def counting_step(token_ids, state):
        # The logits depend only on the state: how many tokens were fed so far.
        count = state[0] + 1.0
        logits = tf.one_hot(tf.cast(count[:, 0], tf.int32) % VOCAB, VOCAB) * 8.0
        return logits, [count]

    tokens = generate_tokens(counting_step, [tf.zeros((1, 1))], tf.constant([[0, 0]]), 4, temperature=0.0)
    np.testing.assert_array_equal(tokens, [[2, 3, 4, 0]])


def test_empty_prompt_uses_start_id():
    empty = tf.zeros((2, 0), tf.int32)
    tokens = generate_tokens(markov_step, [tf.zeros((2, 1))], empty, 3, temperature=0.0, start_id=2)
    np.testing.assert_array_equal(tokens, [greedy_markov([2], 3)] * 2)
    assert generate_tokens(markov_step, [tf.zeros((2, 1))], empty, 0).shape == (2, 0)


class MarkovGenerator(tf.Module):
    @tf.function(
        input_signature=[
            tf.TensorSpec([None, None], tf.int32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.int32),
        ]
    )
    def generate(self, prompt, length, temperature, top_k, seed):
        state = [tf.zeros((tf.shape(prompt)[0], 1))]
        return {"tokens": generate_tokens(markov_step, state, prompt, length, temperature, top_k, seed, start_id=1)}


def test_generate_in_tf_function_and_saved_model(tmp_path):
    module = MarkovGenerator()
    prompt = tf.constant([[2, 4]])
    greedy = module.generate(prompt, 5, 0.0, 0, 0)["tokens"]
    np.testing.assert_array_equal(greedy, [greedy_markov([2, 4], 5)])
    sampled = module.generate(prompt, 20, 3.0, 0, 11)["tokens"].numpy()

    first = os.path.join(tmp_path, "first")
    tf.saved_model.save(module, first)
    moved = os.path.join(tmp_path, "moved")
    shutil.move(first, moved)
    reloaded = tf.saved_model.load(moved)
    np.testing.assert_array_equal(reloaded.generate(prompt, 5, 0.0, 0, 0)["tokens"], greedy)
    np.testing.assert_array_equal(reloaded.generate(prompt, 20, 3.0, 0, 11)["tokens"], sampled)
    empty = reloaded.generate(tf.zeros((1, 0), tf.int32), 3, 0.0, 0, 0)["tokens"]
    np.testing.assert_array_equal(empty, [greedy_markov([1], 3)])
    assert reloaded.generate(prompt, 0, 1.0, 0, 0)["tokens"].shape == (1, 0)
