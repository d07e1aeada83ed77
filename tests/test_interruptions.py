"""Scans that are paused, interrupted, terminated or starved of their database: one clear line, the
right exit code, no healthy video marked failed, nothing lost."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

import tagger.database
import tagger.progress
import tagger.scan_records
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


def _lock_after_first_video(monkeypatch, db: Path, held: list, release_after: float | None = None) -> None:
    """Once the first video is stored, another process's write lock is taken, and never released
    (the test releases `held[0]`) or, with `release_after`, let go that many seconds later: after
    the scan gave up waiting for it, before its one try at recording why."""
    finished = tagger.progress.RichProgress.video_finished

    def video_finished(self, path, seconds, ok):
        finished(self, path, seconds, ok)
        if not held:
            locker = sqlite3.connect(db, isolation_level=None, check_same_thread=False)
            locker.execute("BEGIN IMMEDIATE")
            held.append(locker)
            if release_after is not None:
                threading.Timer(release_after, lambda: (locker.rollback(), locker.close())).start()

    monkeypatch.setattr(tagger.progress.RichProgress, "video_finished", video_finished)


def _disk_full_at(monkeypatch, pages: int) -> None:
    """A disk that fills up once the database has `pages` pages, as SQLite sees it."""
    configure = tagger.database._configure_sqlite

    def small_disk(engine):
        configure(engine)

        @tagger.database.event.listens_for(engine, "connect")
        def _limit(dbapi_connection, _record):
            dbapi_connection.execute(f"PRAGMA max_page_count = {pages}")

    monkeypatch.setattr(tagger.database, "_configure_sqlite", small_disk)


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
    _disk_full_at(monkeypatch, 14)
    result = runner.invoke(app, ["scan", str(five_videos), "--db", str(db), "--model", str(colour_model)])
    assert result.exit_code == 5, result.output
    assert result.stderr.strip().splitlines()[-1] == (
        f"Error: the disk holding {db} is full: free some space and run the scan again")


LOCKED = "database is locked by another process: wait and run again"


def test_a_scan_stopped_by_a_locked_database_is_recorded_as_interrupted_with_the_reason(
        five_videos, colour_model, runner, tmp_path, monkeypatch):
    db = tmp_path / "t.db"
    monkeypatch.setattr(tagger.database, "LOCK_WAIT_MS", 300)
    monkeypatch.setattr(tagger.scan_records, "STOPPED_WAIT_MS", 6000)
    _lock_after_first_video(monkeypatch, db, [], release_after=1.5)
    result = runner.invoke(app, ["scan", str(five_videos), "--db", str(db), "--model", str(colour_model),
                                 "--workers", "1", "--json"])
    assert (result.exit_code, result.stderr) == (5, f"Error: {LOCKED}\n")
    summary = json.loads(result.stdout)
    assert (summary["tagged"], summary["interrupted"], summary["error"], summary["recorded_as"]) == (
        1, True, LOCKED, "interrupted")
    assert _scan_rows(db) == [(1, "interrupted")]
    (counts,), = _rows(db, "select counts from scans")
    assert json.loads(counts) == {"found": 5, "tagged": 1, "skipped": 0, "failed": 0, "segments": 1, "elsewhere": 0,
                                  "tagged_elsewhere": 0, "error": LOCKED}
    monkeypatch.undo()
    shown = runner.invoke(app, ["show", "--db", str(db)], terminal_width=80)
    assert (shown.exit_code, shown.stdout) == (0, (
        f"the scan of {db}\n"
        "scan  started              status       found  tagged  skipped  failed\n"
        "──────────────────────────────────────────────────────────────────────\n"
        f"   1  {' '.join(_started(db, 1))}  interrupted      5       1        0       0\n"
        f"scan 1 stopped: {LOCKED}\n"))


def test_a_scan_whose_database_stays_locked_gives_up_recording_it_quickly(
        five_videos, colour_model, runner, tmp_path, monkeypatch):
    db = tmp_path / "t.db"
    monkeypatch.setattr(tagger.database, "LOCK_WAIT_MS", 300)
    monkeypatch.setattr(tagger.scan_records, "STOPPED_WAIT_MS", 500)
    held: list = []
    _lock_after_first_video(monkeypatch, db, held)
    began = time.monotonic()
    result = runner.invoke(app, ["scan", str(five_videos), "--db", str(db), "--model", str(colour_model),
                                 "--workers", "1", "--json"])
    stopped_after = time.monotonic() - began
    held[0].rollback()
    held[0].close()
    assert (result.exit_code, result.stderr) == (5, f"Error: {LOCKED}\n")
    summary = json.loads(result.stdout)
    assert (summary["error"], summary["recorded_as"]) == (LOCKED, "running")  # the next scan records it
    assert _scan_rows(db) == [(1, "running")]
    assert stopped_after < 30  # one short try, not another LOCK_WAIT_MS per write


def test_a_scan_stopped_by_a_full_disk_is_recorded_as_interrupted_with_the_reason(
        five_videos, colour_model, runner, tmp_path, monkeypatch):
    db = tmp_path / "t.db"
    first = runner.invoke(app, ["scan", str(five_videos / "v0.avi"), "--db", str(db), "--model", str(colour_model)])
    assert first.exit_code == 0, first.output
    with sqlite3.connect(db) as conn:
        (pages,), = conn.execute("PRAGMA page_count").fetchall()
    _disk_full_at(monkeypatch, pages)  # no page beyond those it has: full once their free room is used
    # --hop 0.05: 60 windows a video, re-tagged with new windows, so the disk fills a few videos in
    result = runner.invoke(app, ["scan", str(five_videos), "--db", str(db), "--model", str(colour_model), "--json",
                                 "--workers", "1", "--hop", "0.05"])
    full = f"the disk holding {db} is full: free some space and run the scan again"
    assert (result.exit_code, result.stderr) == (5, f"Error: {full}\n")
    summary = json.loads(result.stdout)
    assert 0 < summary["tagged"] < 5  # stopped mid-scan
    assert (summary["error"], summary["recorded_as"]) == (full, "interrupted")
    assert _scan_rows(db) == [(1, "finished"), (2, "interrupted")]
    monkeypatch.undo()
    shown = runner.invoke(app, ["show", "--db", str(db)], terminal_width=80)
    assert shown.exit_code == 0
    assert [line.split()[:4] for line in shown.stdout.splitlines()[3:5]] == [["1", *_started(db, 1), "finished"],
                                                                              ["2", *_started(db, 2), "interrupted"]]
    assert shown.stdout.splitlines()[-1] == f"scan 2 stopped: {full}"


def _started(db: Path, scan_id: int) -> list[str]:
    """When scan `scan_id` started, as `tagger show` writes it: [date, time]."""
    (started,), = _rows(db, f"select started_at from scans where id = {scan_id}")
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(started)).split()


@pytest.mark.parametrize("locked, recorded_as", [("videos, claims", "interrupted"), ("videos, claims, scans", "running")])
def test_a_scan_stopped_by_a_locked_postgresql_database_is_recorded_there_when_it_can_be(
        locked, recorded_as, five_videos, colour_model, runner, postgres_url, monkeypatch):
    import psycopg
    import sqlalchemy as sa

    monkeypatch.setattr(tagger.database, "LOCK_WAIT_MS", 300)
    finished = tagger.progress.RichProgress.video_finished
    held: list = []

    def video_finished(self, path, seconds_of_video, ok):  # the videos locked; the scans table too, or free
        finished(self, path, seconds_of_video, ok)
        if not held:
            locker = psycopg.connect(sa.engine.make_url(postgres_url).set(drivername="postgresql")
                                     .render_as_string(hide_password=False))
            locker.execute(f"LOCK TABLE {locked} IN ACCESS EXCLUSIVE MODE")
            held.append(locker)

    monkeypatch.setattr(tagger.progress.RichProgress, "video_finished", video_finished)
    began = time.monotonic()
    result = runner.invoke(app, ["scan", str(five_videos), "--db", postgres_url, "--model", str(colour_model),
                                 "--workers", "1", "--json"])
    stopped_after = time.monotonic() - began
    held[0].rollback()
    held[0].close()
    assert (result.exit_code, result.stderr) == (5, f"Error: {LOCKED}\n")
    assert json.loads(result.stdout)["recorded_as"] == recorded_as
    assert stopped_after < 30  # the try at recording it waits STOPPED_WAIT_MS at most, not LOCK_WAIT_MS
    monkeypatch.undo()
    shown = runner.invoke(app, ["show", "--db", postgres_url], terminal_width=80)
    assert shown.stdout.splitlines()[3].split()[3] == recorded_as
    assert shown.stdout.splitlines()[-1] == (f"scan 1 stopped: {LOCKED}" if recorded_as == "interrupted"
                                             else shown.stdout.splitlines()[3])


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


INTERRUPTED = "Interrupted: finished videos are stored; run the same scan again to resume.\n"

# The console script's own two lines (`from tagger.cli import main; sys.exit(main())`), run after
# arranging for a Ctrl-C at one exact moment of start-up: as the module named by argv[1] is imported,
# or as Typer builds the commands (argv[1] == "get_command").
_INTERRUPTED_AT = """
import os, signal, sys
moment, sys.argv = sys.argv[1], ["tagger", *sys.argv[2:]]
if moment == "get_command":
    import typer.main
    build = typer.main.get_command
    def get_command(app):
        os.kill(os.getpid(), signal.SIGINT)
        return build(app)
    typer.main.get_command = get_command
