"""The window plan: which frames and times each window of a video covers.

Windows are cut by time, not by frame count, so a 10 fps and a 60 fps video feed the model clips
of the same time span: a window starting at `s` samples frames at `s + i * frame_step / fps` for
`i < clip_len`. Windows start every `hop` seconds; the last one is shifted back to end at the
video's end, and a video shorter than one window still gets one (its last frame repeated).

Each sample shows the frame on screen at its time. Where a decoder offers keyframes (frames it
decodes alone, cheaply) and every time in the video has one within half a sample interval
(`sample_tolerance`), the nearest keyframe stands in for each sample instead (the frame on screen
when it is a keyframe): decoding those alone then gives every window. The choice depends only on
the video and the model's sample interval, so training clips and scan windows agree.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagger.errors import check_range

EPS = 1e-6  # seconds; absorbs float noise in timestamps
TOLERANCE = 0.5  # of the sample interval: a stand-in frame is never further from its sample time


def sample_tolerance(frame_interval: float) -> float:
    """How far (seconds) from its sample time a frame standing in for the one on screen may start."""
    return TOLERANCE * frame_interval


@dataclass(frozen=True)
class WindowPlan:
    """Every window of one video: its time span and the frame indices it samples."""

    starts: np.ndarray  # (W,) seconds
    ends: np.ndarray  # (W,) seconds, never past the video's end
    frame_indices: np.ndarray  # (W, T) indices into the video's frames
    tolerance: float = 0.0  # seconds: how far a sampled frame may start from its sample time (keyframes stand in)

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def needed_frames(self) -> np.ndarray:
        """Sorted unique frame indices: each is decoded once even when windows overlap."""
        return np.unique(self.frame_indices)


def check_hop(hop: float | None) -> None:
    """Raise UsageError unless `hop` (seconds between window starts) is positive; None (one window
    length) passes. The one check: a plan is only ever made with a hop that passed it."""
    check_range("--hop", hop, 0, above=True, note=" seconds")


def window_starts(duration: float, window: float, hop: float) -> np.ndarray:
    """Start times of windows of `window` seconds every `hop` seconds over `duration` seconds."""
    if duration <= window + EPS:
        return np.zeros(1)
    count = int(np.floor((duration - window) / hop + EPS)) + 1
    starts = np.arange(count) * hop
    if starts[-1] + window < duration - EPS:
        starts = np.append(starts, duration - window)
    return starts


def plan_windows(
    timestamps: np.ndarray,
    duration: float,
    clip_len: int,
    frame_interval: float,
    hop: float | None = None,
    keyframes: np.ndarray | None = None,
) -> WindowPlan:
    """Plan the windows of a video whose frames start at `timestamps` (seconds, ascending).

    Args:
        timestamps: (F,) start time of each frame, the first at 0.
        duration: seconds from the first frame's start to the last frame's end.
        clip_len: frames per window (the model's T).
        frame_interval: seconds between sampled frames (`frame_step / fps` of the model).
        hop: seconds between window starts, positive (`check_hop`); None means one window length.
        keyframes: indices of the frames the decoder offers as stand-ins (`FrameSource.keyframes`).

    Returns:
        The plan; every sample time maps to the frame being shown at that time, or to the nearest
        keyframe where keyframes stand in (`frames_on_screen`).
    """
    window = clip_len * frame_interval
    hop = window if hop is None else hop
    starts = window_starts(duration, window, hop)
    indices = frames_on_screen(timestamps, duration, starts, clip_len, frame_interval, keyframes)
    ends = np.minimum(starts + window, duration)
    stand_in = keyframes_stand_in(timestamps, duration, keyframes, frame_interval)
    return WindowPlan(starts=starts, ends=ends, frame_indices=indices,
                      tolerance=sample_tolerance(frame_interval) if stand_in else 0.0)


def frames_on_screen(
    timestamps: np.ndarray,
    duration: float,
    starts: np.ndarray,
    clip_len: int,
    frame_interval: float,
    keyframes: np.ndarray | None = None,
) -> np.ndarray:
    """The frames windows starting at `starts` sample: the one on screen at each sample time, or
    where keyframes stand in (`keyframes_stand_in`), that one if it is a keyframe, else the
    keyframe starting nearest the sample time (the earlier of two equally near).

    `plan_windows` places the starts of a scan; training draws its own (anywhere a window fits)
    and picks frames with this same rule.

    Args:
        timestamps: (F,) start time of each frame, the first at 0.
        duration: seconds from the first frame's start to the last frame's end.
        starts: (W,) window start times in seconds.
        clip_len: frames per window (the model's T).
        frame_interval: seconds between sampled frames.
        keyframes: indices of the frames the decoder offers as stand-ins, or None.

    Returns:
        (W, T) indices into the video's frames; sample times past the end show the last frame.
    """
    starts = np.asarray(starts, dtype=np.float64)
    times = starts[:, None] + np.arange(clip_len)[None, :] * frame_interval  # (W, T)
    # The frame shown at each sample time; EPS keeps float noise from picking the previous frame.
    indices = np.searchsorted(timestamps, np.minimum(times + EPS, duration - EPS), side="right") - 1
    indices = np.clip(indices, 0, len(timestamps) - 1)
    if not keyframes_stand_in(timestamps, duration, keyframes, frame_interval):
        return indices
    keyframes = np.unique(keyframes)  # sorted
    key_times, times = timestamps[keyframes], np.minimum(times, duration - EPS)
    after = np.clip(np.searchsorted(key_times, times), 1, max(1, len(keyframes) - 1))
    before, after = np.minimum(after - 1, len(keyframes) - 1), np.minimum(after, len(keyframes) - 1)
    nearest = np.where(times - key_times[before] <= key_times[after] - times + EPS, before, after)
    return np.where(np.isin(indices, keyframes), indices, keyframes[nearest])


def keyframes_stand_in(timestamps: np.ndarray, duration: float, keyframes: np.ndarray | None,
                       frame_interval: float) -> bool:
    """Whether `keyframes` (frame indices) stand in for the frames on screen: every time from 0 to
    the video's end has one starting within `sample_tolerance(frame_interval)` of it."""
    if keyframes is None or len(keyframes) == 0:
        return False
    key_times = np.sort(timestamps[np.asarray(keyframes)])
    reach = sample_tolerance(frame_interval) + EPS
    gaps = np.diff(key_times, prepend=0.0, append=max(0.0, duration - EPS))
    return bool(gaps[0] <= reach and gaps[-1] <= reach and np.all(gaps[1:-1] <= 2 * reach))
