"""The benchmarks' provenance block (benchmarks.common.provenance) and the committed results' blocks.

Hermetic: the git checks run in repositories and folders made in tmp_path, with the user's git
configuration out of the way; nothing reaches the network.
"""

from __future__ import annotations

import datetime
import json
import shutil
import subprocess
from pathlib import Path

import pytest

from benchmarks import common

ROOT = Path(__file__).resolve().parents[1]
RESULTS = sorted((ROOT / "benchmarks" / "results").glob("*.json"))
SCRIPTS = sorted(path for path in (ROOT / "benchmarks").glob("*.py") if path.name != "common.py")
needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


@pytest.fixture(autouse=True)
def quiet_git(tmp_path, monkeypatch):
    """No user or system git configuration, and no repository above tmp_path."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("GIT_CONFIG_NOSYSTEM", "1")
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))


def _git(repo: Path, *arguments: str) -> str:
    identity = ["-c", "user.name=test", "-c", "user.email=test@example.com", "-c", "commit.gpgsign=false"]
    return subprocess.run(["git", *identity, *arguments], cwd=repo, check=True, capture_output=True, text=True).stdout


def _parses_as_utc(text: str) -> bool:
    return datetime.datetime.fromisoformat(text).utcoffset() == datetime.timedelta(0)


def test_fields_and_their_types(tmp_path):
    started = common.provenance_start(repo=tmp_path)
    block = common.provenance(started, command="python benchmarks/x.py --flag 'a b'", repo=tmp_path)
    assert block["reconstructed"] is False
    assert block["command"] == "python benchmarks/x.py --flag 'a b'"
    assert _parses_as_utc(block["started"]) and _parses_as_utc(block["date"])
    assert block["started"] <= block["date"]
    assert block["cpu_model"] is None or isinstance(block["cpu_model"], str)
    assert block["cpu_flags"] is None or set(block["cpu_flags"]) == set(common.FLAGS_OF_NOTE)
    assert all(isinstance(present, bool) for present in (block["cpu_flags"] or {}).values())
    assert isinstance(block["cpu_count"], int) and 1 <= block["cpus_usable"] <= block["cpu_count"]
    for key in ("load_average_at_start", "load_average_at_end"):
        assert len(block[key]) == 3 and all(isinstance(value, float) for value in block[key])
    assert all(isinstance(block[key], str) for key in ("python", "tensorflow", "keras"))
    json.dumps(block, allow_nan=False)  # JSON as it stands


def test_command_defaults_to_sys_argv_shell_quoted(monkeypatch):
    monkeypatch.setattr("sys.argv", [str(ROOT / "benchmarks" / "draw.py"), "--set", "units=8 9"])
    assert common.provenance()["command"] == "python benchmarks/draw.py --set 'units=8 9'"
    assert common.command_line("draw.py") == "python benchmarks/draw.py --set 'units=8 9'"


def test_cpu_model_and_flags_from_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(
        "processor\t: 0\nmodel name\t: Example CPU @ 2.0GHz\nflags\t\t: fpu avx2 avx512f amx_tile\n\n"
        "processor\t: 1\nmodel name\t: Example CPU @ 2.0GHz\nflags\t\t: fpu avx2 avx512f amx_tile\n"
    )
    model, flags = common.cpu_model_and_flags(cpuinfo)
    assert model == "Example CPU @ 2.0GHz"
    assert flags == {"avx2": True, "avx512f": True, "avx512_bf16": False, "amx_tile": True, "amx_bf16": False}
    model, flags = common.cpu_model_and_flags(tmp_path / "missing")
    assert flags is None and (model is None or isinstance(model, str))


@needs_git
def test_commit_and_dirty_flag_follow_the_repository(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q")
    (repo / "a.txt").write_text("one\n")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    head = _git(repo, "rev-parse", "HEAD").strip()

    clean = common.provenance(repo=repo)
    assert clean["commit"] == head and clean["dirty"] is False

    (repo / "a.txt").write_text("two\n")
    assert common.provenance(repo=repo)["dirty"] is True
    _git(repo, "checkout", "-q", "--", "a.txt")
    (repo / "new.txt").write_text("untracked\n")
    assert common.provenance(repo=repo)["dirty"] is True

    # The git state is that of the start: what changes during the run (its own outputs) does not count.
    started = common.provenance_start(repo=repo)
    (repo / "new.txt").unlink()
    assert common.provenance(started, repo=repo)["dirty"] is True
    assert common.provenance(repo=repo)["dirty"] is False


@needs_git
def test_a_folder_that_is_no_repository_records_null(tmp_path):
    folder = tmp_path / "plain"
    folder.mkdir()
    block = common.provenance(repo=folder)
    assert block["commit"] is None and block["dirty"] is None
    assert isinstance(block["date"], str)


def test_missing_git_records_null(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    block = common.provenance(repo=ROOT)
    assert block["commit"] is None and block["dirty"] is None


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda path: path.name)
def test_every_benchmark_script_records_provenance(script):
    assert "provenance(" in script.read_text()


def _blocks(value, where=""):
    """Every provenance block in a results JSON, with where it stands."""
    if isinstance(value, dict):
        for key, item in value.items():
            if key in ("provenance", "serving_provenance"):
                yield f"{where}{key}", item
            else:
                yield from _blocks(item, f"{where}{key}.")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _blocks(item, f"{where}{index}.")


def _commits_that_changed(path: Path) -> set[str] | None:
    if shutil.which("git") is None:
        return None
    done = subprocess.run(["git", "log", "--format=%H", "--", str(path)], cwd=ROOT, capture_output=True, text=True)
    return set(done.stdout.split()) if done.returncode == 0 and done.stdout.strip() else None


@pytest.mark.parametrize("path", RESULTS, ids=lambda path: path.name)
def test_every_committed_result_has_a_provenance_block(path):
    results = json.loads(path.read_text())
    # ner.json holds one result a variant; the others one result a file (with sections of their own).
    for result in results.values() if path.name == "ner.json" else [results]:
        assert isinstance(result.get("provenance"), dict)
    blocks = dict(_blocks(results))
    changed = _commits_that_changed(path)
    for where, block in blocks.items():
        assert isinstance(block["commit"], str) and len(block["commit"]) == 40, where
        assert datetime.datetime.fromisoformat(block["date"]), where
        if block["reconstructed"]:
            assert "after the fact" in block["note"] and "cpu_model" in block, where
            if changed is not None:
                assert block["commit"] in changed, where  # a commit that changed this file
