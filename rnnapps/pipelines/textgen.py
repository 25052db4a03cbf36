"""Character language model: predicts the next character, generates Shakespeare-like text.

What it does, in five bullets:

* reads a plain-text corpus (Tiny Shakespeare by default, any UTF-8 file or
  folder with ``--set corpus=PATH``), cuts it by position into contiguous
  train/validation/test parts (90/5/5) and builds the character vocabulary on
  train, with an out-of-vocabulary id 0 for characters it never saw;
* trains embedding -> LSTM/GRU stack -> logits with truncated backpropagation
  through time: the text is cut into ``batch_size`` parallel streams, every
  batch continues the previous one and the recurrent state is carried across
  batches (gradients stopped), zeroed at each epoch start and every
  ``state_reset_interval`` batches, with gradient-norm clipping;
* prints a short sample after every epoch, so training can be judged by eye;
* reports validation and test cross-entropy in nats and bits per character,
  reading each split as one contiguous stream with the state carried through;
* exports ``generate(prompt, length, temperature, seed) -> {text}`` (also
  ``serving_default``) and ``generate_top_k(..., top_k)``: lookup, prompt
  feeding and sampling run in the graph, one step per character, the prefix is
  never re-run.

References: Elman 1990 and Williams & Peng 1990 (truncated BPTT); Sutskever,
Martens & Hinton 2011 and Graves 2013, "Generating Sequences With Recurrent
Neural Networks" (character language models and sampling); Karpathy 2015,
char-rnn (the Tiny Shakespeare corpus); Zaremba et al. 2014 (dropout between
recurrent layers); Fan et al. 2018 (top-k sampling).
"""

from __future__ import annotations

import dataclasses
import math
import secrets
from pathlib import Path
from typing import ClassVar

import click
import keras
import numpy as np
import tensorflow as tf

from rnnapps import text_ops, training
from rnnapps.config import TrainingConfig
from rnnapps.data import text_corpus
from rnnapps.export import Endpoint
from rnnapps.models.char_lm import (
    CELL_TYPES,
    ResetStatesAtEpochStart,
    ResetStatesEvery,
    build_char_lm,
    stream_cross_entropy,
)
from rnnapps.models.char_text import CharTextModel, PrintSample, generate_text, make_sampler
from rnnapps.pipelines.base import (
    DataInfo,
    Datasets,
    Pipeline,
    export_limits,
    export_options,
    served_model,
)
from rnnapps.request_limits import (
    batch_at_most,
    count_within,
    finite_at_least_zero,
    guarded,
    text_length_at_most,
)

SPLIT_FRACTIONS = (0.9, 0.05, 0.05)


@dataclasses.dataclass
class TextgenConfig(TrainingConfig):
    # A UTF-8 text file or folder of *.txt files; None: Tiny Shakespeare.
    corpus: str | None = None
    # Characters per row and batch: how far back gradients flow (the state carries further).
    sequence_length: int = 100
    embedding_dim: int = 64
    cell: str = "lstm"
    units: int = 256
    depth: int = 1
    dropout: float = 0.0
    # Variational dropout on the recurrent state (cheap on a CPU; on a GPU it rules out cuDNN).
    recurrent_dropout: float = 0.0
    # Also zero the carried state every this many batches (0: only at epoch start). Without it the
    # model only sees a zero state once per epoch and generates garbage from one (a fresh prompt).
    state_reset_interval: int = 10
    # The sample printed after each epoch and saved by evaluate (0 disables the epoch samples).
    sample_length: int = 300
    sample_temperature: float = 0.8
    sample_prompt: str = "ROMEO:"
    # Serving: every row of a request is generated one character at a time, so a request costs about
    # rows x (prompt + length) steps of the LSTM; these keep the worst one to seconds.
    max_request_batch: int = 16
    max_generate_length: int = 5000
    max_prompt_length: int = 5000

    PRESETS: ClassVar[dict] = {
        "smoke": dict(epochs=2, batch_size=4, sequence_length=24, learning_rate=0.01, embedding_dim=8, units=16,
                      sample_length=40, early_stopping_patience=0, max_train_examples=20_000,
                      max_eval_examples=5_000),
        # One 512-unit LSTM with light dropout. A constant 2e-3 for 15 epochs in 16 minutes reached
        # 1.422 validation / 1.568 test nats/char, the curve flattening from epoch 9 on; annealing
        # from the start (0.9 an epoch) fell behind it (1.483 vs 1.449 at epoch 9). So: 8 epochs at
        # the full rate, then x0.75 an epoch, in 18.5 minutes (docs/textgen.md). Then, for issue 20: 3e-3 held
        # 6 epochs overfit (train 1.16 vs validation 1.415, test 1.553); dropout 0.25 on top gave 1.527 on the
        # slower AMD EPYC, better than 1.531 from the old preset on a 1.4x faster CPU. Weight averaging
        # (Polyak, 0.995: about 1.3 epochs) then gave 1.516 against 1.539 without it on one Sapphire Rapids.
        # Variational recurrent dropout 0.15 (one mask for all gates, the fused step) ended the overfitting
        # that stopped those runs at epoch 14: 1.498, all 18.5 minutes used, same CPU class.
        "cpu": dict(epochs=40, batch_size=64, sequence_length=100, learning_rate=3e-3, learning_rate_decay=0.75,
                    learning_rate_hold_epochs=6, embedding_dim=64, units=512, depth=1, dropout=0.25,
                    recurrent_dropout=0.15, weight_averaging=0.995,
                    early_stopping_patience=3, time_budget_minutes=18.5),
        "full": dict(epochs=40, batch_size=64, sequence_length=128, learning_rate=2e-3, embedding_dim=128, units=512,
                     depth=3, dropout=0.3, early_stopping_patience=4),
    }


