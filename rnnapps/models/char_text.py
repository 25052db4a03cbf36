"""A character language model that carries its vocabulary, and text generation from it.

:class:`CharTextModel` is a :class:`~rnnapps.models.char_lm.TruncatedBPTTModel`
plus its character lookups, so a reloaded model encodes and decodes strings in
the graph; :func:`generate_text` continues a prompt one character at a time
with the state carried (no re-running of the prefix), and :class:`PrintSample`
shows a sample after every epoch. The textgen pipeline composes them.
"""

from __future__ import annotations

import keras
import tensorflow as tf

from rnnapps import text_ops
from rnnapps.models.char_lm import TruncatedBPTTModel, initial_states, step_function
from rnnapps.models.sampling import generate_tokens

# The character fed first when a prompt is empty: a line break starts a speech in Tiny Shakespeare.
START_CHARACTER = "\n"
# Added to the out-of-vocabulary logit while generating, so the sampler never emits "[UNK]".
_NEVER = -1e9


@keras.saving.register_keras_serializable(package="rnnapps")
class CharTextModel(TruncatedBPTTModel):
    """A :class:`TruncatedBPTTModel` that also carries its character vocabulary.

    The vocabulary travels in the model's config, so a model reloaded from
    ``model.keras`` can still be exported with an in-graph character lookup.
    The lookup layers are attributes, so an export that tracks the model also
    saves their tables.

    Args:
        language_model: a :func:`rnnapps.models.char_lm.build_char_lm` model
            whose vocabulary size is ``len(vocabulary) + 1`` (id 0: unknown).
        batch_size: the fixed number of streams per training batch.
        vocabulary: the characters with ids ``1..len(vocabulary)``.

    Call arguments:
        inputs: int32 ids ``(batch, time)``; returns float32 logits
            ``(batch, time, len(vocabulary) + 1)``.

    Example:

    >>> model = CharTextModel(build_char_lm(3, embedding_dim=4, units=8), batch_size=2, vocabulary=["a", "b"])
    >>> model.encode(tf.constant("abz")).numpy()
    array([1, 2, 0], dtype=int32)
    """

    def __init__(self, language_model: keras.Model, batch_size: int, vocabulary, **kwargs):
        super().__init__(language_model, batch_size, **kwargs)
        vocabulary = list(vocabulary)
        vocab_size = int(language_model.outputs[0].shape[-1])
        if vocab_size != len(vocabulary) + 1:
            raise ValueError(
                f"Expected a language model with len(vocabulary) + 1 = {len(vocabulary) + 1} outputs. "
                f"Received: language_model with {vocab_size} outputs"
            )
        self.vocabulary = vocabulary
        self.char_to_id, self.id_to_char = text_ops.make_char_lookup(vocabulary)

    @property
    def start_id(self) -> int:
        """The id fed when a prompt is empty (a line break if the corpus has one, else id 0)."""
        return self.vocabulary.index(START_CHARACTER) + 1 if START_CHARACTER in self.vocabulary else 0

    def encode(self, text) -> tf.Tensor:
        """Strings to int32 ids in the graph (unknown characters: id 0)."""
        return text_ops.encode_text(text, self.char_to_id)

    def decode(self, ids) -> tf.Tensor:
        """Ids ``(..., time)`` to strings ``(...)`` in the graph."""
        return text_ops.decode_ids(ids, self.id_to_char)

    def get_config(self):
        config = super().get_config()
        config.update(vocabulary=list(self.vocabulary))
        return config


def generation_step(model: CharTextModel):
    """The model's one-character step, with the unknown-character id never chosen."""
    step = step_function(model.language_model)

    def step_fn(token_ids, states):
        logits, states = step(token_ids, states)
        never_unknown = tf.one_hot(0, tf.shape(logits)[-1], on_value=_NEVER, off_value=0.0, dtype=logits.dtype)
        return logits + never_unknown, states

    return step_fn


def generate_text(model: CharTextModel, prompt, length, temperature, seed, top_k=0) -> tf.Tensor:
    """Graph-friendly: one prompt string (scalar) -> the ``length`` characters that follow it."""
    prompt_ids = model.encode(prompt)[None, :]
    tokens = generate_tokens(
        generation_step(model),
        initial_states(model.language_model, 1),
        prompt_ids,
        tf.maximum(tf.cast(length, tf.int32), 0),
        temperature=temperature,
        top_k=top_k,
        seed=seed,
        start_id=model.start_id,
    )
    return model.decode(tokens)[0]


def make_sampler(model: CharTextModel):
    """A compiled ``sampler(prompt, length, temperature, seed) -> str`` for callbacks and evaluation."""

    @tf.function(
        input_signature=[
            tf.TensorSpec([], tf.string),
            tf.TensorSpec([], tf.int32),
            tf.TensorSpec([], tf.float32),
            tf.TensorSpec([], tf.int32),
        ]
    )
    def sample(prompt, length, temperature, seed):
        return generate_text(model, prompt, length, temperature, seed)

    def sampler(prompt: str, length: int, temperature: float, seed: int) -> str:
        return sample(tf.constant(prompt), tf.constant(length, tf.int32), tf.constant(temperature, tf.float32),
                      tf.constant(seed, tf.int32)).numpy().decode("utf-8")

    return sampler


class PrintSample(keras.callbacks.Callback):
    """Prints ``length`` sampled characters after each epoch (silent when ``fit(verbose=0)``).

    Example:

    >>> callback = PrintSample("ROMEO:", length=200, temperature=0.8, seed=1)
    >>> # model.fit(stream, epochs=3, callbacks=[callback])
    """

    def __init__(self, prompt: str, length: int, temperature: float, seed: int):
        super().__init__()
        self.prompt, self.length, self.temperature, self.seed = prompt, int(length), float(temperature), int(seed)
        self._sampler = None

    def on_epoch_end(self, epoch, logs=None):
        if self.length <= 0 or not self.params.get("verbose", 1):
            return
        if self._sampler is None:
            self._sampler = make_sampler(self.model)
        text = self._sampler(self.prompt, self.length, self.temperature, self.seed + epoch)
        print(f"\n--- sample after epoch {epoch + 1} (temperature {self.temperature}) ---\n{self.prompt}{text}\n---",
              flush=True)
