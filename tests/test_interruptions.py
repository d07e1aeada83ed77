"""Scans that are paused, interrupted, terminated or starved of their database: one clear line, the
right exit code, no healthy video marked failed, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

import tagger.progress
import tagger.database
from synthetic import BLUE, GREEN, RED, solid, write_video
from tagger.cli import app

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture(scope="module")
def five_videos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("five")
    for i in range(5):
        write_video(root / f"v{i}.avi", 3, colour_at=solid((RED, GREEN, BLUE)[i % 3]))
    return root


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)])}


def _rows(db: Path, sql: str) -> list[tuple]:
    """Rows of `sql`; none while the scan has not created its tables yet."""
    if not db.exists():
        return []
    try:
        with sqlite3.connect(db) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def _stored(db: Path) -> list[tuple]:
    return sorted(_rows(db, "select path, status from videos"))


def _scan_rows(db: Path) -> list[tuple]:
    return _rows(db, "select id, status from scans order by id")


def _lock_after_first_video(monkeypatch, db: Path, held: list) -> None:
    """Once the first video is stored, another process's write lock is taken and never released."""
    finished = tagger.progress.RichProgress.video_finished

    def video_finished(self, path, seconds, ok):
        finished(self, path, seconds, ok)
        if not held:
            locker = sqlite3.connect(db, isolation_level=None)
            locker.execute("BEGIN IMMEDIATE")
            held.append(locker)

    monkeypatch.setattr(tagger.progress.RichProgress, "video_finished", video_finished)


def test_a_write_lock_held_too_long_mid_scan_is_exit_5_and_the_rest_is_scanned_next_time(
        five_videos, colour_model, runner, tmp_path, monkeypatch):
    db = tmp_path / "t.db"
    monkeypatch.setattr(tagger.database, "LOCK_WAIT_MS", 300)
    held: list = []
    _lock_after_first_video(monkeypatch, db, held)
    result = runner.invoke(app, ["scan", str(five_videos), "--db", str(db), "--model", str(colour_model),
                                 "--workers", "1"])
    assert held, result.output
    held[0].rollback()
    held[0].close()
    assert result.exit_code == 5, result.output
    assert result.stderr.strip().splitlines()[-1] == "Error: database is locked by another process: wait and run again"
    stored = _stored(db)
    assert len(stored) == 1 and stored[0][1] == "ok"  # none of the others stored as failed
    monkeypatch.undo()
    again = runner.invoke(app, ["scan", str(five_videos), "--db", str(db), "--model", str(colour_model), "--json"])
    assert again.exit_code == 0, again.output
    assert json.loads(again.stdout)["tagged"] == 4
    assert [status for _, status in _stored(db)] == ["ok"] * 5


def test_a_full_disk_mid_scan_is_exit_5_with_one_line(five_videos, colour_model, runner, tmp_path, monkeypatch):
    db = tmp_path / "t.db"
    configure = tagger.database._configure_sqlite

    def small_disk(engine):  # a disk that fills up after a few pages, as SQLite sees it
        configure(engine)

        @tagger.database.event.listens_for(engine, "connect")
        def _limit(dbapi_connection, _record):
            dbapi_connection.execute("PRAGMA max_page_count = 14")

    monkeypatch.setattr(tagger.database, "_configure_sqlite", small_disk)
    result = runner.invoke(app, ["scan", str(five_videos), "--db", str(db), "--model", str(colour_model)])
    assert result.exit_code == 5, result.output
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: the disk holding {db} is full: free some space and run the scan again")


def _children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    if int(handle.read().rsplit(")", 1)[1].split()[1]) == pid:
                        found.append(int(entry))
            except (OSError, ValueError, IndexError):
                continue
    return found


def _start(folder: Path, db: Path, model: Path, *extra: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "tagger.cli", "scan", str(folder), "--db", str(db), "--model",
                             str(model), *extra], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)


@pytest.mark.slow
def test_ctrl_c_while_decoders_start_prints_no_traceback(five_videos, colour_model, tmp_path):
    for attempt, delay in enumerate((0.1, 0.2, 0.3, 0.5)):  # moments inside a decoder's start-up imports
        # Paced decoding: the scan is still running when the signal comes, whatever the delay.
        scan = _start(five_videos, tmp_path / f"t{attempt}.db", colour_model, "--decoders", "fake_decoders:PacedSource")
        deadline = time.monotonic() + 30
        while not _children(scan.pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        time.sleep(delay)
        os.killpg(scan.pid, signal.SIGINT)  # what a terminal sends the whole group on Ctrl-C
        _, stderr = scan.communicate(timeout=60)
        assert "Traceback" not in stderr, stderr
        assert scan.returncode == 130, stderr
        assert stderr.strip() == "Interrupted: finished videos are stored; run the same scan again to resume."


@pytest.mark.slow
def test_sigterm_is_handled_like_ctrl_c(five_videos, colour_model, tmp_path):
    db = tmp_path / "t.db"
    scan = _start(five_videos, db, colour_model, "--decoders", "fake_decoders:PacedSource", "--workers", "1")
    deadline = time.monotonic() + 60
    while not _scan_rows(db) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    scan.terminate()
    _, stderr = scan.communicate(timeout=60)
    assert scan.returncode == 130, stderr
    assert stderr.strip() == "Interrupted: finished videos are stored; run the same scan again to resume."
    assert _scan_rows(db) == [(1, "interrupted")]


@pytest.mark.slow
def test_a_scan_killed_outright_is_recorded_as_interrupted_by_the_next(five_videos, colour_model, tmp_path):
    db = tmp_path / "t.db"
    scan = _start(five_videos, db, colour_model, "--decoders", "fake_decoders:PacedSource", "--workers", "1")
    deadline = time.monotonic() + 60
    while not _scan_rows(db) and time.monotonic() < deadline:
        time.sleep(0.1)
    os.killpg(scan.pid, signal.SIGKILL)
    scan.communicate(timeout=60)
    assert _scan_rows(db) == [(1, "running")]  # as the kill left it
    final = subprocess.run([sys.executable, "-m", "tagger.cli", "scan", str(five_videos), "--db", str(db), "--model",
                            str(colour_model)], env=_env(), capture_output=True, text=True)
    assert final.returncode == 0, final.stderr
    assert _scan_rows(db) == [(1, "interrupted"), (2, "finished")]


@pytest.mark.slow
def test_a_paused_scan_marks_no_healthy_video_as_timed_out(five_videos, colour_model, tmp_path):
    db = tmp_path / "t.db"
    # One frame every 0.25 s: a message every 2 s of 2 windows, well inside the 5 s timeout.
    scan = _start(five_videos, db, colour_model, "--decoders", "fake_decoders:SlowFramesSource", "--workers", "1",
                  "--timeout", "5", "--json")
    deadline = time.monotonic() + 60
    while not _stored(db) and time.monotonic() < deadline:
        time.sleep(0.05)
    os.killpg(scan.pid, signal.SIGSTOP)  # Ctrl-Z: the whole scan stops ...
    time.sleep(8)
    os.killpg(scan.pid, signal.SIGCONT)  # ... and goes on
    stdout, stderr = scan.communicate(timeout=120)
    assert scan.returncode == 0, stdout + stderr
    assert json.loads(stdout)["failed"] == []
    assert [status for _, status in _stored(db)] == ["ok"] * 5
