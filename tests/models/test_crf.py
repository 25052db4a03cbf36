import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

from rnnapps.models.crf import CRF, crf_loss
from tests.layer_checks import assert_all_close, check_layer

NUM_TAGS = 3


def _random_crf(seed, boundaries=True):
    rng = np.random.default_rng(seed)
    crf = CRF(NUM_TAGS, use_boundary_transitions=boundaries)
    crf.build((None, None, NUM_TAGS))
    weights = [rng.normal(size=w.shape).astype("float32") for w in crf.get_weights()]
    crf.set_weights(weights)
    return crf, weights


def _path_score(emissions, path, weights):
    transitions = weights[0]
    start, end = (weights[1], weights[2]) if len(weights) == 3 else (np.zeros(NUM_TAGS), np.zeros(NUM_TAGS))
    score = start[path[0]] + end[path[-1]] + sum(emissions[t, tag] for t, tag in enumerate(path))
    return score + sum(transitions[a, b] for a, b in zip(path[:-1], path[1:], strict=True))


def _all_scores(emissions, weights):
    paths = list(itertools.product(range(NUM_TAGS), repeat=len(emissions)))
    return paths, np.array([_path_score(emissions, p, weights) for p in paths])


def _logsumexp(values):
    top = values.max()
    return top + np.log(np.exp(values - top).sum())


