"""Window scores -> smoothing -> thresholds -> merged time segments, per label.

Pure functions over arrays: the scan calls them once per video, and a query can call them again
on stored window scores with other thresholds, without decoding anything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from tagger.errors import check_range


MAX_WINDOWS = 10_000  # smoothing or gap widths beyond this are typing mistakes, not settings


def check_threshold(value: float | None) -> None:
    """Raise UsageError unless a --threshold is a score between 0 and 1 (None: the model's own)."""
    check_range("--threshold", value, 0, 1)


@dataclass(frozen=True)
class SegmentRules:
    """How window scores become segments."""

    smooth: int = 1  # moving-average width in windows; 1 = raw scores
    min_duration: float = 0.0  # seconds; shorter segments are dropped
    max_gap: int = 1  # windows below threshold bridged inside one segment: one dip does not split a performance

    def __post_init__(self) -> None:
        check_range("--smooth", self.smooth, 1, MAX_WINDOWS, note=" windows (1 = off)")
        check_range("--min-duration", self.min_duration, 0, note=" seconds")
        check_range("--max-gap", self.max_gap, 0, MAX_WINDOWS, note=" windows")


@dataclass(frozen=True)
class Segment:
    """One stretch of video where a label holds."""

    label: str
    start: float
    end: float
    score: float  # mean window score over the segment
    max_score: float
    source: str = "video"  # the evidence: video, audio, or both

    @property
    def duration(self) -> float:
        return self.end - self.start


def smooth_scores(scores: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average over windows of (W, K) scores; edges average what exists."""
    if width <= 1 or len(scores) < 2:
        return scores
    kernel = np.ones(width)
    pad = width // 2
    totals = np.apply_along_axis(lambda col: np.convolve(col, kernel, mode="full"), 0, scores)
    counts = np.convolve(np.ones(len(scores)), kernel, mode="full")[:, None]
    return (totals / counts)[pad : pad + len(scores)]


def runs_above(mask: np.ndarray, max_gap: int) -> list[tuple[int, int]]:
    """[first, last] index pairs of runs of True, bridging gaps of up to `max_gap` False."""
    runs: list[tuple[int, int]] = []
    for index in np.flatnonzero(mask):
        if runs and index - runs[-1][1] - 1 <= max_gap:
            runs[-1] = (runs[-1][0], int(index))
        else:
            runs.append((int(index), int(index)))
    return runs


def segments_from_mask(
    label: str,
    mask: np.ndarray,
    scores: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    rules: SegmentRules,
    sources: np.ndarray | None = None,
) -> list[Segment]:
    """Segments of one label from per-window decisions `mask` and per-window `scores`.

    `sources` (per window: "video", "audio" or "both") gives each segment its evidence: "both" if
    any window had both, else "video" if any had video, else "audio".
    """
    segments = []
    for first, last in runs_above(mask, rules.max_gap):
        start, end = float(starts[first]), float(ends[last])
        if end - start + 1e-9 < rules.min_duration:
            continue
        run = scores[first : last + 1]
        source = "video"
        if sources is not None:
            found = set(sources[first : last + 1][mask[first : last + 1]])
            source = "both" if "both" in found else "video" if "video" in found else "audio"
        segments.append(Segment(label, start, end, float(run.mean()), float(run.max()), source))
    return segments


def merge_segments(
    scores: np.ndarray,
    starts: np.ndarray,
    ends: np.ndarray,
    labels: Sequence[str],
    thresholds: Mapping[str, float],
    rules: SegmentRules = SegmentRules(),
) -> list[Segment]:
    """Segments of every label in `thresholds` whose (smoothed) window score reaches its threshold.

    Args:
        scores: (W, K) window scores, columns in `labels` order.
        starts, ends: (W,) window times in seconds.
        labels: the model's K labels.
        thresholds: label -> threshold; labels absent here (the background) never become segments.
        rules: smoothing, minimum duration and gap tolerance.

    Returns:
        Segments sorted by label, then start.
    """
    smoothed = smooth_scores(np.asarray(scores, dtype=np.float64), rules.smooth)
    segments = []
    for column, label in enumerate(labels):
        if label in thresholds:
            column_scores = smoothed[:, column]
            segments += segments_from_mask(label, column_scores >= thresholds[label], column_scores,
                                           starts, ends, rules)
    return sorted(segments, key=lambda s: (s.label, s.start))
