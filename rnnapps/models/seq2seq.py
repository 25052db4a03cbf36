"""What every encoder–decoder here shares: the start/end markers, their ids, and teacher forcing.

The translator (:class:`~rnnapps.models.translator.Translator`) and the sequence
autoencoder (:class:`~rnnapps.models.autoencoder.Seq2SeqAutoencoder`) decode
target vocabularies laid out the same way: padding (id 0) and ``[UNK]`` (id 1),
as ``TextVectorization`` puts them, then ``<s>`` (2) and ``</s>`` (3), then the
words. Both train by teacher forcing on the pairs :func:`teacher_forcing_pairs`
makes, in the model (the autoencoder) or in ``tf.data`` (translate).
"""

from __future__ import annotations

from collections.abc import Sequence

from keras import ops

from rnnapps.models.decoding import PAD_ID

START_TOKEN, END_TOKEN = "<s>", "</s>"
UNKNOWN_ID, START_ID, END_ID = 1, 2, 3

__all__ = ["END_ID", "END_TOKEN", "PAD_ID", "START_ID", "START_TOKEN", "UNKNOWN_ID", "check_markers",
           "teacher_forcing_pairs", "with_markers"]


def with_markers(vocabulary: Sequence[str]) -> list[str]:
    """``vocabulary`` (padding and ``[UNK]`` first, as ``build_vocabulary`` returns it) with ``<s>``, ``</s>`` at 2, 3.

    The markers can never come out of the standardiser, which splits ``<`` and
    ``/`` off words, so they cannot collide with a real token.

    Example:

    >>> with_markers(["", "[UNK]", "dog"])
    ['', '[UNK]', '<s>', '</s>', 'dog']
    """
    vocabulary = [str(token) for token in vocabulary]
    if len(vocabulary) < 2:
        raise ValueError(f"Expected a vocabulary with padding and [UNK] first. Received: {vocabulary!r}")
    return [*vocabulary[:2], START_TOKEN, END_TOKEN, *vocabulary[2:]]


def check_markers(vocabulary: Sequence[str], name: str = "vocabulary") -> None:
    """Raise a ``ValueError`` that names :func:`with_markers` unless ``vocabulary[2:4]`` are the markers."""
    if list(vocabulary[2:4]) != [START_TOKEN, END_TOKEN]:
        raise ValueError(
            f"Expected {name}[2:4] == {[START_TOKEN, END_TOKEN]} (see rnnapps.models.seq2seq.with_markers()). "
            f"Received: {list(vocabulary[:4])!r}"
        )


def teacher_forcing_pairs(token_ids, max_length: int | None = None):
    """``(decoder_inputs, labels)`` for teacher forcing: ``<s> w1..wn`` and ``w1..wn </s>``.

    Args:
        token_ids: int ``(batch, time)``, post-padded with 0.
        max_length: keep at most this many tokens of each sequence first.

    Returns:
        Two int32 tensors ``(batch, time + 1)`` (``time`` after truncation), 0
        after each sequence.

    Example:

    >>> inputs, labels = teacher_forcing_pairs([[5, 6], [7, 0]])
    >>> ops.convert_to_numpy(inputs).tolist(), ops.convert_to_numpy(labels).tolist()
    ([[2, 5, 6], [2, 7, 0]], [[5, 6, 3], [7, 3, 0]])
    """
    token_ids = ops.cast(token_ids, "int32")
    if max_length is not None:
        token_ids = token_ids[:, :max_length]
    batch = ops.shape(token_ids)[0]
    lengths = ops.sum(ops.cast(ops.not_equal(token_ids, PAD_ID), "int32"), axis=1)
    decoder_inputs = ops.concatenate([ops.full((batch, 1), START_ID, dtype="int32"), token_ids], axis=1)
    padded = ops.pad(token_ids, [[0, 0], [0, 1]])
    positions = ops.expand_dims(ops.arange(ops.shape(padded)[1], dtype="int32"), 0)
    labels = ops.where(ops.equal(positions, ops.expand_dims(lengths, 1)), END_ID, padded)
    return decoder_inputs, labels
