"""Start a sentiment model from a trained sequence autoencoder (Dai & Le 2015's SA-LSTM).

``rnnapps run sentiment --set init_from=PATH`` calls
:func:`init_sentiment_from_autoencoder` after building the sentiment model:

* the **embedding** rows are copied token by token (the two vocabularies are
  remapped through their token strings, so they need not be identical; the
  share of sentiment tokens found is reported as the coverage);
* the **encoder** ``RecurrentStack`` weights are copied when both encoders have
  the same cell, units, depth, direction and input width (the embedding
  width); otherwise a :class:`~rnnapps.errors.ConfigError` names what differs.

Everything is checked before anything is written: a refused transfer leaves
the sentiment model as it was. Other layers (the classifier) keep their fresh
initialisation.

``PATH`` is an autoencoder run directory (its ``model.keras``), a ``.keras``
file, or an export (a SavedModel version directory from ``rnnapps export
autoencoder``, whose ``vocabulary`` signature lists the tokens).
"""

from __future__ import annotations

import dataclasses
import re
import warnings
from pathlib import Path

import keras
import numpy as np

from rnnapps.errors import ConfigError
from rnnapps.models.autoencoder import Seq2SeqAutoencoder

MODEL_FILE = "model.keras"
# Below this share of known sentiment tokens, the transfer works but warns.
LOW_COVERAGE = 0.5
_LAYER_NAME = re.compile(r"(bidirectional_)?(lstm|gru|simple_rnn)_(\d+)")


@dataclasses.dataclass
class AutoencoderWeights:
    """What a transfer reads from an autoencoder: its vocabulary, embedding and encoder weights.

    ``encoder`` maps each weight's path inside the encoder (such as
    ``bidirectional_lstm_0/forward_lstm_0/lstm_cell/kernel``) to its value.
    """

    vocabulary: list[str]
    embedding: np.ndarray
    encoder: dict[str, np.ndarray]
    source: str


@dataclasses.dataclass
class TransferReport:
    """What a transfer copied."""

    source: str
    embedding_rows_copied: int
    vocabulary_size: int
    coverage: float
    encoder_weights_copied: int

    def summary(self) -> str:
        return (
            f"initialised from the autoencoder {self.source}: {self.embedding_rows_copied} of "
            f"{self.vocabulary_size - 1} embedding rows ({self.coverage:.1%} of the sentiment vocabulary), "
            f"{self.encoder_weights_copied} encoder weight arrays"
        )


def _relative_to_encoder(path: str) -> str:
    parts = path.split("/")
    if "encoder" not in parts:
        raise ConfigError(f"weight {path!r} is not inside a layer named 'encoder'")
    return "/".join(parts[parts.index("encoder") + 1 :])


def _load_keras_autoencoder(path: Path) -> AutoencoderWeights:
    model = keras.saving.load_model(path, compile=False)
    if not isinstance(model, Seq2SeqAutoencoder):
        raise ConfigError(f"{str(path)!r} holds a {type(model).__name__}, not a Seq2SeqAutoencoder")
    return AutoencoderWeights(
        vocabulary=list(model.vocabulary),
        embedding=keras.ops.convert_to_numpy(model.embedding.embeddings),
        encoder={_relative_to_encoder(w.path): keras.ops.convert_to_numpy(w) for w in model.encoder.weights},
        source=str(path),
    )


def _load_exported_autoencoder(path: Path) -> AutoencoderWeights:
    from rnnapps.export import load_export

    loaded = load_export(path)
    if "vocabulary" not in loaded.signatures:
        raise ConfigError(
            f"{str(path)!r} is not an autoencoder export: it has no 'vocabulary' signature "
            f"(signatures: {', '.join(loaded.signatures)})"
        )
    vocabulary = [token.decode("utf-8") for token in loaded.signatures["vocabulary"]()["tokens"].numpy()]
    # Exported variables keep their Keras paths as names ("encoder/.../kernel:0").
    variables = {variable.name.rsplit(":", 1)[0]: variable.numpy() for variable in loaded.variables}
    encoder = {
        _relative_to_encoder(name): value for name, value in variables.items() if name.split("/")[0] == "encoder"
    }
    if "embedding/embeddings" not in variables or not encoder:
        raise ConfigError(f"{str(path)!r} has no 'embedding' and 'encoder' weights: not an autoencoder export")
    return AutoencoderWeights(vocabulary, variables["embedding/embeddings"], encoder, str(path))


def read_autoencoder(source: str | Path) -> AutoencoderWeights:
    """The vocabulary, embedding and encoder weights of an autoencoder run, ``.keras`` file or export."""
    path = Path(source).expanduser()
    if path.is_file() and path.suffix == ".keras":
        return _load_keras_autoencoder(path)
    if path.is_dir() and (path / MODEL_FILE).exists():
        return _load_keras_autoencoder(path / MODEL_FILE)
    if path.is_dir() and (path / "saved_model.pb").exists():
        return _load_exported_autoencoder(path)
    if path.is_dir() and (path / "config.json").exists():
        raise ConfigError(f"{str(path)!r} has no {MODEL_FILE}: the autoencoder run did not finish")
    raise ConfigError(
        f"init_from={str(source)!r} is neither an autoencoder run directory (with {MODEL_FILE}), "
        "a .keras file, nor an export (a SavedModel directory with saved_model.pb)"
    )


