"""The autoencoder benchmark's plumbing on the fixtures: every part it records, its resume and its rescore.

The numbers are meaningless at this size; what is checked is that the script records what it
claims (settings shared by the two Dai & Le arms, sessions of a resumed run, the target flag,
the provenance of each part and write).
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from benchmarks import autoencoder as benchmark
from tests.conftest import FIXTURE_DATA


@pytest.fixture(scope="module")
def first_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("autoencoder_benchmark")
    common = [
        "--data-dir", str(FIXTURE_DATA), "--multi30k-data-dir", str(FIXTURE_DATA),
        "--preset", "smoke", "--sentiment-preset", "smoke",
        "--work-dir", str(root / "work"), "--results", str(root / "results.json"),
    ]
    # Two epochs over MULTI30K_SETTINGS' 80, and fixture-sized widths over its 256/512 (the full
    # widths made this the suite's slowest setup, 109 s): the other settings still shape the model.
    tiny = ["--set-multi30k", "embedding_dim=8", "--set-multi30k", "units=8", "--set-multi30k", "decoder_units=16"]
    results = benchmark.main([*common, "--set-multi30k", "epochs=2", *tiny, "--set-sentiment", "epochs=1"])
    return common, root, results


def test_records_both_parts_with_their_settings(first_run):
    _, root, results = first_run
    assert json.loads((root / "results.json").read_text()) == results
    multi30k = results["multi30k"]
    assert multi30k["config"]["tie_embeddings"] is True and multi30k["config"]["code_size"] == 512
    assert multi30k["config"]["units"] == 8  # --set-multi30k over MULTI30K_SETTINGS
    assert multi30k["config"]["epochs"] == 2 and multi30k["epochs_run"] == 2
    assert 0 <= multi30k["val_token_accuracy"] <= 1 and 0 <= multi30k["val_beam_token_accuracy"] <= 1
    assert multi30k["target_met"] == (multi30k["val_token_accuracy"] >= benchmark.TARGET_VAL_TOKEN_ACCURACY)
    with gzip.open(FIXTURE_DATA / "multi30k" / "val.en.gz", "rt", encoding="utf-8") as val:
        assert multi30k["val_examples"] == sum(1 for line in val if line.strip())
    assert len(multi30k["sessions"]) == 1 and multi30k["wall_seconds"] == multi30k["sessions"][0]

    dai_le = results["dai_le"]
    random_init = json.loads((Path(dai_le["random_init"]["run_dir"]) / "config.json").read_text())
    pretrained = json.loads((Path(dai_le["pretrained"]["run_dir"]) / "config.json").read_text())
    assert pretrained.pop("init_from") == dai_le["autoencoder"]["run_dir"]
    assert random_init.pop("init_from") is None
    assert random_init == pretrained  # the arms differ in init_from only
    assert random_init["embeddings"] is None and random_init["epochs"] == 1  # "none": no GloVe in either arm
    assert dai_le["pretraining_helped"] == (dai_le["pretrained"]["test_accuracy"] > dai_le["random_init"]["test_accuracy"])

    # The file's latest write and each part record where they came from (benchmarks.common.provenance).
    for block in (results["provenance"], multi30k["provenance"], dai_le["provenance"]):
        assert block["reconstructed"] is False and block["command"] == results["command"]
        assert {"commit", "dirty", "date", "cpu_model", "load_average_at_start", "load_average_at_end"} <= set(block)
    assert "earlier_provenance" not in multi30k  # a fresh run
    # One seed so far: its own figure is the mean, and one seed cannot meet the mean's target.
    assert [run["seed"] for run in multi30k["seed_runs"]] == [multi30k["config"]["seed"]]
    assert multi30k["val_token_accuracy_mean"] == multi30k["val_token_accuracy"]
    assert multi30k["target_mean_met"] is False


def test_resume_adds_a_session_and_rescore_keeps_the_training_record(first_run):
    common, root, results = first_run
    run_dir = results["multi30k"]["run_dir"]
    resumed = benchmark.main([*common, "--resume-multi30k", run_dir, "--set-multi30k", "epochs=3", "--skip-dai-le"])
    multi30k = resumed["multi30k"]
    assert multi30k["run_dir"] == run_dir and multi30k["epochs_run"] == 3
    assert len(multi30k["sessions"]) == 2
    assert multi30k["wall_seconds"] == pytest.approx(sum(multi30k["sessions"]), abs=0.2)
    assert resumed["dai_le"] == results["dai_le"]  # a skipped part keeps its old section
    assert multi30k["earlier_provenance"] == [results["multi30k"]["provenance"]]
    assert multi30k["provenance"]["command"] == resumed["provenance"]["command"] != results["command"]

    rescored = benchmark.main([*common, "--rescore-multi30k"])
    assert rescored["multi30k"]["sessions"] == multi30k["sessions"]
    assert rescored["multi30k"]["val_token_accuracy"] == multi30k["val_token_accuracy"]  # same weights, same score
    assert rescored["multi30k"]["provenance"] == multi30k["provenance"]  # the training's, kept
    assert rescored["multi30k"]["rescore_provenance"]["command"] == rescored["provenance"]["command"]
    assert rescored["provenance"]["command"].endswith("--rescore-multi30k")
    table = benchmark.table(rescored)
    assert f"{multi30k['val_token_accuracy']:.1%} (exact match" in table
    assert f"beam search of {benchmark.BEAM_WIDTH}" in table


def test_a_resume_without_the_earlier_record_shows_its_time_as_unknown():
    section = {"wall_seconds": None, "sessions": [None, 6330.0]}
    assert benchmark._sessions_text(section) == "? + 105.5 min"
    assert benchmark._sessions_text({"wall_seconds": 120.0}) == "2.0 min"


def _section(seed, accuracy, **config):
    return {"config": {"seed": seed, "units": 256, **config}, "val_token_accuracy": accuracy,
            "val_exact_match": accuracy - 0.2, "provenance": {"commit": f"c{seed}", "cpu_model": "x"}}


def test_seeds_of_the_same_settings_are_averaged_and_other_settings_start_again():
    first = benchmark.with_seed_runs(_section(1337, 0.905), None)
    second = benchmark.with_seed_runs(_section(7, 0.917), first)
    assert [run["seed"] for run in second["seed_runs"]] == [1337, 7]
    assert second["val_token_accuracy_mean"] == pytest.approx(0.911)
    assert second["target_mean_met"] is True
    low = benchmark.with_seed_runs(_section(7, 0.913), first)
    assert low["val_token_accuracy_mean"] == pytest.approx(0.909) and low["target_mean_met"] is False
    # The same seed again replaces its entry; another setting starts a new list.
    again = benchmark.with_seed_runs(_section(7, 0.90), second)
    assert [(run["seed"], run["val_token_accuracy"]) for run in again["seed_runs"]] == [(1337, 0.905), (7, 0.90)]
    other = benchmark.with_seed_runs(_section(42, 0.95, units=512), second)
    assert [run["seed"] for run in other["seed_runs"]] == [42] and other["target_mean_met"] is False
    assert "mean of 2 seeds" in benchmark.table({"multi30k": {**second, "epochs_run": 3, "wall_seconds": 60.0}})