@pytest.mark.parametrize("boundaries", [True, False])
def test_log_likelihood_and_viterbi_match_brute_force(boundaries):
    crf, weights = _random_crf(0, boundaries)
    rng = np.random.default_rng(1)
    lengths = [4, 3, 1, 2, 0]
    emissions = rng.normal(size=(len(lengths), 4, NUM_TAGS)).astype("float32")
    tags = rng.integers(0, NUM_TAGS, size=(len(lengths), 4))
    mask = np.arange(4)[None, :] < np.array(lengths)[:, None]
    log_likelihood = keras.ops.convert_to_numpy(crf.log_likelihood(emissions, tags, mask))
    decoded, best = (keras.ops.convert_to_numpy(x) for x in crf.viterbi_decode(emissions, mask))
    assert log_likelihood.dtype == np.float32 and decoded.dtype == np.int32
    for row, length in enumerate(lengths):
        if length == 0:
            assert log_likelihood[row] == 0.0 and best[row] == 0.0
            assert (decoded[row] == 0).all()
            continue
        paths, scores = _all_scores(emissions[row, :length], weights)
        expected = _path_score(emissions[row, :length], tags[row, :length], weights) - _logsumexp(scores)
        np.testing.assert_allclose(log_likelihood[row], expected, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(decoded[row, :length], paths[int(scores.argmax())])
        np.testing.assert_allclose(best[row], scores.max(), rtol=1e-5, atol=1e-5)
        assert (decoded[row, length:] == 0).all()


def test_probabilities_over_all_paths_sum_to_one():
    crf, _ = _random_crf(2)
    emissions = np.random.default_rng(3).normal(size=(1, 4, NUM_TAGS)).astype("float32")
    mask = np.array([[True, True, True, False]])
    paths = np.array(list(itertools.product(range(NUM_TAGS), repeat=3)))
    padded = np.concatenate([paths, np.zeros((len(paths), 1), int)], axis=1)
    repeated = np.repeat(emissions, len(paths), axis=0)
    log_likelihood = crf.log_likelihood(repeated, padded, np.repeat(mask, len(paths), axis=0))
    np.testing.assert_allclose(np.exp(keras.ops.convert_to_numpy(log_likelihood)).sum(), 1.0, rtol=1e-5)


def test_masked_equals_truncated():
    crf, _ = _random_crf(4)
    rng = np.random.default_rng(5)
    emissions = rng.normal(size=(2, 6, NUM_TAGS)).astype("float32")
    tags = rng.integers(0, NUM_TAGS, size=(2, 6))
    mask = np.array([[True] * 3 + [False] * 3] * 2)
    assert_all_close(crf.log_likelihood(emissions, tags, mask), crf.log_likelihood(emissions[:, :3], tags[:, :3]))
    assert_all_close(crf(emissions, mask=mask)[:, :3], crf(emissions[:, :3]))
    # Garbage tags at padded positions (even out of range) do not matter.
    noisy = tags.copy()
    noisy[:, 3:] = -7
    assert_all_close(crf.log_likelihood(emissions, noisy, mask), crf.log_likelihood(emissions, tags, mask))


def test_gradient_reaches_transitions():
    crf, _ = _random_crf(6)
    emissions = tf.constant(np.random.default_rng(7).normal(size=(2, 3, NUM_TAGS)).astype("float32"))
    with tf.GradientTape() as tape:
        tape.watch(emissions)
        loss = crf.loss(emissions, np.array([[0, 1, 2], [2, 2, 0]]), np.array([[True] * 3, [True, True, False]]))
    gradients = tape.gradient(loss, [emissions, *crf.trainable_variables])
    assert len(gradients) == 4
    for gradient in gradients:
        assert gradient is not None and np.isfinite(gradient.numpy()).all() and np.abs(gradient.numpy()).sum() > 0


def test_fit_with_crf_loss_reduces_nll_and_uses_the_mask():
    keras.utils.set_random_seed(0)
    tokens = keras.Input((None,), dtype="int32")
    features = keras.layers.Embedding(8, 6, mask_zero=True)(tokens)
    emissions = keras.layers.Dense(NUM_TAGS)(features)
    crf = CRF(NUM_TAGS)
    tagger = keras.Model(tokens, crf(emissions))
    training_model = keras.Model(tokens, emissions)
    training_model.crf = crf
    training_model.compile(keras.optimizers.Adam(0.1), loss=crf_loss(crf))
    rng = np.random.default_rng(8)
    x = rng.integers(1, 8, size=(16, 5))
    x[:, 3:] = 0
    y = (x % NUM_TAGS) * (x > 0)
    mask = x > 0
    scores = training_model(x)
    expected = crf.loss(scores, y, mask)
    assert_all_close(training_model.compute_loss(x=x, y=y, y_pred=scores), expected, atol=1e-5)
    history = training_model.fit(x, y, epochs=8, batch_size=16, verbose=0).history["loss"]
    assert history[-1] < history[0]
    assert any(v is crf.transitions for v in training_model.trainable_variables)
    decoded = keras.ops.convert_to_numpy(tagger(x))
    assert decoded.shape == (16, 5) and (decoded[:, 3:] == 0).all()


def test_crf_round_trips(tmp_path):
    emissions = np.random.default_rng(9).normal(size=(3, 4, NUM_TAGS)).astype("float32")
    outputs = check_layer(CRF(NUM_TAGS, use_boundary_transitions=False), emissions, tmp_path, expected_output_shape=(3, 4))
    assert keras.ops.convert_to_numpy(outputs).dtype == np.int32


def test_length_one_and_mask_from_embedding(tmp_path):
    tokens = keras.Input((None,), dtype="int32")
    emissions = keras.layers.Embedding(5, NUM_TAGS, mask_zero=True)(tokens)
    model = keras.Model(tokens, CRF(NUM_TAGS)(emissions))
    decoded = keras.ops.convert_to_numpy(model(np.array([[2, 0, 0], [0, 0, 0]])))
    assert decoded[:, 1:].tolist() == [[0, 0], [0, 0]] and decoded[1, 0] == 0
    assert keras.ops.convert_to_numpy(model(np.array([[3]]))).shape == (1, 1)


def test_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        crf = CRF(NUM_TAGS)
        scores = keras.layers.Dense(NUM_TAGS)(np.ones((2, 3, 4), "float32"))
        assert scores.dtype == "float16"
        tags = crf(scores)
        log_likelihood = crf.log_likelihood(scores, np.zeros((2, 3), int))
        assert crf.transitions.dtype == "float32"
        assert keras.backend.standardize_dtype(tags.dtype) == "int32"
        assert keras.backend.standardize_dtype(log_likelihood.dtype) == "float32"
        assert keras.backend.standardize_dtype(crf.viterbi_decode(scores)[1].dtype) == "float32"
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.parametrize("num_tags", [0, -1, 2.5, True])
def test_bad_num_tags_is_named(num_tags):
    with pytest.raises(ValueError, match="num_tags"):
        CRF(num_tags)


def test_wrong_emission_width_is_named():
    with pytest.raises(ValueError, match="num_tags=3"):
        CRF(NUM_TAGS)(np.zeros((1, 2, 4), "float32"))
    with pytest.raises(ValueError, match="crf_layer"):
        crf_loss(keras.layers.Dense(3))


def test_loss_gradient_and_decoding_compile_with_xla():
    """Keras compiles fit() with XLA on a GPU by default ("auto")."""
    crf, _ = _random_crf(10)
    emissions = tf.constant(np.random.default_rng(11).normal(size=(2, 4, NUM_TAGS)).astype("float32"))
    tags = tf.constant([[0, 1, 2, 1], [2, 0, 0, 0]])
    mask = tf.constant([[True] * 4, [True, True, False, False]])

    @tf.function(jit_compile=True)
    def loss_and_gradient(scores):
        with tf.GradientTape() as tape:
            tape.watch(scores)
            loss = crf.loss(scores, tags, mask)
        return loss, tape.gradient(loss, [scores, crf.transitions]), crf(scores, mask=mask)

    loss, gradients, decoded = loss_and_gradient(emissions)
    assert_all_close(loss, crf.loss(emissions, tags, mask), atol=1e-5)
    assert all(np.isfinite(g.numpy()).all() for g in gradients)
    assert_all_close(decoded, crf(emissions, mask=mask))


@pytest.mark.parametrize("boundaries", [True, False])
def test_decoding_with_unknown_time_in_a_signature_and_after_saved_model_reload(tmp_path, boundaries):
    """Serving signatures leave the time axis unknown; Keras' ops.scan over several sequences cannot trace that."""
    crf, weights = _random_crf(12, boundaries)
    signature = [tf.TensorSpec([None, None, NUM_TAGS], tf.float32), tf.TensorSpec([None, None], tf.bool)]
    module = tf.Module()
    module.crf = crf
    module.decode = tf.function(
        lambda emissions, mask: {"tags": crf(emissions, mask=mask), "best": crf.viterbi_decode(emissions, mask)[1]},
        input_signature=signature,
    )
    tf.saved_model.save(module, str(tmp_path / "decoder"))
    reloaded = tf.saved_model.load(str(tmp_path / "decoder"))
    rng = np.random.default_rng(13)
    for time_steps, lengths in ((1, [1, 0]), (5, [5, 3, 1, 0])):
        emissions = rng.normal(size=(len(lengths), time_steps, NUM_TAGS)).astype("float32")
        mask = np.arange(time_steps)[None, :] < np.array(lengths)[:, None]
        for decode in (module.decode, reloaded.decode):
            outputs = decode(tf.constant(emissions), tf.constant(mask))
            tags, best = outputs["tags"].numpy(), outputs["best"].numpy()
            assert tags.shape == (len(lengths), time_steps) and tags.dtype == np.int32
            for row, length in enumerate(lengths):
                assert (tags[row, length:] == 0).all()
                if length == 0:
                    assert best[row] == 0.0
                    continue
                paths, scores = _all_scores(emissions[row, :length], weights)
                np.testing.assert_array_equal(tags[row, :length], paths[int(scores.argmax())])
                np.testing.assert_allclose(best[row], scores.max(), rtol=1e-5, atol=1e-5)


# --- marginals (forward-backward) and the k best paths ------------------------------------------

def _enumerate_paths(crf, emissions, length):
    """Every tag path of the first ``length`` steps with its log-probability, by brute force."""
    import itertools

    transitions = crf.transitions.numpy()
    start, end = crf.start_transitions.numpy(), crf.end_transitions.numpy()
    paths = list(itertools.product(range(crf.num_tags), repeat=length))
    scores = np.array([
        start[p[0]] + end[p[-1]] + sum(emissions[t, p[t]] for t in range(length))
        + sum(transitions[p[t - 1], p[t]] for t in range(1, length))
        for p in paths
    ])
    return paths, scores - np.logaddexp.reduce(scores)


def _random_crf_case(num_tags=3, seed=0):
    rng = np.random.default_rng(seed)
    crf = CRF(num_tags)
    crf.build((None, None, num_tags))
    emissions = rng.normal(size=(4, 4, num_tags)).astype("float32")
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)
    return crf, emissions, mask


