"""Scan orchestration: decoder processes feed window clips, batched across videos, to the model.

The main process owns the model and the database; decoder processes (see `tagger.worker`) do
the per-video step. A decoder that makes no progress for `timeout` seconds is killed and
replaced, and its video recorded as failed; so is one that crashes. Each finished video is
written in one transaction, so an interrupted scan loses nothing already finished and the next
scan resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait

import numpy as np

from tagger.config import ScanSettings, usable_cores
from tagger.discover import FoundVideo, find_videos, fingerprint
from tagger.fusion import fuse_segments
from tagger.model import LoadedModel, ScanModels, load_scan_models
from tagger.store import Store, VideoResult
from tagger.worker import VideoJob, worker_main


@dataclass
class ScanSummary:
    """What a scan did, for the final table and `--json`."""

    scan_id: int = 0
    found: int = 0
    tagged: int = 0
    skipped: int = 0  # unchanged since the last scan with this model
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)
    segments: int = 0
    video_seconds: float = 0.0
    wall_seconds: float = 0.0
    model: str = ""
    audio_model: str | None = None
    providers: list[str] = field(default_factory=list)
    interrupted: bool = False

    def as_dict(self) -> dict:
        return {**asdict(self), "failed": [{"path": p, "reason": r} for p, r in self.failed]}


class ScanProgress:
    """Callbacks a front end implements to show progress; the default shows nothing."""

    def start(self, total: int, skipped: int) -> None: ...
    def video_started(self, path: str) -> None: ...
    def video_finished(self, path: str, seconds: float, ok: bool) -> None: ...


@dataclass
class _Video:
    """A video in flight: its windows' scores fill in as batches come back."""

    found: FoundVideo
    starts: np.ndarray | None = None
    ends: np.ndarray | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)  # stream -> (W, K); audio absent = none
    scored: dict[str, int] = field(default_factory=dict)  # stream -> windows scored so far
    info: dict | None = None
    decoded: bool = False
    audio_note: str | None = None  # why the sound track was not used
    generation: int = 0  # bumps on "reset": clips of an abandoned decoder are dropped

    def complete(self) -> bool:
        return self.decoded and all(self.scored[s] >= len(self.starts) for s in self.scores)


class _Stream:
    """One model and the inputs waiting for it, batched across videos."""

    def __init__(self, name: str, model: LoadedModel, batch_size: int):
        self.name, self.model, self.batch_size = name, model, batch_size
        self.pending: list[tuple[int, int, int, np.ndarray]] = []  # (job, generation, first window, inputs)

    def waiting(self) -> int:
        return sum(len(inputs) for *_, inputs in self.pending)


class _Worker:
    """One decoder process and the job it holds."""

    def __init__(self, context):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=worker_main, args=(child,), daemon=True)
        self.process.start()
        child.close()
        self.job: int | None = None
        self.last_progress = time.monotonic()

    def assign(self, job: VideoJob) -> None:
        self.job, self.last_progress = job.job_id, time.monotonic()
        self.conn.send(job)

    def kill(self) -> None:
        self.process.kill()
        self.process.join(5)
        self.conn.close()

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(2)
        if self.process.is_alive():
            self.kill()


