"""A linear-chain conditional random field for sequence tagging, in Keras 3."""

from __future__ import annotations

import keras
from keras import ops


def _sequence_mask(emissions, mask):
    if mask is None:
        return ops.ones(ops.shape(emissions)[:2], dtype="bool")
    return ops.cast(mask, "bool")


@keras.saving.register_keras_serializable(package="rnnapps")
class CRF(keras.layers.Layer):
    """Linear-chain CRF: tag-transition scores on top of per-token emission scores.

    The score of a tag path ``y`` for emissions ``x`` is
    ``start[y_0] + sum_t x[t, y_t] + sum_t transitions[y_{t-1}, y_t] + end[y_last]``;
    the model is ``p(y | x) = exp(score(y)) / Z(x)``. ``log_likelihood`` computes
    ``log Z`` with the forward algorithm in log space and ``call`` decodes the best
    path with Viterbi (Lafferty et al. 2001, "Conditional Random Fields";
    Lample et al. 2016, "Neural Architectures for Named Entity Recognition").

    The forward algorithm is a bounded while loop (differentiable under XLA)
    and Viterbi a pair of ``keras.ops.scan`` over the step indices; both trace
    inside a ``tf.function`` whose time length is unknown (a serving signature)
    and export in a SavedModel. All CRF arithmetic is float32, also under a
    mixed-precision policy: log-partition sums over many tags and steps
    overflow float16.

    Masks are post-padded (``True`` = real token). A row without real tokens has
    log-likelihood 0 and decodes to all zeros; padded positions decode to tag 0.

    Training: give the model's emission scores (a ``Dense(num_tags)`` output) to
    ``crf_loss(crf)`` as the compiled loss, and decode with the same layer:

        emissions = keras.layers.Dense(num_tags)(features)   # mask propagates
        crf = CRF(num_tags)
        tagger = keras.Model(inputs, crf(emissions))   # decodes tag ids
        training_model = keras.Model(inputs, emissions)
        training_model.crf = crf   # tracked, so fit() trains the transitions
        training_model.compile("adam", loss=crf_loss(crf))

    or add ``crf.loss(emissions, tags, mask)`` through ``Model.compute_loss`` /
    ``add_loss``. Save the tagger (the model whose output is ``crf(...)``); it
    reloads without custom objects once ``rnnapps.models`` is imported.

    Args:
        num_tags: number of tags (>= 1).
        use_boundary_transitions: learn start and end scores for the first and
            the last tag of a sequence.
        transitions_initializer: initializer of the transition (and boundary)
            scores.

    Call arguments:
        emissions: float ``(batch, time, num_tags)`` unnormalised tag scores.
        mask: optional boolean ``(batch, time)``, post-padded.

    Returns:
        int32 ``(batch, time)``: the Viterbi tag path, 0 at padded positions.

    Example:

    >>> crf = CRF(5)
    >>> crf(keras.ops.zeros((2, 7, 5))).shape
    (2, 7)
    """

    def __init__(
        self,
        num_tags: int,
        use_boundary_transitions: bool = True,
        transitions_initializer="glorot_uniform",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(num_tags, bool) or not isinstance(num_tags, int) or num_tags < 1:
            raise ValueError(f"Expected num_tags to be an integer >= 1. Received: num_tags={num_tags!r}")
        self.num_tags = num_tags
        self.use_boundary_transitions = bool(use_boundary_transitions)
        self.transitions_initializer = keras.initializers.get(transitions_initializer)
        self.supports_masking = True

    def build(self, input_shape=None):
        if input_shape is not None and input_shape[-1] is not None and input_shape[-1] != self.num_tags:
            raise ValueError(
                f"Expected emissions with last dimension num_tags={self.num_tags}. "
                f"Received: emissions shape={tuple(input_shape)}"
            )
        # autocast=False: under mixed precision the scores must stay float32.
        self.transitions = self.add_weight(
            shape=(self.num_tags, self.num_tags),
            initializer=self.transitions_initializer,
            name="transitions",
            autocast=False,
        )
        if self.use_boundary_transitions:
            self.start_transitions = self.add_weight(
                shape=(self.num_tags,), initializer=self.transitions_initializer, name="start_transitions", autocast=False
            )
            self.end_transitions = self.add_weight(
                shape=(self.num_tags,), initializer=self.transitions_initializer, name="end_transitions", autocast=False
            )
        self.built = True

    def _boundaries(self):
        if self.use_boundary_transitions:
            return ops.cast(self.start_transitions, "float32"), ops.cast(self.end_transitions, "float32")
        zeros = ops.zeros((self.num_tags,), "float32")
        return zeros, zeros

    def _prepare(self, emissions, mask):
        if not self.built:
            self.build(ops.shape(emissions))
        emissions = ops.cast(emissions, "float32")
        mask = _sequence_mask(emissions, mask)
        return emissions, mask

    def log_likelihood(self, emissions, tags, mask=None):
        """Per-sequence ``log p(tags | emissions)``, float32 ``(batch,)``.

        Args:
            emissions: float ``(batch, time, num_tags)``.
            tags: integer ``(batch, time)`` gold tags (values at padded
                positions are ignored).
            mask: optional boolean ``(batch, time)``, post-padded.
        """
        emissions, mask = self._prepare(emissions, mask)
        tags = ops.where(mask, ops.cast(tags, "int32"), 0)
        return self._path_score(emissions, tags, mask) - self._log_partition(emissions, mask)

    def loss(self, emissions, tags, mask=None):
        """Mean negative log-likelihood over the batch, a float32 scalar."""
        return -ops.mean(self.log_likelihood(emissions, tags, mask))

    def _path_score(self, emissions, tags, mask):
        start, end = self._boundaries()
        real = ops.cast(mask, "float32")
        has_tokens = ops.cast(ops.any(mask, axis=1), "float32")
        emitted = ops.squeeze(ops.take_along_axis(emissions, ops.expand_dims(tags, -1), axis=-1), -1)
        score = ops.sum(emitted * real, axis=1)
        flat_index = tags[:, :-1] * self.num_tags + tags[:, 1:]
        transition_scores = ops.take(ops.reshape(ops.cast(self.transitions, "float32"), (-1,)), flat_index)
        score = score + ops.sum(transition_scores * real[:, 1:], axis=1)
        lengths = ops.sum(ops.cast(mask, "int32"), axis=1)
        last_tags = ops.squeeze(
            ops.take_along_axis(tags, ops.expand_dims(ops.maximum(lengths - 1, 0), -1), axis=1), -1
        )
        score = score + (ops.take(start, tags[:, 0]) + ops.take(end, last_tags)) * has_tokens
        return score

    def _log_partition(self, emissions, mask):
        start, end = self._boundaries()
        transitions = ops.cast(self.transitions, "float32")
        time_steps = ops.shape(emissions)[1]

        # A while loop with maximum_iterations, unlike a scan, can be
        # differentiated under XLA (Keras' "auto" jit_compile on a GPU). The
        # first step runs inside the loop so length-1 sequences need nothing special.
        def step(t, alpha):
            emission = ops.take(emissions, t, axis=1)
            real = ops.expand_dims(ops.take(mask, t, axis=1), -1)
            # alpha[b, i] + transitions[i, j] + emission[b, j], summed over i.
            moved = ops.logsumexp(ops.expand_dims(alpha, 2) + transitions, axis=1) + emission
            candidate = ops.where(ops.equal(t, 0), start + emission, moved)
            return t + 1, ops.where(real, candidate, alpha)

        _, alpha = ops.while_loop(
            lambda t, alpha: t < time_steps,
            step,
            (ops.convert_to_tensor(0, "int32"), ops.zeros_like(emissions[:, 0, :])),
            maximum_iterations=time_steps,
        )
        log_partition = ops.logsumexp(alpha + end, axis=-1)
        return ops.where(ops.any(mask, axis=1), log_partition, 0.0)

    def viterbi_decode(self, emissions, mask=None):
        """The best tag path and its score.

        Returns:
            ``(tags, best_score)``: int32 ``(batch, time)`` with 0 at padded
            positions, and float32 ``(batch,)`` (0 for rows without tokens).
        """
        emissions, mask = self._prepare(emissions, mask)
        start, end = self._boundaries()
        transitions = ops.cast(self.transitions, "float32")
        identity = ops.arange(self.num_tags, dtype="int32")

        # The forward pass scans over the step indices alone and reads each
        # step's inputs itself: Keras 3.15's TensorFlow ops.scan cannot trace
        # several scanned sequences whose time length is unknown (a serving
        # signature), and a while loop has no backend-neutral way to keep the
        # per-step back-pointers (ops.slice_update is an XLA op in TensorFlow).
        def forward(carry, t):
            delta, _ = carry
            emission = ops.take(emissions, t, axis=1)
            real = ops.expand_dims(ops.take(mask, t, axis=1), -1)
            candidates = ops.expand_dims(delta, 2) + transitions
            best_previous = ops.cast(ops.argmax(candidates, axis=1), "int32")
            moved = ops.max(candidates, axis=1) + emission
            candidate = ops.where(ops.equal(t, 0), start + emission, moved)
            delta = ops.where(real, candidate, delta)
            # Padded steps point every tag back at itself, so backtracking from
            # the final step walks unchanged to the last real token.
            pointers = ops.where(real, best_previous, identity)
            return (delta, pointers), (delta, pointers)

        initial_delta = ops.zeros_like(emissions[:, 0, :])
        initial_pointers = ops.zeros_like(ops.cast(initial_delta, "int32")) + identity
        steps = ops.arange(ops.shape(emissions)[1], dtype="int32")
        (delta, _), (_, pointers) = ops.scan(forward, (initial_delta, initial_pointers), steps)
        final = delta + end
        last_tag = ops.cast(ops.argmax(final, axis=-1), "int32")
        has_tokens = ops.any(mask, axis=1)
        best_score = ops.where(has_tokens, ops.max(final, axis=-1), 0.0)

        def backward(tag, step_pointers):
            previous = ops.squeeze(ops.take_along_axis(step_pointers, ops.expand_dims(tag, -1), axis=1), -1)
            return previous, tag

        _, path = ops.scan(backward, last_tag, pointers, reverse=True)
        # With an unknown time length the scans lose the rank; the mask's shape restores it.
        path = ops.reshape(ops.transpose(path, (1, 0)), ops.shape(mask))
        path = ops.where(mask, path, 0)
        return ops.cast(path, "int32"), best_score

    def log_partition(self, emissions, mask=None):
        """``log Z(x)``, the log-sum of the scores of every tag path: float32 ``(batch,)`` (0 without tokens)."""
        emissions, mask = self._prepare(emissions, mask)
        return self._log_partition(emissions, mask)

    def marginals(self, emissions, mask=None):
        """``p(y_t = j | x)`` for every step and tag by forward-backward: float32 ``(batch, time, num_tags)``.

        ``alpha[t, j]`` sums (in log space) the scores of the paths from the start
        that are at tag ``j`` at step ``t``, ``beta[t, j]`` those of the paths from
        tag ``j`` at step ``t`` to the end, and the marginal is
        ``exp(alpha + beta - log Z)``. Rows sum to 1 at real steps; padded steps are 0.
        Both recursions scan over the step indices, as Viterbi does, so they trace
        with an unknown time length inside a serving signature.
        """
        emissions, mask = self._prepare(emissions, mask)
        start, end = self._boundaries()
        transitions = ops.cast(self.transitions, "float32")
        time_steps = ops.shape(emissions)[1]
        steps = ops.arange(time_steps, dtype="int32")

        def forward(alpha, t):
            emission = ops.take(emissions, t, axis=1)
            real = ops.expand_dims(ops.take(mask, t, axis=1), -1)
            moved = ops.logsumexp(ops.expand_dims(alpha, 2) + transitions, axis=1) + emission
            alpha = ops.where(real, ops.where(ops.equal(t, 0), start + emission, moved), alpha)
            return alpha, alpha

        def backward(beta, t):
            # beta arrives as beta[t + 1]; after the last real step it is the end score.
            following = ops.minimum(t + 1, time_steps - 1)
            next_real = ops.logical_and(ops.less(t + 1, time_steps), ops.take(mask, following, axis=1))
            emission = ops.take(emissions, following, axis=1)
            moved = ops.logsumexp(transitions + ops.expand_dims(emission + beta, 1), axis=2)
            beta = ops.where(ops.expand_dims(next_real, -1), moved, ops.zeros_like(moved) + end)
            return beta, beta

        zeros = ops.zeros_like(emissions[:, 0, :])
        last_alpha, alphas = ops.scan(forward, zeros, steps)
        _, betas = ops.scan(backward, zeros + end, steps, reverse=True)
        log_partition = ops.logsumexp(last_alpha + end, axis=-1)
        scores = ops.transpose(alphas, (1, 0, 2)) + ops.transpose(betas, (1, 0, 2))
        # With an unknown time length the scans lose the rank; the emissions' shape restores it.
        scores = ops.reshape(scores, ops.shape(emissions)) - ops.reshape(log_partition, (-1, 1, 1))
        # alpha + beta - log Z can round a hair above 0 in float32 (a certain tag then reads as
        # 1.0000001), which would put a "probability" outside [0, 1].
        return ops.where(ops.expand_dims(mask, -1), ops.exp(ops.minimum(scores, 0.0)), 0.0)

    def k_best_decode(self, emissions, k: int, mask=None):
        """The ``k`` best tag paths (a list Viterbi) and their log-probabilities, best first.

        Keeps the ``k`` best partial paths into every tag at every step, with a
        back-pointer to (previous tag, its rank); the ``k`` best of all full paths
        are then traced back. Where fewer than ``k`` paths exist (short sequences,
        few tags) the missing ones have log-probability ``-inf``.

        Returns:
            ``(tags, log_probabilities)``: int32 ``(batch, k, time)`` with 0 at
            padded positions, and float32 ``(batch, k)``, non-increasing along
            ``k``. ``tags[:, 0]`` is the Viterbi path.
        """
        k = int(k)
        if k < 1:
            raise ValueError(f"Expected k >= 1. Received: k={k}")
        emissions, mask = self._prepare(emissions, mask)
        start, end = self._boundaries()
        transitions = ops.cast(self.transitions, "float32")
        tags_count = self.num_tags
        impossible = -1e9
        # Pointer (previous tag i, rank r) is stored as i * k + r; this one keeps a path where it is.
        identity = ops.reshape(ops.arange(tags_count * k, dtype="int32"), (tags_count, k))
        first_rank = ops.concatenate([ops.zeros((1,), "float32"), ops.full((k - 1,), impossible, "float32")], axis=0)

        def forward(carry, t):
            delta, _ = carry
            emission = ops.take(emissions, t, axis=1)
            real = ops.reshape(ops.take(mask, t, axis=1), (-1, 1, 1))
            # candidates[b, j, i * k + r] = delta[b, i, r] + transitions[i, j]
            candidates = ops.expand_dims(delta, 3) + ops.reshape(transitions, (1, tags_count, 1, tags_count))
            candidates = ops.reshape(ops.transpose(candidates, (0, 3, 1, 2)), (-1, tags_count, tags_count * k))
            best, pointers = ops.top_k(candidates, k)
            moved = best + ops.expand_dims(emission, -1)
            opening = ops.expand_dims(start + emission, -1) + first_rank
            is_first = ops.equal(t, 0)
            new_delta = ops.where(real, ops.where(is_first, opening, moved), delta)
            pointers = ops.where(ops.logical_and(real, ops.logical_not(is_first)), ops.cast(pointers, "int32"),
                                 identity)
            # The carry's structure again: Keras' TensorFlow scan sizes its outputs after the carry.
            return (new_delta, pointers), (new_delta, pointers)

        initial_delta = ops.zeros_like(ops.expand_dims(emissions[:, 0, :], -1)) + first_rank
        initial_pointers = ops.zeros_like(ops.cast(initial_delta, "int32")) + identity
        steps = ops.arange(ops.shape(emissions)[1], dtype="int32")
        (delta, _), (_, pointers) = ops.scan(forward, (initial_delta, initial_pointers), steps)
        final = ops.reshape(delta + ops.reshape(end, (1, tags_count, 1)), (-1, tags_count * k))
        best_scores, best = ops.top_k(final, k)
        best = ops.cast(best, "int32")

        def backward(carry, step_pointers):
            tag, rank = carry
            flat = ops.reshape(step_pointers, (-1, tags_count * k))
            previous = ops.take_along_axis(flat, tag * k + rank, axis=1)
            return (previous // k, previous % k), (tag, rank)

        _, (paths, _) = ops.scan(backward, (best // k, best % k), pointers, reverse=True)
        # With an unknown time length the scans lose the rank; the mask's shape restores it.
        batch, time_steps = ops.shape(mask)[0], ops.shape(mask)[1]
        paths = ops.reshape(ops.transpose(paths, (1, 2, 0)), (batch, k, time_steps))
        paths = ops.where(ops.expand_dims(mask, 1), paths, 0)
        has_tokens = ops.any(mask, axis=1, keepdims=True)
        log_probabilities = best_scores - ops.expand_dims(self._log_partition(emissions, mask), -1)
        log_probabilities = ops.where(best_scores < impossible / 2, -float("inf"), log_probabilities)
        empty_row = ops.expand_dims(first_rank, 0) * ops.ones_like(log_probabilities)
        log_probabilities = ops.where(has_tokens, log_probabilities, ops.where(empty_row < 0, -float("inf"), 0.0))
        return ops.cast(paths, "int32"), log_probabilities

    def call(self, emissions, mask=None):
        tags, _ = self.viterbi_decode(emissions, mask)
        return tags

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1]

    def compute_output_spec(self, emissions, mask=None):
        return keras.KerasTensor(self.compute_output_shape(emissions.shape), dtype="int32")

    def get_config(self):
        config = super().get_config()
        config.update(
            num_tags=self.num_tags,
            use_boundary_transitions=self.use_boundary_transitions,
            transitions_initializer=keras.initializers.serialize(self.transitions_initializer),
        )
        return config


def crf_loss(crf_layer: CRF, padding_tag: int | None = None) -> keras.losses.Loss:
    """A Keras loss for ``compile``: mean CRF negative log-likelihood.

    ``y_pred`` are the emission scores ``(batch, time, num_tags)`` and ``y_true``
    the integer tags ``(batch, time)``. The CRF mask is the Keras mask carried by
    the emissions (from an ``Embedding(mask_zero=True)`` upstream) or, when
    ``padding_tag`` is given, ``y_true != padding_tag``; without either, every
    step is real. The loss holds ``crf_layer`` (and trains its weights), so it
    is not serializable: save the tagging model, not the compiled training one.

    Args:
        crf_layer: the ``CRF`` whose transitions are trained.
        padding_tag: optional tag id that marks padding in ``y_true``.
    """
    if not isinstance(crf_layer, CRF):
        raise ValueError(f"Expected crf_layer to be a CRF layer. Received: crf_layer={crf_layer!r}")
    return _CRFLoss(crf_layer, padding_tag)


class _CRFLoss(keras.losses.Loss):
    def __init__(self, crf_layer, padding_tag):
        super().__init__(name="crf_loss")
        self.crf_layer = crf_layer
        self.padding_tag = padding_tag

    def __call__(self, y_true, y_pred, sample_weight=None):
        # Loss.__call__ would apply the (batch, time) mask to a per-sequence
        # loss; here that mask is the CRF's own input instead.
        mask = keras.backend.get_keras_mask(y_pred) if hasattr(keras.backend, "get_keras_mask") else None
        if mask is None:
            mask = getattr(y_pred, "_keras_mask", None)
        if self.padding_tag is not None:
            from_tags = ops.not_equal(ops.cast(y_true, "int32"), self.padding_tag)
            mask = from_tags if mask is None else ops.logical_and(ops.cast(mask, "bool"), from_tags)
        if not self.crf_layer.built:
            self.crf_layer.build(ops.shape(y_pred))
        negative = -self.crf_layer.log_likelihood(y_pred, y_true, mask)
        if sample_weight is not None:
            weight = ops.cast(ops.reshape(sample_weight, (ops.shape(negative)[0], -1)), "float32")
            negative = negative * ops.mean(weight, axis=1)
        return ops.mean(negative)

    def call(self, y_true, y_pred):
        return -self.crf_layer.log_likelihood(y_pred, y_true)
