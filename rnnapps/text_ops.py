"""The graph-side text operations that models and data loaders share, in one place.

Models (``rnnapps.models``) run these inside exported serving graphs that take
raw strings; loaders (``rnnapps.data``) run the same functions in
``Dataset.map``. Living here, neither package imports the other: the import
direction is ``data -> text_ops <- models`` (tests/test_layout.py enforces it).

* words for classifiers, language models and translation: :func:`standardize_text`,
  :func:`make_vectorizer`, :func:`token_counts`, :func:`detokenize`;
* tokens for a tagger, as CoNLL-2003 cuts them: :func:`tokenize_words`,
  :func:`normalise_word` / :func:`normalise_words`, :func:`case_feature_ids`;
* characters for character models: :func:`make_char_lookup`, :func:`encode_text`,
  :func:`decode_ids`.

Everything is ``tf.strings`` / Keras preprocessing layers, core ops only, so
TensorFlow Serving runs it without tf-text or custom ops.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import keras
import tensorflow as tf

#: The padding token of string tensors (id 0 in every lookup).
PADDING = ""
#: The out-of-vocabulary token of every lookup.
OOV_TOKEN = "[UNK]"

# Anything that is not a letter, a digit, whitespace or an apostrophe becomes its own token
# ("great!" → "great !"), so punctuation carries signal without inflating the vocabulary.
_SPLIT_SYMBOLS = r"([^\pL\pN\s'])"


@keras.saving.register_keras_serializable(package="rnnapps")
def standardize_text(text):
    """Lowercase (Unicode-aware), drop HTML line breaks, split punctuation off words."""
    text = tf.strings.lower(text, encoding="utf-8")
    text = tf.strings.regex_replace(text, r"<br\s*/?>", " ")
    text = tf.strings.regex_replace(text, _SPLIT_SYMBOLS, r" \1 ")
    return tf.strings.strip(tf.strings.regex_replace(text, r"\s+", " "))


def tokenize_words(text):
    """CoNLL-style tokens of raw strings, in the graph: ``string[batch] -> string[batch, words]`` (``""``-padded).

    Unlike :func:`standardize_text`, which lowercases for the vectoriser of
    classifiers and language models, this keeps the case: a tagger (NER)
    reads capitalisation as one of its strongest cues and scores tokens cut
    the way its training corpus (CoNLL-2003) was, so it needs its own
    case-preserving tokeniser.

    Splits on whitespace, and splits off brackets, quotes, ``!?;``, a trailing
    ``.,:`` after a lowercase letter or digit (``lamb.`` but not ``U.S.``), a
    comma before a space, and ``'s``.
    """
    text = tf.convert_to_tensor(text, tf.string)
    text = tf.strings.regex_replace(text, r"([\"()\[\]{}!?;])", r" \1 ")
    text = tf.strings.regex_replace(text, r"([\p{Ll}\pN%])([.,:]+)(\s|$)", r"\1 \2\3")
    text = tf.strings.regex_replace(text, r"([^\s,]),(\s|$)", r"\1 ,\2")
    text = tf.strings.regex_replace(text, r"(\pL)('[sS])(\s|$)", r"\1 \2\3")
    tokens = tf.strings.split(text).to_tensor(default_value="")
    # A batch of empty texts still gets one (padding) column.
    missing = tf.maximum(1 - tf.shape(tokens)[1], 0)
    return tf.pad(tokens, [[0, 0], [0, missing]], constant_values="")


def token_counts(texts):
    """Number of tokens after :func:`standardize_text`, for a batch of strings."""
    return tf.cast(tf.strings.split(standardize_text(texts)).row_lengths(), tf.int32)


def make_vectorizer(vocabulary: Sequence[str] | None = None, max_tokens: int | None = None, name: str = "vectorizer"):
    """A ``TextVectorization`` (ids, 0 = padding, 1 = OOV) using :func:`standardize_text`.

    Without ``output_sequence_length`` each batch is padded only to its longest
    member; pair it with :class:`rnnapps.models.ClipSequenceLength`.
    """
    return keras.layers.TextVectorization(
        max_tokens=max_tokens,
        standardize=standardize_text,
        split="whitespace",
        output_mode="int",
        vocabulary=list(vocabulary) if vocabulary is not None else None,
        name=name,
    )

def detokenize(text):
    """Undo the standardiser's spacing where English writes none, in the graph.

    ``"bike ."`` → ``"bike."``, ``"( fast )"`` → ``"(fast)"``, ``"t - shirt"`` →
    ``"t-shirt"``. Works on a string tensor of any shape; used on decoded
    token sequences before they are shown or scored.
    """
    text = tf.strings.regex_replace(text, r" ([.,!?;:%)\]])", r"\1")
    text = tf.strings.regex_replace(text, r"([(\[]) ", r"\1")
    return tf.strings.regex_replace(text, r"(\w) - (\w)", r"\1-\2")


# --- CoNLL-style tokens -------------------------------------------------------------

CASE_CATEGORIES = ("padding", "lower", "upper", "title", "mixed", "numeric", "has_digit", "other")
NUM_CASE_CATEGORIES = len(CASE_CATEGORIES)
_DIGITS = re.compile(r"[0-9]")


def normalise_word(word: str) -> str:
    """The word-vocabulary key of a token: lowercased, every ASCII digit turned to ``0``."""
    return _DIGITS.sub("0", word.lower())


def normalise_words(tokens: tf.Tensor) -> tf.Tensor:
    """:func:`normalise_word` on a string tensor of any shape, in the graph."""
    return tf.strings.regex_replace(tf.strings.lower(tokens, encoding="utf-8"), "[0-9]", "0")


def case_feature_ids(tokens: tf.Tensor) -> tf.Tensor:
    """Case/shape category id of every token (int32, same shape), see ``CASE_CATEGORIES``.

    0 padding (``""``), 1 lower (``lamb``), 2 upper (``EU``, ``U.S.``), 3 title
    (``Peter``), 4 mixed (``McDonald``), 5 numeric (``1996``, ``3,000.5``),
    6 has a digit (``1996-08-22``), 7 other (punctuation). Letters are matched
    by Unicode category, digits as ASCII.
    """
    tokens = tf.convert_to_tensor(tokens, dtype=tf.string)

    def matches(pattern):
        return tf.strings.regex_full_match(tokens, pattern)

    has_lower = matches(r".*\p{Ll}.*")
    has_upper = matches(r".*\p{Lu}.*")
    # Checked from the last rule to the first, so the first matching rule wins.
    rules = (
        (tf.equal(tokens, PADDING), 0),
        (matches(r"[-+]?[0-9]+([.,][0-9]+)*"), 5),
        (matches(r".*[0-9].*"), 6),
        (has_upper & ~has_lower, 2),
        (matches(r"\p{Lu}[^\p{Lu}]*") & has_lower, 3),
        (has_lower & ~has_upper, 1),
        (has_lower & has_upper, 4),
    )
    ids = tf.fill(tf.shape(tokens), tf.constant(7, tf.int32))
    for condition, category in reversed(rules):
        ids = tf.where(condition, tf.constant(category, tf.int32), ids)
    return ids


# --- characters ---------------------------------------------------------------------


def make_char_lookup(vocabulary, oov_token: str = OOV_TOKEN):
    """Character <-> id lookups; id 0 is the out-of-vocabulary bucket.

    Args:
        vocabulary: the characters, e.g. from :func:`build_char_vocabulary`.
        oov_token: the string the inverse lookup returns for id 0.

    Returns:
        ``(lookup, inverse)``: two ``keras.layers.StringLookup`` layers, chars
        to int64 ids and ids back to chars. ``lookup.vocabulary_size()`` is
        ``len(vocabulary) + 1``.

    Example:

    >>> lookup, inverse = make_char_lookup(["a", "b"])
    >>> lookup(tf.constant(["a", "b", "z"])).numpy()
    array([1, 2, 0])
    """
    vocabulary = list(vocabulary)
    for char in vocabulary:
        if len(char) != 1:
            raise ValueError(f"Expected single characters in vocabulary. Received: {char!r}")
    if len(set(vocabulary)) != len(vocabulary):
        raise ValueError("Expected unique characters in vocabulary. Received duplicates.")
    lookup = keras.layers.StringLookup(
        vocabulary=vocabulary, num_oov_indices=1, mask_token=None, oov_token=oov_token, name="char_to_id"
    )
    inverse = keras.layers.StringLookup(
        vocabulary=vocabulary, num_oov_indices=1, mask_token=None, oov_token=oov_token, invert=True, name="id_to_char"
    )
    return lookup, inverse


def encode_text(text, lookup) -> tf.Tensor:
    """Graph-friendly text -> int32 ids (a string scalar gives ``(chars,)``, a batch a ragged tensor)."""
    return tf.cast(lookup(tf.strings.unicode_split(text, "UTF-8")), tf.int32)


def decode_ids(ids, inverse) -> tf.Tensor:
    """Graph-friendly ids ``(..., time)`` -> strings ``(...)``."""
    return tf.strings.reduce_join(inverse(tf.cast(ids, tf.int64)), axis=-1)
