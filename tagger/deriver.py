"""The deriver: window scores -> segments, the one derivation every path uses.

A scan derives the segments of each video it scores, a re-scan with other segment settings
re-derives them from the stored window scores, and the readers (`query --threshold`, `export
--threshold`) derive them again from the stored scores with the contracts stored beside them: all
through `Deriver.segments`, so `query --threshold X` shows exactly what `scan --threshold X`
stores. The arithmetic (smoothing, thresholds, fusion of sight and sound, merging) is in
`tagger.fusion` and `tagger.segments`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from tagger.contract import ModelContract
from tagger.fusion import FusionRules, fuse_segments, video_thresholds
from tagger.segments import Segment, SegmentRules


@dataclass(frozen=True)
class Deriver:
    """How one pair of models' window scores become segments.

    `video`: the vision model's contract; `audio`: the sound model's, or None (no sound to use);
    `rules`: threshold (None: each label's own), smoothing, gaps, minimum duration; `fusion`: how
    sound confirms sight (the vision model's own `tagger.fusion_support` applies).
    """

    video: ModelContract
    audio: ModelContract | None = None
    rules: SegmentRules = field(default_factory=SegmentRules)
    fusion: FusionRules = field(default_factory=FusionRules)
    thresholds: dict[str, float] = field(init=False, compare=False)  # label -> threshold, taggable labels

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", video_thresholds(self.video, self.rules.threshold))
        object.__setattr__(self, "fusion", self.fusion.for_model(self.video))

    def segments(self, starts: np.ndarray, ends: np.ndarray, seen: np.ndarray,
                 heard: np.ndarray | None = None) -> list[Segment]:
        """Segments of one video from its (W,) window times, (W, Kv) vision scores and, when the
        sound was used, (W, Ka) sound scores of the same windows; sorted by label, then start."""
        audio = self.audio if heard is not None else None
        return fuse_segments(seen, heard if audio is not None else None, starts, ends, self.video.labels,
                             self.thresholds, audio, self.rules, self.fusion)
