"""Scans sharing a database: videos are claimed before they are decoded, claims are leases, and two
scans over one tree tag every video exactly once. Also: database URLs whose driver is missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from synthetic import BLUE, GREEN, RED, solid, write_video
from tagger.claims import Claims, claim_owner, claimer_gone
from tagger.cli import app
from tagger.database import Database
from tagger.discover import FoundVideo
from tagger.planner import Freshness
from tagger.schema import VideoResult, stored_videos
from tagger.sink import Sink

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
ELSEWHERE = "another-machine/0000:4242:abcdef01"  # a claimer on another machine: only its lease counts


@pytest.fixture(params=["sqlite", "postgres"])
def db(request, tmp_path) -> str:
    """A new database of each kind."""
    if request.param == "sqlite":
        return str(tmp_path / "claims.db")
    return request.getfixturevalue("postgres_url")


VIDEO = FoundVideo("/v/a.mp4", 1000, 1)
KEY = json.dumps({"windows": {"hop": None, "streams": "video"}, "segments": {}})


def _fresh(db: Database) -> Freshness:
    """The rule of a scan with model 1 and settings KEY."""
    return Freshness(Sink(db).register_model("ab" * 32, "m", ["A"], {}), KEY)


def test_a_live_claim_keeps_other_scans_off_until_its_lease_expires(db):
    store = Database(db)
    try:
        fresh = _fresh(store)
        there, here = Claims(store, ELSEWHERE, 1.0), Claims(store, "me/1:1:1", 60)
        assert there.claim(VIDEO, fresh) == "claimed"
        assert here.claim(VIDEO, fresh) == "busy"
        there.lease = 1.5
        there.renew()
        time.sleep(1.0)
        assert here.claim(VIDEO, fresh) == "busy"  # renewed: still live
        time.sleep(0.7)
        assert here.claim(VIDEO, fresh) == "claimed"  # its claimer stopped renewing
        there.lease = 60
        assert there.claim(VIDEO, fresh) == "busy"
        here.release()
        assert there.claim(VIDEO, fresh) == "claimed"
    finally:
        store.close()


def test_a_video_tagged_meanwhile_is_not_claimed(db):
    store = Database(db)
    try:
        fresh = _fresh(store)
        there = Claims(store, ELSEWHERE, 60)
        assert there.claim(VIDEO, fresh) == "claimed"
        Sink(store).save_video(VideoResult(VIDEO.path, VIDEO.size, VIDEO.mtime_ns, None, "ok", settings=KEY),
                               fresh.model_id)  # stored by that scan: its claim is released
        assert Claims(store, "me/1:1:1", 60).claim(VIDEO, fresh) == "current"
        changed = FoundVideo(VIDEO.path, VIDEO.size + 1, VIDEO.mtime_ns)  # the file changed since: scan it again
        assert Claims(store, "me/1:1:1", 60).claim(changed, fresh) == "claimed"
    finally:
        store.close()


def test_claims_of_a_dead_scan_on_this_machine_are_free_at_once(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    machine = claim_owner().split(":")[0]
    owner = f"{machine}:{int(dead.stdout)}:deadbeef"
    assert claimer_gone(owner)
    assert not claimer_gone(f"{machine}:{os.getppid()}:cafe0001")  # a live process of this machine
    assert claimer_gone(claim_owner())  # an earlier scan of this process that is not running now
    assert not claimer_gone(ELSEWHERE)  # another machine: wait for its lease
    store = Database(str(tmp_path / "t.db"))
    try:
        fresh = _fresh(store)
        assert Claims(store, owner, 600).claim(VIDEO, fresh) == "claimed"
        assert Claims(store, claim_owner(), 60).claim(VIDEO, fresh) == "claimed"
    finally:
        store.close()


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    """Twelve short videos."""
    root = tmp_path_factory.mktemp("tree")
    for i in range(12):
        write_video(root / f"v{i:02d}.avi", 2 + i % 3, colour_at=solid((RED, GREEN, BLUE)[i % 3]))
    return root


@pytest.mark.slow
def test_two_scans_on_one_database_tag_every_video_exactly_once(db, tree, colour_model, tmp_path):
    log = tmp_path / "opened.log"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), str(ROOT)]), "TAGGER_TEST_OPEN_LOG": str(log)}
    command = [sys.executable, "-m", "tagger.cli", "--debug", "scan", str(tree), "--db", db, "--model", str(colour_model),
               "--decoders", "fake_decoders:CountingSource", "--workers", "1", "--json"]
    scans = [subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [scan.communicate(timeout=300) for scan in scans]
    assert [scan.returncode for scan in scans] == [0, 0], [err for _, err in results]
    summaries = [json.loads(out) for out, _ in results]
    opened = log.read_text().splitlines()
    videos = sorted(str(p) for p in tree.iterdir())
    assert sorted(opened) == videos  # each video decoded once, by one of the two scans
    assert sum(s["tagged"] for s in summaries) == 12
    assert all(s["tagged"] > 0 for s in summaries), summaries  # the tree was shared out, not done twice
    store = Database(db, create=False)
    try:
        with store.read() as conn:
            known = stored_videos(conn)
    finally:
        store.close()
    assert sorted(known) == videos and {v.status for v in known.values()} == {"ok"}


def test_a_scan_releases_its_claims_when_it_ends(tmp_path, colour_model, runner):
    write_video(tmp_path / "a.avi", 1, colour_at=solid(RED))
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(tmp_path / "a.avi"), "--db", str(db), "--model", str(colour_model)])
    assert result.exit_code == 0, result.output
    import sqlite3

    with sqlite3.connect(db) as conn:
        assert conn.execute("select count(*) from claims").fetchone() == (0,)


@pytest.mark.parametrize(("url", "message"), [
    ("postgresql://tagger@localhost/tags",
     "Error: --db postgresql://tagger@localhost/tags needs the database driver 'psycopg', which is not installed: "
     "pip install 'tagger[postgres]'"),
    ("postgresql+psycopg://tagger:secret@localhost/tags",
     "Error: --db postgresql+psycopg://tagger:***@localhost/tags needs the database driver 'psycopg', which is not "
     "installed: pip install 'tagger[postgres]'"),
])
def test_a_database_url_whose_driver_is_missing_is_exit_5_naming_the_extra(monkeypatch, runner, tmp_path, url,
                                                                           message, colour_model):
    monkeypatch.setitem(sys.modules, "psycopg", None)  # as if tagger[postgres] were not installed
    write_video(tmp_path / "a.avi", 1)
    for command in (["scan", str(tmp_path), "--model", str(colour_model)], ["query"]):
        result = runner.invoke(app, [*command, "--db", url])
        assert result.exit_code == 5, result.output
        assert result.stderr.strip() == message


def test_executor_ray_without_ray_installed_is_exit_2(monkeypatch, runner, tmp_path, colour_model):
    monkeypatch.setitem(sys.modules, "ray", None)
    write_video(tmp_path / "a.avi", 1)
    result = runner.invoke(app, ["scan", str(tmp_path), "--db", str(tmp_path / "t.db"), "--model", str(colour_model),
                                 "--executor", "ray"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == "Error: --executor ray needs Ray: pip install 'tagger[ray]'"


@pytest.mark.parametrize(("args", "message"), [
    (["--executor", "spark"], "Error: --executor 'spark' is not one of local, ray"),
    (["--ray-address", "auto"], "Error: --ray-address needs --executor ray"),
    (["--lease", "0"], "Error: --lease must be greater than 0 seconds, got 0"),
])
def test_executor_options_are_checked(runner, tmp_path, args, message):
    result = runner.invoke(app, ["scan", str(tmp_path), "--db", str(tmp_path / "t.db"), *args])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == message


def test_an_unreachable_ray_cluster_is_one_line_and_exit_2(runner, tmp_path, colour_model):
    pytest.importorskip("ray", reason="needs Ray: pip install '.[ray]'")
    write_video(tmp_path / "a.avi", 1)
    result = runner.invoke(app, ["scan", str(tmp_path), "--db", str(tmp_path / "t.db"), "--model", str(colour_model),
                                 "--executor", "ray", "--ray-address", "127.0.0.1:1"])
    assert result.exit_code == 2, result.output
    assert result.stderr.strip() == ("Error: cannot reach the Ray cluster at 127.0.0.1:1 (Connection refused): "
                                     "start it with `ray start --head`, or fix --ray-address")  # checked before
    # ray.init, which would retry an unreachable address for minutes


def test_the_read_side_gives_the_same_answers_from_postgresql(tmp_path, colour_model, runner, postgres_url):
    (tmp_path / "videos").mkdir()
    write_video(tmp_path / "videos" / "a.avi", 4, colour_at=solid(RED))
    write_video(tmp_path / "videos" / "b.avi", 3, colour_at=solid(BLUE))
    sqlite_db = str(tmp_path / "t.db")
    for db in (sqlite_db, postgres_url):
        result = runner.invoke(app, ["scan", str(tmp_path / "videos"), "--db", db, "--model", str(colour_model)])
        assert result.exit_code == 0, result.output
    for command in (["query", "--all", "--format", "csv"], ["query", "--format", "json"],
                    ["query", "--label", "Red", "--threshold", "0.3", "--format", "csv"],
                    ["export-csv", "--windows"], ["failed"]):
        answers = [runner.invoke(app, [*command, "--db", db]) for db in (sqlite_db, postgres_url)]
        assert [a.exit_code for a in answers] == [0, 0], [a.output for a in answers]
        assert answers[0].stdout == answers[1].stdout, command
        assert answers[0].stdout.strip() or command == ["failed"], command


@pytest.mark.slow
def test_scans_starting_together_on_an_empty_postgresql_database_all_succeed(postgres_url, tmp_path, colour_model):
    """The first scans of a database create its schema: on PostgreSQL, one at a time (an advisory
    lock), so none fails on another's half-made tables."""
    for name in ("a.avi", "b.avi"):
        write_video(tmp_path / name, 1, colour_at=solid(GREEN))
    command = [sys.executable, "-m", "tagger.cli", "scan", str(tmp_path), "--db", postgres_url, "--model",
               str(colour_model), "--workers", "1", "--json"]
    scans = [subprocess.Popen(command, env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(3)]
    results = [scan.communicate(timeout=300) for scan in scans]
    assert [scan.returncode for scan in scans] == [0, 0, 0], [err for _, err in results]
    assert sum(json.loads(out)["tagged"] for out, _ in results) == 2


def test_scans_registering_one_model_at_once_all_get_its_id(db):
    """Several scans starting together each register the models: one row, the same id for all."""
    import threading

    stores = [Database(db) for _ in range(8)]
    start, ids, errors = threading.Barrier(len(stores)), [], []

    def register(store):
        start.wait()
        try:
            ids.append(Sink(store).register_model("ab" * 32, "m", ["A"], {}))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=register, args=(store,)) for store in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for store in stores:
        store.close()
    assert errors == [] and len(set(ids)) == 1 and len(ids) == 8


def test_an_unreachable_database_server_says_to_check_it_without_the_password(runner):
    pytest.importorskip("psycopg", reason="needs psycopg: pip install '.[postgres]'")
    result = runner.invoke(app, ["query", "--db", "postgresql://bob:secret@127.0.0.1:1/tags"])
    assert result.exit_code == 5, result.output
    line = result.stderr.strip()
    assert line.startswith("Error: cannot use database postgresql://bob:***@127.0.0.1:1/tags: ") and "\n" not in line
    assert line.endswith("; check that the database server is running and the URL is right, or pass another --db")
    assert "secret" not in result.output
