"""What a new user sees first, at 80 columns (issue #21): tables that never wrap a file name, help
in placeholders, whole command summaries, plain words for wrong files, one count, one time format,
--version. Each test asserts the exact text."""

from __future__ import annotations

import json
import re

import pytest

from synthetic import BLUE, RED, timeline, write_colour_model, write_video
from tagger.cli import app

LONG_NAME = "a_really_long_file_name_of_a_concert_recording_from_the_archive_2019_part_one.mp4"
NOT_A_VIDEO = "not a video (no decodable video stream)"


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """(folder, db): three videos deep in folders, two with names longer than a table has room for,
    scanned with the colour model."""
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("first-use")
    deep = root / "videos" / "archive" / "2019" / "concerts"
    deep.mkdir(parents=True)
    write_video(deep / "vta-ldm__0DCit2EBtjs_000030.mp4", 6, colour_at=timeline((3, RED), (99, BLUE)))
    write_video(deep / LONG_NAME, 2, colour_at=timeline((99, BLUE)))
    model = write_colour_model(root / "colour.onnx")
    db = root / "tags.db"
    result = CliRunner().invoke(app, ["scan", str(root / "videos"), "--db", str(db), "--model", str(model), "-q"])
    assert result.exit_code == 0, result.output
    return deep, db, model


def _at_80(runner, *args):
    return runner.invoke(app, list(map(str, args)), env={"COLUMNS": "80"}, terminal_width=78,
                         prog_name="tagger")  # help on a terminal of 80 columns is 78 wide (Click keeps 2)


def test_query_at_80_columns_shortens_long_names_in_the_middle_and_never_wraps(archive, runner):
    deep, db, _ = archive
    result = _at_80(runner, "query", "--all", "--label", "Blue", "--db", db, "--format", "table")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines() == [
        "path                                 label  start      end        score  source",
        "───────────────────────────────────────────────────────────────────────────────",
        "a_really_long_fil…2019_part_one.mp4  Blue   0:00:00.0  0:00:02.0  0.91   video ",
        "…ts/vta-ldm__0DCit2EBtjs_000030.mp4  Blue   0:00:03.0  0:00:06.0  0.91   video ",
        "2 rows",
    ]
    one = _at_80(runner, "query", "--all", "--label", "Red", "--db", db, "--format", "table")
    assert one.stdout.splitlines()[-1] == "1 row"


def test_help_shows_placeholders_never_type_names(runner):
    for command in ("scan", "models", "query", "export-csv", "show", "failed", "export", "report"):
        result = _at_80(runner, command, "--help")
        assert result.exit_code == 0
        assert not re.search(r"<(str|int|float|bool|path|list\[\w+\])>|\{\w+\}", result.stdout), (command, result.stdout)
        assert max(len(line) for line in result.stdout.splitlines()) <= 80, command
    scan = _at_80(runner, "scan", "--help").stdout.splitlines()
    assert scan[0] == "Usage: tagger scan [OPTIONS] PATH..."
    assert "  PATH...  Folders to walk and/or video files" in scan
    for line in ("  --hop SECONDS                   Seconds between window starts [default: one",
                 "  --include GLOB                  Only paths matching this glob (repeatable)",
                 "  --exclude GLOB                  Skip paths matching this glob (repeatable)",
                 "  --db PATH_OR_URL                SQLite file or SQLAlchemy URL [env:"):
        assert line in scan, line
    query = _at_80(runner, "query", "--help").stdout.splitlines()
    assert "  -l, --label LABEL       Only this label (repeatable)" in query
    assert "  --min-duration SECONDS  Only segments at least this many seconds long" in query
    assert _at_80(runner, "show", "--help").stdout.splitlines()[0] == "Usage: tagger show [OPTIONS] [VIDEO]"


def test_tagger_help_gives_each_command_a_whole_summary(runner):
    result = _at_80(runner, "--help")
    commands = result.stdout.split("Commands:\n", 1)[1].splitlines()
    assert commands == [
        "  scan        Find and tag the videos under PATHs; store their segments.",
        "  models      Show the models a scan would use and what they can tag.",
        "  query       List stored segments, or a per-label summary without --label.",
        "  export-csv  Write stored segments (or windows) as CSV.",
        "  show        Show a video's timelines and segments, or the last scans.",
        "  failed      List the videos whose last scan failed, with the reason.",
        "  export      Write segments as csv, json, vtt, srt, edl or otio.",
        "  report      Write a static HTML report: timelines, thumbnails, filters.",
        "  learn       Teach a label from examples, on stored features: no decoding.",
        "  retag       Re-tag stored videos from their stored features: no decoding.",
        "  similar     List the stored moments most like one moment of a video.",
    ]