def test_marginals_match_brute_force_enumeration():
    crf, emissions, mask = _random_crf_case()
    marginals = crf.marginals(emissions, mask).numpy()
    for row in range(len(mask)):
        length = int(mask[row].sum())
        assert (marginals[row, length:] == 0).all()
        if length == 0:
            continue
        paths, log_probabilities = _enumerate_paths(crf, emissions[row], length)
        expected = np.zeros((length, crf.num_tags))
        for path, probability in zip(paths, np.exp(log_probabilities), strict=True):
            expected[np.arange(length), path] += probability
        np.testing.assert_allclose(marginals[row, :length], expected, atol=1e-5)
        np.testing.assert_allclose(marginals[row, :length].sum(-1), 1.0, atol=1e-5)


def test_marginals_of_a_near_certain_tag_stay_probabilities():
    # Evaluating a trained tagger on CoNLL test once found a marginal of 1.0000001: alpha + beta -
    # log Z rounds above 0 in float32 when one tag takes nearly all the mass.
    crf = CRF(5)
    crf.build((None, None, 5))
    rng = np.random.default_rng(7)
    emissions = (rng.normal(size=(64, 30, 5)) * 40.0).astype("float32")
    marginals = crf.marginals(emissions, np.ones((64, 30), bool)).numpy()
    assert marginals.min() >= 0.0 and marginals.max() <= 1.0
    assert marginals.max() == 1.0  # the case the clip exists for does occur here



