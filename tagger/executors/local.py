"""The local executor: decoder processes on this machine, inference in this process.

Each decoder process runs the decoding half of the per-video step (`tagger.step.decode_windows`)
and sends its events; this process scores the inputs of all videos in flight together, in
batches, with one onnxruntime session per model. On a CPU one session using every core beats one
session per process (they would fight for the same cores and each hold the model); on a GPU one
session keeps the device busy with batches gathered across videos.

A decoder that makes no progress for `timeout` seconds is killed and replaced, and its video
reported as failed; so is one that crashes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import threading
import time
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from multiprocessing.connection import wait

import numpy as np

from tagger.config import default_workers, usable_cores
from tagger.executors import Executor, JobQueue, Started, batch_sizes
from tagger.step import Failed, Inputs, Outcome, ScoreSheet, VideoFailure, VideoJob, decode_windows, score_in_batches


def decoder_main(conn) -> None:
    """Decoder process loop: receive jobs, send each job's events as (job_id, event)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # FFmpeg and decord print to stderr; their reasons reach us as exceptions
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    while True:
        job = conn.recv()
        if job is None:
            return
        for event in decode_windows(job):
            conn.send((job.job_id, event))


class _Decoder:
    """One decoder process and the job it holds."""

    def __init__(self, context):
        self.conn, child = context.Pipe()
        self.process = context.Process(target=decoder_main, args=(child,), daemon=True)
        with _stderr_to_devnull():
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
        """End the process: an idle one is asked to, a busy one (which reads no more messages) killed."""
        if self.job is not None:
            self.kill()
            return
        try:
            self.conn.send(None)
        except OSError:
            pass
        self.process.join(2)
        if self.process.is_alive():
            self.kill()


@contextmanager
def _stderr_to_devnull() -> Iterator[None]:
    """File descriptor 2 points at /dev/null while a decoder process starts, so the decoder inherits
    it: a Ctrl-C (sent to the whole process group) during its first second of imports would
    otherwise print its traceback, before `decoder_main` can silence it. Its reasons reach the scan
    as events, never on stderr. This process's own stderr is back before anything is printed."""
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    os.close(devnull)
    try:
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


@dataclass
class _Pending:
    """Inputs waiting to be scored, and where their scores go."""

    job_id: int
    generation: int
    inputs: Inputs


class _PauseClock:
    """Seconds this whole process spent stopped (Ctrl-Z, SIGSTOP) or starved of CPU, so far.

    A thread beats every 0.2 s; a gap of over a second between two beats means the process was
    held. The decoders' timeout measures their own lack of progress, so such pauses are added to
    their grace: a decoder stopped with its scan, or blocked on a full pipe while the scan was
    stopped, did nothing wrong.
    """

    BEAT = 0.2
    GAP = 1.0

    def __init__(self):
        self.paused = 0.0
        self.last_beat = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="tagger-pause-clock", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        self.last_beat = time.monotonic()
        while not self._stop.wait(self.BEAT):
            now = time.monotonic()
            if now - self.last_beat > self.GAP:
                self.paused += now - self.last_beat - self.BEAT
            self.last_beat = now

    def settled(self) -> bool:
        """False just after a pause, until the beating thread has counted it (it may wake after
        the main thread)."""
        return time.monotonic() - self.last_beat <= self.GAP

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


def _grant_blocked(decoders: list[_Decoder], seconds: float) -> None:
    """Add `seconds` this process spent away from its decoders (claiming, storing) to the grace of
    those with messages it did not read meanwhile: they made progress, or were blocked sending. A
    decoder that sent nothing gets none: a hung one is still caught at its timeout. (Pauses of the
    whole process are the clock's, and are not counted twice.)"""
    _grant([d for d in decoders if d.job is not None and d.conn.poll()], max(0.0, seconds))


def _grant(decoders: list[_Decoder], seconds: float) -> None:
    """Add `seconds` the decoders could not have used to their grace."""
    for decoder in decoders:
        decoder.last_progress += seconds


