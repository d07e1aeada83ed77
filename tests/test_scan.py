"""`tagger scan` end to end, in-process: generated videos of many shapes, rows stored, re-scans."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import pytest

from synthetic import BLUE, GREEN, GREY, RED, solid, timeline, write_video
from tagger.cli import app
from tagger.executors.local import decoder_threads

EPS = 1e-6


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Videos of several codecs, containers, rates, sizes and lengths, plus files a scan must skip."""
    root = tmp_path_factory.mktemp("corpus")
    (root / "sub dir").mkdir()
    (root / ".hidden").mkdir()
    write_video(root / "ucf_like.avi", 7, fps=25, size=(320, 240), colour_at=timeline((3, RED), (99, BLUE)))
    write_video(root / "h264_30fps.mp4", 3.3, fps=30, codec="h264", colour_at=solid(GREEN))
    write_video(root / "vp9_60fps.webm", 2, fps=60, codec="libvpx-vp9", colour_at=solid(RED))
    write_video(root / "sub dir" / "mkv_10fps.mkv", 5, fps=10, codec="h264", colour_at=solid(BLUE))
    write_video(root / "sub dir" / "portrait.mov", 3, fps=30, codec="h264", size=(90, 160), colour_at=solid(RED))
    write_video(root / "tiny.avi", 2, fps=25, size=(32, 24), colour_at=solid(GREEN))
    write_video(root / "short.mp4", 0.3, fps=25, codec="h264", colour_at=solid(RED))
    write_video(root / "long.avi", 150, fps=25, size=(64, 48), colour_at=timeline((60, GREY), (99999, GREEN)))
    write_video(root / "mpeg2.mpg", 2, fps=25, codec="mpeg2video", colour_at=solid(BLUE))
    write_video(root / "UPPER.MP4", 1.5, fps=24, codec="h264", colour_at=solid(GREY))
    write_video(root / ".hidden" / "secret.mp4", 1, fps=25, codec="h264")
    (root / "notes.txt").write_text("not a video")
    return root


EXPECTED = {
    "ucf_like.avi", "h264_30fps.mp4", "vp9_60fps.webm", "mkv_10fps.mkv", "portrait.mov", "tiny.avi",
    "short.mp4", "long.avi", "mpeg2.mpg", "UPPER.MP4",
}


def _scan(runner, *args):
    result = runner.invoke(app, ["scan", *map(str, args), "--json"])
    summary = json.loads(result.stdout) if result.stdout.strip().startswith("{") else None
    return result, summary


def _rows(db: Path, sql: str, *params):
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


@pytest.fixture(scope="module")
def scanned(corpus, colour_model, tmp_path_factory):
    """The corpus scanned once with the colour model."""
    from typer.testing import CliRunner

    db = tmp_path_factory.mktemp("db") / "tags.db"
    result, summary = _scan(CliRunner(), corpus, "--db", db, "--model", colour_model)
    return db, result, summary


def test_scan_tags_every_video_and_exits_0(scanned):
    db, result, summary = scanned
    assert result.exit_code == 0, result.output
    assert summary["found"] == len(EXPECTED) and summary["tagged"] == len(EXPECTED)
    assert summary["failed"] == []
    stored = {Path(p).name: s for p, s in _rows(db, "select path, status from videos")}
    assert stored == {name: "ok" for name in EXPECTED}


def test_video_metadata_is_stored(scanned):
    db, *_ = scanned
    rows = {Path(r[0]).name: r[1:] for r in _rows(db, "select path, fps, width, height, frames, duration from videos")}
    assert rows["portrait.mov"][1:3] == (90, 160)
    assert rows["mkv_10fps.mkv"][0] == pytest.approx(10, abs=0.1)
    assert rows["vp9_60fps.webm"][0] == pytest.approx(60, abs=0.1)
    assert rows["long.avi"][3] == 3750
    assert rows["long.avi"][4] == pytest.approx(150, abs=0.05)


def test_segments_lie_inside_the_video_on_window_boundaries(scanned):
    db, *_ = scanned
    videos = _rows(db, "select id, duration from videos")
    assert videos
    for video_id, duration in videos:
        windows = _rows(db, "select start, end from windows where video_id = ?", video_id)
        assert windows, f"video {video_id} has no windows"
        starts, ends = {round(s, 6) for s, _ in windows}, {round(e, 6) for _, e in windows}
        assert max(ends) == pytest.approx(duration)
        for start, end in _rows(db, "select start, end from segments where video_id = ?", video_id):
            assert 0 <= start < end <= duration + EPS
            assert round(start, 6) in starts and round(end, 6) in ends


