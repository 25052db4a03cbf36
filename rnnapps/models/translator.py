"""The attention encoder–decoder translator: raw source strings in, target strings out.

A bidirectional recurrent encoder, a tanh bridge to the decoder's initial state
and an :class:`~rnnapps.models.attention_decoder.AttentionDecoder` with input
feeding, trained by teacher forcing; greedy or beam search decoding run as
graph loops, so the same code serves evaluation and the SavedModel. The
translate pipeline builds it from its config; any Keras user can too.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from rnnapps.models.attention_decoder import AttentionDecoder
from rnnapps.models.decoding import beam_search_decode, gnmt_length_penalty, greedy_decode
from rnnapps.models.recurrent import RecurrentStack
from rnnapps.models.seq2seq import END_ID, START_ID, UNKNOWN_ID, check_markers
from rnnapps.models.sequence import ClipSequenceLength
from rnnapps.text_ops import detokenize, make_vectorizer, standardize_text

EMBEDDING_INITIALIZER = {"class_name": "RandomNormal", "config": {"mean": 0.0, "stddev": 1.0}}


def source_tokens(text, max_length: int):
    """The standardised source tokens the model reads, ``""``-padded, ``(batch, time >= 1)``."""
    tokens = tf.strings.split(standardize_text(tf.reshape(text, [-1])))[:, :max_length].to_tensor("")
    return tf.pad(tokens, [[0, 0], [0, tf.maximum(1 - tf.shape(tokens)[1], 0)]], constant_values="")


@keras.saving.register_keras_serializable(package="rnnapps")
class Translator(keras.Model):
    """Attention encoder–decoder from raw source strings to target strings.

    Calling the model runs teacher forcing on token ids and returns float32
    logits ``(batch, target_time, target_vocab)``, which is what ``fit``
    trains; :meth:`compute_loss` is the mean masked cross-entropy per target
    token (with label smoothing). :meth:`translate` decodes raw strings with
    greedy (``beam_width=1``) or beam search, in the graph. The vocabularies
    travel in the config, so a reloaded model translates without other files.

    Args:
        source_vocabulary: source tokens, ``""`` and ``[UNK]`` first.
        target_vocabulary: target tokens, ``""``, ``[UNK]``, ``<s>``, ``</s>`` first.
        embedding_dim, cell, units, encoder_depth, attention, dropout,
        label_smoothing, max_source_length, max_decode_length, beam_width,
        length_penalty: as in :class:`rnnapps.pipelines.translate.TranslateConfig`.
        seed: seed of the dropout masks.

    Call arguments:
        inputs: ``{"source": int (batch, Ts), "target": int (batch, Tt)}``;
            0 = padding, ``target`` starts with ``<s>``.
        training: whether dropout is active.

    Example:

    >>> model = Translator(["", "[UNK]", "hallo"], ["", "[UNK]", "<s>", "</s>", "hello"], embedding_dim=4, units=4)
    >>> model.translate(tf.constant(["Hallo!"]), beam_width=2, max_length=3)["translation"].shape
    TensorShape([1])
    """

    def __init__(
        self,
        source_vocabulary,
        target_vocabulary,
        embedding_dim: int = 256,
        cell: str = "gru",
        units: int = 256,
        encoder_depth: int = 1,
        attention: str = "bahdanau",
        dropout: float = 0.0,
        label_smoothing: float = 0.0,
        max_source_length: int = 50,
        max_decode_length: int = 50,
        beam_width: int = 5,
        length_penalty: float = 0.6,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.source_vocabulary = [str(token) for token in source_vocabulary]
        self.target_vocabulary = [str(token) for token in target_vocabulary]
        check_markers(self.target_vocabulary, "target_vocabulary")
        if not 0.0 <= float(label_smoothing) < 1.0:
            raise ValueError(f"Expected 0 <= label_smoothing < 1. Received: label_smoothing={label_smoothing}")
        self.embedding_dim = int(embedding_dim)
        self.cell = cell
        self.units = int(units)
        self.encoder_depth = int(encoder_depth)
        self.attention = attention
        self.dropout = float(dropout)
        self.label_smoothing = float(label_smoothing)
        self.max_source_length = int(max_source_length)
        self.max_decode_length = int(max_decode_length)
        self.beam_width = int(beam_width)
        self.length_penalty = float(length_penalty)
        self.seed = seed
        source_size, target_size = len(self.source_vocabulary), len(self.target_vocabulary)

        self.source_vectorizer = make_vectorizer(self.source_vocabulary, name="source_vectorizer")
        self.source_clip = ClipSequenceLength(self.max_source_length, name="source_clip")
        # Unit-variance embeddings (PyTorch's default, which the Luong/OpenNMT recipe was tuned with). The
        # decoder's input is [embedding; previous attentional vector]; that tanh vector carries the output
        # distribution and grows to ~0.7 per unit within 50 steps, while rows of Keras's default
        # uniform(±0.05) embeddings hardly move, so the fed vector drowned the tokens: the model never got
        # past unigram statistics ("a a a ..."; see test_translator_learns_to_reverse_*).
        self.source_embedding = keras.layers.Embedding(
            source_size, self.embedding_dim, embeddings_initializer=EMBEDDING_INITIALIZER, name="source_embedding"
        )
        self.target_embedding = keras.layers.Embedding(
            target_size, self.embedding_dim, embeddings_initializer=EMBEDDING_INITIALIZER, name="target_embedding"
        )
        self.embedding_dropout = keras.layers.Dropout(self.dropout, seed=seed, name="embedding_dropout")
        self.encoder = RecurrentStack(
            self.units, cell=cell, depth=self.encoder_depth, bidirectional=True, dropout=self.dropout,
            return_sequences=True, return_state=True, seed=seed, name="encoder",
        )
        # One tanh layer per decoder state, from that state's [forward; backward] final encoder states.
        self.bridges = [
            keras.layers.Dense(self.units, activation="tanh", name=f"bridge_{index}")
            for index in range(2 if cell == "lstm" else 1)
        ]
        self.decoder = AttentionDecoder(self.units, cell=cell, attention=attention, name="decoder")
        self.output_dropout = keras.layers.Dropout(self.dropout, seed=None if seed is None else seed + 1,
                                                   name="output_dropout")
        # float32 logits keep the softmax and the loss numerically safe under mixed precision.
        self.projection = keras.layers.Dense(target_size, dtype="float32", name="projection")

        self.source_embedding.build((None, None))
        self.target_embedding.build((None, None))
        self.encoder.build((None, None, self.embedding_dim))
        for bridge in self.bridges:
            bridge.build((None, 2 * self.units))
        self.decoder.build((None, None, self.embedding_dim), (None, None, 2 * self.units))
        self.projection.build((None, self.units))
        # Every weight exists now: a reloaded model restores them without a forward pass.
        self.built = True

    # -- training -----------------------------------------------------------------------------

    def encode(self, source_ids, training=False):
        """Memory ``(batch, Ts, 2·units)``, its mask and the decoder's initial state list."""
        source_ids = tf.cast(source_ids, tf.int32)
        mask = tf.not_equal(source_ids, 0)
        embedded = self.embedding_dropout(self.source_embedding(source_ids), training=training)
        memory, *final_states = self.encoder(embedded, mask=mask, training=training)
        per_direction = len(final_states) // 2
        forward, backward = final_states[:per_direction], final_states[per_direction:]
        initial = [bridge(tf.concat([f, b], axis=-1)) for bridge, f, b in zip(self.bridges, forward, backward, strict=True)]
        return memory, mask, initial

    def call(self, inputs, training=False):
        memory, source_mask, initial = self.encode(inputs["source"], training=training)
        target_ids = tf.cast(inputs["target"], tf.int32)
        embedded = self.embedding_dropout(self.target_embedding(target_ids), training=training)
        outputs = self.decoder(
            embedded, memory, initial_state=initial, inputs_mask=tf.not_equal(target_ids, 0),
            encoder_outputs_mask=source_mask, training=training,
        )
        return self.projection(self.output_dropout(outputs, training=training))

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        labels = tf.cast(y, tf.int32)
        log_probs = tf.nn.log_softmax(tf.cast(y_pred, tf.float32), axis=-1)
        nll = -tf.gather(log_probs, labels, batch_dims=2)
        if self.label_smoothing:
            # Cross-entropy against (1-ε)·one_hot + ε/V, without building the one-hot tensor.
            nll = (1.0 - self.label_smoothing) * nll - self.label_smoothing * tf.reduce_mean(log_probs, axis=-1)
        weights = tf.cast(tf.not_equal(labels, 0), tf.float32)
        if sample_weight is not None:
            weights = weights * tf.cast(tf.reshape(sample_weight, [-1, 1]), tf.float32)
        return tf.reduce_sum(nll * weights) / tf.maximum(tf.reduce_sum(weights), 1.0)

    # -- inference ----------------------------------------------------------------------------

    def decode(self, text, beam_width: int | None = None, max_length: int | None = None, n_best: bool = False):
        """Decode raw strings: a :class:`~rnnapps.models.decoding.DecodeResult` plus the source ids.

        ``n_best=True`` keeps every hypothesis of the beam (a beam axis after the batch), best first.
        """
        beam_width = self.beam_width if beam_width is None else int(beam_width)
        max_length = self.max_decode_length if max_length is None else int(max_length)
        text = tf.reshape(tf.convert_to_tensor(text, tf.string), [-1])
        source_ids = tf.cast(self.source_clip(self.source_vectorizer(text)), tf.int32)
        memory, mask, initial = self.encode(source_ids)
        cell = self.decoder.cell
        batch = tf.shape(source_ids)[0]
        states = {
            "decoder": [*initial, tf.zeros([batch, self.units], initial[0].dtype)],
            "memory": memory,
            "mask": mask,
            "keys": cell.precompute_keys(memory),
        }
        vocabulary_size = len(self.target_vocabulary)
        # [UNK] and <s> are never worth emitting: the next best word scores better in BLEU and reads better.
        banned = tf.reduce_any(tf.equal(tf.range(vocabulary_size)[:, tf.newaxis], [UNKNOWN_ID, START_ID]), axis=1)

        def step_fn(tokens, states):
            outputs, decoder_states, weights = self.decoder.step(
                self.target_embedding(tokens), states["decoder"], states["memory"], states["mask"], states["keys"],
                training=False,
            )
            logits = tf.where(banned, -1e9, tf.cast(self.projection(outputs), tf.float32))
            return tf.nn.log_softmax(logits), {**states, "decoder": decoder_states}, weights

        if beam_width == 1 and not n_best:
            result = greedy_decode(step_fn, states, START_ID, END_ID, max_length, batch_size=batch)
        else:
            result = beam_search_decode(step_fn, states, START_ID, END_ID, max_length, beam_width,
                                        length_penalty=self.length_penalty, n_best=n_best)
        return result, source_ids

    def translate(self, text, beam_width: int | None = None, max_length: int | None = None):
        """``{translation, attention, source_tokens, target_tokens, lengths}`` for raw strings ``(batch,)``.

        ``attention`` is float32 ``(batch, steps, source_time)``; row *i* is the
        attention when emitting ``target_tokens[:, i]`` (the last real row emits
        ``</s>``). ``translation`` excludes ``</s>`` and is detokenised.
        """
        result, source_ids = self.decode(text, beam_width, max_length)
        steps = tf.maximum(tf.reduce_max(result.lengths), 1)
        ids = result.ids[:, :steps]
        vocabulary = tf.constant(self.target_vocabulary)
        tokens = tf.gather(vocabulary, ids)
        words = tf.ragged.boolean_mask(tokens, (ids != 0) & (ids != END_ID))
        translation = detokenize(tf.strings.reduce_join(words, axis=1, separator=" "))
        sources = source_tokens(text, self.max_source_length)
        return {
            "translation": translation,
            "attention": tf.cast(result.extras[:, :steps, :], tf.float32),
            "source_tokens": sources[:, : tf.shape(source_ids)[1]],
            "target_tokens": tokens,
            "lengths": result.lengths,
        }

    def translate_n_best(self, text, max_length: int | None = None):
        """All ``beam_width`` hypotheses of the beam search for raw strings ``(batch,)``, best first.

        Returns ``{translations: string (batch, beam_width), scores: float32 (batch, beam_width)}``;
        a score is the hypothesis' summed log-probability divided by the GNMT length penalty,
        the number the search ranks by, so ``translations[:, 0]`` is :meth:`translate`'s answer.
        """
        result, _ = self.decode(text, max_length=max_length, n_best=True)
        # One row per hypothesis, so the joined translations come out dense: (batch * beam_width,).
        ids = tf.reshape(result.ids, [-1, tf.shape(result.ids)[-1]])
        words = tf.ragged.boolean_mask(tf.gather(tf.constant(self.target_vocabulary), ids), (ids != 0) & (ids != END_ID))
        joined = detokenize(tf.strings.reduce_join(words, axis=1, separator=" "))
        translations = tf.reshape(joined, tf.shape(result.ids)[:2])
        scores = result.scores / gnmt_length_penalty(result.lengths, self.length_penalty)
        return {"translations": translations, "scores": tf.cast(scores, tf.float32)}

    def get_config(self):
        config = super().get_config()
        config.update(
            source_vocabulary=list(self.source_vocabulary),
            target_vocabulary=list(self.target_vocabulary),
            embedding_dim=self.embedding_dim,
            cell=self.cell,
            units=self.units,
            encoder_depth=self.encoder_depth,
            attention=self.attention,
            dropout=self.dropout,
            label_smoothing=self.label_smoothing,
            max_source_length=self.max_source_length,
            max_decode_length=self.max_decode_length,
            beam_width=self.beam_width,
            length_penalty=self.length_penalty,
            seed=self.seed,
        )
        return config


def translate_texts(model: Translator, texts, beam_width: int, batch_size: int = 100) -> list[str]:
    """Translations of a list of strings, ``batch_size`` at a time, through one traced function."""
    function = tf.function(
        lambda text: model.translate(text, beam_width=beam_width)["translation"],
        input_signature=[tf.TensorSpec([None], tf.string)],
    )
    translations = []
    for start in range(0, len(texts), batch_size):
        batch = function(tf.constant(list(texts[start : start + batch_size])))
        translations.extend(item.decode("utf-8") for item in batch.numpy())
    return translations