class Scanner:
    """Runs one scan: discovery, skip decisions, decoding, batched inference, storage."""

    def __init__(self, settings: ScanSettings, store: Store, model: LoadedModel, progress: ScanProgress,
                 audio_model: LoadedModel | None = None):
        self.settings, self.store, self.model, self.progress = settings, store, model, progress
        self.tagging_key = settings.tagging_key()
        self.window_settings = json.loads(self.tagging_key)["windows"]
        contract = model.contract
        self.thresholds = {
            label: settings.threshold if settings.threshold is not None else contract.threshold_for(label)
            for label in contract.tag_labels
        }
        self.streams = {"video": _Stream("video", model, settings.batch_size or model.auto_batch_size())}
        self.window_model_ids = {"video": store.ensure_model(model.sha256, model.name, contract.labels,
                                                             contract.to_metadata())}
        self.audio = audio_model
        self.model_id = self.window_model_ids["video"]
        if audio_model is not None:
            self.streams["audio"] = _Stream("audio", audio_model, 16)
            a = audio_model.contract
            self.window_model_ids["audio"] = store.ensure_model(audio_model.sha256, audio_model.name, a.labels,
                                                                a.to_metadata())
            pair = hashlib.sha256(f"{model.sha256}+{audio_model.sha256}".encode()).hexdigest()
            self.model_id = store.ensure_model(pair, f"{model.name}+{audio_model.name}",
                                               [*contract.labels, *a.labels],
                                               {"video": model.sha256, "audio": audio_model.sha256})
        self.videos: dict[int, _Video] = {}
        self.summary = ScanSummary(model=str(model.path), providers=model.providers,
                                   audio_model=str(audio_model.path) if audio_model else None)

    def run(self, paths: Sequence[str]) -> ScanSummary:
        began = time.monotonic()
        found = find_videos(paths, self.settings.discovery)
        known = {} if self.settings.force else self.store.known_videos()
        states = {video.path: self._stored_state(video, known.get(video.path)) for video in found}
        todo = [video for video in found if states[video.path] == "tag"]
        resegment = [video for video in found if states[video.path] == "segments"]
        self.summary.found = len(found)
        self.summary.skipped = len(found) - len(todo) - len(resegment)
        options = {k: v for k, v in asdict(self.settings).items() if k != "db"}
        self.summary.scan_id = self.store.start_scan(list(paths), self.model_id, options)
        status = "interrupted"
        try:
            todo += [video for video in resegment if not self._resegment(video, known[video.path][4])]
            self.progress.start(len(todo), self.summary.skipped)
            self._process(todo)
            status = "finished"
        finally:
            self.summary.interrupted = status != "finished"
            self.summary.wall_seconds = time.monotonic() - began
            counts = {"found": self.summary.found, "tagged": self.summary.tagged, "skipped": self.summary.skipped,
                      "failed": len(self.summary.failed), "segments": self.summary.segments}
            self.store.finish_scan(self.summary.scan_id, status, counts)
        return self.summary

    def _stored_state(self, video: FoundVideo, stored: tuple | None) -> str:
        """What `video` needs: "current" (nothing), "segments" (only the segment settings changed:
        re-derive its segments from the stored window scores, no decoding) or "tag" (decode and
        score it).

        Videos stored by schema 1 have no recorded settings: they count as current (re-tagging a
        whole archive on upgrade would be costly); --force re-tags them.
        """
        if stored is None:
            return "tag"
        size, mtime_ns, model_id, status, settings = stored
        if (size, mtime_ns, model_id, status) != (video.size, video.mtime_ns, self.model_id, "ok"):
            return "tag"
        if settings is None or settings == self.tagging_key:
            return "current"
        try:
            same_windows = json.loads(settings).get("windows") == self.window_settings
        except (ValueError, AttributeError):
            same_windows = False
        return "segments" if same_windows else "tag"

    def _resegment(self, found: FoundVideo, stored_settings: str) -> bool:
        """New segments for a stored video from its stored window scores; False if it must be decoded
        (also when another scan re-tagged it since `stored_settings` were read)."""
        video_model, audio_model = self.window_model_ids["video"], self.window_model_ids.get("audio")

        def derive(by_model: dict) -> list | None:
            if video_model not in by_model:
                return None
            starts, ends, scores = by_model[video_model]
            heard = by_model[audio_model][2] if audio_model in by_model else None
            return fuse_segments(scores, heard, starts, ends, self.model.contract.labels, self.thresholds,
                                 self.audio.contract if heard is not None else None,
                                 self.settings.segment_rules, self.settings.fusion)

        derived = self.store.resegment(found.path, (found.size, found.mtime_ns, self.model_id, stored_settings),
                                       derive, self.tagging_key)
        if derived is None:
            return False
        self.summary.tagged += 1
        self.summary.segments += len(derived)
        return True

    def _job(self, job_id: int, video: FoundVideo, threads: int) -> VideoJob:
        audio = (self.audio.contract.sample_rate, self.audio.contract.patch_seconds) if self.audio else None
        return VideoJob.for_model(self.model.contract, video.path, job_id=job_id, hop=self.settings.hop,
                                  decoders=self.settings.decoders, audio=audio, threads=threads)

    @staticmethod
    def _decoder_threads(workers: list[_Worker], queued: int) -> int:
        """Decoding threads for the video about to start: the cores shared among the videos that
        will be decoding at once. While the queue keeps every worker busy that is one thread each:
        on 2 cores, two single-threaded decoders scanned the benchmark corpus 9% faster than one
        decoder with two threads. A lone long video gets every core."""
        busy = sum(worker.job is not None for worker in workers)
        concurrent = min(len(workers), busy + 1 + queued)
        return max(1, usable_cores() // concurrent)

    def _process(self, todo: list[FoundVideo]) -> None:
        if not todo:
            return
        context = mp.get_context("spawn")  # never fork a process that holds onnxruntime threads
        queue = deque(enumerate(todo))
        workers = [_Worker(context) for _ in range(min(self.settings.workers, len(todo)))]
        try:
            while queue or self.videos:
                for worker in workers:
                    if worker.job is None and queue:
                        job_id, video = queue.popleft()
                        self.videos[job_id] = _Video(video)
                        self.progress.video_started(video.path)
                        worker.assign(self._job(job_id, video, self._decoder_threads(workers, len(queue))))
                waiting = any(stream.pending for stream in self.streams.values())
                ready = wait([w.conn for w in workers] + [w.process.sentinel for w in workers],
                             timeout=0 if waiting else 0.5)
                for worker in workers:
                    self._receive(worker, ready)
                for stream in self.streams.values():
                    if stream.waiting() >= stream.batch_size or (stream.pending and not ready):
                        self._run_batch(stream)
                workers = [self._check_health(w, context) for w in workers]
        finally:
            for worker in workers:
                worker.stop()

    def _receive(self, worker: _Worker, ready: list) -> None:
        while worker.conn in ready and worker.conn.poll():
            try:
                job_id, kind, *payload = worker.conn.recv()
            except (EOFError, OSError):
                return  # the process died; _check_health records it
            worker.last_progress = time.monotonic()
            video = self.videos[job_id]
            if kind == "open":
                video.info = payload[0]
                video.starts, video.ends = video.info.pop("starts"), video.info.pop("ends")
                video.scores = {name: np.zeros((len(video.starts), len(stream.model.contract.labels)), np.float32)
                                for name, stream in self.streams.items()}
                video.scored = dict.fromkeys(self.streams, 0)
            elif kind in ("windows", "audio"):
                stream = self.streams["video" if kind == "windows" else "audio"]
                stream.pending.append((job_id, video.generation, payload[0], payload[1]))
            elif kind == "noaudio":
                video.audio_note = payload[0]
                video.scores.pop("audio", None)
            elif kind == "reset":
                video.generation, video.info, video.scored = video.generation + 1, None, {}
            elif kind == "done":
                worker.job, video.decoded = None, True
                self._finish_if_complete(job_id)
            elif kind == "failed":
                worker.job = None
                self._fail(job_id, payload[0])

    def _check_health(self, worker: _Worker, context) -> _Worker:
        stalled = time.monotonic() - worker.last_progress > self.settings.timeout
        if worker.process.is_alive() and not (worker.job is not None and stalled):
            return worker
        job, code = worker.job, worker.process.exitcode
        worker.kill()
        if job is not None:
            reason = (f"timeout: the decoder made no progress for {self.settings.timeout:g} s (killed)"
                      if stalled and code is None else f"crash: the decoder process died (exit code {code})")
            self._fail(job, reason)
        return _Worker(context)

    def _run_batch(self, stream: _Stream) -> None:
        batch, stream.pending = stream.pending, []
        live = [(j, first, inputs) for j, gen, first, inputs in batch  # drop inputs of abandoned work:
                if j in self.videos and self.videos[j].generation == gen  # a failed or restarted decoder,
                and stream.name in self.videos[j].scores]  # or a sound track that failed midway
        if not live:
            return
        inputs = np.concatenate([inputs for *_, inputs in live])
        size = stream.batch_size  # decoders send larger chunks; the model sees batch_size at a time
        scores = np.concatenate([stream.model.scores(inputs[i : i + size]) for i in range(0, len(inputs), size)])
        offset = 0
        for job_id, first, inputs in live:
            video = self.videos[job_id]
            video.scores[stream.name][first : first + len(inputs)] = scores[offset : offset + len(inputs)]
            video.scored[stream.name] += len(inputs)
            offset += len(inputs)
            self._finish_if_complete(job_id)

    def _finish_if_complete(self, job_id: int) -> None:
        video = self.videos[job_id]
        if not video.complete():
            return
        del self.videos[job_id]
        found = video.found
        try:
            now = os.stat(found.path)
            changed = (now.st_size, now.st_mtime_ns) != (found.size, found.mtime_ns)
        except OSError:
            changed = True
        if changed:
            self._store_failure(found, "the file changed or vanished while it was scanned: scan again once it is complete")
            return
        heard = video.scores.get("audio")
        segments = fuse_segments(video.scores["video"], heard, video.starts, video.ends, self.model.contract.labels,
                                 self.thresholds, self.audio.contract if heard is not None else None,
                                 self.settings.segment_rules, self.settings.fusion)
        info = video.info
        self.store.save_video(VideoResult(
            path=found.path, size=found.size, mtime_ns=found.mtime_ns, fingerprint=fingerprint(found.path, found.size),
            status="ok", decoder=info["decoder"], duration=info["duration"], fps=info["fps"], frames=info["frames"],
            width=info["width"], height=info["height"], window_starts=video.starts, window_ends=video.ends,
            window_scores={self.window_model_ids[name]: scores for name, scores in video.scores.items()},
            segments=segments, settings=self.tagging_key, error=f"sound not used: {video.audio_note}" if self.audio and video.audio_note
            and video.audio_note != "no audio stream" else None,
        ), self.model_id)
        self.summary.tagged += 1
        self.summary.segments += len(segments)
        self.summary.video_seconds += info["duration"]
        self.progress.video_finished(found.path, info["duration"], True)

    def _fail(self, job_id: int, reason: str) -> None:
        video = self.videos.pop(job_id, None)
        if video is not None:
            self._store_failure(video.found, reason)

    def _store_failure(self, found: FoundVideo, reason: str) -> None:
        self.store.save_video(VideoResult(path=found.path, size=found.size, mtime_ns=found.mtime_ns,
                                          fingerprint=None, status="failed", error=reason), self.model_id)
        self.summary.failed.append((found.path, reason))
        self.progress.video_finished(found.path, 0.0, False)


def scan(paths: Sequence[str], settings: ScanSettings, progress: ScanProgress | None = None,
         models: ScanModels | None = None) -> ScanSummary:
    """Tag every video under `paths` into the database of `settings`; see `Scanner`.

    `models`: the vision and sound models, as `load_scan_models(settings)` chooses them (the default).
    """
    models = models or load_scan_models(settings)
    store = Store(settings.db)
    try:
        return Scanner(settings, store, models.video, progress or ScanProgress(), models.audio).run(paths)
    finally:
        store.close()
