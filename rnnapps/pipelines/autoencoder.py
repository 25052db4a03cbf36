"""Sequence autoencoder: text → one vector → the same text; its encoder pre-trains sentiment.

What it does, in five bullets (docs/autoencoder.md has the details):

* reads one text per example (IMDB reviews, Multi30k's English side with
  ``--set dataset=multi30k``, or any file with ``--set corpus=PATH``) and builds
  the vocabulary on train only, plus ``<s>`` and ``</s>``;
* reads the tokens with a (bi)LSTM/GRU ``RecurrentStack`` named ``encoder``, like
  the sentiment model's, whose final states become the code (``code_size`` numbers);
* a GRU/LSTM decoder starts from the code and predicts ``w1..wn </s>`` from
  ``<s> w1..wn`` (teacher forcing, optional word dropout), trained with ``fit(X)``;
* reports greedy reconstruction token accuracy and exact match on held-out text,
  sample reconstructions and, for IMDB, a 2-D PCA picture of the review codes;
* exports ``serving_default``/``encode``, ``reconstruct`` and ``vocabulary``; then
  ``rnnapps run sentiment --set init_from=<this run or export>`` starts the
  sentiment model from this embedding and encoder (``rnnapps.transfer``).

References: Dai & Le 2015, "Semi-supervised Sequence Learning" (sequence
autoencoder pretraining, SA-LSTM); Bowman et al. 2016 (word dropout).
"""

from __future__ import annotations

import dataclasses
import json
import warnings
from pathlib import Path
from typing import ClassVar

import click
import keras
import numpy as np
import tensorflow as tf

from rnnapps import training
from rnnapps.config import TrainingConfig
from rnnapps.data.text import build_vocabulary, token_id_dataset
from rnnapps.data.text_examples import DATASETS, load_text_examples
from rnnapps.errors import ConfigError
from rnnapps.export import Endpoint
from rnnapps.models.autoencoder import (
    POOLING_TYPES,
    Seq2SeqAutoencoder,
    encode_texts,
    reconstruction_metrics,
)
from rnnapps.models.recurrent import CELL_TYPES
from rnnapps.models.seq2seq import with_markers
from rnnapps.pipelines.base import (
    DataInfo,
    Datasets,
    Pipeline,
    evaluation_subset,
    export_limits,
    export_options,
    read_texts,
    served_model,
    text_requests,
)
from rnnapps.request_limits import text_request
from rnnapps.text_ops import detokenize

LABELS = ("negative", "positive")


@dataclasses.dataclass
class AutoencoderConfig(TrainingConfig):
    # "imdb" (reviews, labels ignored) or "multi30k" (English captions); see ``corpus``.
    dataset: str = "imdb"
    # A UTF-8 text file or folder of *.txt, one example a line; overrides ``dataset`` when set.
    corpus: str | None = None
    # Words as in the sentiment pipeline (padding and [UNK] included); <s> and </s> come on top.
    vocab_size: int = 20000
    # Tokens read per text (the head); decoding emits at most max_length + 1 (</s> included).
    max_length: int = 40
    # Encoder: keep embedding_dim, cell, units, depth and bidirectional equal to the sentiment
    # model's so that its weights transfer (defaults: the sentiment pipeline's).
    embedding_dim: int = 128
    cell: str = "lstm"
    units: int = 64
    depth: int = 1
    bidirectional: bool = True
    code_size: int = 256
    # Decoder cell (None: the encoder's) and width.
    decoder_cell: str | None = None
    decoder_units: int = 256
    # Concatenate the code to the decoder's input at every step, not only its initial state.
    code_at_every_step: bool = False
    # The code also reads the encoder's outputs pooled over the text: "none", "max" or "mean".
    pooling: str = "none"
    # Logits from the embedding matrix itself (read and write a word with one vector), not a projection.
    tie_embeddings: bool = False
    embedding_dropout: float = 0.1
    dropout: float = 0.2
    # Probability of replacing a decoder input token by [UNK] while training.
    word_dropout: float = 0.2
    # Share of the texts held out for validation (IMDB: out of train, as sentiment does; a
    # corpus: validation and test each).
    validation_fraction: float = 0.1
    bucket_width: int = 8
    # Held-out texts whose greedy reconstruction is scored (None: all).
    eval_examples: int | None = None
    # Hypotheses of a beam search for the export's reconstruct and extra test_beam_* metrics (1: greedy only).
    beam_width: int = 1
    # IMDB test reviews in the PCA picture.
    plot_examples: int = 2000
    # Serving: reconstruct decodes up to max_length steps (times beam_width) for every text of a request.
    max_request_batch: int = 256
    max_text_bytes: int = 100_000

    PRESETS: ClassVar[dict] = {
        "smoke": dict(epochs=3, batch_size=8, learning_rate=0.01, vocab_size=200, max_length=16, embedding_dim=8,
                      units=8, code_size=16, decoder_units=16, embedding_dropout=0.0, dropout=0.0, word_dropout=0.0,
                      bucket_width=4, plot_examples=32, early_stopping_patience=0, max_train_examples=800,
                      max_eval_examples=200),
        # The encoder matches the sentiment cpu preset run with --set embeddings=none (96 units since
        # issue 20); the 20k-way softmax dominates the cost, hence 40 tokens, a time budget and 5,000
        # scored test reviews. Pretraining with it lifted that sentiment run by 0.5-1.1 points, measured
        # with the 64-unit encoders of both presets before (docs/autoencoder.md).
        "cpu": dict(epochs=3, batch_size=64, learning_rate=2e-3, max_length=40, units=96, code_size=256,
                    decoder_units=256, eval_examples=5000, time_budget_minutes=25.0),
        "full": dict(epochs=10, batch_size=128, learning_rate=1e-3, vocab_size=40000, max_length=200, embedding_dim=300,
                     units=256, depth=2, code_size=1024, decoder_units=1024, early_stopping_patience=3),
    }

    def validate(self) -> None:
        super().validate()
        if self.corpus is None and self.dataset not in DATASETS:
            raise ConfigError(f"dataset={self.dataset!r} is not one of {', '.join(DATASETS)} (or set corpus=PATH)")
        self.check_choices(cell=CELL_TYPES, pooling=POOLING_TYPES)
        if self.decoder_cell is not None:
            self.check_choices(decoder_cell=CELL_TYPES)
        self.check_at_least(1, "vocab_size", "max_length", "embedding_dim", "units", "depth", "code_size",
                            "decoder_units", "bucket_width", "plot_examples", "beam_width")
        self.check_rates("embedding_dropout", "dropout", "word_dropout")
        if not 0.0 < self.validation_fraction < 0.5:
            raise ConfigError(f"validation_fraction={self.validation_fraction!r} must be in (0, 0.5)")


