"""The per-video step, run in decoder processes: open, plan windows, decode, send window clips.

`decode_windows(job)` is a pure generator of messages, so the same step can run in a local worker
process (here) or on a cluster executor later. Messages, in order:
`("open", info)`, then `("windows", first_index, clips)` chunks, then (when sound is wanted)
`("audio", first_index, patches)` chunks or `("noaudio", reason)`, then `("done",)`; or
`("reset",)` when a decoder failed midway and the next one starts over; or `("failed", reason)`.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from dataclasses import asdict, dataclass

import numpy as np

from tagger.audio import NoAudio, patch_bounds, read_patches
from tagger.contract import ModelContract
from tagger.decode import DECODERS, FrameSource, centre_crop, check_readable, open_video
from tagger.errors import DecodeError
from tagger.windows import WindowPlan, plan_windows


@dataclass(frozen=True)
class VideoJob:
    """What a decoder process needs to turn one video into model-ready window clips."""

    job_id: int
    path: str
    short_side: int  # the model's resize
    size: tuple[int, int]  # the model's (H, W) crop
    clip_len: int
    frame_interval: float  # seconds between sampled frames
    hop: float | None
    decoders: tuple[str, ...]
    chunk: int = 2  # windows per message: frequent enough that a slow decode never looks stalled
    audio: tuple[int, float] | None = None  # (sample_rate, patch_seconds) when sound is wanted
    threads: int = 0  # decoding threads; 0 lets the decoder choose

    @classmethod
    def for_model(cls, contract: ModelContract, path: str | os.PathLike, *, job_id: int = 0,
                  hop: float | None = None, decoders: tuple[str, ...] = DECODERS, **options) -> VideoJob:
        """The job that samples `path` the way a scan does for `contract`'s video model."""
        return cls(job_id, str(path), contract.resize, tuple(contract.size), contract.clip_len,
                   contract.frame_interval, hop, tuple(decoders), **options)


def stream_windows(source: FrameSource, plan: WindowPlan, size: tuple[int, int], chunk: int) -> Iterator[tuple]:
    """Decode each needed frame once and yield ("windows", first, clips (n, T, H, W, 3)) chunks.

    A frame stays cached only until the last window that samples it has been emitted, so memory is
    a few windows' worth whatever the video's length.
    """
    last_use = np.full(plan.frame_indices.max() + 1, -1)
    for window, row in enumerate(plan.frame_indices):
        last_use[row] = window
    window_ends = plan.frame_indices.max(axis=1)  # ascending: windows start in order
    cache: dict[int, np.ndarray] = {}
    pending: list[np.ndarray] = []
    next_window = first_pending = 0
    for index, frame in source.read(plan.needed_frames):
        cache[int(index)] = centre_crop(frame, size)
        while next_window < len(plan) and window_ends[next_window] <= index:
            pending.append(np.stack([cache[int(i)] for i in plan.frame_indices[next_window]]))
            for i in plan.frame_indices[next_window]:
                if last_use[i] == next_window:
                    cache.pop(int(i), None)
            next_window += 1
            if len(pending) == chunk:
                yield ("windows", first_pending, np.stack(pending))
                first_pending, pending = next_window, []
    if next_window < len(plan):
        raise DecodeError(f"decoder stopped at window {next_window} of {len(plan)}")
    if pending:
        yield ("windows", first_pending, np.stack(pending))


def decode_windows(job: VideoJob) -> Iterator[tuple]:
    """Every message for one video, trying each decoder in turn until one reads it to the end."""
    reasons: list[str] = []
    try:
        check_readable(job.path)
    except DecodeError as exc:
        yield ("failed", str(exc))
        return
    for name in job.decoders:
        try:
            source = open_video(job.path, job.short_side, (name,), job.threads)
        except DecodeError as exc:
            reasons.append(str(exc))
            continue
        plan = plan_windows(source.timestamps, source.info.duration, job.clip_len, job.frame_interval, job.hop)
        yield ("open", {**asdict(source.info), "decoder": source.name, "starts": plan.starts, "ends": plan.ends})
        try:
            yield from stream_windows(source, plan, job.size, job.chunk)
        except DecodeError as exc:
            reasons.append(f"{source.name}: {exc}")
            yield ("reset",)
            continue
        finally:
            source.close()
        if job.audio is not None:
            yield from audio_messages(job, plan, source.info.duration)
        yield ("done",)
        return
    yield ("failed", "; ".join(reasons) or "no decoder could read it")


def audio_messages(job: VideoJob, plan: WindowPlan, duration: float) -> Iterator[tuple]:
    """("audio", first, patches) chunks aligned with the plan's windows, or ("noaudio", reason).

    A missing or undecodable sound track never fails the video: it is tagged from vision alone.
    """
    sample_rate, patch_seconds = job.audio
    bounds = patch_bounds(plan.starts, plan.ends, duration, patch_seconds, sample_rate)
    try:
        for first, patches in read_patches(job.path, bounds, sample_rate, job.chunk):
            yield ("audio", first, patches)
    except NoAudio:
        yield ("noaudio", "no audio stream")
    except DecodeError as exc:
        yield ("noaudio", str(exc))


def worker_main(conn) -> None:
    """Decoder process loop: receive jobs, send each job's messages tagged with its id."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # FFmpeg and decord print to stderr; their reasons reach us as exceptions
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    while True:
        job = conn.recv()
        if job is None:
            return
        try:
            for message in decode_windows(job):
                conn.send((job.job_id, *message))
        except Exception as exc:  # noqa: BLE001 - any decoder bug becomes this video's failure
            conn.send((job.job_id, "failed", f"{type(exc).__name__}: {exc}".splitlines()[0][:300]))
