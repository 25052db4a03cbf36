"""Neural machine translation: attention encoder–decoder, beam search, corpus BLEU.

What it does, in five bullets (docs/translate.md has the details):

* reads sentence pairs (Multi30k task 1 German→English, or Anki Spanish→English
  with ``--set dataset=anki``) and builds both vocabularies on train only, the
  target's with ``<s>`` and ``</s>``;
* vectorises in ``tf.data`` (the model keeps its own source vectoriser, so the
  export takes raw strings), drops over-long training pairs and buckets by length;
* reads the source with a bidirectional GRU/LSTM stack; an attention decoder
  (Bahdanau or Luong scores, input feeding) predicts each target token from the
  previous gold one (teacher forcing, label smoothing, clipnorm);
* translates with greedy or beam search (GNMT length penalty) as graph loops, so
  evaluation and the SavedModel run the same code;
* reports corpus BLEU with ``sacrebleu`` on the test split for greedy and beam
  decoding, writes attention heat maps, and exports ``serving_default(text) ->
  {translation}``, ``translate_with_attention``, ``translate_greedy`` and
  ``translate_n_best``.

References: Bahdanau, Cho & Bengio 2015; Luong, Pham & Manning 2015 (input
feeding); Wu et al. 2016, GNMT (length penalty); Szegedy et al. 2016 (label
smoothing); Elliott et al. 2016, "Multi30K"; Papineni et al. 2002 (BLEU) and
Post 2018 (sacrebleu).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import ClassVar

import click
import keras
import tensorflow as tf

from rnnapps import training
from rnnapps.config import TrainingConfig
from rnnapps.data.parallel_text import DATASETS, load_parallel_corpus
from rnnapps.data.text import build_vocabulary, pair_id_dataset
from rnnapps.errors import ConfigError
from rnnapps.export import Endpoint, load_export, read_metadata
from rnnapps.metrics import BLEU_SETTINGS, corpus_bleu
from rnnapps.models.attention_decoder import ATTENTION_TYPES, DECODER_CELL_TYPES
from rnnapps.models.seq2seq import teacher_forcing_pairs, with_markers
from rnnapps.models.translator import Translator, translate_texts
from rnnapps.pipelines.base import (
    DataInfo,
    Datasets,
    Pipeline,
    evaluation_subset,
    export_limits,
    export_options,
    export_path,
    read_texts,
    run_keras_model,
    text_requests,
)
from rnnapps.request_limits import text_request
from rnnapps.text_ops import make_vectorizer

# Test sentences whose attention is plotted.
PLOTTED_SENTENCES = 3


@dataclasses.dataclass
class TranslateConfig(TrainingConfig):
    dataset: str = "multi30k"
    # Languages (None: the dataset's default direction, into English).
    source: str | None = None
    target: str | None = None
    # Vocabulary sizes, padding and [UNK] included (the target's also holds <s> and </s>).
    source_vocab_size: int = 10000
    target_vocab_size: int = 8000
    # Training pairs with more tokens are dropped; longer sources are cut at translation time.
    max_source_length: int = 40
    max_target_length: int = 40
    embedding_dim: int = 256
    cell: str = "gru"
    units: int = 256
    encoder_depth: int = 1
    attention: str = "bahdanau"
    dropout: float = 0.3
    label_smoothing: float = 0.1
    beam_width: int = 5
    length_penalty: float = 0.6
    max_decode_length: int = 50
    bucket_width: int = 4
    # Serving: a request decodes up to max_decode_length steps for each of beam_width hypotheses of every text.
    max_request_batch: int = 256
    max_text_bytes: int = 20_000

    PRESETS: ClassVar[dict] = {
        "smoke": dict(epochs=3, batch_size=4, learning_rate=0.01, source_vocab_size=200, target_vocab_size=200,
                      embedding_dim=8, units=8, dropout=0.0, label_smoothing=0.1, beam_width=2,
                      max_decode_length=12, early_stopping_patience=0, max_train_examples=800,
                      max_eval_examples=200),
        # Epochs are slices of 200 steps (~0.45 of Multi30k) so the learning rate decays and the best
        # weights are kept at a finer grain than whole passes; the wall-clock budget (TrainingConfig's
        # time_budget_minutes, kept by the runner) ends training.
        "cpu": dict(epochs=60, steps_per_epoch=200, batch_size=64, learning_rate=2e-3, clipnorm=1.0,
                    embedding_dim=256, units=256, dropout=0.3, label_smoothing=0.1, early_stopping_patience=4,
                    lr_decay_patience=1, time_budget_minutes=55.0),
        "full": dict(epochs=30, batch_size=128, learning_rate=1e-3, clipnorm=1.0, embedding_dim=512, units=512,
                     cell="lstm", encoder_depth=2, dropout=0.3, label_smoothing=0.1, early_stopping_patience=5,
                     lr_decay_patience=1),
    }

    def validate(self) -> None:
        super().validate()
        self.check_choices(dataset=DATASETS, cell=DECODER_CELL_TYPES, attention=ATTENTION_TYPES)
        self.check_at_least(1, "source_vocab_size", "target_vocab_size", "max_source_length", "max_target_length",
                            "embedding_dim", "units", "encoder_depth", "beam_width", "max_decode_length",
                            "bucket_width")
        self.check_rates("label_smoothing")
        if self.length_penalty < 0:
            raise ConfigError(f"length_penalty={self.length_penalty!r} must be >= 0")


# --- text ↔ ids ------------------------------------------------------------------------------

def target_vocabulary(texts, max_tokens: int) -> list[str]:
    """Padding, ``[UNK]``, ``<s>``, ``</s>``, then the most frequent target tokens (``max_tokens`` in all).

    The markers cannot collide with a real token: the standardiser splits
    ``<`` and ``/`` off words.
    """
    return with_markers(build_vocabulary(texts, max(max_tokens - 2, 2)))


def pair_dataset(pairs, source_vectorizer, target_vectorizer, config: TranslateConfig, training: bool) -> tf.data.Dataset:
    """``({"source", "target"}, labels)`` batches of similar length (:func:`rnnapps.data.text.pair_id_dataset`)."""
    dataset = pair_id_dataset(pairs, source_vectorizer, target_vectorizer, config.batch_size, config.max_source_length,
                              config.max_target_length, config.bucket_width, training, config.seed)

    def teacher_forcing(source_ids, target_ids):
        decoder_input, labels = teacher_forcing_pairs(target_ids, config.max_target_length)
        return {"source": source_ids, "target": decoder_input}, labels

    return dataset.map(teacher_forcing, tf.data.AUTOTUNE).prefetch(tf.data.AUTOTUNE)


# --- the pipeline ----------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class TranslateData(DataInfo):
    """What ``load_data`` hands on: both vocabularies and the raw test pairs that BLEU scores."""

    source_vocabulary: list[str]
    target_vocabulary: list[str]
    test_pairs: list[tuple[str, str]]


class TranslatePipeline(Pipeline):
    name = "translate"
    config_class = TranslateConfig
    monitor = "val_loss"
    monitor_mode = "min"
    request_limit_fields = ("max_request_batch", "max_text_bytes")

    def load_data(self, config: TranslateConfig, data_dir: Path | None) -> Datasets:
        corpus = load_parallel_corpus(config.dataset, config.source, config.target, data_dir, seed=config.seed)
        train = corpus["train"][: config.max_train_examples] if config.max_train_examples else corpus["train"]
        corpus = {**corpus, **{split: evaluation_subset(corpus[split], config.max_eval_examples)
                               for split in ("validation", "test")}}
        source_vocabulary = build_vocabulary([source for source, _ in train], config.source_vocab_size)
        target_tokens = target_vocabulary([target for _, target in train], config.target_vocab_size)
        source_vectorizer = make_vectorizer(source_vocabulary, name="source_vectorizer")
        target_vectorizer = make_vectorizer(target_tokens, name="target_vectorizer")
        make = lambda pairs, training: pair_dataset(  # noqa: E731
            pairs, source_vectorizer, target_vectorizer, config, training
        )
        return Datasets(
            train=make(train, True),
            validation=make(corpus["validation"], False),
            test=make(corpus["test"], False),
            info=TranslateData(
                sizes={"train": len(train), "validation": len(corpus["validation"]), "test": len(corpus["test"])},
                source_vocabulary=source_vocabulary,
                target_vocabulary=target_tokens,
                test_pairs=corpus["test"],
            ),
        )

    def build_model(self, config: TranslateConfig, datasets: Datasets) -> keras.Model:
        model = Translator(
            datasets.info.source_vocabulary,
            datasets.info.target_vocabulary,
            embedding_dim=config.embedding_dim,
            cell=config.cell,
            units=config.units,
            encoder_depth=config.encoder_depth,
            attention=config.attention,
            dropout=config.dropout,
            label_smoothing=config.label_smoothing,
            max_source_length=config.max_source_length,
            max_decode_length=config.max_decode_length,
            beam_width=config.beam_width,
            length_penalty=config.length_penalty,
            seed=config.seed,
            name="translator",
        )
        # No XLA: Keras refuses jit_compile for a model holding a TextVectorization (string ops).
        model.compile(optimizer=training.make_optimizer(config), jit_compile=False)
        return model

    def evaluate(self, model: Translator, datasets: Datasets, config: TranslateConfig, run_dir: Path) -> dict:
        from rnnapps import plots

        pairs = datasets.info.test_pairs
        sources = [source for source, _ in pairs]
        references = [target for _, target in pairs]
        metrics = {"test_examples": len(pairs), "bleu_settings": dict(BLEU_SETTINGS)}
        samples = {}
        for name, width in (("greedy", 1), ("beam", config.beam_width)):
            hypotheses = translate_texts(model, sources, width)
            scores = corpus_bleu(hypotheses, references)
            metrics[f"test_bleu_{name}"] = scores["bleu"]
            metrics["bleu_signature"] = scores["signature"]
            samples[name] = hypotheses
        metrics["beam_width"] = config.beam_width
        (run_dir / "test_translations.jsonl").write_text("".join(
            json.dumps({"source": s, "reference": r, "greedy": g, "beam": b}, ensure_ascii=False) + "\n"
            for s, r, g, b in zip(sources, references, samples["greedy"], samples["beam"], strict=True)
        ))
        plotted = sources[:PLOTTED_SENTENCES]
        outputs = {key: value.numpy() for key, value in model.translate(tf.constant(plotted)).items()}
        metrics["attention_plots"] = [
            str(plots.attention_map(outputs, index, run_dir / f"attention_{index}.png", title=plotted[index][:60]))
            for index in range(len(plotted))
        ]
        return metrics

    def serving(self, model: Translator, config) -> dict[str, Endpoint]:
        text_spec = [tf.TensorSpec([None], tf.string, name="text")]

        def translate(text):
            return {"translation": model.translate(text_request(text, config))["translation"]}

        def attended(beam_width=None):
            def translate_and_show(text):
                outputs = model.translate(text_request(text, config), beam_width=beam_width)
                return {key: outputs[key] for key in ("translation", "attention", "source_tokens", "target_tokens")}
            return translate_and_show

        def translate_n_best(text):
            return model.translate_n_best(text_request(text, config))

        return {
            "serving_default": Endpoint(translate, text_spec),
            "translate_with_attention": Endpoint(attended(), text_spec),
            "translate_greedy": Endpoint(attended(beam_width=1), text_spec),
            "translate_n_best": Endpoint(translate_n_best, text_spec),
        }


@click.command("translate")
@click.argument("texts", nargs=-1)
@click.option("--plot", "plot_path", type=click.Path(dir_okay=False),
              help="Save the attention heat map of the first text as this PNG.")
@click.option("--beam-width", type=click.IntRange(min=1),
              help="Beam width (default: the export's; 1 is greedy search).")
@click.option("--n-best", type=click.IntRange(min=1),
              help="Print the N best translations of each text with their scores (N <= the export's beam width).")
@export_options
def predict_command(texts, plot_path, beam_width, n_best, model_path, export_dir):
    """Translate TEXTS (or lines from stdin), one translation a line.

    \b
    Examples:
      rnnapps predict translate "Ein Mann fährt Fahrrad."
      rnnapps predict translate --plot attention.png --beam-width 1 "Zwei Hunde spielen im Schnee."
      rnnapps predict translate --n-best 5 "Ein Mann fährt Fahrrad."
    """
    texts = read_texts(texts)
    model_path = export_path("translate", model_path, export_dir)
    exported_width = read_metadata(model_path).get("config", {}).get("beam_width")
    if n_best is not None:
        _print_n_best(texts, n_best, beam_width, exported_width, model_path)
        return
    if beam_width is not None and beam_width not in (1, exported_width):
        model = run_keras_model(model_path, "--beam-width", "omit --beam-width to use the exported beam width")

        def translate_batch(batch):
            return model.translate(batch, beam_width=beam_width)
    else:
        loaded = load_export(model_path)
        signature = "translate_greedy" if beam_width == 1 and exported_width != 1 else "translate_with_attention"

        def translate_batch(batch):
            return loaded.signatures[signature](text=batch)
    for index, batch in enumerate(text_requests(texts, export_limits(model_path, TranslateConfig))):
        outputs = {key: value.numpy() for key, value in translate_batch(tf.constant(batch, tf.string)).items()}
        for translation in outputs["translation"]:
            click.echo(translation.decode("utf-8"))
        if plot_path and index == 0:
            from rnnapps import plots

            plots.attention_map(outputs, 0, plot_path, title=texts[0][:60])
            click.echo(f"attention plot: {plot_path}", err=True)


def _print_n_best(texts, n_best: int, beam_width, exported_width, model_path: Path) -> None:
    """Each text's ``n_best`` translations from the export's beam, best first: ``rank<TAB>score<TAB>translation``."""
    if beam_width not in (None, exported_width):
        raise click.UsageError(f"--n-best reads the export's beam of {exported_width}; drop --beam-width {beam_width}")
    if n_best > exported_width:
        raise click.BadParameter(f"{n_best} is over the export's beam_width={exported_width}", param_hint="--n-best")
    signature = load_export(model_path).signatures["translate_n_best"]
    for index, batch in enumerate(text_requests(texts, export_limits(model_path, TranslateConfig))):
        outputs = signature(text=tf.constant(batch, tf.string))
        for row, (translations, scores) in enumerate(zip(outputs["translations"].numpy(), outputs["scores"].numpy(),
                                                          strict=True)):
            if index or row:
                click.echo("")
            for rank, (translation, score) in enumerate(zip(translations[:n_best], scores[:n_best], strict=True)):
                click.echo(f"{rank + 1}\t{score:.4f}\t{translation.decode('utf-8')}")


PIPELINE = TranslatePipeline()
PIPELINE.predict_command = predict_command
