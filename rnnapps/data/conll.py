"""CoNLL-2003 named-entity data: file parsing, vocabularies and in-graph features.

Files have one token a line, ``token POS chunk NER`` separated by whitespace
(the last column is the NER tag), a blank line after each sentence and
``-DOCSTART-`` lines between documents (dropped). Tags are read in IOB1 (the
original ``eng.train/testa/testb``: ``I-`` everywhere, ``B-`` only between two
adjacent entities of one type) or IOB2 (``B-`` starts every entity) and always
returned as IOB2, the scheme ``seqeval``'s strict mode scores.

Features are computed in the TensorFlow graph by :func:`featurize`, so the same
code runs in ``Dataset.map`` and inside an exported serving signature that
takes raw string tokens (``""`` = padding).
"""

from __future__ import annotations

import collections
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

from rnnapps.data import sources
from rnnapps.text_ops import OOV_TOKEN, PADDING, case_feature_ids, normalise_word, normalise_words

DATASET = "CoNLL-2003"
SPLITS = ("train", "valid", "test")
DOCSTART = "-DOCSTART-"
LINE_END = "\r\n"
# Relative layouts tried in order; a layout counts only when all three splits exist.
LAYOUTS = (
    {"train": "conll2003/train.txt", "valid": "conll2003/valid.txt", "test": "conll2003/test.txt"},
    {
        "train": "conll2003/iob1_original/eng.train",
        "valid": "conll2003/iob1_original/eng.testa",
        "test": "conll2003/iob1_original/eng.testb",
    },
    {"train": "conll2003/eng.train", "valid": "conll2003/eng.testa", "test": "conll2003/eng.testb"},
    {"train": "eng.train", "valid": "eng.testa", "test": "eng.testb"},
    {"train": "train.txt", "valid": "valid.txt", "test": "test.txt"},
)
TFDS_SPLITS = {"train": "train", "valid": "validation", "test": "test"}
# Upper bounds of the sentence-length buckets of tag_dataset (most CoNLL sentences are short).
LENGTH_BUCKETS = (8, 12, 16, 24, 32, 48, 64)


_TAG_PATTERN = re.compile(r"^(O|[BI]-\S+)$")


@dataclass
class Sentence:
    """One sentence: its tokens and their IOB2 NER tags (same length)."""

    tokens: list[str]
    tags: list[str]


def iob1_to_iob2(tags: Sequence[str]) -> list[str]:
    """Rewrite IOB1 tags as IOB2: an ``I-X`` that starts an entity becomes ``B-X``.

    An entity starts where ``I-X`` follows ``O``, the sentence start, or a tag
    of another type. IOB2 input comes back unchanged, so the conversion is safe
    to apply to any file.
    """
    converted = []
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            tag = "B-" + tag[2:]
        converted.append(tag)
        previous = tag
    return converted


def detect_scheme(tags: Iterable[str]) -> str:
    """``"iob1"`` when some ``I-X`` starts an entity, else ``"iob2"``."""
    previous = "O"
    for tag in tags:
        if tag.startswith("I-") and previous[2:] != tag[2:]:
            return "iob1"
        previous = tag
    return "iob2"


def read_conll(path: str | os.PathLike) -> list[Sentence]:
    """Sentences of a CoNLL file (plain or gzipped), tags converted to IOB2.

    Raises:
        ValueError: for a line without a token and a tag, or with a tag that
            is neither ``O`` nor ``B-X``/``I-X``; the message names the file,
            the line number and quotes the line.
    """
    sentences: list[Sentence] = []
    tokens: list[str] = []
    tags: list[str] = []

    def finish():
        if tokens:
            sentences.append(Sentence(list(tokens), iob1_to_iob2(tags)))
        tokens.clear()
        tags.clear()

    with sources.open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            columns = line.split()
            if not columns:
                finish()
                continue
            if columns[0] == DOCSTART:
                finish()
                continue
            if len(columns) < 2 or not _TAG_PATTERN.match(columns[-1]):
                raise ValueError(
                    f"{path}:{line_number}: expected 'token POS chunk NER' with an NER tag "
                    f"O, B-TYPE or I-TYPE in the last column. Got line {line.rstrip(LINE_END)!r}"
                )
            tokens.append(columns[0])
            tags.append(columns[-1])
    finish()
    return sentences