else:
    class InterruptAt:
        def find_spec(self, name, path=None, target=None):
            if name == moment:
                sys.meta_path.remove(self)
                os.kill(os.getpid(), signal.SIGINT)
            return None
    sys.meta_path.insert(0, InterruptAt())
from tagger.cli import main
sys.exit(main())
"""


@pytest.mark.parametrize("moment", ["typer", "rich.console", "numpy", "tagger.commands.reading", "get_command"])
def test_ctrl_c_during_start_up_is_one_line_and_exit_130(moment, five_videos, colour_model, tmp_path):
    started = subprocess.run([sys.executable, "-c", _INTERRUPTED_AT, moment, "scan", str(five_videos), "--db",
                              str(tmp_path / "t.db"), "--model", str(colour_model)],
                             env=_env(), capture_output=True, text=True, timeout=120)
    assert (started.returncode, started.stderr) == (130, INTERRUPTED)
    assert not (tmp_path / "t.db").exists()  # stopped before the scan began


def _has_mapped(pid: int, library: str) -> bool:
    try:
        with open(f"/proc/{pid}/maps") as handle:
            return library in handle.read()
    except OSError:
        return False


@pytest.mark.slow
def test_ctrl_c_while_the_command_line_starts_prints_no_traceback(five_videos, colour_model, tmp_path):
    script = Path(sys.executable).with_name("tagger")  # the console script pip installs
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "tagger.cli"]
    started = subprocess.Popen([*command, "scan", str(five_videos), "--db", str(tmp_path / "t.db"), "--model",
                                str(colour_model)], env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    while not _has_mapped(started.pid, "_multiarray_umath") and time.monotonic() < deadline:
        time.sleep(0.001)  # NumPy's core is loading: the imports are under way
    os.killpg(started.pid, signal.SIGINT)
    _, stderr = started.communicate(timeout=60)
    assert (started.returncode, stderr) == (130, INTERRUPTED)


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
