"""The sound track: decoding (AAC, MP3, Opus, Vorbis, none), patches aligned with windows, fusion."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from synthetic import BLUE, GREY, RED, solid, timeline, write_loudness_model, write_video
from tagger.audio import NoAudio, patch_bounds, read_patches
from tagger.cli import app

@pytest.mark.parametrize(("name", "video_codec", "audio_codec", "rate"), [
    ("aac.mp4", "h264", "aac", 44100),
    ("mp3.avi", "mpeg4", "mp3", 44100),
    ("opus.mkv", "h264", "libopus", 48000),
    ("vorbis.webm", "libvpx", "vorbis", 44100),
])
def test_audio_codecs_decode_to_aligned_patches(name, video_codec, audio_codec, rate, tmp_path):
    path = write_video(tmp_path / name, 4, codec=video_codec, audio_codec=audio_codec, audio_rate=rate,
                       loudness_at=lambda t: 0.5 if t < 2 else 0.0)
    bounds = patch_bounds(np.array([0.0, 1, 2, 3]), np.array([1.0, 2, 3, 4]), 4.0, 1.0, 16000)
    chunks = list(read_patches(str(path), bounds, 16000, chunk=3))
    assert [first for first, _ in chunks] == [0, 3]
    patches = np.concatenate([p for _, p in chunks])
    assert patches.shape == (4, 16000) and patches.dtype == np.float32
    level = np.abs(patches).mean(axis=1)
    assert level[0] == pytest.approx(0.318, abs=0.03)  # a 0.5 sine: mean |x| = 1/pi, channels averaged
    assert level[1] == pytest.approx(0.318, abs=0.03)
    assert level[3] < 0.01


def test_no_audio_stream(tmp_path):
    path = write_video(tmp_path / "silent_film.mp4", 2, codec="h264")
    with pytest.raises(NoAudio):
        list(read_patches(str(path), np.array([[0, 16000]]), 16000, 4))


def test_patches_are_centred_on_windows_and_kept_inside_the_track():
    bounds = patch_bounds(np.array([0.0, 4.0, 6.0]), np.array([4.0, 8.0, 10.0]), 10.0, 3.0, 100)
    assert bounds.tolist() == [[50, 350], [450, 750], [650, 950]]
    short = patch_bounds(np.array([0.0]), np.array([1.0]), 1.0, 3.0, 100)
    assert short.tolist() == [[0, 300]]  # longer than the track: silence pads the end


def test_a_short_track_is_padded_with_silence(tmp_path):
    path = write_video(tmp_path / "short.mp4", 1, codec="h264", audio_codec="aac")
    (first, patches), = read_patches(str(path), np.array([[0, 48000]]), 16000, 4)
    assert patches.shape == (1, 48000)
    assert np.abs(patches[0, :15000]).mean() > 0.2 and np.abs(patches[0, 17000:]).max() == 0


@pytest.fixture(scope="module")
def loudness_model(tmp_path_factory) -> Path:
    """Audio model: Red (also a video label) and Violet (audio only), both scoring the loudness."""
    return write_loudness_model(tmp_path_factory.mktemp("audio") / "loudness.onnx",
                                extra={"audio_only_threshold": {"Violet": 0.9}})


def _segments(db):
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("select label, start, end, source from segments").fetchall())


def test_fusion_rule(colour_model, loudness_model, tmp_path, runner):
    # red and loud | grey and loud | blue and loud | red and silent: 2 s each
    colours = timeline((2, RED), (4, GREY), (6, BLUE), (8, RED))
    path = write_video(tmp_path / "v.mp4", 8, codec="h264", audio_codec="aac", colour_at=colours,
                       loudness_at=lambda t: 0.5 if t < 6 else 0.0)
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(path), "--db", str(db), "--model", str(colour_model),
                                 "--audio-model", str(loudness_model), "--json"])
    assert result.exit_code == 0, result.output
    assert _segments(db) == [
        ("Blue", 4.0, 6.0, "video"),
        ("Red", 0.0, 4.0, "both"),  # 0-2 seen and heard; 2-4 grey: weak vision confirmed by sound
        ("Red", 6.0, 8.0, "video"),  # seen, silent
        ("Violet", 0.0, 6.0, "audio"),  # only the audio model knows it: sound alone, strict threshold
    ]
    assert json.loads(result.stdout)["audio_model"] == str(loudness_model)


def test_sound_alone_never_tags_what_vision_can_see(colour_model, loudness_model, tmp_path, runner):
    path = write_video(tmp_path / "blue_loud.mp4", 4, codec="h264", audio_codec="aac", colour_at=solid(BLUE))
    db = tmp_path / "t.db"
    runner.invoke(app, ["scan", str(path), "--db", str(db), "--model", str(colour_model),
                        "--audio-model", str(loudness_model)])
    labels = {label for label, *_ in _segments(db)}
    assert "Red" not in labels and labels == {"Blue", "Violet"}


def test_streams_video_and_videos_without_sound_behave_as_before(colour_model, loudness_model, tmp_path, runner):
    colours = timeline((2, RED), (4, GREY), (99, BLUE))
    with_sound = write_video(tmp_path / "a.mp4", 6, codec="h264", audio_codec="aac", colour_at=colours)
    without = write_video(tmp_path / "b.mp4", 6, codec="h264", colour_at=colours)
    vision = [("Blue", 4.0, 6.0, "video"), ("Red", 0.0, 2.0, "video")]
    for path, extra in [(with_sound, ["--streams", "video"]), (without, [])]:
        db = tmp_path / f"{path.stem}{len(extra)}.db"
        result = runner.invoke(app, ["scan", str(path), "--db", str(db), "--model", str(colour_model),
                                     "--audio-model", str(loudness_model), *extra])
        assert result.exit_code == 0, result.output
        assert _segments(db) == vision
    with sqlite3.connect(tmp_path / "b0.db") as conn:
        assert conn.execute("select count(distinct model_id) from windows").fetchone() == (1,)


def test_audio_windows_are_stored_beside_video_windows(colour_model, loudness_model, tmp_path, runner):
    path = write_video(tmp_path / "v.mp4", 3, codec="h264", audio_codec="aac")
    db = tmp_path / "t.db"
    runner.invoke(app, ["scan", str(path), "--db", str(db), "--model", str(colour_model),
                        "--audio-model", str(loudness_model)])
    with sqlite3.connect(db) as conn:
        rows = conn.execute("select m.name, count(*), min(w.start), max(w.end) from windows w "
                            "join models m on m.id = w.model_id group by m.name order by m.name").fetchall()
    assert rows == [("colour", 3, 0.0, 3.0), ("loudness", 3, 0.0, 3.0)]


def test_query_filters_on_evidence(colour_model, loudness_model, tmp_path, runner):
    path = write_video(tmp_path / "v.mp4", 6, codec="h264", audio_codec="aac",
                       colour_at=timeline((2, RED), (99, BLUE)), loudness_at=lambda t: 0.5 if t < 2 else 0.0)
    db = tmp_path / "t.db"
    runner.invoke(app, ["scan", str(path), "--db", str(db), "--model", str(colour_model),
                        "--audio-model", str(loudness_model)])
    for source, expected in [("both", {"Red"}), ("audio", {"Violet"}), ("video", {"Blue"})]:
        out = runner.invoke(app, ["query", "--all", "--source", source, "--db", str(db), "--format", "json"])
        assert {r["label"] for r in json.loads(out.stdout)} == expected


def test_a_video_model_given_as_audio_model_is_refused(colour_model, tmp_path, runner):
    path = write_video(tmp_path / "v.mp4", 1, codec="h264")
    result = runner.invoke(app, ["scan", str(path), "--db", str(tmp_path / "t.db"), "--model", str(colour_model),
                                 "--audio-model", str(colour_model)])
    assert result.exit_code == 4
    assert result.stderr.strip() == f"Error: {colour_model} is a video model, not an audio model: pass it as --model"


def test_model_filter_matches_each_part_of_a_vision_and_sound_pair(colour_model, loudness_model, tmp_path, runner):
    path = write_video(tmp_path / "v.mp4", 2, codec="h264", audio_codec="aac", colour_at=solid(RED))
    db = tmp_path / "t.db"
    runner.invoke(app, ["scan", str(path), "--db", str(db), "--model", str(colour_model),
                        "--audio-model", str(loudness_model)])
    for name in ("colour", "loudness", "colour+loudness"):
        out = runner.invoke(app, ["query", "--all", "--model", name, "--db", str(db), "--format", "json"])
        assert {r["model"] for r in json.loads(out.stdout)} == {"colour+loudness"}, name
    out = runner.invoke(app, ["query", "--all", "--model", "colou", "--db", str(db), "--format", "json"])
    assert json.loads(out.stdout) == []


SOUND_FAILS_MIDWAY = '''
import os

if os.environ.get("TAGGER_TEST_SOUND_FAILS_AFTER"):
    import tagger.audio
    from tagger.errors import DecodeError

    real_read_patches = tagger.audio.read_patches

    def read_patches(*args, **kwargs):
        for sent, chunk in enumerate(real_read_patches(*args, **kwargs)):
            if sent == int(os.environ["TAGGER_TEST_SOUND_FAILS_AFTER"]):
                raise DecodeError("Invalid data found when processing input")
            yield chunk

    tagger.audio.read_patches = read_patches
'''


def test_a_sound_track_failing_midway_leaves_the_vision_tags(colour_model, loudness_model, tmp_path, runner,
                                                             monkeypatch):
    colours = timeline((2, RED), (4, GREY), (99, BLUE))
    path = write_video(tmp_path / "a.mp4", 6, codec="h264", audio_codec="aac", colour_at=colours,
                       loudness_at=lambda t: 0.5)
    # The decoder processes read sound through a read_patches that fails after its first chunk:
    # they are separate interpreters, so the failure goes in through a sitecustomize module.
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(SOUND_FAILS_MIDWAY)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setenv("TAGGER_TEST_SOUND_FAILS_AFTER", "1")
    db = tmp_path / "t.db"
    result = runner.invoke(app, ["scan", str(path), "--db", str(db), "--model", str(colour_model),
                                 "--audio-model", str(loudness_model)])
    assert result.exit_code == 0, result.output
    assert _segments(db) == [("Blue", 4.0, 6.0, "video"), ("Red", 0.0, 2.0, "video")]
    with sqlite3.connect(db) as conn:
        assert conn.execute("select status, error from videos").fetchall() == [
            ("ok", "sound not used: Invalid data found when processing input")]
        assert conn.execute("select count(distinct model_id), count(*) from windows").fetchone() == (1, 6)