def decoder_threads(decoders: list, queued: int) -> int:
    """Decoding threads for the video about to start: the cores shared among the videos that will
    be decoding at once. While the queue keeps every decoder busy that is one thread each: on 2
    cores, two single-threaded decoders scanned the benchmark corpus 9% faster than one decoder
    with two threads. A lone long video gets every core."""
    busy = sum(decoder.job is not None for decoder in decoders)
    concurrent = min(len(decoders), busy + 1 + queued)
    return max(1, usable_cores() // concurrent)


class LocalExecutor(Executor):
    """Decoder processes (`workers` of them) feeding batched inference in this process."""

    def __init__(self, models, batch_size, workers, timeout):
        super().__init__(models, batch_size, workers or default_workers(), timeout)
        self.batch_sizes = batch_sizes(self.models, batch_size)

    def outcomes(self, jobs: JobQueue) -> Iterator[Started | Outcome]:
        context = mp.get_context("spawn")  # never fork a process that holds onnxruntime threads
        self._sheets: dict[int, ScoreSheet] = {}
        self._pending: dict[str, list[_Pending]] = {stream: [] for stream in self.models}
        self._done: deque[Started | Outcome] = deque()
        decoders = [_Decoder(context) for _ in range(max(1, min(self.workers, len(jobs))))]
        queue = iter(jobs)
        exhausted = False
        clock = _PauseClock()
        paused = 0.0
        try:
            while not exhausted or self._sheets:
                handing_out, held = time.monotonic(), clock.paused
                for decoder in decoders:
                    if decoder.job is None and not exhausted:
                        job = next(queue, None)  # claims the video: may wait on the database
                        if job is None:
                            exhausted = True
                            break
                        job = replace(job, threads=decoder_threads(decoders, len(jobs)))
                        self._sheets[job.job_id] = ScoreSheet(job.path, {s: len(self.models[s].contract.labels)
                                                                         for s in job.streams})
                        self._done.append(Started(job))
                        decoder.assign(job)
                _grant_blocked(decoders, time.monotonic() - handing_out - (clock.paused - held))
                waiting = any(self._pending.values())
                ready = wait([d.conn for d in decoders] + [d.process.sentinel for d in decoders],
                             timeout=0 if waiting else 0.5)
                for decoder in decoders:
                    self._receive(decoder, ready)
                for stream, pending in self._pending.items():
                    if sum(len(p.inputs.data) for p in pending) >= self.batch_sizes[stream] or (pending and not ready):
                        self._score(stream)
                settled = clock.settled()  # read first: a pause it reports is counted in clock.paused
                _grant(decoders, clock.paused - paused)
                paused = clock.paused
                if settled:
                    decoders = [self._check_health(d, context) for d in decoders]
                while self._done:
                    handed, held = time.monotonic(), clock.paused
                    yield self._done.popleft()  # the caller stores it (and may wait on its database)
                    _grant_blocked(decoders, time.monotonic() - handed - (clock.paused - held))
        finally:
            clock.close()
            for decoder in decoders:
                decoder.stop()

    def _receive(self, decoder: _Decoder, ready: list) -> None:
        while decoder.conn in ready and decoder.conn.poll():
            try:
                job_id, event = decoder.conn.recv()
            except (EOFError, OSError):
                return  # the process died; _check_health reports it
            decoder.last_progress = time.monotonic()
            sheet = self._sheets[job_id]
            if isinstance(event, Inputs):
                self._pending[event.stream].append(_Pending(job_id, sheet.generation, event))
            elif isinstance(event, Failed):
                decoder.job = None
                self._fail(job_id, event.reason, event.detail)
            else:
                sheet.apply(event)
                if sheet.decoded:
                    decoder.job = None
                    self._finish_if_complete(job_id)

    def _check_health(self, decoder: _Decoder, context) -> _Decoder:
        stalled = time.monotonic() - decoder.last_progress > self.timeout
        if decoder.process.is_alive() and not (decoder.job is not None and stalled):
            return decoder
        job, code = decoder.job, decoder.process.exitcode
        decoder.kill()
        if job is not None:
            reason = (f"timeout: the decoder made no progress for {self.timeout:g} s (killed)"
                      if stalled and code is None else f"crash: the decoder process died (exit code {code})")
            self._fail(job, reason)
        return _Decoder(context)

    def _score(self, stream: str) -> None:
        batch, self._pending[stream] = self._pending[stream], []
        live = [p for p in batch if p.job_id in self._sheets and self._sheets[p.job_id].wants(stream, p.generation)]
        by_shape: dict[tuple, list[_Pending]] = {}  # whole-frame inputs of differently shaped videos differ
        for p in live:
            by_shape.setdefault(p.inputs.data.shape[1:], []).append(p)
        for group in by_shape.values():
            scored = score_in_batches(self.models[stream].run, np.concatenate([p.inputs.data for p in group]),
                                      self.batch_sizes[stream])
            offset = 0
            for p in group:
                count = len(p.inputs.data)
                self._sheets[p.job_id].fill(stream, p.inputs.first, scored.slice(offset, offset + count))
                offset += count
                self._finish_if_complete(p.job_id)

    def _finish_if_complete(self, job_id: int) -> None:
        sheet = self._sheets.get(job_id)
        if sheet is not None and sheet.complete():
            del self._sheets[job_id]
            self._done.append(sheet.result())

    def _fail(self, job_id: int, reason: str, detail: str = "") -> None:
        sheet = self._sheets.pop(job_id, None)
        if sheet is not None:
            self._done.append(VideoFailure(sheet.path, reason, detail))
