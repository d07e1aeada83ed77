"""Window scores to segments through the one derivation (`tagger.deriver.Deriver`): thresholds,
merging, gaps, smoothing, minimum duration, the background label, and sound confirming sight."""

import numpy as np

from tagger.contract import ModelContract
from tagger.deriver import Deriver
from tagger.segments import SegmentRules, smooth_scores

STARTS = np.arange(6, dtype=float)
ENDS = STARTS + 1
ONE_LABEL = ModelContract(labels=("A",), thresholds={"A": 0.5})


def _segments(column, rules=SegmentRules()):
    scores = np.asarray(column, dtype=float)[:, None]
    return Deriver(ONE_LABEL, rules=rules).segments(STARTS, ENDS, scores)


def test_consecutive_windows_merge_with_mean_and_max():
    (seg,) = _segments([0.1, 0.6, 0.8, 0.7, 0.2, 0.1])
    assert (seg.label, seg.start, seg.end, seg.source) == ("A", 1.0, 4.0, "video")
    assert np.isclose(seg.score, 0.7) and np.isclose(seg.max_score, 0.8)


def test_a_gap_splits_unless_tolerated():
    column = [0.9, 0.9, 0.1, 0.9, 0.1, 0.1]
    assert [(s.start, s.end) for s in _segments(column, SegmentRules(max_gap=0))] == [(0.0, 2.0), (3.0, 4.0)]
    assert [(s.start, s.end) for s in _segments(column)] == [(0.0, 4.0)]  # the default bridges one dip


def test_min_duration_drops_short_segments():
    column = [0.9, 0.1, 0.9, 0.9, 0.1, 0.1]
    assert [(s.start, s.end) for s in _segments(column, SegmentRules(min_duration=2, max_gap=0))] == [(2.0, 4.0)]


def test_the_background_label_never_becomes_a_segment():
    contract = ModelContract(labels=("A", "Background"), background="Background")
    segs = Deriver(contract).segments(STARTS, ENDS, np.ones((6, 2)))
    assert {s.label for s in segs} == {"A"}


def test_one_threshold_for_every_label_replaces_the_models_own():
    column = [0.45, 0.45, 0.1, 0.1, 0.1, 0.1]
    assert _segments(column) == []  # the model's 0.5
    assert [(s.start, s.end) for s in _segments(column, SegmentRules(threshold=0.4))] == [(0.0, 2.0)]


def test_smoothing_is_a_centred_moving_average():
    smoothed = smooth_scores(np.array([[0.0], [3.0], [0.0], [0.0]]), 3)
    assert np.allclose(smoothed[:, 0], [1.5, 1.0, 1.0, 0.0])
    (seg,) = _segments([0.0, 1.0, 0.0, 0.0, 0.0, 0.0], SegmentRules(smooth=3, max_gap=0))  # 0.5, 0.33, 0.33, 0
    assert (seg.start, seg.end) == (0.0, 1.0)


def test_threshold_is_inclusive():
    assert len(_segments([0.5, 0, 0, 0, 0, 0])) == 1


def test_sound_confirms_weak_sight_and_never_tags_alone():
    sound = ModelContract(labels=("A",), thresholds={"A": 0.5}, kind="audio")
    seen = np.array([0.6, 0.3, 0.3, 0.1, 0.0, 0.0])[:, None]  # support 0.5 x 0.5: 0.25 is enough sight
    heard = np.array([0.9, 0.9, 0.1, 0.9, 0.9, 0.9])[:, None]
    segs = Deriver(ONE_LABEL, sound, SegmentRules(max_gap=0)).segments(STARTS, ENDS, seen, heard)
    assert [(s.start, s.end, s.source) for s in segs] == [(0.0, 2.0, "both")]  # windows 3-5: heard, not seen
    assert Deriver(ONE_LABEL, sound).segments(STARTS, ENDS, seen, None)[0].end == 1.0  # no sound: sight alone