def test_k_best_paths_match_brute_force_and_start_with_viterbi():
    crf, emissions, mask = _random_crf_case()
    tags, log_probabilities = (value.numpy() for value in crf.k_best_decode(emissions, 5, mask))
    assert tags.shape == (4, 5, 4) and log_probabilities.shape == (4, 5)
    viterbi, _ = crf.viterbi_decode(emissions, mask)
    np.testing.assert_array_equal(tags[:, 0], viterbi.numpy())
    assert (log_probabilities[:, 1:] <= log_probabilities[:, :-1] + 1e-6).all(), "scores increase down the list"
    for row in range(3):
        length = int(mask[row].sum())
        paths, expected = _enumerate_paths(crf, emissions[row], length)
        order = np.argsort(-expected, kind="stable")[:5]
        available = min(5, len(paths))
        np.testing.assert_allclose(log_probabilities[row, :available], expected[order][:available], atol=1e-4)
        assert [tuple(path[:length]) for path in tags[row, :available]] == [paths[i] for i in order][:available]
        assert (tags[row, :, length:] == 0).all()
    # Row 2 has one token and three tags: three paths exist, the other two are impossible.
    assert np.isneginf(log_probabilities[2, 3:]).all() and np.isfinite(log_probabilities[2, :3]).all()
    # A row without tokens: the empty path, probability 1.
    assert log_probabilities[3, 0] == 0.0 and (tags[3] == 0).all()
    with pytest.raises(ValueError, match="k >= 1"):
        crf.k_best_decode(emissions, 0, mask)


def test_marginals_and_k_best_trace_with_unknown_shapes():
    crf, emissions, mask = _random_crf_case()
    spec = [tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([None, None], tf.bool)]
    marginals = tf.function(crf.marginals, input_signature=spec)
    k_best = tf.function(lambda e, m: crf.k_best_decode(e, 2, m), input_signature=spec)
    np.testing.assert_allclose(marginals(emissions, mask), crf.marginals(emissions, mask), atol=1e-6)
    np.testing.assert_array_equal(k_best(emissions, mask)[0], crf.k_best_decode(emissions, 2, mask)[0])
