"""The scan, one way: planner -> executor -> deriver -> sink.

1. The planner (`tagger.planner`) finds the videos and decides from what is stored what each one
   needs: nothing, new segments from its stored window scores, new scores from its stored
   features (other models or add-on heads of the same feature space: `tagger.scoring`), or a scan.
2. The videos to scan become a stream of jobs; each video is claimed (`tagger.claims`) as its job
   is taken, so scans sharing a database split a tree without duplicates. The executor
   (`tagger.executors`) runs the per-video step wherever it runs it and streams back each video's
   window scores or failure.
3. The deriver (`tagger.deriver`) turns window scores, the add-on heads' included, into segments.
4. The sink (`tagger.sink`) writes each video in one transaction, so an interrupted scan loses
   nothing already finished and the next scan resumes where it stopped.

Nothing downstream calls back upstream: each stage gets plain values from the one before it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from tagger.claims import Claims, Lease, claim_owner
from tagger.config import ScanSettings, resolve_heads
from tagger.database import Database
from tagger.deriver import Deriver
from tagger.discover import FoundVideo, find_videos, fingerprint
from tagger.errors import DatabaseError
from tagger.executors import Executor, Recoveries, Started, make_executor
from tagger.heads import feature_space
from tagger.identity import TagIdentity, rescore_problem, stored_models
from tagger.model import LoadedModel, ScanModels, load_scan_models
from tagger.planner import Freshness, job_for, plan_scan
from tagger.scan_records import record_scan_end, record_scan_start, record_scan_stopped
from tagger.schema import StoredVideo, VideoResult, stored_videos, video_windows
from tagger.scoring import AddOns, Restored, Scoring
from tagger.sink import Sink
from tagger.step import AUDIO, VIDEO, VideoFailure, VideoJob, VideoScores


@dataclass
class ScanSummary:
    """What a scan did, for the final table and `--json`."""

    scan_id: int = 0
    found: int = 0
    tagged: int = 0
    skipped: int = 0  # unchanged since the last scan with this model
    failed: list[VideoFailure] = field(default_factory=list)
    elsewhere: int = 0  # being tagged by another scan sharing the database
    tagged_elsewhere: int = 0  # tagged by another scan sharing the database since this one looked
    segments: int = 0
    rescored: int = 0  # of the tagged: scored again from stored features, without decoding
    heads: list[str] = field(default_factory=list)  # the labels of the add-on heads applied
    video_seconds: float = 0.0
    wall_seconds: float = 0.0  # the whole scan, the executor's start-up (a new Ray: seconds) included
    startup_seconds: float = 0.0  # starting the executor
    model: str = ""
    audio_model: str | None = None
    executor: str = "local"
    providers: list[str] = field(default_factory=list)
    recoveries: Recoveries = field(default_factory=Recoveries)  # workers and nodes lost, videos run again
    interrupted: bool = False
    error: str | None = None  # the database error that stopped the scan (exit 5), as its one line
    recorded_as: str = "running"  # the scan's status in the scans table once it ended (see Scan.run)

    def as_dict(self) -> dict:
        return asdict(self)


class ScanStopped(DatabaseError):
    """The database stopped the scan (locked past the timeout, disk full); `summary` says what the
    scan had done by then and how the scans table records it."""

    def __init__(self, message: str, summary: ScanSummary):
        super().__init__(message)
        self.summary = summary


class ScanProgress:
    """Callbacks a front end implements to show progress; the default shows nothing."""

    def start(self, total: int, skipped: int) -> None: ...
    def video_started(self, path: str) -> None: ...
    def video_finished(self, path: str, seconds: float, ok: bool) -> None: ...
    def video_passed(self, path: str) -> None: ...  # not scanned after all: another scan has it


class ClaimedJobs:
    """The executor's job queue: the videos to scan, each claimed as its job is taken.

    A video another scan is decoding (`busy`) or has tagged since the plan (`current`) is passed
    over and counted in the summary.
    """

    def __init__(self, videos: list[FoundVideo], claims: Claims, fresh: Freshness, make_job,
                 summary: ScanSummary, progress: ScanProgress):
        self.videos, self.claims, self.fresh, self.make_job = list(reversed(videos)), claims, fresh, make_job
        self.summary, self.progress = summary, progress
        self.taken: dict[str, FoundVideo] = {}  # path -> the video as found, for each job handed out
        self.next_id = 0

    def __iter__(self) -> Iterator[VideoJob]:
        return self

    def __len__(self) -> int:
        return len(self.videos)

    def __next__(self) -> VideoJob:
        while self.videos:
            video = self.videos.pop()
            outcome = self.claims.claim(video, self.fresh)
            if outcome == "claimed":
                self.taken[video.path] = video
                self.next_id += 1
                return self.make_job(video, self.next_id)
            if outcome == "busy":
                self.summary.elsewhere += 1
            else:
                self.summary.tagged_elsewhere += 1
            self.progress.video_passed(video.path)
        raise StopIteration


class Scan:
    """One scan over one database with one executor: the stages above, in order."""

    def __init__(self, settings: ScanSettings, db: Database, loaded: dict[str, LoadedModel], executor: Executor,
                 progress: ScanProgress, startup_seconds: float = 0.0, addons: AddOns | None = None):
        self.settings, self.db, self.executor, self.progress = settings, db, executor, progress
        self.model, self.audio = loaded[VIDEO], loaded.get(AUDIO)
        self.scoring = Scoring.of_model(self.model.contract, addons)
        self.sink = Sink(db)
        self.ids = self.sink.register_models(loaded, self.scoring.addons)
        self.model_id = self.ids.tags
        self.tagging_key = settings.tagging_key()
        self.rescorable, self.vision_ids = self._rescorable()
        self.fresh = Freshness(self.model_id, self.tagging_key, settings.force, db.now(),  # the database's clock
                               self.rescorable)
        self.deriver = Deriver(self.scoring.extended, self.audio.contract if self.audio else None,
                               settings.segment_rules, settings.fusion)
        self.claims = Claims(db, claim_owner(), settings.lease)
        self.summary = ScanSummary(model=str(self.model.path), audio_model=str(self.audio.path) if self.audio else None,
                                   executor=settings.executor, startup_seconds=startup_seconds,
                                   heads=list(self.scoring.addons.labels))

    def run(self, paths: Sequence[str]) -> ScanSummary:
        began = time.monotonic() - self.summary.startup_seconds  # the executor's start-up is the scan's time too
        found = find_videos(paths, self.settings.discovery)
        with self.db.read() as conn:
            plan = plan_scan(found, stored_videos(conn), self.fresh)
        self.summary.found, self.summary.skipped = len(found), plan.current
        options = {k: v for k, v in asdict(self.settings).items() if k != "db"}
        self.summary.scan_id = record_scan_start(self.db, list(paths), self.model_id, options, self.claims.owner)
        status = "interrupted"
        failure: BaseException | None = None
        try:
            with Lease(self.claims):
                todo = plan.to_tag + [video for video, stored in plan.to_rederive if not self._rederive(video, stored)]
                todo += [video for video, stored in plan.to_rescore if not self._rederive(video, stored, rescore=True)]
                self.progress.start(len(todo), self.summary.skipped)
                if todo:
                    self._execute(todo)
                self.summary.providers = self.executor.providers
                self.summary.recoveries = self.executor.recoveries
                status = "finished"
        except DatabaseError as exc:
            failure = exc
            raise ScanStopped(str(exc), self.summary) from exc
        except BaseException as exc:
            failure = exc
            raise
        finally:
            self.summary.interrupted = status != "finished"
            self.summary.wall_seconds = time.monotonic() - began
            self._record_end(status, failure)
        return self.summary

    def _record_end(self, status: str, failure: BaseException | None) -> None:
        """Release this scan's claims and record how it ended, in `summary.recorded_as` too.

        After a database error, one short try records it as interrupted with the error (the claims
        lapse by themselves); if the database refuses that too, the next scan records it.
        After another failure a refused write must not hide it.
        """
        counts = {"found": self.summary.found, "tagged": self.summary.tagged, "skipped": self.summary.skipped,
                  "failed": len(self.summary.failed), "segments": self.summary.segments,
                  "elsewhere": self.summary.elsewhere, "tagged_elsewhere": self.summary.tagged_elsewhere}
        if isinstance(failure, DatabaseError):
            self.summary.error = str(failure)
            if record_scan_stopped(self.db, self.summary.scan_id, counts, str(failure)):
                self.summary.recorded_as = "interrupted"
            return
        try:
            self.claims.release()
            record_scan_end(self.db, self.summary.scan_id, status, counts)
            self.summary.recorded_as = status
        except DatabaseError:
            if failure is None:
                raise

    def _execute(self, todo: list[FoundVideo]) -> None:
        """Hand the videos to the executor as claimed jobs; derive and store each as it comes back."""
        contract, audio = self.model.contract, self.audio.contract if self.audio else None
        jobs = ClaimedJobs(todo, self.claims, self.fresh,
                           lambda video, job_id: job_for(video, job_id, self.settings, contract, audio),
                           self.summary, self.progress)
        events = self.executor.outcomes(jobs)
        try:
            for event in events:
                if isinstance(event, Started):
                    self.progress.video_started(event.job.path)
                else:
                    self._store(jobs.taken.pop(event.path), event)
        finally:
            events.close()

    def _rescorable(self) -> tuple[frozenset[int], frozenset[int]]:
        """The stored identities whose videos this scan re-scores from stored features rather than
        decodes, and the vision models whose features are of this model's space."""
        with self.db.read() as conn:
            known = stored_models(conn)
        target = TagIdentity(self.model.sha256, self.audio.sha256 if self.audio else None,
                             self.scoring.addons.sha256 if self.scoring.addons else None)
        space, own_head = feature_space(self.model.contract), self.scoring.own_head is not None
        rescorable = frozenset(model_id for model_id, stored in known.identities.items()
                               if rescore_problem(stored, target, known, space, own_head) is None)
        return rescorable - {self.model_id}, known.vision_ids(space)

    def _rederive(self, video: FoundVideo, stored: StoredVideo, rescore: bool = False) -> bool:
        """New segments for a stored video from its stored window scores, or with `rescore` new
        scores from its stored features, no decoding; False when it must be decoded (its windows or
        features are not there, or another scan stored it since the plan)."""
        with self.db.read() as conn:
            by_model = video_windows(conn, video.path, features=rescore)
        restored = self.scoring.restore(by_model, self.ids, self.vision_ids, rescore)
        if not isinstance(restored, Restored):
            return False
        found = self.deriver.segments(restored.starts, restored.ends, self.scoring.extend(restored.seen, restored.added),
                                      restored.heard)
        if rescore:
            written = self.sink.replace_scores(video.path, stored, restored, found, self.tagging_key, self.ids)
        else:
            written = self.sink.replace_segments(video.path, stored, found, self.tagging_key)
        if not written:
            return False
        self.summary.rescored += rescore
        self.summary.tagged += 1
        self.summary.segments += len(found)
        return True

    def _store(self, video: FoundVideo, outcome: VideoScores | VideoFailure) -> None:
        if isinstance(outcome, VideoFailure):
            self._store_failure(video, outcome.reason, outcome.detail)
            return
        try:
            now = os.stat(video.path)
            changed = (now.st_size, now.st_mtime_ns) != (video.size, video.mtime_ns)
        except OSError:
            changed = True
        if changed:
            self._store_failure(video, "the file changed or vanished while it was scanned: scan again once it is complete")
            return
        added = self.scoring.added(outcome.features.get(VIDEO))
        found = self.deriver.segments(outcome.starts, outcome.ends, self.scoring.extend(outcome.scores[VIDEO], added),
                                      outcome.scores.get(AUDIO))
        info, note = outcome.info, outcome.sound_note
        streams = self.ids.streams
        self.sink.save_video(VideoResult(
            path=video.path, size=video.size, mtime_ns=video.mtime_ns, fingerprint=fingerprint(video.path, video.size),
            status="ok", decoder=outcome.decoder, duration=info.duration, fps=info.fps, frames=info.frames,
            width=info.width, height=info.height, window_starts=outcome.starts, window_ends=outcome.ends,
            window_scores={**{streams[stream]: scores for stream, scores in outcome.scores.items()},
                           **({self.ids.heads: added} if added is not None else {})},
            window_features={streams[stream]: features for stream, features in outcome.features.items()
                             if stream in outcome.scores} if self.settings.features else None,
            segments=found, settings=self.tagging_key,
            error=f"sound not used: {note}" if self.audio and note and note != "no audio stream" else None,
        ), self.model_id)
        self.summary.tagged += 1
        self.summary.segments += len(found)
        self.summary.video_seconds += info.duration
        self.progress.video_finished(video.path, info.duration, True)

    def _store_failure(self, video: FoundVideo, reason: str, detail: str = "") -> None:
        self.sink.save_video(VideoResult(path=video.path, size=video.size, mtime_ns=video.mtime_ns,
                                         fingerprint=None, status="failed", error=reason), self.model_id)
        self.summary.failed.append(VideoFailure(video.path, reason, detail))
        self.progress.video_finished(video.path, 0.0, False)


def scan(paths: Sequence[str], settings: ScanSettings, progress: ScanProgress | None = None,
         models: ScanModels | None = None) -> ScanSummary:
    """Tag every video under `paths` into the database of `settings`; see `Scan`.

    `models`: the vision and sound models, as `load_scan_models(settings)` chooses them (the default).
    The add-on heads of the vision model's feature space come from the heads folder (`--heads`).
    """
    models = models or load_scan_models(settings)
    loaded = {VIDEO: models.video, **({AUDIO: models.audio} if models.audio else {})}
    addons = AddOns.load(resolve_heads(settings.heads), models.video.contract)
    db = Database(settings.db)
    executor = None
    try:
        starting = time.monotonic()
        executor = make_executor(settings.executor, loaded, settings.batch_size,
                                 settings.workers, settings.timeout, settings.ray_address, settings.device)
        startup = time.monotonic() - starting
        return Scan(settings, db, loaded, executor, progress or ScanProgress(), startup, addons).run(paths)
    finally:
        if executor is not None:
            executor.close()
        db.close()
