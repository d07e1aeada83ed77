"""Window scores -> smoothing -> thresholds -> merged time segments, per label.

Pure functions over arrays, used by the one derivation (`tagger.deriver`): the scan calls it once
per video, and a query can call it again on stored window scores with other thresholds, without
decoding anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tagger.errors import check_range


MAX_WINDOWS = 10_000  # smoothing or gap widths beyond this are typing mistakes, not settings


@dataclass(frozen=True)
class SegmentRules:
    """How window scores become segments."""

    threshold: float | None = None  # one threshold for every label; None = each label's own, from the model
    smooth: int = 1  # moving-average width in windows; 1 = raw scores
    min_duration: float = 0.0  # seconds; shorter segments are dropped
    max_gap: int = 1  # windows below threshold bridged inside one segment: one dip does not split a performance

    def __post_init__(self) -> None:
        check_range("--threshold", self.threshold, 0, 1)
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
