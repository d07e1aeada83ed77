"""Options are checked where they are defined, each rule has one home, and the CLI says the truth:
--debug anywhere, help with its bracketed text, unknown labels named, the small messages."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from synthetic import RED, solid, write_video
from tagger.cli import app
from tagger.errors import UsageError

TAGGER_SOURCES = sorted((Path(__file__).resolve().parents[1] / "tagger").glob("*.py"))


@pytest.mark.parametrize(("args", "message"), [
    (["--batch-size", "-3"], "--batch-size must be between 0 and 4096 windows (0 = auto), got -3"),
    (["--max-gap", "-1"], "--max-gap must be between 0 and 10000 windows, got -1"),
    (["--timeout", "0"], "--timeout must be at least 1 (seconds a decoder may go without progress), got 0"),
    (["--smooth", "0"], "--smooth must be between 1 and 10000 windows (1 = off), got 0"),
    (["--min-duration", "-5"], "--min-duration must be at least 0 seconds, got -5"),
    (["--threshold", "2"], "--threshold must be between 0 and 1, got 2"),
    (["--threshold", "nan"], "--threshold must be between 0 and 1, got nan"),
    (["--workers", "0"], "--workers must be between 1 and 64 decoder processes, got 0"),
    (["--workers", "500"], "--workers must be between 1 and 64 decoder processes, got 500"),
    (["--hop", "0"], "--hop must be greater than 0 seconds, got 0"),
    (["--decoders", ","], "--decoders names no decoder: give pyav, decord or module:FrameSourceClass"),
])
def test_scan_numeric_options_are_checked_with_their_range(args, message, red_grey_blue_video, colour_model,
                                                          tmp_path, runner):
    result = runner.invoke(app, ["scan", str(red_grey_blue_video), "--model", str(colour_model),
                                 "--db", str(tmp_path / "t.db"), *args])
    assert (result.exit_code, result.stderr) == (2, f"Error: {message}\n")
    assert not (tmp_path / "t.db").exists()


@pytest.mark.parametrize(("args", "message"), [
    (["--threshold", "1.5"], "--threshold must be between 0 and 1, got 1.5"),
    (["--min-score", "-1"], "--min-score must be between 0 and 1, got -1"),
    (["--limit", "0"], "--limit must be at least 1, got 0"),
    (["--smooth", "0"], "--smooth must be between 1 and 10000 windows (1 = off), got 0"),
    (["--max-gap", "-2"], "--max-gap must be between 0 and 10000 windows, got -2"),
    (["--min-duration", "-1"], "--min-duration must be at least 0 seconds, got -1"),
])
def test_query_numeric_options_are_checked_with_their_range(args, message, tmp_path, runner):
    result = runner.invoke(app, ["query", "--all", "--db", str(tmp_path / "none.db"), *args])
    assert (result.exit_code, result.stderr) == (2, f"Error: {message}\n")


def test_settings_objects_check_their_own_options():
    from tagger.config import ScanSettings
    from tagger.fusion import FusionRules
    from tagger.selects import SegmentQuery
    from tagger.segments import SegmentRules

    for build in (lambda: ScanSettings(db="x", batch_size=-3), lambda: ScanSettings(db="x", timeout=0),
                  lambda: SegmentRules(max_gap=-1), lambda: FusionRules(support=2), lambda: SegmentQuery(limit=0),
                  lambda: SegmentQuery(order="size")):
        with pytest.raises(UsageError):
            build()
    cli = (Path(__file__).resolve().parents[1] / "tagger" / "cli.py").read_text()
    assert "must be positive" not in cli and "STREAMS" not in cli and "max(1, workers)" not in cli


def test_each_default_and_rule_has_one_home():
    from tagger.config import ScanSettings
    from tagger.contract import ModelContract
    from tagger.segments import SegmentRules

    scan_defaults = {name: p.default for name, p in inspect.signature(app.registered_commands[0].callback).parameters.items()}
    assert SegmentRules().max_gap == scan_defaults["max_gap"] == 1  # was 0 in the library, 1 in the CLI
    assert scan_defaults["timeout"] == ScanSettings.timeout and scan_defaults["smooth"] == SegmentRules.smooth
    descriptor = ModelContract(labels=("Loud", "Piano", "None"), kind="audio", sample_rate=16000, patch_seconds=1.0,
                               thresholds={"Loud": 2.0, "Piano": 0.5}, background="None")
    assert descriptor.tag_labels == ("Piano",)  # a threshold above 1 marks a raw descriptor, on the contract
    for source in TAGGER_SOURCES:  # nothing in tagger/ knows a label list, nor re-states the rule
        text = source.read_text()
        assert "PlayingTabla" not in text and "UCF101_" not in text, source
        assert "threshold_for(label) <= 1.0" not in text or source.name == "contract.py", source


def test_failed_rows_cross_modules_as_named_types(red_grey_blue_video, colour_model, tmp_path, runner):
    from tagger.records import failed_videos, video_timeline

    bad = tmp_path / "bad.avi"
    bad.write_bytes(b"not a video at all" * 100)
    runner.invoke(app, ["scan", str(bad), str(red_grey_blue_video), "--model", str(colour_model),
                        "--db", str(tmp_path / "t.db"), "-q"])
    (failure,) = failed_videos(str(tmp_path / "t.db"))
    assert failure.path == str(bad) and failure.reason
    timeline = video_timeline(str(tmp_path / "t.db"), str(red_grey_blue_video))
    assert timeline.windows == {"video": 10} and timeline.video.path == str(red_grey_blue_video)


@pytest.mark.parametrize("where", ["before", "after", "middle"])
def test_debug_works_anywhere_on_the_command_line(where, tmp_path, runner):
    args = ["query", "--all", "--db", str(tmp_path / "none.db")]
    args = {"before": ["--debug", *args], "after": [*args, "--debug"], "middle": [*args[:2], "--debug", *args[2:]]}[where]
    result = runner.invoke(app, args)
    assert result.exit_code == 5, result.output
    assert "Traceback (most recent call last)" in result.stderr
    assert result.stderr.splitlines()[-1] == f"Error: no database at {tmp_path / 'none.db'}: run `tagger scan` first, or pass --db"


def _bracketed_help(command) -> list[str]:
    import typer.main

    click_command = typer.main.get_command(app).commands[command]
    return [text for param in click_command.params for text in re.findall(r"\[[^\]]*\]", getattr(param, "help", "") or "")]


@pytest.mark.parametrize("command", [c.name or c.callback.__name__.replace("_", "-") for c in app.registered_commands])
def test_help_shows_its_bracketed_text(command, runner):
    result = runner.invoke(app, [command, "--help"], env={"COLUMNS": "80"})
    assert result.exit_code == 0
    flat = " ".join(result.stdout.split())
    for text in _bracketed_help(command):
        assert " ".join(text.split()) in flat, text
    if command in ("scan", "query", "failed", "show"):
        assert "[env: TAGGER_DB; default: user data dir]" in flat
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_typer_is_pinned_to_the_tested_range():
    pyproject = (Path(__file__).resolve().parents[1] / "pyproject.toml").read_text()
    assert re.search(r'"typer>=[0-9.]+,<[0-9.]+"', pyproject)


@pytest.fixture(scope="module")
def colour_db(red_grey_blue_video, colour_model, tmp_path_factory):
    from typer.testing import CliRunner

    db = tmp_path_factory.mktemp("colour") / "tags.db"
    result = CliRunner().invoke(app, ["scan", str(red_grey_blue_video), "--db", str(db), "--model", str(colour_model), "-q"])
    assert result.exit_code == 0, result.output
    return db


@pytest.mark.parametrize(("label", "hint"), [
    ("red", "did you mean Red?"),
    ("Bleu", "did you mean Blue?"),
    ("PlayingGuitar", "`tagger query` with no --label lists the stored labels"),
])
def test_an_unknown_label_is_a_usage_error_naming_close_matches(label, hint, colour_db, runner):
    for command in (["query", "--label", label], ["query", "--label", label, "--threshold", "0.3"],
                    ["export-csv", "--label", label]):
        result = runner.invoke(app, [*command, "--db", str(colour_db)])
        assert (result.exit_code, result.stdout) == (2, ""), command
        assert result.stderr == f"Error: no stored model has the label {label!r}: {hint}\n"
