"""Add-on heads in the scan, and stored videos re-scored from their stored features without decoding:
after a head is added, and when the vision model changes within one feature space."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from synthetic import BLUE, RED, timeline, write_colour_model, write_video
from tagger.cli import app
from tagger.heads import Head, write_addon

CYAN = (30, 200, 220)
SEGMENT = ("label", "start_s", "end_s", "model")
COUNTING = ("--decoders", "fake_decoders:CountingSource", "--workers", "1")
# Cyan: sigmoid(-10 r + 8 g + 8 b - 10) of the mean colour: 0.88 on cyan, 0.05 on blue, 0 on red and grey
CYAN_HEAD = Head(("Cyan",), "colour-test-1", np.array([[-10.0, 8.0, 8.0]], np.float32), np.array([-10.0], np.float32),
                 {"Cyan": 0.5}, info={"positives": 3})


@pytest.fixture(scope="module")
def red_then_cyan(tmp_path_factory) -> Path:
    """4 s MPEG-4, 25 fps: red until 2 s, then cyan (1 s windows of the colour models)."""
    return write_video(tmp_path_factory.mktemp("rc") / "red_then_cyan.avi", 4, colour_at=timeline((2, RED), (99, CYAN)))


@pytest.fixture
def db(any_db) -> str:
    return any_db


def _scan(runner, db, video, model, *extra) -> dict:
    result = runner.invoke(app, ["scan", str(video), "--db", db, "--model", str(model), *COUNTING, "--json", *extra])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def _segments(runner, db, *extra) -> list[tuple]:
    result = runner.invoke(app, ["query", "--all", "--format", "json", "--db", db, *extra])
    assert result.exit_code == 0, result.output
    return [tuple(r[k] for k in SEGMENT) for r in json.loads(result.stdout)]


def _rows(db: str, sql: str) -> list[tuple]:
    from tagger.database import Database

    store = Database(db, create=False)
    try:
        with store.read() as conn:
            return [tuple(row) for row in conn.exec_driver_sql(sql)]
    finally:
        store.close()


def test_a_head_added_later_tags_stored_videos_without_decoding(runner, db, red_then_cyan, feature_model, opens,
                                                                tmp_path):
    heads = tmp_path / "heads"
    _scan(runner, db, red_then_cyan, feature_model, "--heads", str(heads))
    assert opens.read_text().splitlines() == [str(red_then_cyan)]
    write_addon(CYAN_HEAD, heads)

    summary = _scan(runner, db, red_then_cyan, feature_model, "--heads", str(heads))
    assert (summary["tagged"], summary["rescored"], summary["heads"]) == (1, 1, ["Cyan"])
    assert opens.read_text().splitlines() == [str(red_then_cyan)]  # re-scored from stored features: no decode
    tagged = "colour_features+heads(Cyan)"
    assert _segments(runner, db) == [("Red", 0.0, 2.0, tagged), ("Blue", 2.0, 4.0, tagged),
                                     ("Cyan", 2.0, 4.0, tagged), ("Green", 2.0, 4.0, tagged)]
    stored = _rows(db, "select w.start, m.name, w.scores, w.features from windows w join models m on m.id = w.model_id "
                       "order by m.name, w.start")
    features = np.stack([np.frombuffer(f, "<f2") for _, name, _, f in stored if name == "colour_features"])
    added = np.stack([np.frombuffer(s, "<f4") for _, name, s, f in stored if name == "heads(Cyan)"])
    assert [(start, name, f is None) for start, name, _, f in stored] == [
        *((t, "colour_features", False) for t in (0.0, 1.0, 2.0, 3.0)), *((t, "heads(Cyan)", True) for t in (0.0, 1.0, 2.0, 3.0))]
    assert np.abs(added - CYAN_HEAD.scores(features)).max() < 1e-6  # the head on the stored features
    assert (added[:2] < 0.01).all() and (added[2:] > 0.8).all()
    assert _rows(db, "select m.name from videos v join models m on m.id = v.model_id") == [(tagged,)]

    again = _scan(runner, db, red_then_cyan, feature_model, "--heads", str(heads))
    assert (again["tagged"], again["skipped"]) == (0, 1)
    direct = tmp_path / "direct.db"  # readers derive what a scan with the same heads stores
    _scan(runner, str(direct), red_then_cyan, feature_model, "--heads", str(heads), "--threshold", "0.85")
    assert _segments(runner, db, "--threshold", "0.85") == _segments(runner, str(direct))
    rederived = _scan(runner, db, red_then_cyan, feature_model, "--heads", str(heads), "--threshold", "0.85")
    assert (rederived["tagged"], rederived["rescored"]) == (1, 0)  # new segments from the stored add-on scores
    assert _segments(runner, db) == _segments(runner, str(direct))
    assert len(opens.read_text().splitlines()) == 2  # only the direct scan decoded


def test_an_addon_for_a_label_the_model_has_replaces_its_scores(runner, red_then_cyan, feature_model, opens,
                                                                 tmp_path):
    db, heads = str(tmp_path / "t.db"), tmp_path / "heads"
    _scan(runner, db, red_then_cyan, feature_model)
    # "Red" taught again as "much blue": the model's own Red column is replaced, its place kept
    write_addon(Head(("Red",), "colour-test-1", np.array([[0.0, 0.0, 20.0]], np.float32), np.array([-10.0], np.float32),
                     {"Red": 0.5}), heads)
    assert _scan(runner, db, red_then_cyan, feature_model, "--heads", str(heads))["rescored"] == 1
    assert _segments(runner, db) == [("Blue", 2.0, 4.0, "colour_features+heads(Red)"),
                                     ("Green", 2.0, 4.0, "colour_features+heads(Red)"),
                                     ("Red", 2.0, 4.0, "colour_features+heads(Red)")]
    assert _rows(db, "select labels from models where name = 'colour_features+heads(Red)'") == [('["Red", "Green", "Blue"]',)]
    (tmp_path / "heads" / "Red.head.json").unlink()  # removing the head re-scores back, still no decoding
    assert _scan(runner, db, red_then_cyan, feature_model, "--heads", str(heads))["rescored"] == 1
    assert [s[:3] for s in _segments(runner, db)] == [("Red", 0.0, 2.0), ("Blue", 2.0, 4.0), ("Green", 2.0, 4.0)]
    assert _rows(db, "select count(*) from windows") == [(4,)]  # the add-on's windows are gone with it
    assert len(opens.read_text().splitlines()) == 1


def test_a_new_model_of_the_same_space_rescores_stored_windows(runner, db, feature_model, opens, tmp_path):
    """Model B shares model A's feature space and records its own head (Warm, Cool): B's tags of a
    video A scanned come from A's stored features, and equal B's own scan but for float16 rounding."""
    video = write_video(tmp_path / "warm_cool.avi", 4, colour_at=timeline((2, RED), (99, BLUE)))
    warm_cool = write_colour_model(tmp_path / "warm_cool.onnx", labels=("Warm", "Cool"),
                                   head=(np.array([[12.0, 0.0, -12.0], [-12.0, 0.0, 12.0]]), np.zeros(2)))
    _scan(runner, db, video, feature_model)
    summary = _scan(runner, db, video, warm_cool)
    assert summary["rescored"] == 1 and opens.read_text().splitlines() == [str(video)]
    assert _segments(runner, db) == [("Warm", 0.0, 2.0, "warm_cool"), ("Cool", 2.0, 4.0, "warm_cool")]
    stored = _rows(db, "select m.name, w.scores, w.features from windows w join models m on m.id = w.model_id "
                       "order by w.start")
    assert {name for name, _, _ in stored} == {"warm_cool"}  # the windows now carry B's scores, A's features
    direct = str(tmp_path / "direct.db")
    _scan(runner, direct, video, warm_cool)
    fresh = _rows(direct, "select scores from windows order by start")
    rescored = np.stack([np.frombuffer(s, "<f4") for _, s, _ in stored])
    assert np.abs(rescored - np.stack([np.frombuffer(s, "<f4") for (s,) in fresh])).max() < 0.01
    assert _segments(runner, db) == [s[:3] + ("warm_cool",) for s in _segments(runner, direct)]
    # Model A records no head of its own: going back to it decodes again
    assert _scan(runner, db, video, feature_model)["rescored"] == 0
    assert opens.read_text().splitlines() == [str(video)] * 3


def test_a_video_scanned_without_features_is_decoded_when_a_head_is_added(runner, red_then_cyan, feature_model,
                                                                          opens, tmp_path):
    db, heads = str(tmp_path / "t.db"), tmp_path / "heads"
    _scan(runner, db, red_then_cyan, feature_model, "--no-features")
    write_addon(CYAN_HEAD, heads)
    summary = _scan(runner, db, red_then_cyan, feature_model, "--heads", str(heads))
    assert (summary["tagged"], summary["rescored"]) == (1, 0)
    assert len(opens.read_text().splitlines()) == 2
    assert ("Cyan", 2.0, 4.0, "colour_features+heads(Cyan)") in _segments(runner, db)


def test_an_addon_of_another_size_is_refused(runner, red_then_cyan, feature_model, tmp_path):
    write_addon(Head(("Odd",), "colour-test-1", np.ones((1, 5), np.float32), np.zeros(1, np.float32)), tmp_path)
    result = runner.invoke(app, ["scan", str(red_then_cyan), "--db", str(tmp_path / "t.db"), "--model",
                                 str(feature_model), "--heads", str(tmp_path)])
    assert result.exit_code == 4
    assert result.stderr == (f"Error: {tmp_path / 'Odd.head.json'} takes 5 features but colour-test gives 3 in space "
                             "colour-test-1: teach the label again (tagger learn)\n")


def test_windows_export_shows_the_addon_scores(runner, red_then_cyan, feature_model, opens, tmp_path):
    db, heads = str(tmp_path / "t.db"), tmp_path / "heads"
    write_addon(CYAN_HEAD, heads)
    _scan(runner, db, red_then_cyan, feature_model, "--heads", str(heads))
    result = runner.invoke(app, ["export-csv", "--windows", "--label", "Cyan", "--db", db])
    assert result.exit_code == 0, result.output
    rows = [line.split(",") for line in result.stdout.splitlines()[1:]]
    assert [(r[1], r[2], r[4]) for r in rows] == [("heads(Cyan)", f"{t}.0", "Cyan") for t in range(4)]