# --- data ------------------------------------------------------------------------------------

def load_texts(config: AutoencoderConfig, data_dir: Path | None) -> dict:
    """The chosen source's splits (:func:`rnnapps.data.text_examples.load_text_examples`), evaluation caps applied."""
    texts = load_text_examples(data_dir, config.dataset, config.corpus, config.validation_fraction, config.seed,
                               config.max_train_examples)
    limit = config.max_eval_examples
    labels = texts["test_labels"]
    return {**texts, "validation": evaluation_subset(texts["validation"], limit),
            "test": evaluation_subset(texts["test"], limit),
            "test_labels": None if labels is None else evaluation_subset(labels, limit)}


# --- the pipeline ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class AutoencoderData(DataInfo):
    """What ``load_data`` hands on: the vocabulary with markers, and the raw test texts (and labels, for IMDB)."""

    vocabulary: list[str]
    test_texts: list[str]
    test_labels: np.ndarray | None = None


class AutoencoderPipeline(Pipeline):
    name = "autoencoder"
    config_class = AutoencoderConfig
    monitor = "val_token_accuracy"
    monitor_mode = "max"
    request_limit_fields = ("max_request_batch", "max_text_bytes")

    def load_data(self, config: AutoencoderConfig, data_dir: Path | None) -> Datasets:
        texts = load_texts(config, data_dir)
        vocabulary = with_markers(build_vocabulary(texts["train"], config.vocab_size))
        make = lambda split, shuffle: token_id_dataset(  # noqa: E731
            texts[split], vocabulary, config.batch_size, config.max_length, config.bucket_width, shuffle, config.seed
        )
        return Datasets(
            train=make("train", True),
            validation=make("validation", False),
            test=make("test", False),
            info=AutoencoderData(
                sizes={split: len(texts[split]) for split in ("train", "validation", "test")},
                vocabulary=vocabulary,
                test_texts=texts["test"],
                test_labels=texts["test_labels"],
            ),
        )

    def build_model(self, config: AutoencoderConfig, datasets: Datasets) -> keras.Model:
        model = Seq2SeqAutoencoder(
            datasets.info.vocabulary,
            embedding_dim=config.embedding_dim,
            cell=config.cell,
            units=config.units,
            depth=config.depth,
            bidirectional=config.bidirectional,
            code_size=config.code_size,
            decoder_cell=config.decoder_cell,
            decoder_units=config.decoder_units,
            code_at_every_step=config.code_at_every_step,
            pooling=config.pooling,
            tie_embeddings=config.tie_embeddings,
            embedding_dropout=config.embedding_dropout,
            dropout=config.dropout,
            word_dropout=config.word_dropout,
            max_length=config.max_length,
            seed=config.seed,
            name="autoencoder",
        )
        # No XLA: Keras refuses jit_compile for a model holding a TextVectorization (string ops).
        model.compile(optimizer=training.make_optimizer(config), jit_compile=False)
        return model

    def evaluate(self, model: Seq2SeqAutoencoder, datasets: Datasets, config: AutoencoderConfig, run_dir: Path) -> dict:
        from rnnapps import plots

        texts = datasets.info.test_texts
        scored = texts[: config.eval_examples] if config.eval_examples else texts
        greedy = reconstruction_metrics(model, scored)
        with warnings.catch_warnings():
            # A bucketed dataset has unknown length until its first pass: Keras' warning only confuses.
            warnings.filterwarnings("ignore", message=".*ran out of data.*")
            teacher_forced = model.evaluate(datasets.test, return_dict=True, verbose=0)
        (run_dir / "test_reconstructions.jsonl").write_text(
            "".join(json.dumps(sample, ensure_ascii=False) + "\n" for sample in greedy["samples"])
        )
        metrics = {
            "test_token_accuracy": greedy["token_accuracy"],
            "test_exact_match": greedy["exact_match"],
            "test_examples": greedy["examples"],
            "test_tokens": greedy["tokens"],
            "test_unknown_share": greedy["unknown_share"],
            "test_teacher_forced_token_accuracy": float(teacher_forced["token_accuracy"]),
            "test_loss": float(teacher_forced["loss"]),
        }
        if config.beam_width > 1:
            beam = reconstruction_metrics(model, scored, beam_width=config.beam_width)
            metrics.update(test_beam_token_accuracy=beam["token_accuracy"], test_beam_exact_match=beam["exact_match"])
        labels = datasets.info.test_labels
        if labels is not None:
            order = np.random.default_rng(config.seed).permutation(len(texts))[: config.plot_examples]
            codes = encode_texts(model, [texts[index] for index in order])
            path, share = plots.embedding_pca(
                codes, np.asarray(labels)[order], LABELS, run_dir / "embedding_pca.png",
                title=f"IMDB test review codes ({len(order)}), 2-D PCA",
            )
            metrics["embedding_plot"] = str(path)
            metrics["pca_variance_share"] = share
        return metrics

    def serving(self, model: Seq2SeqAutoencoder, config) -> dict[str, Endpoint]:
        text_spec = [tf.TensorSpec([None], tf.string, name="text")]

        def encode(text):
            return {"embedding": model.encode_text(text_request(text, config))}

        def reconstruct(text):
            reconstructed = model.reconstruct_text(text_request(text, config), beam_width=config.beam_width)
            return {"text": detokenize(reconstructed["text"])}

        def vocabulary():
            # What rnnapps.transfer needs to remap an export's embedding rows by token.
            return {"tokens": tf.constant(model.vocabulary)}

        return {
            "serving_default": Endpoint(encode, text_spec),
            "encode": Endpoint(encode, text_spec),
            "reconstruct": Endpoint(reconstruct, text_spec),
            "vocabulary": Endpoint(vocabulary, []),
        }


