"""Interrupted, killed and concurrent scans: the database stays consistent and complete.

Each video's rows are replaced in one transaction; these tests kill real scans (subprocesses) at
random moments and check that no video is ever half-written and that a final scan completes.
"""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthetic import BLUE, GREEN, GREY, RED, timeline, write_video

TESTS = Path(__file__).resolve().parent
VIDEOS = 12


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    colours = [RED, GREEN, BLUE]
    for index in range(VIDEOS):
        spans = timeline((1 + index % 3, colours[index % 3]), (3, GREY), (99, colours[(index + 1) % 3]))
        write_video(root / f"video_{index:02d}.avi", 4 + index % 3, colour_at=spans)
    return root


def _command(root, db, model, *extra):
    # One slow decoder process paces the scan (about 5 s in all), so kills land mid-scan.
    return [sys.executable, "-m", "tagger.cli", "scan", str(root), "--db", str(db), "--model", str(model), "-q",
            "--decoders", "fake_decoders:SlowSource", "--workers", "1", *extra]


def _env():
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")])}


def _snapshot(db) -> dict:
    """path -> (status, windows, segments) for every stored video."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select id, path, status from videos").fetchall()
        return {
            path: (
                status,
                conn.execute("select start, end, scores from windows where video_id = ? order by start", (vid,)).fetchall(),
                conn.execute("select label, start, end, round(score, 5) from segments where video_id = ? "
                             "order by label, start", (vid,)).fetchall(),
            )
            for vid, path, status in rows
        }


def _stored_count(db) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
            return conn.execute("select count(*) from videos").fetchone()[0]
    except sqlite3.Error:
        return 0  # the scan has not created the schema yet


def _integrity(db) -> str:
    with sqlite3.connect(db) as conn:
        return conn.execute("pragma integrity_check").fetchone()[0]


@pytest.fixture(scope="module")
def reference(archive, colour_model, tmp_path_factory) -> dict:
    """What an uninterrupted scan stores."""
    db = tmp_path_factory.mktemp("ref") / "ref.db"
    done = subprocess.run(_command(archive, db, colour_model), env=_env(), capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    snapshot = _snapshot(db)
    assert len(snapshot) == VIDEOS and all(s == "ok" for s, _, _ in snapshot.values())
    return snapshot


def test_ctrl_c_stops_cleanly_and_the_next_scan_resumes(archive, colour_model, reference, tmp_path):
    db = tmp_path / "t.db"
    scan = subprocess.Popen(_command(archive, db, colour_model), env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not (db.exists() and _stored_count(db)):
        time.sleep(0.1)  # interrupt once the first video is stored, while the rest are in flight
    scan.send_signal(signal.SIGINT)
    _, stderr = scan.communicate(timeout=60)
    assert scan.returncode == 130
    assert stderr.strip().splitlines()[-1] == "Interrupted: finished videos are stored; run the same scan again to resume."
    assert "Traceback" not in stderr
    partial = _snapshot(db)
    assert 0 < len(partial) < VIDEOS
    assert all(partial[path] == reference[path] for path in partial)  # finished videos are whole
    with sqlite3.connect(db) as conn:
        assert conn.execute("select status from scans").fetchall() == [("interrupted",)]
    resumed = subprocess.run(_command(archive, db, colour_model), env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    assert _snapshot(db) == reference


@pytest.mark.slow
def test_sigkill_at_random_moments_never_leaves_partial_rows(archive, colour_model, reference, tmp_path):
    db = tmp_path / "t.db"
    rng = random.Random(20261124)
    kills = 0
    for _ in range(20):
        scan = subprocess.Popen(_command(archive, db, colour_model, "--force"), env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        time.sleep(rng.uniform(0.2, 3.0))
        if scan.poll() is None:
            os.killpg(scan.pid, signal.SIGKILL)
            kills += 1
        scan.wait(timeout=60)
        assert _integrity(db) == "ok"
        for path, stored in _snapshot(db).items():
            assert stored == reference[path], f"partial or wrong rows for {path}"
    assert kills >= 15  # most runs really were killed mid-scan
    final = subprocess.run(_command(archive, db, colour_model), env=_env(), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert _snapshot(db) == reference


def test_two_concurrent_scans_and_a_reader(archive, colour_model, reference, tmp_path):
    db = tmp_path / "t.db"
    scans = [subprocess.Popen(_command(archive, db, colour_model, "--force"), env=_env(),
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    reads = 0
    while any(scan.poll() is None for scan in scans):
        if db.exists():
            query = subprocess.run([sys.executable, "-m", "tagger.cli", "query", "--db", str(db), "--format", "json"],
                                   capture_output=True, text=True)
            assert query.returncode in (0, 5), query.stderr  # 5 only before the first scan created it
            reads += query.returncode == 0
    for scan in scans:
        assert scan.wait() == 0, scan.stderr.read()
    assert reads >= 1
    assert _integrity(db) == "ok"
    assert _snapshot(db) == reference  # each video once, no duplicated windows or segments
