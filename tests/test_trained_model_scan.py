"""A model exported by `training/` runs in `tagger scan` with no code change and tags what it learnt."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from tagger.cli import app
from training.motion_data import MotionDataConfig, generate_motion_dataset

DEMO = Path(__file__).resolve().parents[1] / "exports" / "motion_demo.onnx"


def test_scan_with_the_exported_c3d_tags_motion_direction(runner, tmp_path):
    config = MotionDataConfig(classes=("MovingLeft", "MovingRight", "MovingUp", "MovingDown"), groups=1,
                              clips_per_group=1, seed=4242)  # scenes the demo model never saw
    videos = generate_motion_dataset(tmp_path / "motion", config)
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(tmp_path / "motion"), "--db", str(db), "--model", str(DEMO), "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["tagged"] == len(videos) == 4
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select v.path, s.label, s.end - s.start, v.duration from segments s "
                            "join videos v on v.id = s.video_id").fetchall()
    longest: dict[str, tuple[str, float, float]] = {}
    for path, label, length, duration in rows:
        if length > longest.get(path, ("", 0.0, 0.0))[1]:
            longest[path] = (label, length, duration)
    for video in videos:
        label, length, duration = longest[str(video)]
        assert label == video.parent.name, f"{video.name}: {label}"
        assert length >= 0.5 * duration  # the direction holds for most of the video
