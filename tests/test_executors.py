"""The executors: local and Ray store the same tags, in SQLite and in PostgreSQL; Ray keeps the
local executor's failure isolation (a crashing or hanging video) and loses nothing when a worker
process is killed mid-scan."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import sqlalchemy as sa

from synthetic import BLUE, GREEN, GREY, RED, solid, timeline, write_loudness_model, write_video
from tagger.cli import app
from tagger.database import database_url

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    """Seven short videos of several codecs and timelines, two with a sound track."""
    root = tmp_path_factory.mktemp("executor-corpus")
    (root / "sub").mkdir()
    write_video(root / "red_blue.avi", 6, colour_at=timeline((3, RED), (99, BLUE)))
    write_video(root / "green.mp4", 3, codec="h264", colour_at=solid(GREEN))
    write_video(root / "sub" / "grey_red.mkv", 5, fps=10, codec="h264", colour_at=timeline((2, GREY), (99, RED)))
    write_video(root / "short.mp4", 0.4, codec="h264", colour_at=solid(BLUE))
    write_video(root / "loud.mp4", 4, codec="h264", audio_codec="aac", colour_at=solid(RED), loudness_at=lambda t: 0.9)
    write_video(root / "quiet_then_loud.mkv", 4, codec="h264", audio_codec="libopus", audio_rate=48000,
                colour_at=timeline((2, GREY), (99, BLUE)), loudness_at=lambda t: 0.05 if t < 2 else 0.9)
    write_video(root / "sub" / "blue.avi", 2, colour_at=solid(BLUE))
    return root


@pytest.fixture(scope="module")
def sound_model(tmp_path_factory) -> Path:
    return write_loudness_model(tmp_path_factory.mktemp("sound") / "loudness.onnx",
                                extra={"audio_only_threshold": {"Violet": 0.9}})


def stored(db: str) -> dict:
    """Everything a scan stored, keyed by file name, read through SQLAlchemy (SQLite or PostgreSQL)."""
    engine = sa.create_engine(database_url(db))
    with engine.connect() as conn:
        videos = conn.execute(sa.text("select path, status, error, decoder, duration, frames from videos")).all()
        segments = conn.execute(sa.text(
            'select v.path, s.label, s.start, s."end", s.score, s.max_score, s.source '
            "from segments s join videos v on v.id = s.video_id")).all()
        windows = conn.execute(sa.text(
            'select v.path, m.name, w.start, w."end", w.scores '
            "from windows w join videos v on v.id = w.video_id join models m on m.id = w.model_id")).all()
        claims = conn.execute(sa.text("select count(*) from claims")).scalar_one()
    engine.dispose()
    name = lambda path: Path(path).name  # noqa: E731
    return {
        "videos": sorted((name(p), *rest) for p, *rest in videos),
        "segments": sorted((name(p), *rest) for p, *rest in segments),
        "windows": sorted((name(p), m, s, e, bytes(b)) for p, m, s, e, b in windows),
        "claims": claims,
    }


def _scan(runner, corpus, db, colour_model, sound_model, *extra):
    result = runner.invoke(app, ["scan", str(corpus), "--db", db, "--model", str(colour_model),
                                 "--audio-model", str(sound_model), "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.slow
def test_local_and_ray_store_identical_tags_in_sqlite_and_postgres(corpus, colour_model, sound_model, runner,
                                                                  tmp_path, postgres_url, local_ray):
    databases = {"local-sqlite": str(tmp_path / "local.db"), "ray-sqlite": str(tmp_path / "ray.db"),
                 "local-postgres": postgres_url}
    summaries = {
        "local-sqlite": _scan(runner, corpus, databases["local-sqlite"], colour_model, sound_model),
        "ray-sqlite": _scan(runner, corpus, databases["ray-sqlite"], colour_model, sound_model, "--executor", "ray"),
        "local-postgres": _scan(runner, corpus, postgres_url, colour_model, sound_model),
    }
    # The fourth: Ray into PostgreSQL, on a second database of the same server.
    ray_postgres = sa.engine.make_url(postgres_url)
    admin = sa.create_engine(ray_postgres.set(database="postgres"), isolation_level="AUTOCOMMIT")
    second = f"{ray_postgres.database}_ray"
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {second}")
    try:
        databases["ray-postgres"] = ray_postgres.set(database=second).render_as_string(hide_password=False)
        summaries["ray-postgres"] = _scan(runner, corpus, databases["ray-postgres"], colour_model, sound_model,
                                          "--executor", "ray")
        rows = {name: stored(db) for name, db in databases.items()}
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {second} WITH (FORCE)")
        admin.dispose()
    reference = rows["local-sqlite"]
    assert len(reference["videos"]) == 7 and all(v[1] == "ok" for v in reference["videos"])
    assert {s[-1] for s in reference["segments"]} == {"video", "both", "audio"}  # every kind of evidence
    assert ("red_blue.avi", "Red", 0.0, 3.0) in {s[:4] for s in reference["segments"]}
    assert reference["claims"] == 0
    for name, found in rows.items():
        assert found == reference, name
    for name, summary in summaries.items():
        assert (summary["tagged"], summary["failed"], summary["executor"]) == (7, [], name.split("-")[0]), name


@pytest.mark.slow
def test_ray_isolates_a_video_that_hangs_its_worker(tmp_path, colour_model, runner, local_ray):
    write_video(tmp_path / "a.avi", 2, colour_at=solid(RED))
    write_video(tmp_path / "hang.avi", 2, colour_at=solid(BLUE))
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(tmp_path), "--db", str(db), "--model", str(colour_model),
                                 "--executor", "ray", "--decoders", "fake_decoders:HangingSource", "--timeout", "3",
                                 "--json"])
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert summary["tagged"] == 1
    assert summary["failed"] == [{"path": str(tmp_path / "hang.avi"),
                                  "reason": "timeout: the Ray worker made no progress for 3 s (killed)"}]
    videos = stored(str(db))["videos"]
    assert [(v[0], v[1]) for v in videos] == [("a.avi", "ok"), ("hang.avi", "failed")]


@pytest.mark.slow
def test_ray_isolates_a_video_that_crashes_its_worker(tmp_path, colour_model, runner, local_ray):
    write_video(tmp_path / "a.avi", 2, colour_at=solid(RED))
    write_video(tmp_path / "crash.avi", 2, colour_at=solid(BLUE))
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(tmp_path), "--db", str(db), "--model", str(colour_model),
                                 "--executor", "ray", "--decoders", "fake_decoders:CrashingSource", "--json"])
    assert result.exit_code == 3, result.output
    summary = json.loads(result.stdout)
    assert summary["tagged"] == 1
    (failure,) = summary["failed"]
    assert failure["path"] == str(tmp_path / "crash.avi")
    assert failure["reason"].startswith("crash: two Ray workers died on this video (")
    assert [(v[0], v[1], v[2]) for v in stored(str(db))["videos"]] == [
        ("a.avi", "ok", None), ("crash.avi", "failed", failure["reason"])]


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as handle:
                    parent = int(handle.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(parent, []).append(int(entry))
    found, stack = [], [pid]
    while stack:
        for child in children.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def _actor_processes(pid: int) -> list[int]:
    """The ScoringActor worker processes of the Ray that the scan process `pid` started."""
    actors = []
    for child in _descendants(pid):
        try:
            with open(f"/proc/{child}/cmdline", "rb") as handle:
                if b"ScoringActor" in handle.read():
                    actors.append(child)
        except OSError:
            continue
    return actors


def _kill_an_actor_mid_scan(command: list[str], db: Path, env: dict) -> tuple[subprocess.Popen, str, str]:
    """Run the scan `command`; once it stored a video, kill one of its ScoringActor processes."""
    scan = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = None
    deadline = time.monotonic() + 120
    while killed is None and scan.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            done = len(stored(str(db))["videos"]) if db.exists() else 0
        except sa.exc.OperationalError:  # the schema is not there yet
            done = 0
        actors = _actor_processes(scan.pid)
        if done >= 1 and actors:
            killed = actors[0]
            os.kill(killed, signal.SIGKILL)
    stdout, stderr = scan.communicate(timeout=240)
    assert killed is not None, f"the scan ended before a worker could be killed: {stderr}"
    return scan, stdout, stderr


def _ray_env() -> dict:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]), "COLUMNS": "80"}
    env.pop("RAY_ADDRESS", None)  # a new local Ray, started by the scan
    return env


@pytest.mark.slow
def test_killing_a_ray_worker_mid_scan_loses_and_duplicates_nothing(corpus, colour_model, sound_model, runner,
                                                                    tmp_path):
    reference_db = str(tmp_path / "reference.db")
    _scan(runner, corpus, reference_db, colour_model, sound_model, "--decoders", "decord")
    db = tmp_path / "killed.db"
    scan, stdout, stderr = _kill_an_actor_mid_scan(
        [sys.executable, "-m", "tagger.cli", "scan", str(corpus), "--db", str(db), "--model", str(colour_model),
         "--audio-model", str(sound_model), "--executor", "ray", "--decoders", "fake_decoders:PacedSource",
         "--json"], db, _ray_env())
    assert scan.returncode == 0, stderr
    summary = json.loads(stdout)
    assert (summary["tagged"], summary["failed"]) == (7, [])
    assert summary["recoveries"] == {"workers_lost": 1, "nodes_lost": 0, "videos_retried": 1}
    assert summary["startup_seconds"] > 0 and summary["wall_seconds"] > summary["startup_seconds"]
    assert stored(str(db)) == stored(reference_db)


def _summary_rows(stdout: str) -> dict[str, str]:
    """The summary table's rows at 80 columns: name -> value (a value wrapped over lines joined)."""
    rows: dict[str, str] = {}
    name = ""
    for line in stdout.splitlines():
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            name = cells[0] or name
            rows[name] = f"{rows[name]} {cells[1]}" if not cells[0] else cells[1]
    return rows


