"""Readers of parallel text (sentence pairs) for translation: Multi30k and Anki.

Only reading and splitting lives here; standardisation and vectorisation run
in the TensorFlow graph, in the translation pipeline, so an exported model
takes raw strings.

* **Multi30k task 1** (Elliott et al. 2016), German-English image captions:
  ``multi30k/{train,val,test2016}.{de,en}`` (plain or ``.gz``; the upstream
  name ``test_2016_flickr`` is accepted too), line *i* of one language being
  the translation of line *i* of the other. Without a local copy the six
  ``.gz`` files are downloaded from the official ``multi30k/dataset`` GitHub
  repository at a pinned commit and checked against their sha256.
* **Anki spa-eng** (Tatoeba sentences packaged by manythings.org):
  ``anki/spa-eng.txt`` (plain or ``.gz``), ``English<TAB>Spanish`` a line
  (further columns, such as the attribution of newer releases, are ignored).
  The file has no official split: sentences are split 80/10/10 by *distinct
  English sentence* with a seeded permutation, so one English sentence with
  several Spanish translations never lands in two splits (no test leakage).
  No stable download URL exists, so a missing file is an error that says
  where to get it.

Lines are stripped of surrounding whitespace; a pair with an empty side is
dropped and the number dropped is logged.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from rnnapps.data import sources
from rnnapps.errors import ConfigError

logger = logging.getLogger(__name__)

DATASETS = ("multi30k", "anki")
SPLITS = ("train", "validation", "test")
LANGUAGES = {"multi30k": ("de", "en"), "anki": ("en", "es")}
# Translation direction when the caller names none: into English.
DEFAULT_DIRECTIONS = {"multi30k": ("de", "en"), "anki": ("es", "en")}

MULTI30K_COMMIT = "a3d2e0d26b56f3846f66a952536ffed4e401d05a"
MULTI30K_URL = (
    "https://raw.githubusercontent.com/multi30k/dataset/"
    f"{MULTI30K_COMMIT}/data/task1/raw/{{name}}.{{language}}.gz"
)
# Local file stem per split, and the upstream stems that are accepted as well.
MULTI30K_FILES = {"train": "train", "validation": "val", "test": "test2016"}
MULTI30K_REMOTE = {"train": "train", "validation": "val", "test": "test_2016_flickr"}
# sha256 of the upstream .gz files (byte-identical to shared/data, see its SOURCES.md).
MULTI30K_SHA256 = {
    ("train", "de"): "726e39b2fa9eb9ffb6dc763fb35a179f80fae06ffc5d28b6ace5faa883de28a6",
    ("train", "en"): "d79cfa999dd4c51d2cb42499b6796d5a882c3a8a961923c25a898c90f8bbd56f",
    ("validation", "de"): "f0cba2f995189cf5770f29a8a9a537a3ad3f51657ad873405082ff6863a5e75a",
    ("validation", "en"): "14f7d25ddd868909a9213e361768460edcacdd6ab9d1e77b92560dc10c10dc28",
    ("test", "de"): "9204244e408ccb38d2a55cfcd344df15005fc42a07a6e55ca6c52b6ababb8cc8",
    ("test", "en"): "611d361c6334bc7246101d48097c13cf5c4413c5befc793cc629934359d532d9",
}

ANKI_FILE = "anki/spa-eng.txt"
ANKI_COLUMNS = ("en", "es")
ANKI_FRACTIONS = {"validation": 0.1, "test": 0.1}
ANKI_HOW_TO_GET = (
    "Download spa-eng.zip from https://www.manythings.org/anki/ (Tatoeba sentence pairs, "
    "CC BY 2.0 FR) and save its spa.txt, optionally gzipped, as anki/spa-eng.txt.gz."
)

Pair = tuple[str, str]


def _read_lines(path: Path) -> list[str]:
    with sources.open_text(path) as handle:
        # Not splitlines(): it would also split on U+2028 and friends inside a sentence.
        return [line.rstrip("\r") for line in handle.read().split("\n")]


def _drop_final_empty(lines: list[str]) -> list[str]:
    """The newline that ends the last line is not an extra (empty) line."""
    return lines[:-1] if lines and lines[-1] == "" else lines


def _keep_non_empty(pairs: list[Pair], where: str) -> list[Pair]:
    stripped = [(source.strip(), target.strip()) for source, target in pairs]
    kept = [pair for pair in stripped if pair[0] and pair[1]]
    if len(kept) < len(stripped):
        logger.warning(
            "%s: dropped %d pair(s) with an empty side", where, len(stripped) - len(kept)
        )
    return kept


def read_parallel_files(
    source_path: str | os.PathLike, target_path: str | os.PathLike
) -> list[Pair]:
    """Pairs from two line-aligned files (plain or gzipped).

    Raises:
        ValueError: the files have different numbers of lines (both are named).
    """
    source_path, target_path = Path(source_path), Path(target_path)
    source_lines = _drop_final_empty(_read_lines(source_path))
    target_lines = _drop_final_empty(_read_lines(target_path))
    if len(source_lines) != len(target_lines):
        raise ValueError(
            f"parallel files are not line-aligned: {str(source_path)!r} has {len(source_lines)} lines "
            f"but {str(target_path)!r} has {len(target_lines)}"
        )
    pairs = list(zip(source_lines, target_lines, strict=True))
    return _keep_non_empty(pairs, f"{source_path.name} / {target_path.name}")


def read_anki(path: str | os.PathLike) -> list[Pair]:
    """``(English, Spanish)`` pairs from an Anki/manythings ``spa.txt`` file.

    Raises:
        ValueError: a non-empty line lacks the tab between the two sentences
            (the file and line number are quoted).
    """
    path = Path(path)
    pairs = []
    empty = 0
    for number, line in enumerate(_drop_final_empty(_read_lines(path)), start=1):
        if not line.strip():
            empty += 1
            continue
        fields = line.split("\t")
        if len(fields) < 2:
            raise ValueError(
                f"{str(path)!r} line {number}: expected 'English<TAB>Spanish', got {line[:80]!r}"
            )
        pairs.append((fields[0], fields[1]))
    if empty:
        logger.warning("%s: dropped %d empty line(s)", path.name, empty)
    return _keep_non_empty(pairs, path.name)


def split_by_source_sentence(
    pairs: list[Pair], seed: int = 0, fractions=None
) -> dict[str, list[Pair]]:
    """A seeded train/validation/test split that keeps equal first sentences together.

    ``fractions`` gives the validation and test shares of the distinct first
    sentences (default 10% each); train gets the rest. Pairs keep their file
    order within a split.
    """
    fractions = dict(ANKI_FRACTIONS if fractions is None else fractions)
    groups: dict[str, int] = {}
    for first, _ in pairs:
        groups.setdefault(first, len(groups))
    order = np.random.default_rng(seed).permutation(len(groups))
    validation_count = int(round(fractions["validation"] * len(groups)))
    test_count = int(round(fractions["test"] * len(groups)))
    split_of_group = np.full(len(groups), 0)
    split_of_group[order[:validation_count]] = 1
    split_of_group[order[validation_count : validation_count + test_count]] = 2
    splits: dict[str, list[Pair]] = {name: [] for name in SPLITS}
    for pair in pairs:
        splits[SPLITS[split_of_group[groups[pair[0]]]]].append(pair)
    return splits


def _direction(dataset: str, source: str | None, target: str | None) -> tuple[str, str]:
    default_source, default_target = DEFAULT_DIRECTIONS[dataset]
    source = default_source if source is None else source
    target = default_target if target is None else target
    languages = LANGUAGES[dataset]
    for name, value in (("source", source), ("target", target)):
        if value not in languages:
            raise ConfigError(
                f"Expected {name} to be one of {languages} for dataset={dataset!r}. Received: {name}={value!r}"
            )
    if source == target:
        raise ConfigError(
            f"Expected different source and target languages. Received: {source!r} twice"
        )
    return source, target


def _multi30k_files(data_dir: Path | None) -> dict[tuple[str, str], Path]:
    expected = [
        f"multi30k/{MULTI30K_FILES[split]}.{lang}.gz" for split in SPLITS for lang in ("de", "en")
    ]
    files = {}
    for split in SPLITS:
        for language in LANGUAGES["multi30k"]:
            if data_dir is not None:
                stems = (MULTI30K_FILES[split], MULTI30K_REMOTE[split])
                # The local layout, or a data_dir that is the multi30k folder itself.
                candidates = [f"multi30k/{stem}.{language}" for stem in stems] + [
                    f"{stem}.{language}" for stem in stems
                ]
                path = sources.find_local(data_dir, candidates)
                if path is None:
                    raise sources.missing("Multi30k", expected, data_dir)
            else:
                name = MULTI30K_REMOTE[split]
                path = sources.download(
                    MULTI30K_URL.format(name=name, language=language),
                    MULTI30K_SHA256[(split, language)],
                    f"multi30k_{name}.{language}.gz",
                    "Multi30k",
                    expected,
                    data_dir,
                )
            files[(split, language)] = path
    return files


def _anki_file(data_dir: Path | None) -> Path:
    path = sources.find_local(data_dir, [ANKI_FILE, Path(ANKI_FILE).name])
    if path is None:
        raise sources.missing("Anki spa-eng", [ANKI_FILE + ".gz"], data_dir, ANKI_HOW_TO_GET)
    return path


def load_parallel_corpus(
    dataset: str = "multi30k",
    source: str | None = None,
    target: str | None = None,
    data_dir: str | os.PathLike | None = None,
    seed: int = 0,
) -> dict[str, list[Pair]]:
    """Sentence pairs ``(source, target)`` for the ``train``, ``validation`` and ``test`` splits.

    Args:
        dataset: ``"multi30k"`` (languages ``de``, ``en``; test = test2016) or
            ``"anki"`` (``en``, ``es``; seeded 80/10/10 split).
        source: the language translated from (default: ``de`` for Multi30k,
            ``es`` for Anki).
        target: the language translated into (default ``en``).
        data_dir: the local data directory (else ``$RNNAPPS_DATA_DIR``); it
            holds ``multi30k/`` or ``anki/`` as in ``shared/data``, or is that
            folder itself. Without one, Multi30k is downloaded (sha256-checked).
        seed: the seed of the Anki split (Multi30k has official splits).

    Returns:
        ``{"train": [...], "validation": [...], "test": [...]}``, lists of
        ``(source_sentence, target_sentence)`` string pairs.

    Raises:
        ConfigError: unknown dataset or language (a ``ValueError``).
        DataNotFoundError: the files are neither local nor downloadable.
        ValueError: the two sides of a Multi30k split differ in line count.

    Example:

    >>> corpus = load_parallel_corpus("multi30k", "de", "en", data_dir="tests/fixtures")
    >>> sorted(corpus), corpus["train"][0]
    (['test', 'train', 'validation'], ('Zwei Hunde spielen im Schnee.', 'Two dogs play in the snow.'))
    """
    if dataset not in DATASETS:
        raise ConfigError(
            f"Expected dataset to be one of {DATASETS}. Received: dataset={dataset!r}"
        )
    source, target = _direction(dataset, source, target)
    local_dir = sources.resolve_data_dir(data_dir)
    if dataset == "multi30k":
        files = _multi30k_files(local_dir)
        return {
            split: read_parallel_files(files[(split, source)], files[(split, target)])
            for split in SPLITS
        }
    english_first = split_by_source_sentence(read_anki(_anki_file(local_dir)), seed=seed)
    if (source, target) == ANKI_COLUMNS:
        return english_first
    return {
        split: [(second, first) for first, second in pairs]
        for split, pairs in english_first.items()
    }
