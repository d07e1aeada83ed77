"""The scan: decide what to scan, hand the videos to an executor, store what comes back.

For each video found, the stored state decides: nothing to do, new segments from the stored
window scores (no decoding), or scan it. A video is claimed in the database before it is handed
out (`Store.claim`), so scans sharing a database split a tree without duplicates; the claims
are leases that this scan renews while it runs. Where the per-video step runs is the executor's
business (`tagger.executors`); each video that comes back is turned into segments and written in
one transaction, so an interrupted scan loses nothing already finished and the next scan resumes
where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field

from tagger.config import ScanSettings
from tagger.discover import FoundVideo, find_videos, fingerprint
from tagger.errors import DatabaseError
from tagger.executors import Executor, make_executor
from tagger.fusion import fuse_segments, video_thresholds
from tagger.model import LoadedModel, ScanModels, load_scan_models
from tagger.schema import StoredVideo, VideoResult
from tagger.step import AUDIO, VIDEO, VideoFailure, VideoJob, VideoScores
from tagger.store import Store

@dataclass
class ScanSummary:
    """What a scan did, for the final table and `--json`."""

    scan_id: int = 0
    found: int = 0
    tagged: int = 0
    skipped: int = 0  # unchanged since the last scan with this model, or tagged meanwhile by another scan
    failed: list[VideoFailure] = field(default_factory=list)
    elsewhere: int = 0  # being tagged by another scan sharing the database
    segments: int = 0
    video_seconds: float = 0.0
    wall_seconds: float = 0.0
    model: str = ""
    audio_model: str | None = None
    executor: str = "local"
    providers: list[str] = field(default_factory=list)
    interrupted: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


class ScanProgress:
    """Callbacks a front end implements to show progress; the default shows nothing."""

    def start(self, total: int, skipped: int) -> None: ...
    def video_started(self, path: str) -> None: ...
    def video_finished(self, path: str, seconds: float, ok: bool) -> None: ...
    def video_passed(self, path: str) -> None: ...  # not scanned after all: another scan has it


class _ClaimedJobs:
    """The videos left to scan, as the executor's job queue: each is claimed when it is taken."""

    def __init__(self, scanner: Scanner, videos: list[FoundVideo]):
        self.scanner, self.videos, self.next_id = scanner, list(reversed(videos)), 0

    def __iter__(self) -> Iterator[VideoJob]:
        return self

    def __len__(self) -> int:
        return len(self.videos)

    def __next__(self) -> VideoJob:
        while self.videos:
            video = self.videos.pop()
            if self.scanner.claim(video):
                self.next_id += 1
                return self.scanner.job(self.next_id, video)
        raise StopIteration


class _Lease:
    """Renews this scan's claims every third of the lease while the scan runs."""

    def __init__(self, store: Store, owner: str, seconds: float):
        self.store, self.owner, self.seconds = store, owner, seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="tagger-lease", daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(self.seconds / 3):
            try:
                self.store.renew_claims(self.owner, self.seconds)
            except Exception:  # noqa: BLE001 - a missed renewal is retried; the lease has slack
                continue

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join(1)  # a renewal waiting on a locked database must not hold the scan up


