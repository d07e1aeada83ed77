"""The window plan: which frames and times each window of a video covers.

Windows are cut by time, not by frame count, so a 10 fps and a 60 fps video feed the model clips
of the same time span: a window starting at `s` samples frames at `s + i * frame_step / fps` for
`i < clip_len`. Windows start every `hop` seconds; the last one is shifted back to end at the
video's end, and a video shorter than one window still gets one (its last frame repeated).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagger.errors import check_range

EPS = 1e-6  # seconds; absorbs float noise in timestamps


@dataclass(frozen=True)
class WindowPlan:
    """Every window of one video: its time span and the frame indices it samples."""

    starts: np.ndarray  # (W,) seconds
    ends: np.ndarray  # (W,) seconds, never past the video's end
    frame_indices: np.ndarray  # (W, T) indices into the video's frames

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
) -> WindowPlan:
    """Plan the windows of a video whose frames start at `timestamps` (seconds, ascending).

    Args:
        timestamps: (F,) start time of each frame, the first at 0.
        duration: seconds from the first frame's start to the last frame's end.
        clip_len: frames per window (the model's T).
        frame_interval: seconds between sampled frames (`frame_step / fps` of the model).
        hop: seconds between window starts, positive (`check_hop`); None means one window length.

    Returns:
        The plan; every sample time maps to the frame being shown at that time.
    """
    window = clip_len * frame_interval
    hop = window if hop is None else hop
    starts = window_starts(duration, window, hop)
    indices = frames_on_screen(timestamps, duration, starts, clip_len, frame_interval)
    ends = np.minimum(starts + window, duration)
    return WindowPlan(starts=starts, ends=ends, frame_indices=indices)


def frames_on_screen(
    timestamps: np.ndarray,
    duration: float,
    starts: np.ndarray,
    clip_len: int,
    frame_interval: float,
) -> np.ndarray:
    """The frames windows starting at `starts` sample: the one on screen at each sample time.

    `plan_windows` places the starts of a scan; training draws its own (anywhere a window fits)
    and picks frames with this same rule.

    Args:
        timestamps: (F,) start time of each frame, the first at 0.
        duration: seconds from the first frame's start to the last frame's end.
        starts: (W,) window start times in seconds.
        clip_len: frames per window (the model's T).
        frame_interval: seconds between sampled frames.

    Returns:
        (W, T) indices into the video's frames; sample times past the end show the last frame.
    """
    starts = np.asarray(starts, dtype=np.float64)
    # The frame shown at each sample time; EPS keeps float noise from picking the previous frame.
    times = starts[:, None] + np.arange(clip_len)[None, :] * frame_interval + EPS  # (W, T)
    indices = np.searchsorted(timestamps, np.minimum(times, duration - EPS), side="right") - 1
    return np.clip(indices, 0, len(timestamps) - 1)
