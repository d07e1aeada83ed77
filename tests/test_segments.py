"""Window scores to segments: thresholds, merging, gaps, smoothing, minimum duration."""

import numpy as np

from tagger.segments import SegmentRules, merge_segments, smooth_scores

STARTS = np.arange(6, dtype=float)
ENDS = STARTS + 1


def _segments(column, rules=SegmentRules(), threshold=0.5):
    scores = np.asarray(column, dtype=float)[:, None]
    return merge_segments(scores, STARTS, ENDS, ["A"], {"A": threshold}, rules)


def test_consecutive_windows_merge_with_mean_and_max():
    (seg,) = _segments([0.1, 0.6, 0.8, 0.7, 0.2, 0.1])
    assert (seg.label, seg.start, seg.end) == ("A", 1.0, 4.0)
    assert np.isclose(seg.score, 0.7) and np.isclose(seg.max_score, 0.8)


def test_a_gap_splits_unless_tolerated():
    column = [0.9, 0.9, 0.1, 0.9, 0.1, 0.1]
    assert [(s.start, s.end) for s in _segments(column, SegmentRules(max_gap=0))] == [(0.0, 2.0), (3.0, 4.0)]
    assert [(s.start, s.end) for s in _segments(column)] == [(0.0, 4.0)]  # the default bridges one dip


def test_min_duration_drops_short_segments():
    column = [0.9, 0.1, 0.9, 0.9, 0.1, 0.1]
    assert [(s.start, s.end) for s in _segments(column, SegmentRules(min_duration=2, max_gap=0))] == [(2.0, 4.0)]


def test_labels_without_threshold_never_become_segments():
    scores = np.ones((6, 2))
    segs = merge_segments(scores, STARTS, ENDS, ["A", "Background"], {"A": 0.5})
    assert {s.label for s in segs} == {"A"}


def test_smoothing_is_a_centred_moving_average():
    smoothed = smooth_scores(np.array([[0.0], [3.0], [0.0], [0.0]]), 3)
    assert np.allclose(smoothed[:, 0], [1.5, 1.0, 1.0, 0.0])


def test_threshold_is_inclusive():
    assert len(_segments([0.5, 0, 0, 0, 0, 0])) == 1
