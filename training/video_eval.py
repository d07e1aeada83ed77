"""Video-level measurement: which tags a scan gives each held-out video, against what it shows.

A scan tags a video with a label when any window reaches the label's threshold (a segment needs
one window; gaps and smoothing only join windows). So a video's decision per tag is its best
window's score against the threshold, and this module measures exactly that, per label:
- recall: of the videos showing the tag, how many get it;
- wrong: videos given a tag they do not show (a tag a clip neither teaches nor forbids, such as
  guitar on a ukulele, is not counted either way).
Thresholds are chosen on held-out scores only (out-of-fold or held-out groups), per tag: the
lowest in [floor, ceiling] that at most `negatives_over` of the videos not showing it reach.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from training.calibrate import ThresholdRule, choose_threshold


@dataclass(frozen=True)
class Truth:
    """What one video shows, per tag: targets 1 (shows it), 0 (does not), -1 (not counted)."""

    name: str
    label: str  # the corpus label
    targets: tuple[int, ...]

    @property
    def shows_any(self) -> bool:
        return 1 in self.targets


def best_windows(scores: list[np.ndarray]) -> np.ndarray:
    """(videos, K): each video's best window score per tag, from per-video (W, K) scores."""
    return np.stack([s.max(axis=0) for s in scores])


def choose_thresholds(best: np.ndarray, truths: list[Truth], tags: tuple[str, ...],
                      rule: ThresholdRule = ThresholdRule()) -> dict[str, float]:
    """Per tag: `choose_threshold` over the held-out videos that do not show it, rounded up."""
    targets = np.array([t.targets for t in truths])
    return {tag: math.ceil(choose_threshold(best[targets[:, k] == 0, k], rule) * 1000) / 1000
            for k, tag in enumerate(tags)}


def video_table(best: np.ndarray, truths: list[Truth], tags: tuple[str, ...], thresholds: dict[str, float]) -> dict:
    """Per tag and overall: recall and wrong tags at `thresholds` (see the module docstring)."""
    targets = np.array([t.targets for t in truths])  # (videos, K)
    given = best >= np.array([thresholds[tag] for tag in tags])  # (videos, K)
    wrong = given & (targets == 0)
    labels = {}
    for k, tag in enumerate(tags):
        shows = targets[:, k] == 1
        confused: dict[str, int] = {}
        for i in np.flatnonzero(shows):
            for j in np.flatnonzero(wrong[i]):
                confused[tags[j]] = confused.get(tags[j], 0) + 1
        labels[tag] = {"videos": int(shows.sum()), "tagged": int(given[shows, k].sum()),
                       "wrong": int(wrong[:, k].sum()), "also_tagged": confused}
    players = targets.max(axis=1) == 1
    own = np.array([given[i][targets[i] == 1].any() for i in range(len(truths))])
    negatives = np.array([t.label == "NoInstrument" for t in truths])
    return {
        "labels": labels,
        "videos": len(truths),
        "instrument_videos": int(players.sum()),
        "instrument_videos_tagged": int((own & players).sum()),
        "videos_with_a_wrong_tag": int(wrong.any(axis=1).sum()),
        "no_instrument_videos": int(negatives.sum()),
        "no_instrument_videos_tagged": int(given[negatives].any(axis=1).sum()),
        "wrong_examples": [truths[i].name for i in np.flatnonzero(wrong.any(axis=1))][:40],
    }


def format_video_table(table: dict, title: str) -> str:
    """The table as aligned text, one label a line."""
    lines = [title, f"{'label':<22} {'videos':>6} {'tagged':>7} {'wrong':>5}  also tagged"]
    for tag, row in table["labels"].items():
        if not row["videos"] and not row["wrong"]:
            continue
        also = ", ".join(f"{k} {v}" for k, v in row["also_tagged"].items()) or "-"
        lines.append(f"{tag:<22} {row['videos']:>6} {row['tagged']:>7} {row['wrong']:>5}  {also}")
    lines.append(f"instrument videos with their label: {table['instrument_videos_tagged']} of "
                 f"{table['instrument_videos']}; videos with a wrong tag: {table['videos_with_a_wrong_tag']} of "
                 f"{table['videos']}; NoInstrument videos tagged: {table['no_instrument_videos_tagged']} of "
                 f"{table['no_instrument_videos']}")
    return "\n".join(lines)
