"""The planner: what a scan does with each video it finds, from what is stored about it.

The first stage of the scan (planner -> executor -> deriver -> sink). `Freshness` is the one rule
saying what a video needs: nothing ("current"), new segments derived from its stored window
scores without decoding ("segments"), new scores from its stored features without decoding
("scores": its tags were made by other models or heads, on features of the same space), or a
scan ("tag"). `plan_scan` applies it to every video
found; the claims apply it again, inside the claiming transaction, to the video as stored then
(another scan may have tagged it meanwhile). `job_for` turns a video into the per-video step's job.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tagger.config import ScanSettings
from tagger.contract import ModelContract
from tagger.discover import FoundVideo
from tagger.schema import StoredVideo
from tagger.step import VideoJob

CURRENT, SEGMENTS, SCORES, TAG = "current", "segments", "scores", "tag"  # what a video needs


@dataclass(frozen=True)
class Freshness:
    """When a stored video is current for this scan: its file, its model and its settings.

    `model_id` is the id the scan's tags are stored under (its models and add-on heads:
    `tagger.identity`), `tagging_key` its settings (ScanSettings.tagging_key), `began` the scan's
    start by the database's clock (with `force`, a video stored after it is one this scan, or
    another `--force` scan, has just re-tagged). `rescorable`: the ids of the identities whose tags
    can be re-scored from stored features for this scan (`tagger.identity.rescore_problem`).
    """

    model_id: int
    tagging_key: str
    force: bool = False
    began: float = 0.0
    rescorable: frozenset[int] = frozenset()
    windows: dict = field(init=False, compare=False)  # the key's "windows" part: what decoding depends on

    def __post_init__(self) -> None:
        object.__setattr__(self, "windows", json.loads(self.tagging_key)["windows"])

    def state(self, video: FoundVideo, stored: StoredVideo | None) -> str:
        """What `video` needs, given what is stored about it: CURRENT, SEGMENTS, SCORES or TAG.

        Videos stored by schema 1 have no recorded settings: they count as current (re-tagging a
        whole archive on upgrade would be costly); --force re-tags them, once per scan.
        """
        if stored is None:
            return TAG
        if (stored.size, stored.mtime_ns, stored.status) != (video.size, video.mtime_ns, "ok"):
            return TAG
        if stored.model_id != self.model_id:
            rescore = not self.force and stored.model_id in self.rescorable and self._same_windows(stored)
            return SCORES if rescore else TAG
        if self.force:
            return CURRENT if stored.scanned_at >= self.began else TAG
        if stored.settings is None or stored.settings == self.tagging_key:
            return CURRENT
        return SEGMENTS if self._same_windows(stored) else TAG

    def _same_windows(self, stored: StoredVideo) -> bool:
        """Whether `stored` was cut into windows and heard as this scan would (what decoding depends on)."""
        try:
            return json.loads(stored.settings).get("windows") == self.windows
        except (TypeError, ValueError, AttributeError):
            return False


@dataclass
class ScanPlan:
    """Every video found, split by what it needs."""

    found: list[FoundVideo]
    to_tag: list[FoundVideo]
    to_rederive: list[tuple[FoundVideo, StoredVideo]]  # with what was stored when the plan was made
    to_rescore: list[tuple[FoundVideo, StoredVideo]] = field(default_factory=list)  # likewise

    @property
    def current(self) -> int:
        """How many videos need nothing."""
        return len(self.found) - len(self.to_tag) - len(self.to_rederive) - len(self.to_rescore)


def plan_scan(found: list[FoundVideo], stored: dict[str, StoredVideo], fresh: Freshness) -> ScanPlan:
    """What each found video needs, by `fresh`'s rule, from `stored` (path -> stored video)."""
    plan = ScanPlan(found, [], [])
    for video in found:
        state = fresh.state(video, stored.get(video.path))
        if state == TAG:
            plan.to_tag.append(video)
        elif state == SEGMENTS:
            plan.to_rederive.append((video, stored[video.path]))
        elif state == SCORES:
            plan.to_rescore.append((video, stored[video.path]))
    return plan


def job_for(video: FoundVideo, job_id: int, settings: ScanSettings, contract: ModelContract,
            audio: ModelContract | None) -> VideoJob:
    """The per-video step's job for `video`, sampled as `contract`'s model wants (and heard for
    `audio`'s, when there is one)."""
    return VideoJob.for_model(contract, video.path, job_id=job_id, hop=settings.hop, decoders=settings.decoders,
                              audio_contract=audio)
