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
def test_keyframes_stand_in_where_every_time_has_one_within_half_a_sample_interval():
    stamps = np.arange(100) / 25.0  # 4 s at 25 fps
    keyframes = np.arange(0, 100, 12)  # every 0.48 s: within 0.24 s of any time
    plan = plan_windows(stamps, 4.0, clip_len=4, frame_interval=1.0, keyframes=keyframes)
    on_screen = plan_windows(stamps, 4.0, clip_len=4, frame_interval=1.0)
    assert plan.tolerance == 0.5 and on_screen.tolerance == 0
    assert on_screen.frame_indices.tolist() == [[0, 25, 50, 75]]
    assert plan.frame_indices.tolist() == [[0, 24, 48, 72]]  # the nearest keyframe; frame 0 is one
    assert set(plan.needed_frames) <= set(keyframes)


def test_the_earlier_of_two_equally_near_keyframes_stands_in():
    stamps = np.arange(40) / 10.0
    plan = plan_windows(stamps, 4.0, clip_len=4, frame_interval=1.0, keyframes=np.array([0, 4, 6, 12, 18, 22, 30, 36]))
    # sample 1.0 s: keyframes 0.6 and 1.2 s -> 1.2 (0.2 s away); 2.0 s: 1.8 and 2.2 s, equally near -> 1.8
    assert plan.frame_indices.tolist() == [[0, 12, 18, 30]]


def test_keyframes_too_far_apart_leave_the_frames_on_screen():
    stamps = np.arange(100) / 25.0
    for keyframes in (np.arange(0, 100, 30), np.array([0, 20, 40, 60]), np.array([12, 24, 36, 48, 60, 72, 84, 96])):
        # 1.2 s apart; the last 1.6 s without one; none within 0.25 s of time 0 (0.5 s frame interval)
        plan = plan_windows(stamps, 4.0, clip_len=4, frame_interval=0.5, keyframes=keyframes)
        assert plan.tolerance == 0
        assert plan.frame_indices.tolist() == plan_windows(stamps, 4.0, 4, 0.5).frame_indices.tolist()
