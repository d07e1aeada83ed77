"""Shared fixtures: generated videos and models, the real clips in ../shared/data, the CLI runner."""

from __future__ import annotations

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
    for name in ("TAGGER_DB", "TAGGER_MODEL", "TAGGER_AUDIO_MODEL"):
        monkeypatch.delenv(name, raising=False)
    if request.node.get_closest_marker("shipped_audio") is not None:
        monkeypatch.setattr(tagger.model, "DEFAULT_AUDIO_MODEL_NAME", SHIPPED_AUDIO_MODEL)
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg-data"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    yield