def test_known_colours_come_back_as_exact_segments(scanned):
    db, *_ = scanned
    segments = _rows(db, "select v.path, s.label, s.start, s.end from segments s join videos v on v.id = s.video_id")
    by_video = {}
    for path, label, start, end in segments:
        by_video.setdefault(Path(path).name, []).append((label, round(start, 3), round(end, 3)))
    assert sorted(by_video["ucf_like.avi"]) == [("Blue", 3.0, 7.0), ("Red", 0.0, 3.0)]
    assert by_video["long.avi"] == [("Green", 60.0, 150.0)]
    assert by_video["short.mp4"] == [("Red", 0.0, 0.32)]  # 8 frames, shorter than a window: still tagged
    assert by_video["portrait.mov"] == [("Red", 0.0, 3.0)]
    assert "UPPER.MP4" not in by_video  # grey: no colour reaches its threshold


def test_raw_window_scores_are_kept(scanned):
    db, *_ = scanned
    (blob,) = _rows(db, "select w.scores from windows w join videos v on v.id = w.video_id "
                        "where v.path like '%ucf_like.avi' order by w.start limit 1")[0]
    import numpy as np

    red, green, blue = np.frombuffer(blob, dtype="<f4")
    assert red > 0.8 and green < 0.2 and blue < 0.2


def test_a_scans_row_records_the_run(scanned):
    db, _, summary = scanned
    (status, counts, roots), = _rows(db, "select status, counts, roots from scans where id = ?", summary["scan_id"])
    assert status == "finished"
    assert json.loads(counts)["tagged"] == len(EXPECTED)
    assert len(json.loads(roots)) == 1


