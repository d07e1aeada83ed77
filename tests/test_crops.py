"""`tagger.crops`: a video model that sees the whole frame as C crops along its long side.

The rule lives in `tagger.decode.crop_origins` / `frame_crops`; these tests pin its geometry, show a
scan feeding a 3-crop model finds what sits in a corner the centre crop never shows, and check the
contract key and what `tagger models` says about it (and about `tagger.left_out`).
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from synthetic import GREY, RED, write_colour_model, write_redness_model, write_video
from tagger.cli import app
from tagger.contract import ModelContract
from tagger.decode import centre_crop, crop_origins, frame_crops
from tagger.errors import ModelError


def _coordinates(height: int, width: int) -> np.ndarray:
    """(height, width, 3) frame whose pixel (y, x) holds (y, x, 0): a crop tells where it came from."""
    frame = np.zeros((height, width, 3), np.uint16)
    frame[..., 0] = np.arange(height)[:, None]
    frame[..., 1] = np.arange(width)[None, :]
    return frame


@pytest.mark.parametrize("height, width, size, origins", [
    (180, 320, (180, 180), [(0, 0), (0, 70), (0, 140)]),  # landscape: left, middle, right edge
    (180, 320, (160, 160), [(10, 0), (10, 80), (10, 160)]),  # short side centred: (180 - 160) // 2
    (320, 180, (180, 180), [(0, 0), (70, 0), (140, 0)]),  # portrait: top, middle, bottom edge
    (320, 180, (160, 160), [(0, 10), (80, 10), (160, 10)]),
    (64, 64, (64, 64), [(0, 0), (0, 0), (0, 0)]),  # square: three identical crops
    (64, 64, (48, 48), [(8, 8), (8, 8), (8, 8)]),
    (64, 113, (64, 64), [(0, 0), (0, 24), (0, 49)]),  # round(24.5) is 24: numpy rounds half to even
])
def test_three_crops_span_the_long_side_edge_to_edge(height, width, size, origins):
    assert crop_origins(height, width, size, 3) == origins
    crops = frame_crops(_coordinates(height, width), size, 3)
    assert crops.shape == (3, *size, 3)
    for crop, (top, left) in zip(crops, origins):
        assert (crop[0, 0, 0], crop[0, 0, 1]) == (top, left)
        assert (crop[-1, -1, 0], crop[-1, -1, 1]) == (top + size[0] - 1, left + size[1] - 1)


@pytest.mark.parametrize("height, width, size", [(180, 320, (160, 160)), (320, 180, (160, 160)),
                                                 (64, 113, (64, 64)), (64, 64, (48, 48)), (65, 99, (64, 32))])
def test_one_crop_is_the_centre_crop_bit_for_bit(height, width, size):
    frames = np.random.default_rng(0).integers(0, 256, (2, height, width, 3), dtype=np.uint8)
    got = frame_crops(frames, size, 1)
    assert got.shape == (2, 1, *size, 3) and got.dtype == np.uint8
    assert np.array_equal(got[:, 0], centre_crop(frames, size))


def test_window_inputs_are_frame_major_t_times_c(tmp_path):
    from tagger.step import VideoJob, window_inputs

    video = write_video(tmp_path / "wide.avi", 2, size=(320, 180))
    model = ModelContract(labels=("A", "B"), clip_len=4, size=(64, 64), resize=64, fps=4.0, crops=3,
                          thresholds={"A": 0.5, "B": 0.5})
    inputs = window_inputs(VideoJob.for_model(model, video))
    centre = window_inputs(VideoJob.for_model(dataclasses.replace(model, crops=1), video))
    assert inputs.shape == (2, 12, 64, 64, 3) and centre.shape == (2, 4, 64, 64, 3)
    # Frames are 114x64: the middle of 3 crops starts at 25 = (114 - 64) // 2, the centre crop's.
    assert np.array_equal(inputs[:, 1::3], centre)
    assert not np.array_equal(inputs[:, 0::3], centre)


@pytest.fixture(scope="module")
def corner_video(tmp_path_factory) -> Path:
    """4 s MPEG-4 AVI, 320x180 (16:9) at 25 fps, grey; from 1 s to 3 s a saturated red 90x90
    square fills its bottom-right corner, which a centre square crop barely shows."""

    def red_corner(image: np.ndarray, t: float) -> None:
        if 1 <= t < 3:
            image[90:, 230:] = RED

    path = tmp_path_factory.mktemp("corner") / "red_corner.avi"
    return write_video(path, 4, size=(320, 180), colour_at=lambda t: GREY, paint=red_corner)


def _scan_segments(runner, video: Path, model: Path, db: Path) -> list[tuple]:
    result = runner.invoke(app, ["scan", str(video), "--db", str(db), "--model", str(model), "-q"])
    assert result.exit_code == 0, result.output
    query = runner.invoke(app, ["query", "--db", str(db), "--all", "--format", "json"])
    assert query.exit_code == 0, query.output
    return [(r["label"], r["start_s"], r["end_s"], r["source"], round(r["score"], 1))
            for r in json.loads(query.stdout)]


def test_a_scan_with_three_crops_sees_the_red_corner(runner, corner_video, tmp_path):
    model = write_redness_model(tmp_path / "red3.onnx", crops=3)
    assert _scan_segments(runner, corner_video, model, tmp_path / "tags.db") == [("Red", 1.0, 3.0, "video", 0.2)]


def test_the_same_model_on_the_centre_crop_does_not(runner, corner_video, tmp_path):
    model = write_redness_model(tmp_path / "red1.onnx", crops=1)
    assert _scan_segments(runner, corner_video, model, tmp_path / "tags.db") == []


def test_crops_round_trip_and_absent_means_one():
    contract = ModelContract(labels=("A", "B"), clip_len=8, size=(224, 224), resize=224, fps=2.0, crops=3,
                             thresholds={"A": 0.5, "B": 0.5}, extra={"left_out": {"C": "no footage"}})
    props = contract.to_metadata()
    assert props["tagger.crops"] == "3" and json.loads(props["tagger.left_out"]) == {"C": "no footage"}
    back = ModelContract.from_metadata(props)
    assert back == contract and back.input_frames == 24 and back.left_out == {"C": "no footage"}
    single = dataclasses.replace(contract, crops=1, extra={})
    assert "tagger.crops" not in single.to_metadata()  # a centre-crop model's metadata is as before
    old = {k: v for k, v in props.items() if k not in ("tagger.crops", "tagger.left_out")}
    assert ModelContract.from_metadata(old).crops == 1 and ModelContract.from_metadata(old).left_out == {}


@pytest.mark.parametrize("text, message", [
    ("0", "m.onnx: tagger.crops must be >= 1 (crops per frame; 1 is the centre crop), got 0"),
    ("2.5", "m.onnx: tagger.crops must be a whole number >= 1, got 2.5"),
    ("three", "m.onnx: tagger.crops is not valid JSON (Expecting value)"),
])
def test_bad_crops_are_refused_naming_the_key(text, message):
    props = {**ModelContract(labels=("A",), clip_len=8, size=(32, 32), resize=32, fps=2.0).to_metadata(),
             "tagger.crops": text}
    with pytest.raises(ModelError) as caught:
        ModelContract.from_metadata(props, source="m.onnx")
    assert str(caught.value) == message


def test_a_model_whose_input_ignores_its_crops_is_refused(runner, tmp_path):
    model = write_colour_model(tmp_path / "lying.onnx", extra={"crops": 3})  # input [N, 4, 32, 32, 3]
    result = runner.invoke(app, ["models", "--model", str(model)])
    assert result.exit_code == 4
    assert result.stderr.strip() == (f"Error: {model}: input frames has shape ['N', 4, 32, 32, 3], "
                                     "expected [N, 12, 32, 32, 3] (4 frames x 3 crops)")


def test_models_shows_the_crops_and_what_is_left_out(runner, tmp_path):
    left_out = {"PlayingDaf": "no example in the training corpus: needs UCF101 or other footage"}
    model = write_redness_model(tmp_path / "red3.onnx", crops=3, extra={"left_out": left_out})
    result = runner.invoke(app, ["models", "--model", str(model)])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert "│ window                │ 4 frames every 0.250 s = 1.00 s" in "\n".join(lines)
    assert "│ crop                  │ short side 64 → 3 crops 64x64 across long side" in "\n".join(lines)
    assert "not tagged: PlayingDaf: no example in the training corpus: needs UCF101 or other footage" in lines
    assert max(len(line) for line in lines[: lines.index(next(x for x in lines if x.startswith("not tagged")))]) <= 80