def find_conll_splits(data_dir: str | os.PathLike | None) -> dict[str, Path]:
    """Paths of the train/valid/test files in a local data directory.

    Accepted layouts (each file plain or ``.gz``): ``conll2003/{train,valid,test}.txt``,
    ``conll2003/iob1_original/eng.{train,testa,testb}``, ``eng.{train,testa,testb}``
    directly in ``data_dir`` or in ``data_dir/conll2003``, and ``{train,valid,test}.txt``
    directly in ``data_dir``.

    Raises:
        DataNotFoundError: naming the expected files when no layout is complete.
    """
    directory = Path(data_dir) if data_dir is not None else None
    if directory is not None:
        for layout in LAYOUTS:
            found = {split: sources.find_local(directory, [name]) for split, name in layout.items()}
            if all(found.values()):
                return found
    raise sources.missing(DATASET, _expected_files(), directory)


def _expected_files() -> list[str]:
    return [
        "conll2003/{train,valid,test}.txt[.gz]",
        "or conll2003/iob1_original/eng.{train,testa,testb}[.gz]",
        "or eng.{train,testa,testb}[.gz]",
    ]


def load_conll_splits(data_dir: str | os.PathLike | None = None) -> dict[str, list[Sentence]]:
    """Sentences of every split: from the local data directory, else tfds ``conll2003``."""
    directory = sources.resolve_data_dir(data_dir)
    if directory is not None:
        return {split: read_conll(path) for split, path in find_conll_splits(directory).items()}
    return _load_tfds(directory)


def _load_tfds(directory) -> dict[str, list[Sentence]]:
    # Not covered by the offline tests: it needs a download of tfds' conll2003.
    datasets, info = sources.load_tfds(
        "conll2003", [TFDS_SPLITS[s] for s in SPLITS], DATASET, _expected_files(), directory, with_info=True
    )
    names = info.features["ner"].names
    splits = {}
    for split, dataset in zip(SPLITS, datasets, strict=True):
        splits[split] = [
            Sentence(
                [token.decode("utf-8") for token in example["tokens"]],
                iob1_to_iob2([names[int(tag)] for tag in example["ner"]]),
            )
            for example in dataset.as_numpy_iterator()
            if len(example["tokens"]) and example["tokens"][0] != DOCSTART.encode()
        ]
    return splits


