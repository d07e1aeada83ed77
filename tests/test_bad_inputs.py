"""Each bad input sits in a folder beside good videos: the good ones are tagged, the bad one is
recorded with its reason, the exit code is exact and nothing prints a traceback."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from synthetic import BLUE, RED, solid, write_video
from tagger import pipeline
from tagger.cli import app

DECODE_FAILED = "not a video (no decodable video stream)"  # the decoders' own words: with --debug


@pytest.fixture(scope="module")
def sources(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("sources")
    write_video(folder / "six.mp4", 6, codec="h264", colour_at=solid(RED))
    write_video(folder / "six.avi", 6, colour_at=solid(RED))
    return folder


def _truncated(source: Path, fraction: float):
    def make(path: Path) -> None:
        data = source.read_bytes()
        path.write_bytes(data[: int(len(data) * fraction)])

    return make


def _audio_only(path: Path) -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=16000)
        for _ in range(20):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
            frame.sample_rate = 16000
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


# name -> (how to make it, expected reason or None when the readable part gets tagged)
CASES = {
    "zero_bytes.mp4": (lambda p: p.write_bytes(b""), "empty file (0 bytes)"),
    "random_bytes.mp4": (lambda p: p.write_bytes(np.random.default_rng(0).bytes(50_000)), DECODE_FAILED),
    "text_file.avi": (lambda p: p.write_text("hello\n"), DECODE_FAILED),
    "audio_only.mp4": (_audio_only, DECODE_FAILED),
}


def _scan(runner, root, db, model, *extra):
    result = runner.invoke(app, ["scan", str(root), "--db", str(db), "--model", str(model), "--json", *extra])
    assert "Traceback" not in result.output
    return result, json.loads(result.stdout)


def _folder(tmp_path) -> Path:
    root = tmp_path / "videos"
    root.mkdir()
    write_video(root / "good_a.mp4", 2, codec="h264", colour_at=solid(RED))
    write_video(root / "good_b.avi", 2, colour_at=solid(BLUE))
    return root


def _statuses(db) -> dict:
    with sqlite3.connect(db) as conn:
        return {Path(p).name: (s, e) for p, s, e in conn.execute("select path, status, error from videos")}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_file_beside_good_ones(name, runner, colour_model, tmp_path):
    make, reason = CASES[name]
    root = _folder(tmp_path)
    make(root / name)
    result, summary = _scan(runner, root, tmp_path / "t.db", colour_model)
    assert result.exit_code == 3
    assert summary["tagged"] == 2
    assert summary["failed"] == [{"path": str(root / name), "reason": reason}]
    statuses = _statuses(tmp_path / "t.db")
    assert statuses[name] == ("failed", reason)
    assert statuses["good_a.mp4"][0] == statuses["good_b.avi"][0] == "ok"


@pytest.mark.parametrize(("source", "fraction", "tagged"), [
    ("six.mp4", 0.1, False), ("six.mp4", 0.6, False),  # MP4's index is at the end: nothing to read
    ("six.avi", 0.1, False), ("six.avi", 0.6, True),  # AVI: the frames that arrived are tagged
])
def test_truncated_videos(source, fraction, tagged, sources, runner, colour_model, tmp_path):
    root = _folder(tmp_path)
    name = f"cut_{int(fraction * 100)}{Path(source).suffix}"
    _truncated(sources / source, fraction)(root / name)
    result, summary = _scan(runner, root, tmp_path / "t.db", colour_model)
    statuses = _statuses(tmp_path / "t.db")
    assert statuses["good_a.mp4"][0] == statuses["good_b.avi"][0] == "ok"
    if tagged:
        assert result.exit_code == 0 and summary["tagged"] == 3
        with sqlite3.connect(tmp_path / "t.db") as conn:
            (duration,) = conn.execute("select duration from videos where path like ?", (f"%{name}",)).fetchone()
        assert 1.0 < duration < 6.0  # what arrived, not what the header promised
    else:
        assert result.exit_code == 3
        assert summary["failed"] == [{"path": str(root / name), "reason": DECODE_FAILED}]


def test_shared_broken_files_beside_good_ones(shared_data, runner, colour_model, tmp_path):
    root = _folder(tmp_path)
    for broken in (shared_data / "broken").iterdir():
        shutil.copy(broken, root / broken.name)
    result, summary = _scan(runner, root, tmp_path / "t.db", colour_model)
    assert result.exit_code == 3
    assert summary["tagged"] == 4  # two good, the 3-frame rotated clip, the WebM without duration
    assert [f["path"] for f in summary["failed"]] == [str(root / "decord__corrupted.mp4")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their permissions")
def test_unreadable_file(runner, colour_model, tmp_path):
    root = _folder(tmp_path)
    write_video(root / "locked.mp4", 2, codec="h264")
    os.chmod(root / "locked.mp4", 0)
    result, summary = _scan(runner, root, tmp_path / "t.db", colour_model)
    assert result.exit_code == 3
    assert summary["failed"] == [{"path": str(root / "locked.mp4"),
                                  "reason": "permission denied: make the file readable to scan it"}]


def _discover_then(action):
    """find_videos as the scan calls it, then `action` on the found files: the world moves on."""
    real = pipeline.find_videos

    def find_then_act(paths, rules):
        found = real(paths, rules)
        action(found)
        return found

    return find_then_act


def test_file_deleted_between_discovery_and_decoding(runner, colour_model, tmp_path, monkeypatch):
    root = _folder(tmp_path)
    write_video(root / "vanishing.mp4", 2, codec="h264")
    monkeypatch.setattr(pipeline, "find_videos", _discover_then(lambda found: os.remove(root / "vanishing.mp4")))
    result, summary = _scan(runner, root, tmp_path / "t.db", colour_model)
    assert result.exit_code == 3
    assert summary["failed"] == [{"path": str(root / "vanishing.mp4"),
                                  "reason": "file not found (deleted or moved during the scan?)"}]


def test_file_still_being_written(runner, colour_model, tmp_path, monkeypatch):
    root = _folder(tmp_path)
    write_video(root / "growing.avi", 2)

    def keep_writing(found):
        with open(root / "growing.avi", "ab") as handle:
            handle.write(b"\0" * 1000)

    monkeypatch.setattr(pipeline, "find_videos", _discover_then(keep_writing))
    result, summary = _scan(runner, root, tmp_path / "t.db", colour_model)
    assert result.exit_code == 3
    assert summary["failed"] == [{
        "path": str(root / "growing.avi"),
        "reason": "the file changed or vanished while it was scanned: scan again once it is complete",
    }]
    monkeypatch.undo()  # the writer has finished
    result, summary = _scan(runner, root, tmp_path / "t.db", colour_model)
    assert result.exit_code == 0 and summary["tagged"] == 1 and summary["skipped"] == 2


@pytest.mark.parametrize("name", ["with space.mp4", "quote'and\"double.mp4", "new\nline.mp4", "ünïcødé_視頻.mp4"])
def test_odd_paths_are_stored_exactly(name, runner, colour_model, tmp_path):
    root = tmp_path / "odd folder ü"
    root.mkdir()
    write_video(root / name, 1, codec="h264", colour_at=solid(RED))
    result, summary = _scan(runner, root, tmp_path / "t.db", colour_model)
    assert result.exit_code == 0 and summary["tagged"] == 1
    with sqlite3.connect(tmp_path / "t.db") as conn:
        assert conn.execute("select path from videos").fetchall() == [(str(root / name),)]
    exported = runner.invoke(app, ["query", "--all", "--db", str(tmp_path / "t.db"), "--format", "json"])
    assert json.loads(exported.stdout)[0]["path"] == str(root / name)
