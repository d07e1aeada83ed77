"""Fusing what is seen with what is heard, window by window, into segments with their evidence.

The rule (numbers in the README's "Audio" section):
- a label the video model can produce is tagged where vision passes its threshold (`video`), or
  where vision supports it at least weakly (`support` x its threshold) and the sound passes the
  audio threshold (`both`). Sound alone never tags such a label: a soundtrack of piano music over
  a silent film, or fireworks that sound like drums, show no instrument.
- a label only the audio model knows (PlayingSitar) is tagged from sound alone at a stricter
  threshold (`audio`).

`fuse_segments` is the arithmetic of the one derivation of segments from window scores
(`tagger.deriver.Deriver`), which the scan applies to fresh scores and the readers (`query
--threshold`, `export-csv --threshold`) to stored ones.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace

import numpy as np

from tagger.contract import ModelContract
from tagger.errors import check_range
from tagger.segments import Segment, SegmentRules, segments_from_mask, smooth_scores


@dataclass(frozen=True)
class FusionRules:
    """How audio evidence combines with video evidence."""

    support: float = 0.5  # fraction of the video threshold vision must reach for sound to confirm; a model's tagger.fusion_support overrides it
    audio_only: float = 0.8  # threshold for labels only the audio model knows; overridden by the model

    def __post_init__(self) -> None:
        check_range("fusion support", self.support, 0, 1)
        check_range("fusion audio_only threshold", self.audio_only, 0, 1)

    def for_model(self, video: ModelContract) -> FusionRules:
        """These rules with the vision model's own support, where its metadata gives one."""
        support = video.fusion_support
        return self if support is None else replace(self, support=support)


def video_thresholds(contract: ModelContract, threshold: float | None = None) -> dict[str, float]:
    """label -> threshold for every label the video model can tag: `threshold` for all of them
    (`--threshold`), else each label's own threshold from the model."""
    return {label: threshold if threshold is not None else contract.threshold_for(label)
            for label in contract.tag_labels}


def fuse_segments(
    video_scores: np.ndarray,
    audio_scores: np.ndarray | None,
    starts: np.ndarray,
    ends: np.ndarray,
    video_labels: tuple[str, ...],
    video_thresholds: Mapping[str, float],
    audio: ModelContract | None,
    rules: SegmentRules = SegmentRules(),
    fusion: FusionRules = FusionRules(),
) -> list[Segment]:
    """Segments of every taggable label from (W, Kv) video and (W, Ka) audio window scores.

    Args:
        video_thresholds: label -> threshold for the video labels that can be tags.
        audio: the audio model's contract, or None when there is no sound to use.
    """
    video = smooth_scores(np.asarray(video_scores, dtype=np.float64), rules.smooth)
    heard = smooth_scores(np.asarray(audio_scores, dtype=np.float64), rules.smooth) if audio_scores is not None else None
    audio_columns = {label: i for i, label in enumerate(audio.labels)} if audio is not None and heard is not None else {}
    audio_labels = list(audio.tag_labels) if audio_columns else []
    only_threshold = dict(audio.extra.get("audio_only_threshold", {})) if audio_columns else {}
    segments: list[Segment] = []
    for label in [*video_thresholds, *(a for a in audio_labels if a not in video_thresholds)]:
        if label in video_thresholds:
            v = video[:, video_labels.index(label)]
            seen = v >= video_thresholds[label]
            both = np.zeros_like(seen)
            score = v
            if label in audio_labels:
                a = heard[:, audio_columns[label]]
                both = (v >= fusion.support * video_thresholds[label]) & (a >= audio.threshold_for(label))
                score = np.where(both, np.maximum(v, a), v)
            mask = seen | both
            sources = np.where(both, "both", "video")
        else:
            a = heard[:, audio_columns[label]]
            mask = a >= float(only_threshold.get(label, max(fusion.audio_only, audio.threshold_for(label))))
            score, sources = a, np.full(len(a), "audio")
        segments += segments_from_mask(label, mask, score, starts, ends, rules, sources)
    return sorted(segments, key=lambda s: (s.label, s.start))