@dataclass
class Vocabularies:
    """Word, char and tag vocabularies (no padding or OOV entries; lookups add them).

    Build them from the training split only with :meth:`from_sentences`, so the
    validation and test words the model has never seen are really unknown.
    """

    words: list[str]
    chars: list[str]
    tags: list[str]
    word_counts: dict[str, int] = field(default_factory=dict, repr=False)
    #: with ``keep_vectors_fixed``: how many leading words have no pretrained vector (the words
    #: training may update); None when every word training reads may be updated
    words_without_vectors: int | None = None

    @classmethod
    def from_sentences(
        cls,
        sentences: Iterable[Sentence],
        min_word_count: int = 1,
        min_char_count: int = 1,
        extra_words: Iterable[str] = (),
        keep_vectors_fixed: bool = False,
    ) -> Vocabularies:
        """Vocabularies of ``sentences`` (the training split).

        Args:
            sentences: training sentences.
            min_word_count: normalised words seen fewer times become OOV.
            min_char_count: characters seen fewer times become OOV.
            extra_words: normalised words kept whatever their count, after the
                training words (e.g. the words of a pretrained embedding file). Those
                seen in training (below ``min_word_count``) come first, so every word
                training can update is in the leading :attr:`trained_word_rows` rows.
            keep_vectors_fixed: order the training words without a pretrained vector
                (not in ``extra_words``) before those with one, so that the rows a
                tagger that keeps the pretrained vectors fixed updates are the leading
                :attr:`updated_word_rows`.
        """
        if min_word_count < 1 or min_char_count < 1:
            raise ValueError(
                f"Expected min_word_count >= 1 and min_char_count >= 1. "
                f"Received: min_word_count={min_word_count}, min_char_count={min_char_count}"
            )
        word_counts: collections.Counter[str] = collections.Counter()
        char_counts: collections.Counter[str] = collections.Counter()
        tag_set = set()
        for sentence in sentences:
            for token in sentence.tokens:
                word_counts[normalise_word(token)] += 1
                char_counts.update(token)
            tag_set.update(sentence.tags)
        # Most frequent first, ties alphabetical: deterministic across runs.
        words = [w for w, c in sorted(word_counts.items(), key=lambda item: (-item[1], item[0])) if c >= min_word_count]
        extra_words = list(extra_words)
        words_without_vectors = None
        if keep_vectors_fixed:
            with_vectors = set(extra_words)
            without = [w for w in words if w not in with_vectors]
            words = without + [w for w in words if w in with_vectors]
            words_without_vectors = len(without)
        known = set(words)
        seen_first = [w for w in extra_words if word_counts.get(w)] + [w for w in extra_words if not word_counts.get(w)]
        for word in seen_first:
            if word and word not in known:
                words.append(word)
                known.add(word)
        chars = [ch for ch, c in sorted(char_counts.items(), key=lambda item: (-item[1], item[0])) if c >= min_char_count]
        tags = sorted(tag_set, key=lambda tag: (tag != "O", tag[2:], tag))
        return cls(words=words, chars=chars, tags=tags, word_counts=dict(word_counts),
                   words_without_vectors=words_without_vectors)

    @property
    def trained_word_rows(self) -> int:
        """Leading rows of the word lookup that training reads: padding, ``[UNK]`` and the words seen in training.

        The rows after them are words of a pretrained file that no training sentence holds;
        no gradient reaches them, so a tagger may keep them fixed
        (:class:`rnnapps.models.embedding.PartlyFrozenEmbedding`).
        """
        if not self.word_counts:  # counts unknown: every row may be trained
            return 2 + len(self.words)
        return 2 + sum(1 for word in self.words if self.word_counts.get(word))

    @property
    def updated_word_rows(self) -> int:
        """Leading rows of the word lookup that training updates.

        :attr:`trained_word_rows`, or, for vocabularies built with ``keep_vectors_fixed``,
        padding, ``[UNK]`` and the training words that have no pretrained vector.
        """
        if self.words_without_vectors is None:
            return self.trained_word_rows
        return 2 + self.words_without_vectors

    @property
    def num_tag_ids(self) -> int:
        """Tag ids from the tag lookup: padding 0 plus one per tag."""
        return len(self.tags) + 1


def make_lookup_layers(
    vocab: Vocabularies,
) -> tuple[keras.layers.StringLookup, keras.layers.StringLookup, keras.layers.StringLookup]:
    """``(word, char, tag)`` ``StringLookup`` layers with ``""`` as the padding id 0.

    Words and chars map unknown strings to id 1 (``[UNK]``); their real entries
    start at 2. Tags have no OOV id: ``""`` -> 0, ``vocab.tags[i]`` -> ``i + 1``;
    :func:`make_tag_decoder` maps ids back to tag strings.
    """
    word_lookup = keras.layers.StringLookup(
        vocabulary=list(vocab.words), mask_token=PADDING, oov_token=OOV_TOKEN, num_oov_indices=1, name="word_lookup"
    )
    char_lookup = keras.layers.StringLookup(
        vocabulary=list(vocab.chars), mask_token=PADDING, oov_token=OOV_TOKEN, num_oov_indices=1, name="char_lookup"
    )
    tag_lookup = keras.layers.StringLookup(
        vocabulary=list(vocab.tags), mask_token=PADDING, num_oov_indices=0, name="tag_lookup"
    )
    lookups = (word_lookup, char_lookup, tag_lookup)
    for lookup in lookups:
        # Built now, so an ExportArchive can track them before their first call.
        lookup.build(None)
    return lookups


def make_tag_decoder(vocab: Vocabularies) -> keras.layers.StringLookup:
    """The inverse of the tag lookup: tag ids to strings, padding id 0 to ``""``."""
    decoder = keras.layers.StringLookup(
        vocabulary=list(vocab.tags), mask_token=PADDING, num_oov_indices=0, invert=True, name="tag_decoder"
    )
    decoder.build(None)
    return decoder


