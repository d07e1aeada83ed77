"""Stored window features: what a model's `features` output saw, one float16 vector per window and
stream, kept so that heads added later tag stored videos without decoding them again."""

from __future__ import annotations

import json
import sqlite3

import numpy as np
import pytest

from synthetic import BLUE, GREY, RED, solid, timeline, write_colour_model, write_video
from tagger.cli import app


@pytest.fixture(scope="module")
def feature_model(tmp_path_factory):
    """The colour model with a `features` output: each window's mean red, green and blue / 255."""
    return write_colour_model(tmp_path_factory.mktemp("fm") / "colour_features.onnx", features=True)


def _features(db) -> list[tuple[float, float, np.ndarray | None]]:
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select start, end, features from windows order by start").fetchall()
    return [(s, e, None if f is None else np.frombuffer(f, "<f2")) for s, e, f in rows]


def test_each_window_stores_what_the_model_saw(feature_model, tmp_path, runner):
    video = write_video(tmp_path / "rb.avi", 4, colour_at=timeline((2, RED), (99, BLUE)))
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(video), "--db", str(db), "--model", str(feature_model), "-q"])
    assert result.exit_code == 0, result.output
    stored = _features(db)
    assert [(s, e) for s, e, _ in stored] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0), (3.0, 4.0)]
    for start, _, vector in stored:  # 1 s windows: red, red, blue, blue, as decoded (MPEG-4 blurs a little)
        assert vector.dtype == np.float16 and vector.shape == (3,)
        expected = np.array(RED if start < 2 else BLUE) / 255
        assert np.abs(vector.astype(float) - expected).max() < 0.06, (start, vector)
    with sqlite3.connect(db) as conn:  # the scores are the same numbers, as float32
        scores = [np.frombuffer(b, "<f4") for (b,) in conn.execute("select scores from windows order by start")]
    assert np.allclose(np.stack(scores), np.stack([v for _, _, v in stored]).astype(np.float32), atol=1e-3)


def test_no_features_stores_none(feature_model, tmp_path, runner):
    video = write_video(tmp_path / "g.avi", 2, colour_at=solid(GREY))
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(video), "--db", str(db), "--model", str(feature_model), "--no-features",
                                 "-q"])
    assert result.exit_code == 0, result.output
    assert [f for _, _, f in _features(db)] == [None, None]


def test_a_model_without_features_stores_none(colour_model, tmp_path, runner):
    video = write_video(tmp_path / "g.avi", 2, colour_at=solid(GREY))
    db = tmp_path / "t.db"
    assert runner.invoke(app, ["scan", str(video), "--db", str(db), "--model", str(colour_model), "-q"]).exit_code == 0
    assert [f for _, _, f in _features(db)] == [None, None]


def test_a_model_promising_features_it_lacks_is_refused(tmp_path, runner):
    import onnx

    path = write_colour_model(tmp_path / "liar.onnx")
    model = onnx.load(str(path))
    model.metadata_props.add(key="tagger.features", value=json.dumps({"dim": 3}))
    onnx.save(model, str(path))
    video = write_video(tmp_path / "g.avi", 1, colour_at=solid(GREY))
    result = runner.invoke(app, ["scan", str(video), "--db", str(tmp_path / "t.db"), "--model", str(path)])
    assert result.exit_code == 4
    assert result.stderr == (f"Error: {path}: its metadata promises 'features' of 3 values but the graph has no such "
                             "output (found probs)\n")


def test_a_whole_frame_model_sees_the_edges_of_a_wide_frame(tmp_path, runner):
    """A 16:9 frame red in its left quarter: the centre crop of a crop model sees no red; a
    whole-frame model sees the whole frame (trimmed to multiples of 32), a quarter of it red."""

    def left_quarter_red(image, t):
        image[:, : image.shape[1] // 4] = RED

    video = write_video(tmp_path / "wide.avi", 1, size=(256, 144), colour_at=solid(GREY), paint=left_quarter_red)
    scores = {}
    for name, whole in (("crop", 0), ("whole", 32)):
        model = write_colour_model(tmp_path / f"{name}.onnx", size=64, whole_frame=whole, features=True)
        db = tmp_path / f"{name}.db"
        result = runner.invoke(app, ["scan", str(video), "--db", str(db), "--model", str(model), "-q"])
        assert result.exit_code == 0, result.output
        scores[name] = _features(db)[0][2].astype(float)
    grey = np.array(GREY) / 255
    assert np.abs(scores["crop"] - grey).max() < 0.03  # the centre 64x64 of the 114x64 frame: all grey
    # 96 of the 114 columns kept (9 trimmed each side); of the 28.5 red ones, 19.5 are kept: 0.20
    red_share = (scores["whole"][0] - grey[0]) / (RED[0] / 255 - grey[0])
    assert 0.15 < red_share < 0.25, scores["whole"]