def test_rescan_skips_unchanged_and_retags_exactly_the_changed_file(corpus, colour_model, tmp_path, runner):
    db = tmp_path / "tags.db"
    first, summary = _scan(runner, corpus, "--db", db, "--model", colour_model)
    assert first.exit_code == 0 and summary["tagged"] == len(EXPECTED)
    before = dict(_rows(db, "select path, scanned_at from videos"))

    again, summary = _scan(runner, corpus, "--db", db, "--model", colour_model)
    assert again.exit_code == 0
    assert (summary["tagged"], summary["skipped"]) == (0, len(EXPECTED))
    assert dict(_rows(db, "select path, scanned_at from videos")) == before  # nothing was decoded again

    changed = corpus / "tiny.avi"
    stat = changed.stat()
    os.utime(changed, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    third, summary = _scan(runner, corpus, "--db", db, "--model", colour_model)
    assert (summary["tagged"], summary["skipped"]) == (1, len(EXPECTED) - 1)
    after = dict(_rows(db, "select path, scanned_at from videos"))
    assert [p for p in after if after[p] != before[p]] == [str(changed)]
    assert _rows(db, "select count(*) from segments s join videos v on v.id = s.video_id where v.path = ?",
                 str(changed)) == [(1,)]  # replaced, not duplicated

    forced, summary = _scan(runner, corpus, "--db", db, "--model", colour_model, "--force")
    assert summary["tagged"] == len(EXPECTED)
    assert _rows(db, "select count(*) from videos") == [(len(EXPECTED),)]


def test_hidden_include_exclude(corpus, colour_model, tmp_path, runner):
    db = tmp_path / "tags.db"
    _, summary = _scan(runner, corpus, "--db", db, "--model", colour_model, "--hidden", "--include", "*.mp4",
                       "--exclude", "short*")
    names = {Path(p).name for (p,) in _rows(db, "select path from videos")}
    assert names == {"h264_30fps.mp4", "secret.mp4"}
    assert summary["found"] == 2


def test_single_files_and_symlink_cycles(tmp_path, colour_model, runner):
    root = tmp_path / "archive"
    (root / "a").mkdir(parents=True)
    write_video(root / "a" / "clip.mp4", 1, codec="h264", colour_at=solid(RED))
    os.symlink(root, root / "a" / "loop")  # a cycle: a/loop -> archive
    db = tmp_path / "tags.db"
    result, summary = _scan(runner, root, "--db", db, "--model", colour_model, "--follow-symlinks")
    assert result.exit_code == 0 and summary["found"] == 1
    result, summary = _scan(runner, root / "a" / "clip.mp4", "--db", tmp_path / "one.db", "--model", colour_model)
    assert result.exit_code == 0 and summary["tagged"] == 1


def test_hop_overlaps_windows(red_grey_blue_video, colour_model, tmp_path, runner):
    db = tmp_path / "tags.db"
    result, _ = _scan(runner, red_grey_blue_video, "--db", db, "--model", colour_model, "--hop", "0.5")
    assert result.exit_code == 0
    assert _rows(db, "select count(*) from windows") == [(19,)]  # starts 0, 0.5, ..., 9.0
    reds = _rows(db, "select start, end from segments where label = 'Red'")
    assert reds == [(0.0, 3.5)]  # the window 2.5-3.5 is still mostly red


def test_threshold_and_min_duration_flags(red_grey_blue_video, colour_model, tmp_path, runner):
    db = tmp_path / "tags.db"
    _scan(runner, red_grey_blue_video, "--db", db, "--model", colour_model, "--threshold", "0.3")
    labels = {label for (label,) in _rows(db, "select label from segments")}
    assert labels == {"Red", "Green", "Blue"}  # grey (0.35 of each channel) now passes everywhere
    db2 = tmp_path / "tags2.db"
    _scan(runner, red_grey_blue_video, "--db", db2, "--model", colour_model, "--min-duration", "3.5")
    assert _rows(db2, "select label, start, end from segments") == [("Blue", 6.0, 10.0)]


def test_changed_settings_retag_on_the_next_scan(red_grey_blue_video, colour_model, tmp_path, runner):
    db = tmp_path / "tags.db"
    _, summary = _scan(runner, red_grey_blue_video, "--db", db, "--model", colour_model)
    assert summary["tagged"] == 1
    assert {label for (label,) in _rows(db, "select label from segments")} == {"Red", "Blue"}
    stored = json.loads(_rows(db, "select settings from videos")[0][0])
    assert stored["segments"]["threshold"] is None and stored["segments"]["max_gap"] == 1
    windows = _rows(db, "select start, end, scores from windows order by start")

    # Another threshold: segments re-derived from the stored scores, no decoder needed.
    result, summary = _scan(runner, red_grey_blue_video, "--db", db, "--model", colour_model, "--threshold", "0.3",
                            "--decoders", "fake_decoders:UnopenableSource")
    assert result.exit_code == 0, result.output
    assert (summary["tagged"], summary["skipped"], summary["failed"]) == (1, 0, [])
    assert {label for (label,) in _rows(db, "select label from segments")} == {"Red", "Green", "Blue"}
    assert _rows(db, "select start, end, scores from windows order by start") == windows
    assert json.loads(_rows(db, "select settings from videos")[0][0])["segments"]["threshold"] == 0.3
    fresh = tmp_path / "fresh.db"  # the same as a first scan with that threshold
    _scan(runner, red_grey_blue_video, "--db", fresh, "--model", colour_model, "--threshold", "0.3")
    segments_sql = "select label, start, end, round(score, 6), round(max_score, 6) from segments order by label, start"
    assert _rows(db, segments_sql) == _rows(fresh, segments_sql)

    _, summary = _scan(runner, red_grey_blue_video, "--db", db, "--model", colour_model, "--threshold", "0.3",
                       "--workers", "1", "--batch-size", "3")  # how a scan runs is not what it stores
    assert (summary["tagged"], summary["skipped"]) == (0, 1)

    # Another hop changes the windows themselves: decoded again.
    _, summary = _scan(runner, red_grey_blue_video, "--db", db, "--model", colour_model, "--threshold", "0.3",
                       "--hop", "0.5")
    assert summary["tagged"] == 1
    assert _rows(db, "select count(*) from windows") == [(19,)]


def test_a_video_retagged_by_another_scan_meanwhile_is_not_resegmented_from_its_windows(
        red_grey_blue_video, colour_model, tmp_path, runner, monkeypatch):
    import subprocess
    import sys

    import tagger.pipeline

    db = tmp_path / "tags.db"
    _scan(runner, red_grey_blue_video, "--db", db, "--model", colour_model)
    stored_videos = tagger.pipeline.stored_videos

    def then_another_scan(conn):  # right after this scan looked, another one re-tags with other windows
        known = stored_videos(conn)
        subprocess.run([sys.executable, "-m", "tagger.cli", "scan", str(red_grey_blue_video), "--db", str(db),
                        "--model", str(colour_model), "--hop", "0.5", "--streams", "video", "-q"], check=True)
        assert _rows(db, "select count(*) from windows") == [(19,)]
        return known

    monkeypatch.setattr(tagger.pipeline, "stored_videos", then_another_scan)
    _, summary = _scan(runner, red_grey_blue_video, "--db", db, "--model", colour_model, "--threshold", "0.3")
    assert summary["tagged"] == 1
    # Decoded again with this scan's settings, not re-derived from the other scan's windows.
    assert _rows(db, "select count(*) from windows") == [(10,)]
    assert json.loads(_rows(db, "select settings from videos")[0][0])["windows"]["hop"] is None
    fresh = tmp_path / "fresh.db"
    monkeypatch.setattr(tagger.pipeline, "stored_videos", stored_videos)
    _scan(runner, red_grey_blue_video, "--db", fresh, "--model", colour_model, "--threshold", "0.3")
    segments_sql = "select label, start, end, round(score, 6) from segments order by label, start"
    assert _rows(db, segments_sql) == _rows(fresh, segments_sql)


def test_env_vars_pick_database_and_model(red_grey_blue_video, colour_model, tmp_path, runner, monkeypatch):
    monkeypatch.setenv("TAGGER_DB", str(tmp_path / "env.db"))
    monkeypatch.setenv("TAGGER_MODEL", str(colour_model))
    result, summary = _scan(runner, red_grey_blue_video)
    assert result.exit_code == 0 and summary["tagged"] == 1
    assert (tmp_path / "env.db").is_file()


def test_default_database_lives_in_the_user_data_dir(red_grey_blue_video, colour_model, tmp_path, runner):
    result, _ = _scan(runner, red_grey_blue_video, "--model", colour_model)
    assert result.exit_code == 0
    assert (tmp_path / "xdg-data" / "tagger" / "tags.db").is_file()


def test_human_output_has_the_summary_table(red_grey_blue_video, colour_model, tmp_path, runner):
    result = runner.invoke(app, ["scan", str(red_grey_blue_video), "--db", str(tmp_path / "t.db"),
                                 "--model", str(colour_model)])
    assert result.exit_code == 0
    for line in ("videos found", "tagged", "skipped (unchanged)", "failed", "segments stored"):
        assert line in result.stdout


def test_shared_clips_are_all_tagged(shared_data, colour_model, tmp_path, runner):
    db = tmp_path / "tags.db"
    result, summary = _scan(runner, shared_data / "clips", "--db", db, "--model", colour_model)
    assert result.exit_code == 0, result.output
    clips = sorted(p.name for p in (shared_data / "clips").iterdir())
    assert summary["tagged"] == len(clips) == 17
    for path, duration, frames in _rows(db, "select path, duration, frames from videos"):
        assert duration > 0 and frames > 0, path
        (count,) = _rows(db, "select count(*) from windows w join videos v on v.id = w.video_id where v.path = ?", path)[0]
        assert count >= 1


@pytest.mark.parametrize(("cores", "busy", "idle", "queued", "threads"), [
    (2, 0, 2, 10, 1),  # a queue that keeps both decoders busy: one thread each
    (2, 1, 1, 0, 1),  # the last video starts beside another
    (2, 0, 1, 0, 2),  # a lone video gets both cores
    (8, 0, 8, 2, 2),  # three videos on 8 cores
    (1, 0, 1, 0, 1),
])
def test_decoder_threads_share_the_cores(monkeypatch, cores, busy, idle, queued, threads):
    from types import SimpleNamespace

    monkeypatch.setattr("tagger.executors.local.usable_cores", lambda: cores)
    decoders = [SimpleNamespace(job=7)] * busy + [SimpleNamespace(job=None)] * idle
    assert decoder_threads(decoders, queued) == threads


def test_time_spent_storing_is_granted_only_to_decoders_that_sent_something():
    """While the scan stores a video (maybe waiting on its database), a decoder with unread
    messages made progress or was blocked sending: its timeout waits. A hung one sent nothing and is
    still caught at its timeout."""
    from types import SimpleNamespace

    from tagger.executors.local import _grant_blocked

    def decoder(has_messages: bool, job=1):
        return SimpleNamespace(job=job, last_progress=100.0, conn=SimpleNamespace(poll=lambda: has_messages))

    sending, hung, idle = decoder(True), decoder(False), decoder(True, job=None)
    _grant_blocked([sending, hung, idle], 30.0)
    assert (sending.last_progress, hung.last_progress, idle.last_progress) == (130.0, 100.0, 100.0)
    _grant_blocked([sending], -5.0)  # a pause of the whole process is the clock's: never less grace
    assert sending.last_progress == 130.0
