from click.testing import CliRunner

from rnnapps.cli import _STARTUP_NOISE, cli, quiet_tensorflow


def test_list_and_help_are_instant_and_teach():
    runner = CliRunner()
    listed = runner.invoke(cli, ["list"])
    assert listed.exit_code == 0 and "sentiment" in listed.output
    help_text = runner.invoke(cli, ["run", "--help"]).output
    for option in ("--preset", "--set", "--resume", "--data-dir", "--precision", "--strategy", "Examples"):
        assert option in help_text
    assert "rnnapps predict sentiment" in runner.invoke(cli, ["predict", "--help"]).output


def test_unknown_pipeline_is_one_line_error():
    result = CliRunner().invoke(cli, ["run", "poetry"])
    assert result.exit_code != 0
    assert "unknown pipeline 'poetry'" in result.output
    assert "Traceback" not in result.output


def test_bad_set_key_is_one_line_error(tmp_path):
    result = CliRunner().invoke(
        cli, ["run", "sentiment", "--preset", "smoke", "--set", "colour=blue", "--output-dir", str(tmp_path)]
    )
    assert result.exit_code == 1
    assert result.output.strip().startswith("Error: unknown config key 'colour' in --set")
    assert len(result.output.strip().splitlines()) == 1


def test_missing_data_is_one_line_error(tmp_path):
    result = CliRunner().invoke(
        cli, ["run", "sentiment", "--preset", "smoke", "--data-dir", str(tmp_path), "--output-dir", str(tmp_path / "runs")]
    )
    assert result.exit_code == 1
    assert "IMDB not found: expected imdb/train.csv.gz" in result.output
    assert "Traceback" not in result.output
    # The data is loaded before the run directory is made: a failed start leaves nothing to --resume.
    assert not (tmp_path / "runs").exists()


def test_evaluate_without_runs_is_clear(tmp_path):
    result = CliRunner().invoke(cli, ["evaluate", "sentiment", "--output-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no runs of 'sentiment'" in result.output


def test_predict_without_export_is_clear(tmp_path):
    result = CliRunner().invoke(cli, ["predict", "sentiment", "great", "--export-dir", str(tmp_path)])
    assert result.exit_code == 1 and "no export of 'sentiment'" in result.output


def test_preset_with_resume_is_refused_before_anything_runs(tmp_path, monkeypatch):
    import rnnapps.runner
    from rnnapps.errors import RnnappsError

    called = []

    def stand_in_run(*args, **kwargs):
        called.append(args)
        raise RnnappsError("the runner was reached")

    monkeypatch.setattr(rnnapps.runner, "run", stand_in_run)
    result = CliRunner().invoke(
        cli, ["run", "sentiment", "--resume", "--preset", "smoke", "--output-dir", str(tmp_path)]
    )
    assert result.exit_code == 2
    assert "--preset cannot be combined with --resume" in result.output
    assert called == []
    # The default preset (not given on the command line) is no obstacle to a resume.
    resumed = CliRunner().invoke(cli, ["run", "sentiment", "--resume", "--output-dir", str(tmp_path)])
    assert len(called) == 1 and "the runner was reached" in resumed.output


def test_tensorflow_logs_are_quiet_unless_debugging_or_chosen():
    environ = {}
    assert quiet_tensorflow(environ) and environ["TF_CPP_MIN_LOG_LEVEL"] == "3"
    assert not quiet_tensorflow(chosen := {"TF_CPP_MIN_LOG_LEVEL": "0"}) and chosen["TF_CPP_MIN_LOG_LEVEL"] == "0"
    assert not quiet_tensorflow(debugging := {"RNNAPPS_DEBUG": "1"}) and "TF_CPP_MIN_LOG_LEVEL" not in debugging
    # What `import tensorflow` prints before its logging starts is dropped; anything else passes.
    startup = [
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "I0000 00:00:1796237012.821422    6881 cudart_stub.cc:31] Could not find cuda drivers on your machine.",
        "E0000 00:00:1796237018.547128    6881 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error",
    ]
    assert all(_STARTUP_NOISE.match(line) for line in startup)
    assert not _STARTUP_NOISE.match("/site-packages/x.py:3: DeprecationWarning: something the user should see")