def _stream(ids, config: TextgenConfig, split: str) -> tf.data.Dataset:
    try:
        return text_corpus.make_stream_dataset(ids, config.batch_size, config.sequence_length)
    except ValueError as error:
        raise ValueError(
            f"the {split} split is too small for batch_size={config.batch_size} x "
            f"sequence_length={config.sequence_length}: {error}; use a longer corpus or smaller values"
        ) from None


@dataclasses.dataclass(frozen=True)
class TextgenData(DataInfo):
    """What ``load_data`` hands on: the characters, and the validation and test streams as ids."""

    vocabulary: list[str]
    ids: dict[str, np.ndarray]


class TextgenPipeline(Pipeline):
    name = "textgen"
    config_class = TextgenConfig
    monitor = "val_loss"
    monitor_mode = "min"
    request_limit_fields = ("max_request_batch", "max_generate_length", "max_prompt_length")

    def load_data(self, config: TextgenConfig, data_dir: Path | None) -> Datasets:
        if config.cell not in CELL_TYPES:
            raise ValueError(f"Expected cell to be one of {CELL_TYPES}. Received: cell={config.cell!r}")
        text = text_corpus.load_corpus(data_dir, config.corpus)
        parts = text_corpus.split_corpus(text, SPLIT_FRACTIONS)
        vocabulary = text_corpus.build_char_vocabulary(parts[0])
        lookup, _ = text_ops.make_char_lookup(vocabulary)
        train_ids, validation_ids, test_ids = (text_corpus.text_to_ids(part, lookup) for part in parts)
        # For a character model an "example" is a character, and a subset must stay contiguous text.
        train_ids = train_ids[: config.max_train_examples or None]
        validation_ids, test_ids = (ids[: config.max_eval_examples or None] for ids in (validation_ids, test_ids))
        return Datasets(
            train=_stream(train_ids, config, "train"),
            validation=_stream(validation_ids, config, "validation"),
            test=_stream(test_ids, config, "test"),
            info=TextgenData(
                sizes={"train": len(train_ids), "validation": len(validation_ids), "test": len(test_ids)},
                vocabulary=vocabulary,
                ids={"validation": validation_ids, "test": test_ids},
            ),
        )

    def build_model(self, config: TextgenConfig, datasets: Datasets) -> keras.Model:
        vocabulary = datasets.info.vocabulary
        language_model = build_char_lm(
            len(vocabulary) + 1,
            embedding_dim=config.embedding_dim,
            units=config.units,
            cell=config.cell,
            depth=config.depth,
            dropout=config.dropout,
            recurrent_dropout=config.recurrent_dropout,
            seed=config.seed,
        )
        model = CharTextModel(language_model, batch_size=config.batch_size, vocabulary=vocabulary, name="textgen")
        model.compile(
            optimizer=training.make_optimizer(config),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        return model

    def extra_callbacks(self, model, datasets: Datasets, config: TextgenConfig, run_dir: Path) -> list:
        callbacks = [ResetStatesAtEpochStart()]
        if config.state_reset_interval > 0:
            callbacks.append(ResetStatesEvery(config.state_reset_interval))
        callbacks.append(
            PrintSample(config.sample_prompt, config.sample_length, config.sample_temperature, config.seed)
        )
        return callbacks

    def evaluate(self, model: CharTextModel, datasets: Datasets, config: TextgenConfig, run_dir: Path) -> dict:
        metrics = {}
        for split in ("validation", "test"):
            nats = stream_cross_entropy(model.language_model, datasets.info.ids[split])
            metrics[f"{split}_nats_per_char"] = nats
            metrics[f"{split}_bits_per_char"] = nats / math.log(2)
            metrics[f"{split}_characters"] = int(len(datasets.info.ids[split]))
        sample = make_sampler(model)(config.sample_prompt, max(config.sample_length, 1), config.sample_temperature,
                                     config.seed)
        sample_file = Path(run_dir) / "sample.txt"
        sample_file.write_text(f"{config.sample_prompt}{sample}\n", encoding="utf-8")
        metrics["sample_file"] = str(sample_file)
        return metrics

    def serving(self, model: CharTextModel, config) -> dict[str, Endpoint]:
        def generate_rows(prompt, length, temperature, seed, top_k):
            prompt, length, temperature, top_k = guarded([
                batch_at_most(prompt, "prompt", config.max_request_batch),
                text_length_at_most(prompt, "prompt", config.max_prompt_length, "max_prompt_length", "UTF8_CHAR"),
                count_within(length, "length", config.max_generate_length, "max_generate_length"),
                finite_at_least_zero(temperature, "temperature"),
                count_within(top_k, "top_k", len(model.vocabulary), "vocabulary_size"),
            ], prompt, length, temperature, top_k)
            rows = tf.shape(prompt)[0]
            # Rows are generated one by one so that each row's text depends only on
            # its own prompt, length, temperature and seed, not on the rest of the batch.
            texts = tf.map_fn(
                lambda row: generate_text(model, *row),
                (
                    prompt,
                    tf.broadcast_to(length, [rows]),
                    tf.broadcast_to(temperature, [rows]),
                    tf.broadcast_to(seed, [rows]),
                    tf.broadcast_to(top_k, [rows]),
                ),
                fn_output_signature=tf.TensorSpec([], tf.string),
            )
            return {"text": texts}

        def generate(prompt, length, temperature, seed):
            return generate_rows(prompt, length, temperature, seed, tf.zeros_like(seed))

        def generate_top_k(prompt, length, temperature, seed, top_k):
            return generate_rows(prompt, length, temperature, seed, top_k)

        inputs = [
            tf.TensorSpec([None], tf.string, name="prompt"),
            tf.TensorSpec([None], tf.int32, name="length"),
            tf.TensorSpec([None], tf.float32, name="temperature"),
            tf.TensorSpec([None], tf.int32, name="seed"),
        ]
        endpoint = Endpoint(generate, inputs)
        return {
            "serving_default": endpoint,
            "generate": endpoint,
            "generate_top_k": Endpoint(generate_top_k, [*inputs, tf.TensorSpec([None], tf.int32, name="top_k")]),
        }


@click.command("textgen")
@click.option("--prompt", default="", show_default=True, help="Text to continue (may be empty).")
@click.option("--length", type=click.IntRange(0, TextgenConfig.max_generate_length), default=400, show_default=True,
              help="Characters to generate (at most the export's max_generate_length).")
@click.option("--temperature", type=click.FloatRange(min=0.0), default=0.8, show_default=True,
              help="Below 1 sharpens the distribution, above 1 flattens it; 0 is greedy.")
@click.option("--top-k", type=click.IntRange(min=0), default=0, show_default=True,
              help="Sample only from the K most likely characters (0: all).")
@click.option("--seed", type=int, help="Seed for reproducible text (default: random, printed to stderr).")
@export_options
def predict_command(prompt, length, temperature, top_k, seed, model_path, export_dir):
    """Generate text that continues PROMPT with the exported character model.

    \b
    Examples:
      rnnapps predict textgen --prompt "ROMEO:" --length 400 --temperature 0.8
      rnnapps predict textgen --prompt "KING:" --top-k 5 --seed 7 --model saved_models/textgen/2
    """
    if not math.isfinite(temperature):
        raise click.BadParameter(f"{temperature} is not a finite number", param_hint="--temperature")
    if seed is None:
        seed = secrets.randbelow(2**31)
        click.echo(f"seed: {seed}", err=True)
    loaded, path = served_model("textgen", model_path, export_dir)
    limits = export_limits(path, TextgenConfig)
    for name, value, limit in (("--length", length, "max_generate_length"), ("--prompt", len(prompt), "max_prompt_length")):
        if value > limits[limit]:
            raise click.BadParameter(f"{value} is over the export's {limit}={limits[limit]}", param_hint=name)
    inputs = dict(
        prompt=tf.constant([prompt], tf.string),
        length=tf.constant([length], tf.int32),
        temperature=tf.constant([temperature], tf.float32),
        seed=tf.constant([seed], tf.int32),
    )
    if top_k:
        outputs = loaded.signatures["generate_top_k"](top_k=tf.constant([top_k], tf.int32), **inputs)
    else:
        outputs = loaded.signatures["generate"](**inputs)
    click.echo(prompt + outputs["text"].numpy()[0].decode("utf-8"))


PIPELINE = TextgenPipeline()
PIPELINE.predict_command = predict_command
