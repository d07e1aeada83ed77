"""Shared fixtures: generated videos and models, the real clips in ../shared/data, the CLI runner."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

import tagger.model
from synthetic import BLUE, GREY, RED, timeline, write_colour_model, write_video

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
SHIPPED_AUDIO_MODEL = tagger.model.DEFAULT_AUDIO_MODEL_NAME


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data beside the project: real clips (present in CI, absent in a user's clone)."""
    if not (SHARED_DATA / "clips").is_dir():
        pytest.skip(f"real clips not found at {SHARED_DATA} (they live beside the project, not in it)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def colour_model(tmp_path_factory) -> Path:
    """ONNX model (no torch) scoring Red/Green/Blue as mean channel / 255; 1 s windows of 4 frames at 4 fps."""
    return write_colour_model(tmp_path_factory.mktemp("models") / "colour.onnx")


@pytest.fixture(scope="session")
def feature_model(tmp_path_factory) -> Path:
    """The colour model with a `features` output (its mean red, green, blue; space colour-test-1)
    and no head of its own."""
    return write_colour_model(tmp_path_factory.mktemp("models") / "colour_features.onnx", features=True)


@pytest.fixture(params=["sqlite", "postgresql"])
def any_db(request, tmp_path) -> str:
    """A new database: a SQLite file, then (a second run of the test) a PostgreSQL database."""
    if request.param == "sqlite":
        return str(tmp_path / "t.db")
    return request.getfixturevalue("postgres_url")


@pytest.fixture
def opens(monkeypatch, tmp_path) -> Path:
    """The file `--decoders fake_decoders:CountingSource` appends each video it opens to, in the
    scan's decoder processes: how often each video was decoded."""
    log = tmp_path / "opens.log"
    log.touch()
    monkeypatch.setenv("TAGGER_TEST_OPEN_LOG", str(log))
    return log


@pytest.fixture(scope="session")
def red_grey_blue_video(tmp_path_factory) -> Path:
    """10 s MPEG-4 AVI at 25 fps, 160x120: red until 3 s, grey until 6 s, then blue."""
    folder = tmp_path_factory.mktemp("rgb")
    return write_video(folder / "red_grey_blue.avi", 10, colour_at=timeline((3, RED), (6, GREY), (99, BLUE)))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="session", autouse=True)
def _no_shipped_audio_by_default():
    """In-process scans hear nothing unless a test passes `--audio-model` or is marked
    `shipped_audio`: the shipped music model would otherwise take part in every generated-video test."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tagger.model, "DEFAULT_AUDIO_MODEL_NAME", "no-shipped-audio-model-in-tests.onnx")
        yield


@pytest.fixture(autouse=True)
def _isolated_environment(monkeypatch, tmp_path, request):
    """No test reads the user's TAGGER_* settings or writes to their data directory."""
    for name in ("TAGGER_DB", "TAGGER_MODEL", "TAGGER_AUDIO_MODEL", "TAGGER_HEADS", "TAGGER_CACHE"):
        monkeypatch.delenv(name, raising=False)
    if request.node.get_closest_marker("shipped_audio") is not None:
        monkeypatch.setattr(tagger.model, "DEFAULT_AUDIO_MODEL_NAME", SHIPPED_AUDIO_MODEL)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg-cache"))  # the feature index (tagger similar, learn)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield


def _required_service(reason: str) -> None:
    """Skip a test whose service is missing here; in CI (CI=true), where .ci/run provides it, fail."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason} (CI must provide it: see .ci/run)")
    pytest.skip(reason)


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A new, empty database on the PostgreSQL server named by $TAGGER_TEST_POSTGRES (started by
    `.ci/postgres start DIR`), dropped afterwards."""
    server = os.environ.get("TAGGER_TEST_POSTGRES")
    if not server:
        _required_service("no PostgreSQL server: export TAGGER_TEST_POSTGRES=$(bash .ci/postgres start /tmp/tagger-pg)")
    pytest.importorskip("psycopg", reason="PostgreSQL tests need psycopg: pip install '.[postgres]'")
    import sqlalchemy as sa

    name = f"test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f"CREATE DATABASE {name}")
    yield str(sa.engine.make_url(server).set(database=name).render_as_string(hide_password=False))
    with admin.connect() as conn:
        conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    admin.dispose()


@pytest.fixture(scope="session")
def local_ray() -> Iterator[None]:
    """A local Ray on this machine's 2 cores, shared by the in-process scans of this session; its
    workers import the test decoders from tests/ (PYTHONPATH is inherited when Ray starts)."""
    try:
        import ray
    except ImportError:
        _required_service("Ray is not installed: pip install '.[ray]'")
    tests = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (tests, os.environ.get("PYTHONPATH")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
    yield
    ray.shutdown()