def test_export_help_names_the_sidecar_after_its_format(runner):
    flat = " ".join(_at_80(runner, "export", "--help").stdout.split())
    assert "--sidecar vtt, srt, edl, otio: write each video's file beside it (<stem>.tagger.<format>)" in flat
    assert "<stem>.tagger.vtt" not in flat


def test_scan_summary_shows_the_model_file_name_where_its_path_does_not_fit(archive, runner, tmp_path, monkeypatch):
    _, _, model = archive
    deep = tmp_path / "models" / "of" / "a" / "folder" / "far" / "too" / "deep" / "to" / "be" / "shown" / "whole"
    deep.mkdir(parents=True)
    far = deep / "colour.onnx"
    far.write_bytes(model.read_bytes())
    (tmp_path / "models" / "colour.onnx").write_bytes(model.read_bytes())
    video = write_video(tmp_path / "red.avi", 2, colour_at=timeline((99, RED)))
    result = _at_80(runner, "scan", video, "--db", tmp_path / "t.db", "--model", far)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    model_row = next(i for i, line in enumerate(lines) if line.startswith("│ model"))
    assert lines[model_row:model_row + 2] == [  # one line: no folder cut mid-word on the next
        "│ model               │ colour.onnx on CPU                                     │",
        "│ audio model         │ none (colour names no sound model; add one with        │"]
    monkeypatch.chdir(tmp_path)
    near = _at_80(runner, "scan", video, "--db", tmp_path / "t.db", "--model", "models/of/a/../../colour.onnx",
                  "--force")
    (line,) = [line for line in near.stdout.splitlines() if line.startswith("│ model")]
    assert line == "│ model               │ colour.onnx on CPU (models/of/a/../..)                 │"


def test_models_prints_the_whole_sha256_on_one_line(archive, runner):
    from tagger.model import file_sha256

    _, _, model = archive
    result = _at_80(runner, "models", "--model", model)
    assert result.exit_code == 0
    assert f"sha256 {file_sha256(model)}" in result.stdout.splitlines()
    assert max(len(line) for line in result.stdout.splitlines()) <= 80


def test_the_background_label_is_never_suggested_nor_accepted(runner, tmp_path):
    model = write_colour_model(tmp_path / "green_is_nothing.onnx", background="Green")
    video = write_video(tmp_path / "red.avi", 2, colour_at=timeline((99, RED)))
    db = tmp_path / "t.db"
    assert runner.invoke(app, ["scan", str(video), "--db", str(db), "--model", str(model), "-q"]).exit_code == 0
    close = runner.invoke(app, ["query", "--label", "Greenish", "--db", str(db)])
    assert (close.exit_code, close.stderr) == (
        2, "Error: no stored model has the label 'Greenish': `tagger query` with no --label lists the stored labels\n")
    background = runner.invoke(app, ["query", "--label", "Green", "--db", str(db)])
    assert (background.exit_code, background.stderr) == (
        2, "Error: 'Green' is green_is_nothing's background label, never a tag: `tagger query` with no --label "
           "lists the stored labels\n")
    near = runner.invoke(app, ["export-csv", "--label", "Reed", "--db", str(db)])
    assert (near.exit_code, near.stderr) == (2, "Error: no stored model has the label 'Reed': did you mean Red?\n")


def test_a_text_file_as_the_model_is_not_an_onnx_model(runner, tmp_path):
    notes = tmp_path / "notes.md"
    notes.write_text("# my notes\n")
    result = runner.invoke(app, ["scan", str(tmp_path), "--model", str(notes), "--db", str(tmp_path / "t.db")])
    assert (result.exit_code, result.stderr) == (4, f"Error: not an ONNX model: {notes}: pass an exported .onnx file\n")


