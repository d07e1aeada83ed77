"""The odd files real archives hold, and hostile conditions: names that are not UTF-8 or hold
line breaks, special files, unreadable folders, links, huge frames, databases we may only read."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import stat

import pytest

from synthetic import RED, solid, write_video
from tagger.cli import app
from tagger.schema import SCHEMA_VERSION

NOT_UTF8 = b"caf\xe9 \xff.avi"  # Latin-1 bytes, as an old Windows share or camera card leaves them


@pytest.fixture(scope="module")
def red_clip(tmp_path_factory):
    return write_video(tmp_path_factory.mktemp("red") / "red.avi", 2, colour_at=solid(RED))


def test_a_name_that_is_not_utf8_is_stored_losslessly_tagged_and_exported_escaped(red_clip, colour_model, tmp_path,
                                                                                  runner):
    folder = tmp_path / "archive"
    folder.mkdir()
    odd = os.path.join(os.fsencode(folder), NOT_UTF8)
    shutil.copy(red_clip, odd)
    broken = os.path.join(os.fsencode(folder), b"broken \xe9.mp4")
    with open(broken, "wb") as handle:
        handle.write(b"\x00" * 4096)
    db = tmp_path / "t.db"
    scan = ["scan", str(folder), "--db", str(db), "--model", str(colour_model), "--json"]
    first = runner.invoke(app, scan)
    assert first.exit_code == 3, first.output  # the broken one failed; the scan went on
    assert (json.loads(first.stdout)["tagged"], len(json.loads(first.stdout)["failed"])) == (1, 1)
    again = runner.invoke(app, scan)  # the stored name opens the same file: unchanged, skipped
    summary = json.loads(again.stdout)
    assert (summary["tagged"], summary["skipped"], len(summary["failed"])) == (0, 1, 1)  # the failure is retried
    assert summary["failed"][0]["path"] == f"{folder}/broken \\xe9.mp4"
    escaped = f"{folder}/caf\\xe9 \\xff.avi"
    out = runner.invoke(app, ["query", "--all", "--format", "json", "--db", str(db)])
    assert [(r["path"], r["label"]) for r in json.loads(out.stdout)] == [(escaped, "Red")]
    target = tmp_path / "out.csv"
    assert runner.invoke(app, ["export-csv", "-o", str(target), "--db", str(db)]).exit_code == 0
    assert escaped in target.read_text(encoding="utf-8")
    failed = runner.invoke(app, ["failed", "--db", str(db)])
    assert failed.stdout.startswith(f"{folder}/broken \\xe9.mp4\t")
    (stored,) = [row[0] for row in sqlite3.connect(db).execute("SELECT path FROM videos WHERE status = 'ok'")]
    assert stored == f"bytes:{folder}/caf\\xe9 \\xff.avi"


def test_lossless_text_round_trips_every_byte():
    from tagger.schema import LosslessText

    column = LosslessText()
    for raw in (b"/a/plain.avi", b"/a/caf\xe9\\x41.avi", b"/a/\xff\xfe\\\\", b"bytes:/a/plain.avi"):
        text = os.fsdecode(raw)
        stored = column.process_bind_param(text, None)
        stored.encode("utf-8")  # any database takes it
        assert column.process_result_value(stored, None) == text
    assert column.process_bind_param("/a/plain.avi", None) == "/a/plain.avi"  # valid names stored as they are


def test_failed_output_cannot_be_forged_by_a_file_name(colour_model, tmp_path, runner):
    folder = tmp_path / "in"
    folder.mkdir()
    forged = folder / "x.avi\tempty file (0 bytes)\nfake.avi\tok.avi"
    forged.write_bytes(b"RIFF" + b"\x00" * 600)
    db = tmp_path / "t.db"
    assert runner.invoke(app, ["scan", str(folder), "--db", str(db), "--model", str(colour_model), "-q"]).exit_code == 3
    result = runner.invoke(app, ["failed", "--db", str(db)])
    lines = result.stdout.splitlines()
    assert len(lines) == 1 and lines[0].count("\t") == 1
    assert lines[0].startswith(f"{folder}/x.avi\\tempty file (0 bytes)\\nfake.avi\\tok.avi\t")


@pytest.fixture
def read_only_folder(tmp_path):
    """A folder nobody may write, as a read-only share is: chattr +i as root (root ignores file
    modes), chmod 555 otherwise. Undone afterwards, so the folder can be removed."""
    import subprocess

    folder = tmp_path / "share"
    folder.mkdir()

    def lock():
        if os.geteuid() == 0:
            if subprocess.run(["chattr", "+i", str(folder)], capture_output=True).returncode != 0:
                pytest.skip("running as root where chattr +i is unavailable: no way to make a folder read-only")
        else:
            folder.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH)

    yield folder, lock
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-i", str(folder)], capture_output=True)
    folder.chmod(0o755)


def test_readers_read_a_database_they_may_not_write(read_only_folder, red_clip, colour_model, runner):
    folder, lock = read_only_folder
    db = folder / "tags.db"
    assert runner.invoke(app, ["scan", str(red_clip), "--db", str(db), "--model", str(colour_model), "-q"]).exit_code == 0
    assert runner.invoke(app, ["query", "--db", str(db)]).exit_code == 0  # checkpoints and leaves no -wal/-shm
    for leftover in folder.glob("tags.db-*"):
        leftover.unlink()
    lock()
    for command in (["query", "--all", "--format", "json"], ["query", "--all", "--threshold", "0.5", "--format", "json"],
                    ["show", str(red_clip)], ["failed"], ["export-csv"]):
        result = runner.invoke(app, [*command, "--db", str(db)])
        assert result.exit_code == 0, (command, result.output)
    listed = runner.invoke(app, ["query", "--all", "--format", "json", "--db", str(db)])
    assert [(r["label"], r["end_s"]) for r in json.loads(listed.stdout)] == [("Red", 2.0)]
    scan = runner.invoke(app, ["scan", str(red_clip), "--db", str(db), "--model", str(colour_model), "--force"])
    assert scan.exit_code == 5 and scan.stderr.startswith(f"Error: cannot use database {db}: ")


def test_a_new_database_in_a_folder_nobody_may_write_says_so(read_only_folder, red_clip, colour_model, runner):
    folder, lock = read_only_folder
    lock()
    db = folder / "new.db"
    result = runner.invoke(app, ["scan", str(red_clip), "--db", str(db), "--model", str(colour_model)])
    assert (result.exit_code, result.stderr) == (5, f"Error: cannot use database {db}: the folder {folder} is not "
                                                    "writable; pass --db PATH in a folder you can write\n")
    assert list(folder.iterdir()) == []


@pytest.mark.parametrize("command", [["query"], ["failed"], ["scan", "{video}"]])
def test_a_foreign_sqlite_file_is_refused_untouched(command, red_clip, colour_model, tmp_path, runner):
    db = tmp_path / "notes.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE notes (text)")
    args = [a.replace("{video}", str(red_clip)) for a in command] + ["--db", str(db)]
    result = runner.invoke(app, args + (["--model", str(colour_model)] if command[0] == "scan" else []))
    assert (result.exit_code, result.stderr) == (5, f"Error: database {db} holds other tables, not tagger's: pass another --db\n")
    with sqlite3.connect(db) as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)  # not switched to WAL


@pytest.mark.parametrize("command", [["query"], ["scan", "{video}"]])
def test_a_schema_version_that_is_not_a_whole_number_exits_5(command, red_clip, colour_model, tmp_path, runner):
    db = tmp_path / "odd.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', '2.5')")
    args = [a.replace("{video}", str(red_clip)) for a in command] + ["--db", str(db)]
    result = runner.invoke(app, args + (["--model", str(colour_model)] if command[0] == "scan" else []))
    assert (result.exit_code, result.stderr) == (5, f"Error: database {db} has schema version '2.5', not a whole "
                                                    "number: it was not written by tagger; pass another --db\n")


@pytest.mark.parametrize("version", ["-1", "0"])
@pytest.mark.parametrize("command", [["query"], ["scan", "{video}"]])
def test_a_schema_version_below_1_exits_5_naming_it(command, version, red_clip, colour_model, tmp_path, runner):
    db = tmp_path / "odd.db"
    with sqlite3.connect(db) as conn:
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)")
        conn.execute("INSERT INTO meta VALUES ('schema_version', ?)", (version,))
    args = [a.replace("{video}", str(red_clip)) for a in command] + ["--db", str(db)]
    result = runner.invoke(app, args + (["--model", str(colour_model)] if command[0] == "scan" else []))
    assert (result.exit_code, result.stderr) == (5, f"Error: database {db} has schema version '{version}', which no "
                                                    f"tagger writes (1 to {SCHEMA_VERSION}): it was not written by tagger; pass "
                                                    "another --db\n")
    with sqlite3.connect(db) as conn:  # refused untouched: no tables added, the version left as it was
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("meta",), ("sqlite_autoindex_meta_1",)]
        assert conn.execute("SELECT value FROM meta").fetchall() == [(version,)]


def test_a_fifo_is_not_a_regular_file(colour_model, tmp_path, runner):
    fifo = tmp_path / "live.mp4"
    os.mkfifo(fifo)
    result = runner.invoke(app, ["scan", str(fifo), "--db", str(tmp_path / "t.db"), "--model", str(colour_model), "-q"])
    assert result.exit_code == 3
    assert result.stderr == (f"failed: {fifo}: not a regular file (a FIFO, device or socket): only video files "
                             "can be scanned\n")
    walked = runner.invoke(app, ["scan", str(tmp_path), "--db", str(tmp_path / "t.db"), "--model", str(colour_model), "-q"])
    assert walked.exit_code == 0
    assert walked.stderr == ("warning: skipped 1 special file named like a video (a FIFO, device or socket): "
                             "only regular files are scanned\n")


def test_a_folder_of_symbolic_links_says_what_it_skipped(red_clip, colour_model, tmp_path, runner):
    folder = tmp_path / "links"
    folder.mkdir()
    for name in ("a.avi", "b.avi"):
        (folder / name).symlink_to(red_clip)
    (folder / "more").symlink_to(red_clip.parent)
    (folder / "notes.txt").symlink_to(tmp_path)  # a link to a folder counts: it may hold videos
    result = runner.invoke(app, ["scan", str(folder), "--db", str(tmp_path / "t.db"), "--model", str(colour_model), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["found"] == 0
    assert result.stderr == "warning: skipped 4 symbolic links to videos or folders: pass --follow-symlinks to follow them\n"
    followed = runner.invoke(app, ["scan", str(folder), "--db", str(tmp_path / "t.db"), "--model", str(colour_model),
                                   "--json", "--follow-symlinks"])
    assert json.loads(followed.stdout)["found"] == 3 and followed.stderr == ""


def test_an_unreadable_subfolder_is_reported(red_clip, colour_model, tmp_path, runner, monkeypatch):
    """As root no folder is unreadable, so the denial is injected where the walk lists a folder."""
    import tagger.discover

    (tmp_path / "open").mkdir()
    shutil.copy(red_clip, tmp_path / "open" / "red.avi")
    (tmp_path / "closed").mkdir()
    real_scandir = os.scandir

    def scandir(path):
        if str(path).endswith("closed"):
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(tagger.discover.os, "scandir", scandir)
    result = runner.invoke(app, ["scan", str(tmp_path), "--db", str(tmp_path / "t.db"), "--model", str(colour_model), "--json"])
    assert result.exit_code == 0 and json.loads(result.stdout)["found"] == 1
    assert result.stderr == f"warning: cannot read folder {tmp_path / 'closed'} (Permission denied): its videos are not scanned\n"


def test_a_very_wide_video_is_refused_with_the_reason_not_decoded_huge(colour_model, tmp_path, runner):
    """10000x10 frames scaled to the model's short side are 320000x32 here (224000x224, 150 MB a
    frame, with the default model): one decoder took 1.3 GB for a 20 s video."""
    wide = write_video(tmp_path / "wide.mkv", 2, size=(10000, 10), codec="ffv1")
    result = runner.invoke(app, ["scan", str(wide), "--db", str(tmp_path / "t.db"), "--model", str(colour_model), "-q"])
    assert result.exit_code == 3
    reason = ("frames of 10000x10 have an aspect ratio of 1000:1 (at most 8:1 is decoded): scaled to 32000x32 for "
              "the model they would take 3 MB each")
    assert result.stderr == f"failed: {wide}: pyav: {reason}; decord: {reason}\n"


@pytest.mark.parametrize("size", [(640, 480), (1920, 1080), (3840, 2160), (720, 1280), (5120, 1440), (7680, 4320)])
def test_ordinary_frame_sizes_are_decoded(size, tmp_path):
    """Two frames of each size, up to 8K, open with each decoder and come out scaled to the short
    side, aspect ratio kept, with the video's colour."""
    from tagger.decode import open_video, scaled_size

    width, height = size
    video = write_video(tmp_path / "frames.mkv", 2 / 25, size=size, codec="ffv1", colour_at=solid(RED))
    for decoder in ("pyav", "decord"):
        source = open_video(str(video), 224, (decoder,))
        try:
            assert (source.info.width, source.info.height, source.info.frames) == (width, height, 2)
            frames = list(source.read([0, 1]))
        finally:
            source.close()
        out_w, out_h = scaled_size(width, height, 224)
        assert [index for index, _ in frames] == [0, 1]
        for _, frame in frames:
            assert frame.shape == (out_h, out_w, 3), decoder
            centre = frame[out_h // 2, out_w // 2].astype(int)
            assert abs(centre - RED).max() <= 12, (decoder, centre)
