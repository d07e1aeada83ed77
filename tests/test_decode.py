"""Frame sources return the right frames: sparse reads equal a full sequential decode."""

from __future__ import annotations

import numpy as np
import pytest

from synthetic import write_video
from tagger.decode import PyAVSource, centre_crop, open_video, scaled_size


def _ramp(t: float) -> tuple:
    """A colour that changes every frame, so a wrong frame cannot pass for the right one."""
    level = int(t * 25 * 2) % 256
    return (level, 255 - level, (level * 7) % 256)


@pytest.fixture(scope="module")
def long_gop_video(tmp_path_factory):
    """H.264 with x264's defaults (keyframes 250 frames apart, B-frames), 12 s at 25 fps."""
    return write_video(tmp_path_factory.mktemp("gop") / "long_gop.mp4", 12, codec="h264", colour_at=_ramp)


def _sequential(path, size):
    import av

    with av.open(str(path)) as container:
        return [f.to_ndarray(width=size[0], height=size[1], format="rgb24") for f in container.decode(video=0)]


def test_pyav_sparse_reads_match_sequential_decoding(long_gop_video):
    source = PyAVSource(str(long_gop_video), 64)
    assert source.info.frames == 300 and source.info.duration == pytest.approx(12.0)
    size = scaled_size(source.info.width, source.info.height, 64)
    truth = _sequential(long_gop_video, size)
    wanted = [0, 1, 37, 120, 121, 249, 250, 251, 299]
    for index, frame in source.read(wanted):
        assert np.array_equal(frame, truth[index]), f"frame {index} differs"


@pytest.mark.parametrize("threads", [1, 3])
def test_decoding_threads_give_the_same_frames(long_gop_video, threads):
    source = open_video(str(long_gop_video), 64, ("pyav",), threads=threads)
    assert source.threads == threads
    size = scaled_size(source.info.width, source.info.height, 64)
    truth = _sequential(long_gop_video, size)
    wanted = [0, 37, 121, 250, 299]
    assert [index for index, _ in source.read(wanted)] == wanted
    for index, frame in source.read(wanted):
        assert np.array_equal(frame, truth[index]), f"frame {index} differs with {threads} threads"


def test_timestamps_start_at_zero_and_ascend(long_gop_video):
    stamps = PyAVSource(str(long_gop_video), 64).timestamps
    assert stamps[0] == 0 and np.all(np.diff(stamps) > 0)
    assert stamps[-1] == pytest.approx(11.96)


def test_centre_crop_keeps_the_middle():
    frames = np.arange(2 * 4 * 6 * 3).reshape(2, 4, 6, 3)
    cropped = centre_crop(frames, (2, 2))
    assert cropped.shape == (2, 2, 2, 3)
    assert np.array_equal(cropped, frames[:, 1:3, 2:4])


@pytest.mark.parametrize(("size", "expected"), [((320, 240), (171, 128)), ((144, 256), (128, 228)), ((128, 128), (128, 128))])
def test_scaled_size_keeps_the_aspect_ratio(size, expected):
    assert scaled_size(*size, 128) == expected