def featurize(tokens: tf.Tensor, word_lookup, char_lookup, max_chars: int | None = None) -> dict[str, tf.Tensor]:
    """In-graph features of string tokens (``""`` = padding) of shape ``[words]`` or ``[batch, words]``.

    Returns a dict of int tensors: ``word_ids`` (same shape as ``tokens``; 0 for
    padding, 1 for unknown words), ``char_ids`` (one more axis of length the
    longest token, or ``max_chars`` when given, which also truncates long
    tokens; 0 = padding) and ``case_ids`` (see :func:`case_feature_ids`).
    """
    tokens = tf.convert_to_tensor(tokens, dtype=tf.string)
    word_ids = word_lookup(normalise_words(tokens))
    chars = tf.strings.unicode_split(tokens, "UTF-8")
    char_ids = tf.ragged.map_flat_values(char_lookup, chars)
    char_ids = char_ids.to_tensor(default_value=0)
    if max_chars is not None:
        char_ids = char_ids[..., :max_chars]
        missing = max_chars - tf.shape(char_ids)[-1]
        paddings = tf.concat([tf.zeros([tf.rank(char_ids) - 1, 2], tf.int32), [[0, missing]]], axis=0)
        char_ids = tf.pad(char_ids, paddings)
        char_ids.set_shape(char_ids.shape[:-1].concatenate([max_chars]))
    return {
        "word_ids": tf.cast(word_ids, tf.int32),
        "char_ids": tf.cast(char_ids, tf.int32),
        "case_ids": case_feature_ids(tokens),
    }


def make_featurizer(word_lookup, char_lookup, max_chars: int | None = None):
    """``featurize`` bound to two lookup layers: ``tokens -> feature dict``."""

    def featurizer(tokens):
        return featurize(tokens, word_lookup, char_lookup, max_chars)

    return featurizer


def tag_dataset(sentences: Sequence[Sentence], vocab: Vocabularies, batch_size: int, shuffle: bool, seed: int) -> tf.data.Dataset:
    """``(tokens, tag_ids)`` batches of similar length: raw string tokens (``""``-padded) and tag ids (0 = padding).

    The model featurises the strings itself (:class:`rnnapps.models.TokenFeatures`), so serving
    takes the same raw tokens. Sentences are bucketed by length (:data:`LENGTH_BUCKETS`).
    """
    tag_ids = {tag: index + 1 for index, tag in enumerate(vocab.tags)}

    def examples():
        for sentence in sentences:
            # Tags never seen in training (none in CoNLL-2003) are scored as "O".
            yield sentence.tokens, [tag_ids.get(tag, tag_ids.get("O", 1)) for tag in sentence.tags]

    dataset = tf.data.Dataset.from_generator(
        examples,
        output_signature=(tf.TensorSpec([None], tf.string), tf.TensorSpec([None], tf.int32)),
    ).cache()
    if shuffle:
        dataset = dataset.shuffle(max(len(sentences), 1), seed=seed, reshuffle_each_iteration=True)
    dataset = dataset.bucket_by_sequence_length(
        lambda tokens, tags: tf.shape(tokens)[0],
        bucket_boundaries=list(LENGTH_BUCKETS),
        bucket_batch_sizes=[batch_size] * (len(LENGTH_BUCKETS) + 1),
        padding_values=(PADDING, 0),
    )
    return dataset.prefetch(tf.data.AUTOTUNE)


def word_lookup_vectors(path, vocab: Vocabularies, expected_dim: int, seed: int = 0) -> np.ndarray:
    """Pretrained rows for the word lookup of ``vocab`` (padding, ``[UNK]``, then its words) from a GloVe-style file.

    Words are matched after :func:`rnnapps.text_ops.normalise_word`, as the model reads them. A
    file whose vectors are not ``expected_dim`` wide is a :class:`ConfigError` that says which
    ``word_embedding_dim`` to set.
    """
    from rnnapps.data.embeddings import read_word_vectors
    from rnnapps.errors import ConfigError

    rows = [PADDING, OOV_TOKEN, *vocab.words]
    vectors = read_word_vectors(path, rows, seed=seed, normalise=normalise_word)
    if vectors.shape[1] != expected_dim:
        raise ConfigError(
            f"{path} has {vectors.shape[1]}-dimensional vectors but word_embedding_dim={expected_dim}; "
            f"add --set word_embedding_dim={vectors.shape[1]}"
        )
    return vectors