class Scanner:
    """Runs one scan: discovery, what each video needs, claims, storage. The executor does the rest."""

    def __init__(self, settings: ScanSettings, store: Store, models: dict[str, LoadedModel], executor: Executor,
                 progress: ScanProgress):
        self.settings, self.store, self.executor, self.progress = settings, store, executor, progress
        self.model, self.audio = models[VIDEO], models.get(AUDIO)
        self.tagging_key = settings.tagging_key()
        self.window_settings = json.loads(self.tagging_key)["windows"]
        self.thresholds = video_thresholds(self.model.contract, settings.threshold)
        self.window_model_ids, self.model_id = register_models(store, models)
        self.owner = claim_owner()
        self.began = store.now()  # the database's clock, as scanned_at
        self.in_flight: dict[str, FoundVideo] = {}
        self.summary = ScanSummary(model=str(self.model.path), audio_model=str(self.audio.path) if self.audio else None,
                                   executor=settings.executor)

    def run(self, paths: Sequence[str]) -> ScanSummary:
        began = time.monotonic()
        found = find_videos(paths, self.settings.discovery)
        known = self.store.known_videos()
        states = {video.path: self._stored_state(video, known.get(video.path)) for video in found}
        todo = [video for video in found if states[video.path] == "tag"]
        resegment = [video for video in found if states[video.path] == "segments"]
        self.summary.found = len(found)
        self.summary.skipped = len(found) - len(todo) - len(resegment)
        options = {k: v for k, v in asdict(self.settings).items() if k != "db"}
        self.summary.scan_id = self.store.start_scan(list(paths), self.model_id, options, self.owner, claimer_gone)
        status = "interrupted"
        _RUNNING.add(self.owner)
        failure: BaseException | None = None
        try:
            with _Lease(self.store, self.owner, self.settings.lease):
                todo += [video for video in resegment if not self._resegment(video, known[video.path].settings)]
                self.progress.start(len(todo), self.summary.skipped)
                if todo:
                    outcomes = self.executor.outcomes(_ClaimedJobs(self, todo), self._started)
                    try:
                        for outcome in outcomes:
                            self._store(outcome)
                    finally:
                        outcomes.close()
                self.summary.providers = self.executor.providers
                status = "finished"
        except BaseException as exc:
            failure = exc
            raise
        finally:
            _RUNNING.discard(self.owner)
            self.summary.interrupted = status != "finished"
            self.summary.wall_seconds = time.monotonic() - began
            # After a database error, no more writes: the claims lapse by themselves and the next
            # scan records this one as interrupted; waiting for a locked database again would only
            # delay the message. After another failure a refused write must not hide it.
            if not isinstance(failure, DatabaseError):
                try:
                    self.store.release_claims(self.owner)
                    counts = {"found": self.summary.found, "tagged": self.summary.tagged,
                              "skipped": self.summary.skipped, "failed": len(self.summary.failed),
                              "segments": self.summary.segments, "elsewhere": self.summary.elsewhere}
                    self.store.finish_scan(self.summary.scan_id, status, counts)
                except DatabaseError:
                    if failure is None:
                        raise
        return self.summary

    def _stored_state(self, video: FoundVideo, stored: StoredVideo | None) -> str:
        """What `video` needs: "current" (nothing), "segments" (only the segment settings changed:
        re-derive its segments from the stored window scores, no decoding) or "tag" (decode and
        score it).

        Videos stored by schema 1 have no recorded settings: they count as current (re-tagging a
        whole archive on upgrade would be costly); --force re-tags them, once per scan: a video that
        another --force scan stored after this one began counts as current.
        """
        if stored is None:
            return "tag"
        if (stored.size, stored.mtime_ns, stored.model_id, stored.status) != (
                video.size, video.mtime_ns, self.model_id, "ok"):
            return "tag"
        if self.settings.force:
            return "current" if stored.scanned_at >= self.began else "tag"
        if stored.settings is None or stored.settings == self.tagging_key:
            return "current"
        try:
            same_windows = json.loads(stored.settings).get("windows") == self.window_settings
        except (ValueError, AttributeError):
            same_windows = False
        return "segments" if same_windows else "tag"

    def claim(self, video: FoundVideo) -> bool:
        """Claim `video` before it is decoded; False when another scan has it or has just tagged it."""
        outcome = self.store.claim(video.path, self.owner, self.settings.lease,
                                   lambda stored: self._stored_state(video, stored) != "current", claimer_gone)
        if outcome == "claimed":
            self.in_flight[video.path] = video
            return True
        if outcome == "busy":
            self.summary.elsewhere += 1
        else:
            self.summary.skipped += 1
        self.progress.video_passed(video.path)
        return False

    def job(self, job_id: int, video: FoundVideo) -> VideoJob:
        """The per-video step's job for a claimed video."""
        return VideoJob.for_model(self.model.contract, video.path, job_id=job_id, hop=self.settings.hop,
                                  decoders=self.settings.decoders,
                                  audio_contract=self.audio.contract if self.audio else None)

    def _started(self, job: VideoJob) -> None:
        self.progress.video_started(job.path)

    def _derive(self, seen, heard, starts, ends) -> list:
        """Segments from window scores, the one way a scan makes them (see tagger.fusion)."""
        return fuse_segments(seen, heard, starts, ends, self.model.contract.labels, self.thresholds,
                             self.audio.contract if heard is not None else None,
                             self.settings.segment_rules, self.settings.fusion.for_model(self.model.contract))

    def _resegment(self, found: FoundVideo, stored_settings: str) -> bool:
        """New segments for a stored video from its stored window scores; False if it must be decoded
        (also when another scan re-tagged it since `stored_settings` were read)."""
        video_model, audio_model = self.window_model_ids[VIDEO], self.window_model_ids.get(AUDIO)

        def derive(by_model: dict) -> list | None:
            if video_model not in by_model:
                return None
            starts, ends, scores = by_model[video_model]
            heard = by_model[audio_model][2] if audio_model in by_model else None
            return self._derive(scores, heard, starts, ends)

        derived = self.store.resegment(found.path, (found.size, found.mtime_ns, self.model_id, stored_settings),
                                       derive, self.tagging_key)
        if derived is None:
            return False
        self.summary.tagged += 1
        self.summary.segments += len(derived)
        return True

    def _store(self, outcome: VideoScores | VideoFailure) -> None:
        found = self.in_flight.pop(outcome.path)
        if isinstance(outcome, VideoFailure):
            self._store_failure(found, outcome.reason)
            return
        try:
            now = os.stat(found.path)
            changed = (now.st_size, now.st_mtime_ns) != (found.size, found.mtime_ns)
        except OSError:
            changed = True
        if changed:
            self._store_failure(found, "the file changed or vanished while it was scanned: scan again once it is complete")
            return
        heard = outcome.scores.get(AUDIO)
        segments = self._derive(outcome.scores[VIDEO], heard, outcome.starts, outcome.ends)
        info = outcome.info
        note = outcome.sound_note
        self.store.save_video(VideoResult(
            path=found.path, size=found.size, mtime_ns=found.mtime_ns, fingerprint=fingerprint(found.path, found.size),
            status="ok", decoder=outcome.decoder, duration=info.duration, fps=info.fps, frames=info.frames,
            width=info.width, height=info.height, window_starts=outcome.starts, window_ends=outcome.ends,
            window_scores={self.window_model_ids[stream]: scores for stream, scores in outcome.scores.items()},
            segments=segments, settings=self.tagging_key,
            error=f"sound not used: {note}" if self.audio and note and note != "no audio stream" else None,
        ), self.model_id)
        self.summary.tagged += 1
        self.summary.segments += len(segments)
        self.summary.video_seconds += info.duration
        self.progress.video_finished(found.path, info.duration, True)

    def _store_failure(self, found: FoundVideo, reason: str) -> None:
        self.store.save_video(VideoResult(path=found.path, size=found.size, mtime_ns=found.mtime_ns,
                                          fingerprint=None, status="failed", error=reason), self.model_id)
        self.summary.failed.append(VideoFailure(found.path, reason))
        self.progress.video_finished(found.path, 0.0, False)


