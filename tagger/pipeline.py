"""Scan orchestration: decoder processes feed window clips, batched across videos, to the model.

The main process owns the model and the database; decoder processes (see `tagger.worker`) do
the per-video step. A decoder that makes no progress for `timeout` seconds is killed and
replaced, and its video recorded as failed; so is one that crashes. Each finished video is
written in one transaction, so an interrupted scan loses nothing already finished and the next
scan resumes where it stopped.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import time
from collections import deque
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import wait

import numpy as np

from tagger.config import ScanSettings
from tagger.discover import FoundVideo, find_videos, fingerprint
from tagger.model import LoadedModel, load_model
from tagger.segments import merge_segments
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
    """A video in flight: its clips' scores fill in as batches come back."""

    found: FoundVideo
    starts: np.ndarray | None = None
    ends: np.ndarray | None = None
    scores: np.ndarray | None = None  # (W, K)
    scored: int = 0
    info: dict | None = None
    decoded: bool = False
    generation: int = 0  # bumps on "reset": clips of an abandoned decoder are dropped


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

    def __init__(self, settings: ScanSettings, store: Store, model: LoadedModel, progress: ScanProgress):
        self.settings, self.store, self.model, self.progress = settings, store, model, progress
        contract = model.contract
        self.thresholds = {
            label: settings.threshold if settings.threshold is not None else contract.threshold_for(label)
            for label in contract.tag_labels
        }
        self.model_id = store.ensure_model(model.sha256, model.name, contract.labels, contract.to_metadata())
        self.videos: dict[int, _Video] = {}
        self.batch: list[tuple[int, int, int, np.ndarray]] = []  # (job, generation, first window, clips)
        self.summary = ScanSummary(model=str(model.path), providers=model.providers)
        self.batch_size = settings.batch_size or model.auto_batch_size()

    def run(self, paths: Sequence[str]) -> ScanSummary:
        began = time.monotonic()
        found = find_videos(paths, self.settings.discovery)
        known = {} if self.settings.force else self.store.known_videos()
        todo = [v for v in found if known.get(v.path) != (v.size, v.mtime_ns, self.model_id, "ok")]
        self.summary.found, self.summary.skipped = len(found), len(found) - len(todo)
        options = {k: v for k, v in asdict(self.settings).items() if k != "db"}
        self.summary.scan_id = self.store.start_scan(list(paths), self.model_id, options)
        self.progress.start(len(todo), self.summary.skipped)
        status = "interrupted"
        try:
            self._process(todo)
            status = "finished"
        finally:
            self.summary.interrupted = status != "finished"
            self.summary.wall_seconds = time.monotonic() - began
            counts = {"found": self.summary.found, "tagged": self.summary.tagged, "skipped": self.summary.skipped,
                      "failed": len(self.summary.failed), "segments": self.summary.segments}
            self.store.finish_scan(self.summary.scan_id, status, counts)
        return self.summary

    def _job(self, job_id: int, video: FoundVideo) -> VideoJob:
        c = self.model.contract
        return VideoJob(job_id, video.path, c.resize, c.size, c.clip_len, c.frame_interval,
                        self.settings.hop, self.settings.decoders)

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
                        worker.assign(self._job(job_id, video))
                waiting = bool(self.batch)
                ready = wait([w.conn for w in workers] + [w.process.sentinel for w in workers],
                             timeout=0 if waiting else 0.5)
                for worker in workers:
                    self._receive(worker, ready)
                if self._batch_windows() >= self.batch_size or (waiting and not ready):
                    self._run_batch()
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
                video.scores = np.zeros((len(video.starts), len(self.model.contract.labels)), np.float32)
            elif kind == "windows":
                self.batch.append((job_id, video.generation, payload[0], payload[1]))
            elif kind == "reset":
                video.generation, video.scored, video.info = video.generation + 1, 0, None
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

    def _batch_windows(self) -> int:
        return sum(len(clips) for *_, clips in self.batch)

    def _run_batch(self) -> None:
        batch, self.batch = self.batch, []
        live = [(j, first, clips) for j, gen, first, clips in batch
                if j in self.videos and self.videos[j].generation == gen]
        if not live:
            return
        scores = self.model.scores(np.concatenate([clips for *_, clips in live]))
        offset = 0
        for job_id, first, clips in live:
            video = self.videos[job_id]
            video.scores[first : first + len(clips)] = scores[offset : offset + len(clips)]
            video.scored += len(clips)
            offset += len(clips)
            self._finish_if_complete(job_id)

    def _finish_if_complete(self, job_id: int) -> None:
        video = self.videos[job_id]
        if not video.decoded or video.scored < len(video.starts):
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
        contract = self.model.contract
        segments = merge_segments(video.scores, video.starts, video.ends, contract.labels,
                                  self.thresholds, self.settings.segment_rules)
        info = video.info
        self.store.save_video(VideoResult(
            path=found.path, size=found.size, mtime_ns=found.mtime_ns, fingerprint=fingerprint(found.path, found.size),
            status="ok", decoder=info["decoder"], duration=info["duration"], fps=info["fps"], frames=info["frames"],
            width=info["width"], height=info["height"], window_starts=video.starts, window_ends=video.ends,
            window_scores=video.scores, segments=segments,
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


def scan(paths: Sequence[str], settings: ScanSettings, progress: ScanProgress | None = None) -> ScanSummary:
    """Tag every video under `paths` into the database of `settings`; see `Scanner`."""
    model = load_model(settings.model, settings.device, settings.threads)
    store = Store(settings.db)
    try:
        return Scanner(settings, store, model, progress or ScanProgress()).run(paths)
    finally:
        store.close()
