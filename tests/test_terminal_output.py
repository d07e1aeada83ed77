"""What a person sees on an 80-column terminal: which file each row is, a progress bar that keeps
its numbers, a summary that keeps the model's name, and the small messages that must be true."""

from __future__ import annotations

import io
import os
import re

import pytest
from rich.console import Console

from synthetic import RED, solid, write_video
from tagger.cli import app

LONG_FOLDER = "an archive folder with a long name" + "/and deeper still" * 3


@pytest.fixture(scope="module")
def deep_scan(colour_model, tmp_path_factory):
    """One red video two folders deep under a long path, scanned into a database."""
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("deep")
    (root / LONG_FOLDER).mkdir(parents=True)
    video = write_video(root / LONG_FOLDER / "concert_recording_2019.avi", 2, colour_at=solid(RED))
    db = root / "tags.db"
    result = CliRunner().invoke(app, ["scan", str(video), "--db", str(db), "--model", str(colour_model)])
    assert result.exit_code == 0, result.output
    return video, db, result.stdout


def test_query_table_names_each_file_on_80_columns(deep_scan, runner):
    video, db, _ = deep_scan
    result = runner.invoke(app, ["query", "--all", "--format", "table", "--db", str(db)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    (row,) = [line for line in lines if "Red" in line]
    assert row.startswith("…") and re.search(r"/concert_recording_2019\.avi +Red +0:00:00\.0 +0:00:02\.0 +0\.8", row), row


def test_summary_keeps_the_model_name_on_80_columns(deep_scan):
    _, _, summary = deep_scan
    assert re.search(r"│ model +│ colour\.onnx on CPU ", summary), summary


def _rendered(progress) -> str:
    console = Console(file=io.StringIO(), width=80, force_terminal=True, color_system=None)
    console.print(progress.progress.make_tasks_table(progress.progress.tasks))
    return console.file.getvalue()


def test_progress_bar_keeps_count_and_eta_on_80_columns():
    from tagger.progress import RichProgress

    progress = RichProgress(Console(file=io.StringIO(), width=80, force_terminal=True))
    progress.start(17, 0)
    progress.video_started("/videos/" + "a_very_long_file_name_from_a_camera_" * 3 + ".mp4")
    progress.video_finished("/videos/x.mp4", 60.0, True)
    line = _rendered(progress).splitlines()[0]
    assert len(line) <= 80
    assert re.search(r" 1/17 0\.02 h \d+\.\dx (-:--:--|\d:\d\d:\d\d) a_very_long", line), line
    assert line.endswith("…")


def test_a_rescan_with_nothing_to_do_shows_no_empty_bar():
    from tagger.progress import RichProgress

    progress = RichProgress(Console(file=io.StringIO(), width=80, force_terminal=True))
    progress.start(0, 17)
    assert progress.progress.tasks == []  # was a "0/0" bar


def test_the_progress_display_does_not_echo_ctrl_c():
    """An echoed ^C after a full-width bar wrapped the line, so every Ctrl-C left a copy of the bar."""
    termios = pytest.importorskip("termios")
    from tagger.progress import RichProgress

    main, secondary = os.openpty()
    with open(secondary, "w", closefd=False) as tty:
        before = termios.tcgetattr(secondary)[3]
        assert before & termios.ECHOCTL
        with RichProgress(Console(file=tty, width=80, force_terminal=True)):
            assert not termios.tcgetattr(secondary)[3] & termios.ECHOCTL
        assert termios.tcgetattr(secondary)[3] == before
    os.close(main)
    os.close(secondary)


def test_db_that_is_a_folder_is_named_as_one(tmp_path, runner):
    for command in (["query"], ["failed"], ["scan", str(tmp_path)]):
        result = runner.invoke(app, [*command, "--db", str(tmp_path)])
        assert result.exit_code == 5
        assert result.stderr == (f"Error: --db {tmp_path} is a folder, not a database file: pass a file in it, "
                                 f"e.g. --db {tmp_path / 'tags.db'}\n")


def test_show_finds_a_video_from_a_relative_path_through_another_route(colour_model, tmp_path, runner, monkeypatch):
    real = tmp_path / "real"
    real.mkdir()
    video = write_video(real / "clip.avi", 2, colour_at=solid(RED))
    (tmp_path / "link").symlink_to(real)
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(tmp_path / "link" / "clip.avi"), "--db", str(db), "--model", str(colour_model), "-q"])
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(real)
    monkeypatch.delenv("PWD", raising=False)
    for given in ("clip.avi", "./clip.avi", "../real/clip.avi"):
        shown = runner.invoke(app, ["show", given, "--db", str(db)])
        assert shown.exit_code == 0, (given, shown.output)
        assert shown.stdout.splitlines()[0] == str(tmp_path / "link" / "clip.avi")
    assert video.exists()


def test_failed_says_when_nothing_failed(deep_scan, runner):
    _, db, _ = deep_scan
    result = runner.invoke(app, ["failed", "--db", str(db)])
    assert (result.exit_code, result.stdout, result.stderr) == (0, "", f"no failed videos in {db}\n")


def test_show_prints_settings_readably_and_windows_per_stream(deep_scan, runner):
    video, db, _ = deep_scan
    result = runner.invoke(app, ["show", str(video), "--db", str(db)])
    flat = " ".join(result.stdout.replace("│", " ").split())
    assert "settings hop one window, streams both; threshold the model's, smooth 1, max gap 1, min duration 0 s" in flat
    assert "windows 2 video" in flat
    assert '{"' not in result.stdout


@pytest.mark.parametrize(("args", "message"), [
    (["scan", "x", "--workers", "abc"],
     "Error: Invalid value for '--workers': Input should be a valid integer, unable to parse string as an integer "
     "(see tagger scan --help)\n"),
    (["query", "--bogus"], "Error: No such option: --bogus (see tagger query --help)\n"),
    (["scan", "x", "--db", "{tmp}"], "Error: --db {tmp} is a folder, not a database file: pass a file in it, e.g. --db {tmp}/tags.db\n"),
])
def test_errors_are_one_line_with_no_blank_line_before(args, message, tmp_path, runner, colour_model):
    args = [a.replace("{tmp}", str(tmp_path)) for a in args]
    result = runner.invoke(app, [*args, "--model", str(colour_model)] if args[0] == "scan" else args, prog_name="tagger")
    assert result.exit_code in (2, 5)
    assert result.stderr == message.replace("{tmp}", str(tmp_path))
