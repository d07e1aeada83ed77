"""A decoder that hangs or crashes costs one video, never the scan."""

from __future__ import annotations

import json
import sqlite3
import time

from synthetic import BLUE, RED, solid, write_video
from tagger.cli import app


def _folder_with(tmp_path, bad_name):
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "a_good.mp4", 2, codec="h264", colour_at=solid(RED))
    write_video(root / bad_name, 2, codec="h264", colour_at=solid(BLUE))
    write_video(root / "z_good.mp4", 2, codec="h264", colour_at=solid(BLUE))
    return root


def test_a_hung_decoder_is_killed_after_the_timeout_and_the_scan_goes_on(runner, colour_model, tmp_path):
    root = _folder_with(tmp_path, "m_hang.mp4")
    db = tmp_path / "t.db"
    began = time.monotonic()
    result = runner.invoke(app, ["scan", str(root), "--db", str(db), "--model", str(colour_model), "--json",
                                 "--timeout", "3", "--decoders", "fake_decoders:HangingSource"])
    elapsed = time.monotonic() - began
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert summary["tagged"] == 2
    assert summary["failed"] == [{"path": str(root / "m_hang.mp4"),
                                  "reason": "timeout: the decoder made no progress for 3 s (killed)"}]
    assert elapsed < 3 + 20  # the timeout plus a generous margin for process start-up
    with sqlite3.connect(db) as conn:
        assert conn.execute("select status from videos where path like '%m_hang.mp4'").fetchall() == [("failed",)]


def test_a_crashing_decoder_costs_one_video(runner, colour_model, tmp_path):
    root = _folder_with(tmp_path, "m_crash.mp4")
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(root), "--db", str(db), "--model", str(colour_model), "--json",
                                 "--decoders", "fake_decoders:CrashingSource"])
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert summary["tagged"] == 2
    (failure,) = summary["failed"]
    assert failure["path"] == str(root / "m_crash.mp4")
    assert failure["reason"] == "crash: the decoder process died (exit code -11)"


def test_an_unknown_decoder_is_a_usage_error(runner, colour_model, tmp_path):
    result = runner.invoke(app, ["scan", str(tmp_path), "--model", str(colour_model), "--decoders", "nope"])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "Error: unknown decoder 'nope': choose from decord, pyav or give module:FrameSourceClass"
    )


def test_the_next_decoder_takes_over_when_one_cannot_open(runner, colour_model, tmp_path):
    root = _folder_with(tmp_path, "m_other.mp4")
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(root), "--db", str(db), "--model", str(colour_model), "--json",
                                 "--decoders", "fake_decoders:UnopenableSource,pyav"])
    assert result.exit_code == 0, result.output
    with sqlite3.connect(db) as conn:
        assert {d for (d,) in conn.execute("select decoder from videos")} == {"pyav"}


def test_a_decoder_failing_midway_is_replaced_and_its_windows_discarded(runner, colour_model, tmp_path):
    root = tmp_path / "one"
    root.mkdir()
    write_video(root / "clip.mp4", 6, codec="h264", colour_at=solid(RED))
    reference_db, db = tmp_path / "ref.db", tmp_path / "t.db"
    runner.invoke(app, ["scan", str(root), "--db", str(reference_db), "--model", str(colour_model), "--decoders", "decord"])
    result = runner.invoke(app, ["scan", str(root), "--db", str(db), "--model", str(colour_model), "--json",
                                 "--decoders", "fake_decoders:MidwayFailingSource,decord"])
    assert result.exit_code == 0, result.output
    query = "select v.decoder, w.start, w.end, w.scores from windows w join videos v on v.id = w.video_id order by w.start"
    with sqlite3.connect(db) as conn, sqlite3.connect(reference_db) as ref:
        rows, expected = conn.execute(query).fetchall(), ref.execute(query).fetchall()
    assert rows == expected  # every window once, from the decoder that finished
    assert {row[0] for row in rows} == {"decord"}