def describe_encoder(shapes: dict[str, tuple]) -> dict:
    """Cell, units, depth, direction and input width of a ``RecurrentStack`` from its weights' paths and shapes."""
    layers = {}
    for path in shapes:
        match = _LAYER_NAME.fullmatch(path.split("/")[0])
        if match is None:
            raise ConfigError(f"unexpected encoder weight {path!r}: not a RecurrentStack's")
        layers[int(match.group(3))] = match
    first = layers[min(layers)]
    prefix = first.group(0) + "/"
    kernel = next(shape for path, shape in shapes.items() if path.startswith(prefix) and path.endswith("/kernel"))
    recurrent = next(
        shape for path, shape in shapes.items() if path.startswith(prefix) and path.endswith("/recurrent_kernel")
    )
    return {
        "cell": first.group(2),
        "units": int(recurrent[0]),
        "depth": len(layers),
        "bidirectional": first.group(1) is not None,
        "embedding_dim": int(kernel[0]),
    }


def _sentiment_parts(model):
    try:
        return model.get_layer("vectorizer"), model.get_layer("embedding"), model.get_layer("encoder")
    except ValueError as error:
        raise ConfigError(
            f"the model {model.name!r} lacks a layer a transfer needs ('vectorizer', 'embedding', 'encoder'): {error}"
        ) from None


def init_sentiment_from_autoencoder(sentiment_model: keras.Model, source: str | Path) -> TransferReport:
    """Copy an autoencoder's embedding rows (by token) and encoder weights into ``sentiment_model``.

    Args:
        sentiment_model: a built sentiment model, with layers named
            ``vectorizer`` (``TextVectorization``), ``embedding`` and
            ``encoder`` (``RecurrentStack``), as ``rnnapps.pipelines.sentiment``
            builds it.
        source: an autoencoder run directory, ``.keras`` file or export.

    Returns:
        A :class:`TransferReport` (also printed as one line).

    Raises:
        ConfigError: the source is not an autoencoder; the encoders differ
            (the message lists each difference); or the vocabularies share no
            word. Nothing is copied then.
    """
    weights = read_autoencoder(source)
    vectorizer, embedding, encoder = _sentiment_parts(sentiment_model)
    targets = {_relative_to_encoder(variable.path): variable for variable in encoder.weights}
    source_shapes = {path: tuple(value.shape) for path, value in weights.encoder.items()}
    target_shapes = {path: tuple(variable.shape) for path, variable in targets.items()}
    ours, theirs = describe_encoder(source_shapes), describe_encoder(target_shapes)
    ours["embedding_dim"] = int(weights.embedding.shape[1])
    theirs["embedding_dim"] = int(embedding.embeddings.shape[1])
    differences = [f"{key} ({ours[key]!r} in the autoencoder, {theirs[key]!r} in sentiment)"
                   for key in ours if ours[key] != theirs[key]]
    if differences:
        raise ConfigError(
            f"cannot initialise sentiment from {weights.source!r}: the encoders differ in " + ", ".join(differences)
            + "; train the autoencoder with the sentiment model's settings (--set key=value; "
            "sentiment with GloVe vectors has their width, or use --set embeddings=none)"
        )
    if source_shapes != target_shapes:
        raise ConfigError(
            f"cannot initialise sentiment from {weights.source!r}: encoder weights differ "
            f"({sorted(set(source_shapes.items()) ^ set(target_shapes.items()))})"
        )

    vocabulary = vectorizer.get_vocabulary()
    index = {token: row for row, token in enumerate(weights.vocabulary) if row > 0}
    table = keras.ops.convert_to_numpy(embedding.embeddings).copy()
    copied = 0
    words = 0
    # Row 0 is padding (masked); [UNK] is copied like any token.
    for row, token in enumerate(vocabulary[1:], start=1):
        if token in index:
            table[row] = weights.embedding[index[token]]
            copied += 1
            words += token != "[UNK]"
    if words == 0:
        raise ConfigError(
            f"cannot initialise sentiment from {weights.source!r}: the vocabularies share no word "
            f"(autoencoder: {len(weights.vocabulary)} tokens, sentiment: {len(vocabulary)})"
        )
    coverage = copied / max(len(vocabulary) - 1, 1)
    if coverage < LOW_COVERAGE:
        warnings.warn(
            f"only {coverage:.1%} of the sentiment vocabulary is in the autoencoder's: the other embedding "
            "rows keep their fresh initialisation; pretrain on the same texts for more",
            stacklevel=2,
        )
    embedding.embeddings.assign(table.astype(embedding.embeddings.dtype))
    for path, variable in targets.items():
        variable.assign(weights.encoder[path])
    report = TransferReport(weights.source, copied, len(vocabulary), coverage, len(targets))
    print(f"rnnapps: {report.summary()}")
    return report