def _machine() -> str:
    """Where process ids mean the same as here, as claims name it: host name, boot id and process id
    namespace (containers on one host may share a host name and the boot id, not the namespace)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()[:8]
        namespace = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        boot = namespace = "-"
    return f"{socket.gethostname()}/{boot}/{namespace}"


def claim_owner() -> str:
    """Who this scan is, as its claims record it: machine:pid:random."""
    return f"{_machine()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


_RUNNING: set[str] = set()  # the owners of the scans running in this process


def claimer_gone(owner: str) -> bool:
    """Whether the scan that wrote `owner` ran on this machine and has ended (its process killed, or
    an earlier scan of this process that stopped on a database error): its claims are free at once.
    Other machines' claims are free when their lease expires."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != _machine() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return owner not in _RUNNING
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def register_models(store: Store, models: dict[str, LoadedModel]) -> tuple[dict[str, int], int]:
    """Store each model once; returns (stream -> the id its window scores are stored under, the id its
    tags are stored under: the video model's, or the vision+sound pair's)."""
    ids = {stream: store.ensure_model(m.sha256, m.name, m.contract.labels, m.contract.to_metadata())
           for stream, m in models.items()}
    if AUDIO not in models:
        return ids, ids[VIDEO]
    video, audio = models[VIDEO], models[AUDIO]
    pair = hashlib.sha256(f"{video.sha256}+{audio.sha256}".encode()).hexdigest()
    pair_id = store.ensure_model(pair, f"{video.name}+{audio.name}", [*video.contract.labels, *audio.contract.labels],
                                 {"video": video.sha256, "audio": audio.sha256})
    return ids, pair_id


def scan(paths: Sequence[str], settings: ScanSettings, progress: ScanProgress | None = None,
         models: ScanModels | None = None) -> ScanSummary:
    """Tag every video under `paths` into the database of `settings`; see `Scanner`.

    `models`: the vision and sound models, as `load_scan_models(settings)` chooses them (the default).
    """
    models = models or load_scan_models(settings)
    streams = {VIDEO: models.video, **({AUDIO: models.audio} if models.audio else {})}
    store = Store(settings.db)
    executor = None
    try:
        executor = make_executor(settings.executor, streams, settings.batch_size,
                                 settings.workers, settings.timeout, settings.ray_address, settings.device)
        return Scanner(settings, store, streams, executor, progress or ScanProgress()).run(paths)
    finally:
        if executor is not None:
            executor.close()
        store.close()