def test_a_text_file_named_like_a_video_is_not_a_video_and_debug_keeps_the_decoders_words(archive, runner, tmp_path):
    _, _, model = archive
    fake = tmp_path / "fake.mp4"
    fake.write_text("not a video at all\n")
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(fake), "--db", str(db), "--model", str(model), "-q"])
    assert (result.exit_code, result.stderr) == (3, f"failed: {fake}: {NOT_A_VIDEO}\n")
    failed = runner.invoke(app, ["failed", "--db", str(db)])
    assert failed.stdout == f"{fake}\t{NOT_A_VIDEO}\n"
    debug = runner.invoke(app, ["scan", str(fake), "--db", str(db), "--model", str(model), "-q", "--debug"])
    assert debug.exit_code == 3
    assert debug.stderr == (f"failed: {fake}: {NOT_A_VIDEO} [pyav: Invalid data found when processing input; "
                            "decord: Error reading the file]\n")
    shown = json.loads(runner.invoke(app, ["scan", str(fake), "--db", str(db), "--model", str(model), "--json",
                                           "--debug"]).stdout)["failed"]
    assert shown == [{"path": str(fake), "reason": NOT_A_VIDEO,
                      "detail": "pyav: Invalid data found when processing input; decord: Error reading the file"}]


def test_version_names_tagger_onnxruntime_and_its_providers(runner):
    import onnxruntime

    import tagger

    result = runner.invoke(app, ["--version"])
    providers = ", ".join(p.removesuffix("ExecutionProvider") for p in onnxruntime.get_available_providers())
    assert (result.exit_code, result.stdout) == (
        0, f"tagger {tagger.__version__}\nonnxruntime {onnxruntime.__version__} (providers: {providers})\n")


def test_show_writes_times_as_query_does(archive, runner):
    deep, db, _ = archive
    video = deep / "vta-ldm__0DCit2EBtjs_000030.mp4"
    shown = _at_80(runner, "show", video, "--db", db).stdout
    assert "│ duration │ 0:00:06.0 (6.00 s)" in shown
    assert "│ Red   │ 0:00:00.0 │ 0:00:03.0 │ 0.89  │ 0.90 │ video  │" in shown
    assert "│ Blue  │ 0:00:03.0 │ 0:00:06.0 │ 0.91  │ 0.91 │ video  │" in shown
    listed = _at_80(runner, "query", "--all", "--path", "vta-ldm", "--db", db, "--format", "table").stdout
    assert [line.split()[2:4] for line in listed.splitlines()[2:4]] == [["0:00:00.0", "0:00:03.0"],
                                                                         ["0:00:03.0", "0:00:06.0"]]
    assert "00:00:0" not in shown


def test_videos_another_scan_tagged_meanwhile_have_their_own_row(runner, tmp_path, monkeypatch):
    import os
    import subprocess
    import sys
    from pathlib import Path

    import tagger.pipeline

    tests = Path(__file__).resolve().parent
    model = write_colour_model(tmp_path / "colour.onnx")
    videos = [write_video(tmp_path / f"v{i}.avi", 2, colour_at=timeline((99, RED))) for i in range(3)]
    db = tmp_path / "t.db"
    stored_videos = tagger.pipeline.stored_videos

    def then_another_scan(conn):  # right after this scan looked, another tags two of the three videos
        known = stored_videos(conn)
        subprocess.run([sys.executable, "-m", "tagger.cli", "scan", str(videos[0]), str(videos[1]), "--db", str(db),
                        "--model", str(model), "-q"], check=True,
                       env={**os.environ, "PYTHONPATH": f"{tests}:{tests.parent}"})
        return known

    monkeypatch.setattr(tagger.pipeline, "stored_videos", then_another_scan)
    result = _at_80(runner, "scan", tmp_path, "--db", db, "--model", model)
    assert result.exit_code == 0, result.output
    rows = result.stdout.splitlines()
    assert rows[2:8] == [
        "│ videos found           │ 3                                                   │",
        "│ tagged                 │ 1                                                   │",
        "│ tagged by another scan │ 2                                                   │",
        "│ skipped (unchanged)    │ 0                                                   │",
        "│ failed                 │ 0                                                   │",
        "│ segments stored        │ 1                                                   │",
    ]
    assert re.fullmatch(r"│ video time tagged      │ 2\.0 s in \d+\.\d s \(\d+\.\dx real time, this scan alone\) +│",
                        rows[8]), rows[8]
