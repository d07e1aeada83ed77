"""`tagger export`: subtitles read back by ffmpeg, EDL and OTIO read back by OpenTimelineIO, wrong input.

The store comes from a real in-process scan of two generated videos with the colour model: a
25 fps AVI (red until 3 s, grey until 6 s, then blue) and a 29.97 fps H.264 MP4 with a hostile
name (grey until 2 s, then green), so EDL timecode is checked at a non-integer rate too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from synthetic import BLUE, GREEN, GREY, RED, timeline, write_video
from tagger.cli import app
from tagger.sidecars import VideoTags, format_srt, format_vtt

NTSC = 30000 / 1001
HOSTILE_NAME = 'grün <"&> x'


@pytest.fixture(scope="module")
def scanned(tmp_path_factory, colour_model):
    """(videos folder, db, segments as exported JSON) after a real scan."""
    from typer.testing import CliRunner

    root = tmp_path_factory.mktemp("sidecars") / "videos"
    root.mkdir()
    write_video(root / "red_grey_blue.avi", 10, colour_at=timeline((3, RED), (6, GREY), (99, BLUE)))
    write_video(root / f"{HOSTILE_NAME}.mp4", 6, fps=NTSC, codec="h264", colour_at=timeline((2, GREY), (99, GREEN)))
    db = root.parent / "tags.db"
    runner = CliRunner()
    result = runner.invoke(app, ["scan", str(root), "--db", str(db), "--model", str(colour_model), "-q"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["export", "--format", "json", "--db", str(db)])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    assert [(Path(r["path"]).name, r["label"], r["start_s"], r["end_s"]) for r in records] == [
        ("grün <\"&> x.mp4", "Green", 2.0, 6.006), ("red_grey_blue.avi", "Red", 0.0, 3.0),
        ("red_grey_blue.avi", "Blue", 6.0, 10.0)]
    return root, db, records


def _export(runner, db, *args) -> str:
    result = runner.invoke(app, ["export", "--db", str(db), *args])
    assert result.exit_code == 0, result.output
    return result.stderr


def _ffmpeg_cues(path: Path, codec_name: str) -> list[tuple[str, str, str]]:
    """(start, end, text) of every cue ffmpeg reads from `path` as a subtitle stream, re-encoded as SRT."""
    import imageio_ffmpeg

    done = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path), "-f", "srt", "-"],
                          capture_output=True, text=True, check=True)
    assert re.search(rf"Stream #0:0: Subtitle: {codec_name}", done.stderr), done.stderr
    return re.findall(r"\d+\n(\S+) --> (\S+)\n(.+)\n", done.stdout)


def _text(record: dict) -> str:
    return f"{record['label']} {record['score']:.2f} (seen)"


def test_vtt_sidecars_beside_each_video_are_read_by_ffmpeg(runner, scanned):
    root, db, records = scanned
    assert _export(runner, db, "--format", "vtt", "--sidecar") == "wrote 2 .vtt files (3 segments) beside the videos\n"
    green, red, blue = records
    assert _ffmpeg_cues(root / "red_grey_blue.tagger.vtt", "webvtt") == [
        ("00:00:00,000", "00:00:03,000", _text(red)), ("00:00:06,000", "00:00:10,000", _text(blue))]
    assert _ffmpeg_cues(root / f"{HOSTILE_NAME}.tagger.vtt", "webvtt") == [
        ("00:00:02,000", "00:00:06,006", _text(green))]


def test_srt_into_a_folder_is_read_by_ffmpeg(runner, scanned, tmp_path):
    root, db, records = scanned
    out = tmp_path / "subs" / "new"
    assert _export(runner, db, "--format", "srt", "-o", str(out), "--label", "Blue") == (
        f"wrote 1 .srt file (1 segment) to {out}\n")
    assert sorted(p.name for p in out.iterdir()) == ["red_grey_blue.tagger.srt"]
    assert _ffmpeg_cues(out / "red_grey_blue.tagger.srt", "subrip") == [
        ("00:00:06,000", "00:00:10,000", _text(records[2]))]


def test_edl_locators_are_read_by_the_cmx_3600_adapter(runner, scanned, tmp_path):
    import opentimelineio as otio

    root, db, records = scanned
    _export(runner, db, "--format", "edl", "-o", str(tmp_path))
    red_blue = otio.adapters.read_from_file(str(tmp_path / "red_grey_blue.tagger.edl"), adapter_name="cmx_3600", rate=25)
    (clip,) = red_blue.find_clips()
    assert clip.name == "red_grey_blue.avi"
    assert clip.source_range.duration.to_frames() == 250
    assert [(m.marked_range.start_time.to_frames(), m.name) for m in clip.markers] == [
        (0, f"{_text(records[1])} to 00:00:03:00"), (150, f"{_text(records[2])} to 00:00:10:00")]
    ntsc = otio.adapters.read_from_file(str(tmp_path / f"{HOSTILE_NAME}.tagger.edl"), adapter_name="cmx_3600", rate=NTSC)
    (clip,) = ntsc.find_clips()
    assert clip.name == "gr?n <\"&> x.mp4"  # EDL comments are ASCII: other characters become `?`
    (marker,) = clip.markers
    assert marker.marked_range.start_time.to_frames() == 60  # 2.0 s at 29.97 fps, non-drop timecode 00:00:02:00
    assert marker.name == f"{_text(records[0])} to 00:00:06:00"
    assert (tmp_path / "red_grey_blue.tagger.edl").read_bytes().count(b"\r\n") == 7


def test_otio_markers_keep_start_end_and_the_video(runner, scanned, tmp_path):
    import opentimelineio as otio

    root, db, records = scanned
    _export(runner, db, "--format", "otio", "-o", str(tmp_path))
    timeline = otio.adapters.read_from_file(str(tmp_path / "red_grey_blue.tagger.otio"))
    (clip,) = timeline.find_clips()
    assert clip.media_reference.target_url == (root / "red_grey_blue.avi").as_uri()
    assert clip.source_range.duration.to_seconds() == 10.0
    assert [(m.name, m.marked_range.start_time.to_seconds(), m.marked_range.end_time_exclusive().to_seconds(),
             m.metadata["tagger"]["label"], m.metadata["tagger"]["source"]) for m in clip.markers] == [
        (_text(records[1]), 0.0, 3.0, "Red", "video"), (_text(records[2]), 6.0, 10.0, "Blue", "video")]
    (clip,) = otio.adapters.read_from_file(str(tmp_path / f"{HOSTILE_NAME}.tagger.otio")).find_clips()
    (marker,) = clip.markers
    assert (marker.marked_range.start_time.to_frames(), marker.marked_range.end_time_exclusive().to_frames()) == (60, 180)


def test_csv_and_json_match_the_existing_readers(runner, scanned, tmp_path):
    root, db, records = scanned
    assert _export(runner, db, "--format", "csv", "-o", str(tmp_path / "a.csv")) == f"wrote 3 rows to {tmp_path / 'a.csv'}\n"
    old = runner.invoke(app, ["export-csv", "--db", str(db)])
    assert (tmp_path / "a.csv").read_text(encoding="utf-8") == old.stdout
    query = runner.invoke(app, ["query", "--all", "--format", "json", "--db", str(db)])
    assert json.loads(query.stdout) == records


def test_same_stem_in_two_folders_gets_two_files(tmp_path):
    from tagger.sidecars import write_sidecars

    record = {"label": "Red", "start_s": 0.0, "end_s": 1.0, "score": 0.9, "max_score": 0.9, "source": "video",
              "model": "m", "video_duration_s": 2.0, "fps": 25.0}
    written = write_sidecars([{**record, "path": "/a/clip.mp4"}, {**record, "path": "/b/clip.mp4"}], "vtt", tmp_path)
    assert written == (2, 2)
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names[1] == "clip.tagger.vtt" and re.fullmatch(r"clip-[0-9a-f]{8}\.tagger\.vtt", names[0])


def test_cue_text_cannot_break_the_subtitle_files():
    record = {"path": "/v.mp4", "label": "<b>A & B</b>\n\n--> x", "start_s": 1.0, "end_s": 2.5, "score": 0.5,
              "source": "both"}
    video = VideoTags("/v.mp4", 3.0, 25.0, (record,))
    assert format_vtt(video) == (
        "WEBVTT\n\n00:00:01.000 --> 00:00:02.500\n&lt;b&gt;A &amp; B&lt;/b&gt; --&gt; x 0.50 (seen and heard)\n")
    assert format_srt(video) == "1\n00:00:01,000 --> 00:00:02,500\n‹b›A & B‹/b› -› x 0.50 (seen and heard)\n"


@pytest.mark.parametrize(("args", "message"), [
    (["--format", "xml"], "--format 'xml' is not one of csv, json, vtt, srt, edl, otio"),
    (["--format", "vtt"], "--format vtt writes one file per video: pass -o DIR or --sidecar"),
    (["--format", "edl", "--sidecar", "-o", "x"], "pass either --sidecar (files beside each video) or -o DIR, not both"),
    (["--format", "csv", "--sidecar"], "--sidecar is for vtt, srt, edl, otio; --format csv writes one file: pass -o FILE"),
])
def test_wrong_input_is_one_line_and_exit_2(runner, tmp_path, args, message):
    result = runner.invoke(app, ["export", *args, "--db", str(tmp_path / "none.db")])
    assert (result.exit_code, result.stderr) == (2, f"Error: {message}\n")


def test_output_that_is_a_file_where_a_folder_is_needed(runner, scanned, tmp_path):
    root, db, _ = scanned
    target = tmp_path / "tags.srt"
    target.write_text("mine", encoding="utf-8")
    result = runner.invoke(app, ["export", "--format", "srt", "-o", str(target), "--db", str(db)])
    assert (result.exit_code, result.stderr) == (
        2, f"Error: {target} is a file; --format srt writes one file per video into a folder: pass -o DIR\n")
    assert target.read_text(encoding="utf-8") == "mine"


def test_otio_without_the_extra_names_it(runner, scanned, tmp_path, monkeypatch):
    root, db, _ = scanned
    monkeypatch.setitem(sys.modules, "opentimelineio", None)  # import fails as when it is not installed
    result = runner.invoke(app, ["export", "--format", "otio", "-o", str(tmp_path / "o"), "--db", str(db)])
    assert (result.exit_code, result.stderr) == (
        2, "Error: --format otio needs the opentimelineio package: pip install 'tagger[otio]'\n")
    assert not (tmp_path / "o").exists()


def test_missing_database_is_exit_5(runner, tmp_path):
    result = runner.invoke(app, ["export", "--format", "vtt", "-o", str(tmp_path / "o"), "--db", str(tmp_path / "no.db")])
    assert result.exit_code == 5 and result.stderr.startswith("Error: no database at")
