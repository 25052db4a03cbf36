import dataclasses
import os
import shutil
from pathlib import Path

import pytest

# Quiet TensorFlow's C++ banner and keep tests on the CPU, deterministic and hermetic.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TFDS_DATA_DIR", os.path.join(os.path.dirname(__file__), ".no_tfds"))
# Tests never read the real datasets: a loader must be pointed at fixtures explicitly.
os.environ.pop("RNNAPPS_DATA_DIR", None)

TESTS = Path(__file__).parent
#: The one fixture tree, in the layout of docs/data.md (imdb/, conll2003/, multi30k/, anki/, svhn/, ...).
FIXTURE_DATA = TESTS / "fixtures" / "data"


@dataclasses.dataclass
class SmokeRun:
    """A finished smoke run: its ``RunResult``, its export moved away from where it was written, and its root."""

    result: object
    export: Path
    root: Path


#: The one smoke run per pipeline that the pipeline tests and the serving tests share.
CANONICAL_RUNS = {
    "sentiment": dict(data_dir=FIXTURE_DATA),
    # The smoke preset's few steps do not learn the 7 fixture sentences (test F1 0, as untrained):
    # 12 epochs at a higher rate reach test F1 0.50 (measured 2026-12-03, tests/pipelines/test_learning.py).
    "ner": dict(data_dir=FIXTURE_DATA, epochs=12, learning_rate="0.05"),
    # 6 training pairs, 2 steps an epoch: 60 epochs reach beam BLEU 15.5 (untrained 1.7, 3 epochs 1.5).
    "translate": dict(data_dir=FIXTURE_DATA, epochs=60),
    # 12 epochs: test loss 3.03 against 3.83 untrained (2 epochs barely moved it).
    "autoencoder": dict(data_dir=FIXTURE_DATA, epochs=12, beam_width="2"),
    "textgen": dict(data_dir=FIXTURE_DATA),
    "pixelrnn": dict(data_dir=FIXTURE_DATA),
    "draw": dict(data_dir=FIXTURE_DATA, dataset="binarized_mnist", attention="false"),
}


@pytest.fixture(scope="session")
def smoke_runs(tmp_path_factory):
    """``smoke_runs(pipeline, data_dir=..., epochs=None, **set_options) -> SmokeRun``, each trained once a session.

    The export is moved before anyone sees it, so every test that serves it also proves
    that nothing in it points back at the run or the training files.
    """
    from rnnapps import runner

    cache: dict = {}

    def get(pipeline: str, data_dir: Path = FIXTURE_DATA, epochs: int | None = None, **set_options) -> SmokeRun:
        key = (pipeline, str(data_dir), epochs, tuple(sorted(set_options.items())))
        if key not in cache:
            root = tmp_path_factory.mktemp(pipeline)
            result = runner.run(
                pipeline, "smoke", data_dir=str(data_dir), output_dir=str(root / "runs"),
                export_dir=str(root / "exports"), epochs=epochs, set_options=set_options or None, verbose=0,
            )
            moved = root / "moved" / "1"
            moved.parent.mkdir()
            shutil.move(str(result.export_path), moved)
            cache[key] = SmokeRun(result, moved, root)
        return cache[key]

    return get


@pytest.fixture(scope="session")
def canonical_run(smoke_runs):
    """``canonical_run(pipeline) -> SmokeRun``: the pipeline's shared smoke run (:data:`CANONICAL_RUNS`)."""
    return lambda pipeline: smoke_runs(pipeline, **CANONICAL_RUNS[pipeline])