@click.command("autoencoder")
@click.argument("texts", nargs=-1)
@click.option("--show-embedding", is_flag=True, help="Also print the embedding itself, as a JSON list.")
@export_options
def predict_command(texts, show_embedding, model_path, export_dir):
    """Encode TEXTS (or lines from stdin) and decode them back: prints the embedding's norm and the reconstruction.

    \b
    Output, one line per text: NORM<TAB>RECONSTRUCTION[<TAB>EMBEDDING]
    Examples:
      rnnapps predict autoencoder "A wonderful, moving film."
      rnnapps predict autoencoder --show-embedding --model saved_models/autoencoder/2 "Two dogs play in the snow."
    """
    texts = read_texts(texts)
    loaded, path = served_model("autoencoder", model_path, export_dir)
    for batch in text_requests(texts, export_limits(path, AutoencoderConfig)):
        batch = tf.constant(batch, tf.string)
        embeddings = loaded.signatures["encode"](text=batch)["embedding"].numpy()
        reconstructions = loaded.signatures["reconstruct"](text=batch)["text"].numpy()
        for embedding, reconstruction in zip(embeddings, reconstructions, strict=True):
            line = f"{float(np.linalg.norm(embedding)):.4f}\t{reconstruction.decode('utf-8')}"
            if show_embedding:
                line += "\t" + json.dumps([round(float(value), 6) for value in embedding])
            click.echo(line)


PIPELINE = AutoencoderPipeline()
PIPELINE.predict_command = predict_command