@pytest.mark.slow
def test_the_summary_says_a_ray_worker_was_lost_and_its_video_retried(corpus, colour_model, tmp_path):
    db = tmp_path / "killed.db"
    scan, stdout, stderr = _kill_an_actor_mid_scan(
        [sys.executable, "-m", "tagger.cli", "scan", str(corpus), "--db", str(db), "--model", str(colour_model),
         "--executor", "ray", "--decoders", "fake_decoders:PacedSource"], db, _ray_env())
    assert scan.returncode == 0, stderr
    rows = _summary_rows(stdout)
    assert (rows["tagged"], rows["failed"], rows["cluster"]) == ("7", "0", "1 Ray worker lost, 1 video retried")
    assert re.fullmatch(r"ray, started in \d+\.\d s \(counted in the time above\)", rows["executor"]), rows
    assert max(len(line) for line in stdout.splitlines()) <= 80


@pytest.mark.slow
def test_a_ray_node_lost_mid_scan_is_said_in_the_summary(corpus, colour_model, tmp_path, monkeypatch):
    """A cluster of two nodes on this machine (Ray's own test cluster); the worker node is removed,
    its raylet and actors killed, once the scan has stored a video."""
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), str(ROOT)]))  # the nodes' workers import fake_decoders
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        db = tmp_path / "t.db"
        scan = subprocess.Popen(
            [sys.executable, "-m", "tagger.cli", "scan", str(corpus), "--db", str(db), "--model", str(colour_model),
             "--executor", "ray", "--ray-address", cluster.address, "--decoders", "fake_decoders:PacedSource"],
            env=_ray_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while scan.poll() is None and time.monotonic() < deadline:
            try:
                if db.exists() and stored(str(db))["videos"]:
                    break
            except sa.exc.OperationalError:  # the schema is not there yet
                pass
            time.sleep(0.2)
        assert scan.poll() is None, "the scan ended before the node could be removed"
        cluster.remove_node(worker)
        stdout, stderr = scan.communicate(timeout=240)
    finally:
        cluster.shutdown()
    assert scan.returncode == 0, stderr
    rows = _summary_rows(stdout)
    assert (rows["tagged"], rows["failed"]) == ("7", "0")
    assert rows["cluster"] == "1 node lost, 1 video retried"
    assert len(stored(str(db))["videos"]) == 7
