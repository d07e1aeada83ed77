"""`tagger retag`: every stored video's tags brought up to date from its stored features, never decoding.

The vision model (`--model`, else the default) and the add-on heads of its feature space (`tagger
learn` writes them) score every stored window's features again, as a scan would re-score an
unchanged video (`tagger.scoring.Scoring.restore`); each video keeps its windows, its sound and the
segment settings it was scanned with. A video that cannot be re-scored without decoding (scanned
without features, by a model of another feature space, or heard by another sound model) is listed
with the reason: a rescan with features fixes it. Nothing is read from the video files, so an
archive that is offline can be re-tagged from its database alone.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tagger.config import ScanSettings, resolve_heads
from tagger.contract import ModelContract
from tagger.database import Database
from tagger.deriver import Deriver
from tagger.errors import ModelError
from tagger.heads import feature_space
from tagger.identity import StoredModels, TagIdentity, rescore_problem, stored_models
from tagger.model import LoadedModel, load_model
from tagger.schema import StoredVideo, stored_videos, video_windows
from tagger.scoring import AddOns, ModelIds, Scoring
from tagger.sink import Sink
from tagger.step import AUDIO, VIDEO


@dataclass(frozen=True)
class RetagSettings:
    """What `tagger retag` needs."""

    db: str
    model: str | None = None  # None: the shipped default
    heads: str | None = None  # the add-on heads folder; None: $TAGGER_HEADS, else the user data directory's


@dataclass(frozen=True)
class NotRetagged:
    """A stored video whose tags cannot be brought up to date without decoding it, and why."""

    path: str
    reason: str


@dataclass
class RetagSummary:
    """What a retag did."""

    videos: int = 0  # stored videos with tags (failed ones have none to retag)
    retagged: int = 0
    current: int = 0  # already tagged with this model and these heads
    changed: int = 0  # stored again by a scan while this ran: that scan's tags stand
    segments: int = 0
    not_retagged: list[NotRetagged] = field(default_factory=list)
    heads: list[str] = field(default_factory=list)
    model: str = ""


class RetagProgress:
    """Callbacks a front end implements to show progress; the default shows nothing."""

    def start(self, total: int) -> None: ...
    def video_done(self, path: str) -> None: ...


def retag(settings: RetagSettings, progress: RetagProgress | None = None) -> RetagSummary:
    """Re-score every stored video from its stored features; see the module docstring.

    Raises:
        ModelError: the model is missing or invalid, or an add-on head is.
        DatabaseError: no database, or it cannot be written.
    """
    progress = progress or RetagProgress()
    model = load_model(settings.model, "cpu")
    if model.contract.kind != "video":
        raise ModelError(f"{model.path} is an {model.contract.kind} model: pass a vision model as --model")
    scoring = Scoring.of_model(model.contract, AddOns.load(resolve_heads(settings.heads), model.contract))
    db = Database(settings.db, create=False)
    try:
        return _Retag(db, model, scoring, progress).run()
    finally:
        db.close()


class _Retag:
    """One retag over one database: the vision model's rows registered, then each stored video."""

    def __init__(self, db: Database, model: LoadedModel, scoring: Scoring, progress: RetagProgress):
        self.db, self.model, self.scoring, self.progress = db, model, scoring, progress
        self.sink = Sink(db)
        self.vision_id = self.sink.register_model(model.sha256, model.name, model.contract.labels,
                                                  model.contract.to_metadata())
        self.heads_id = self.sink.register_addons(scoring.addons) if scoring.addons else None
        with db.read() as conn:
            self.known: StoredModels = stored_models(conn)
            self.stored: dict[str, StoredVideo] = stored_videos(conn)
        self.space = feature_space(model.contract)
        self.vision_ids = self.known.vision_ids(self.space)
        self.targets: dict[str | None, ModelIds] = {}  # sound model sha256 -> where this retag stores
        self.derivers: dict[tuple, Deriver] = {}
        self.summary = RetagSummary(heads=list(scoring.addons.labels), model=str(model.path))

    def run(self) -> RetagSummary:
        tagged = sorted((path, video) for path, video in self.stored.items() if video.status == "ok")
        self.summary.videos = len(tagged)
        self.progress.start(len(tagged))
        for path, video in tagged:
            self._retag(path, video)
            self.progress.video_done(path)
        return self.summary

    def _retag(self, path: str, stored: StoredVideo) -> None:
        made_by = self.known.identities.get(stored.model_id)
        if made_by is None:
            self.summary.not_retagged.append(NotRetagged(path, "its tags name no model this tagger knows"))
            return
        target = TagIdentity(self.model.sha256, made_by.audio, self.scoring.addons.sha256 if self.scoring.addons else None)
        ids = self._ids(target)
        if stored.model_id == ids.tags:
            self.summary.current += 1
            return
        problem = rescore_problem(made_by, target, self.known, self.space, self.scoring.own_head is not None)
        if problem is None:
            with self.db.read() as conn:
                restored = self.scoring.restore(video_windows(conn, path, features=True), ids, self.vision_ids, True)
            problem = restored if isinstance(restored, str) else None
        if problem is not None:
            self.summary.not_retagged.append(NotRetagged(path, problem))
            return
        found = self._deriver(stored.settings, made_by.audio).segments(
            restored.starts, restored.ends, self.scoring.extend(restored.seen, restored.added), restored.heard)
        if not self.sink.replace_scores(path, stored, restored, found, stored.settings, ids):
            self.summary.changed += 1
            return
        self.summary.retagged += 1
        self.summary.segments += len(found)

    def _ids(self, target: TagIdentity) -> ModelIds:
        """Where videos heard by `target.audio` are stored by this retag (identities registered once)."""
        if target.audio not in self.targets:
            streams = {VIDEO: self.vision_id}
            parts = [(self.model.name, self.model.contract.labels)]
            if target.audio is not None:
                heard = self.known.rows[target.audio]
                streams[AUDIO] = heard.id
                parts.append((heard.name, heard.labels))
            tags = self.vision_id if target.is_model else self.sink.register_identity(target, parts, self.scoring.addons)
            self.targets[target.audio] = ModelIds(streams, self.heads_id, tags)
        return self.targets[target.audio]

    def _deriver(self, settings: str | None, audio: str | None) -> Deriver:
        """The Deriver for a video scanned with `settings` (its segment rules) and heard by `audio`."""
        key = (settings, audio)
        if key not in self.derivers:
            rules, fusion = ScanSettings.stored_rules(settings)
            heard = None
            if audio is not None:
                row = self.known.rows[audio]
                heard = ModelContract.from_metadata(row.meta, row.name)
            self.derivers[key] = Deriver(self.scoring.extended, heard, rules, fusion)
        return self.derivers[key]
