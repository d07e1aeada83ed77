"""The window plan: times, frame picks, the shifted last window, videos shorter than a window."""

import numpy as np
import pytest

from tagger.windows import check_hop, plan_windows, window_starts


def test_windows_tile_the_video_and_the_last_is_shifted_to_the_end():
    starts = window_starts(duration=10.0, window=3.0, hop=3.0)
    assert starts.tolist() == [0.0, 3.0, 6.0, 7.0]


def test_exact_multiple_needs_no_shifted_window():
    assert window_starts(9.0, 3.0, 3.0).tolist() == [0.0, 3.0, 6.0]


def test_overlapping_hop():
    assert window_starts(4.0, 2.0, 1.0).tolist() == [0.0, 1.0, 2.0]


def test_short_video_gets_one_window_with_its_last_frame_repeated():
    stamps = np.arange(5) / 25.0  # 0.2 s at 25 fps
    plan = plan_windows(stamps, 0.2, clip_len=4, frame_interval=0.25)
    assert len(plan) == 1
    assert plan.starts.tolist() == [0.0] and plan.ends.tolist() == [0.2]
    assert plan.frame_indices.tolist() == [[0, 4, 4, 4]]


@pytest.mark.parametrize("source_fps", [10, 25, 30, 60])
def test_frames_are_picked_by_time_whatever_the_source_rate(source_fps):
    stamps = np.arange(source_fps * 4) / source_fps  # 4 s
    plan = plan_windows(stamps, 4.0, clip_len=4, frame_interval=0.25)
    assert plan.starts.tolist() == [0.0, 1.0, 2.0, 3.0]
    picked_times = stamps[plan.frame_indices]
    expected = plan.starts[:, None] + np.arange(4) * 0.25
    assert np.all(np.abs(picked_times - expected) < 1.0 / source_fps)
    assert np.all(picked_times <= expected + 1e-6)  # the frame on screen at that time, never a later one


def test_needed_frames_are_unique_even_when_windows_overlap():
    stamps = np.arange(100) / 25.0
    plan = plan_windows(stamps, 4.0, clip_len=8, frame_interval=0.08, hop=0.32)
    assert len(plan.needed_frames) == len(set(plan.frame_indices.ravel().tolist()))
    assert np.all(np.diff(plan.needed_frames) > 0)


def test_hop_must_be_positive():
    from tagger.errors import UsageError

    for hop in (0, -1.5):
        with pytest.raises(UsageError) as caught:
            check_hop(hop)
        assert str(caught.value) == f"--hop must be greater than 0 seconds, got {hop:g}"
    check_hop(None)  # one window length
    check_hop(0.25)
