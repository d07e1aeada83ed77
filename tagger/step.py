"""The per-video step: a video, a model contract and the scan's settings in, typed window scores out.

`decode_windows(job)` opens the video, plans its windows and yields typed events carrying the
model-ready inputs; `ScoreSheet` collects one video's scores as they come back; `score_video`
does both in one process. Executors differ only in where they run these pieces (see DESIGN.md):
the local executor decodes in worker processes and scores in the main process, batched across
videos; the Ray executor runs `score_video` whole inside an actor. Benchmarks and training call
the same functions, so what they measure or learn from is what a scan does. Nothing here knows
the database or the terminal.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import numpy as np

from tagger.audio import NoAudio, patch_bounds, read_patches
from tagger.contract import ModelContract
from tagger.decode import DECODERS, FrameSource, VideoInfo, check_readable, model_views, open_video
from tagger.errors import DecodeError
from tagger.model import Scored
from tagger.windows import WindowPlan, plan_windows

VIDEO, AUDIO = "video", "audio"  # the streams a video is scored on


@dataclass(frozen=True)
class VideoJob:
    """What the per-video step needs to turn one video into model-ready window inputs."""

    job_id: int
    path: str
    short_side: int  # the model's resize
    size: tuple[int, int]  # the model's (H, W) crop
    clip_len: int
    frame_interval: float  # seconds between sampled frames
    hop: float | None
    decoders: tuple[str, ...]
    chunk: int = 2  # windows per event: frequent enough that a slow decode never looks stalled
    audio: tuple[int, float] | None = None  # (sample_rate, patch_seconds) when sound is wanted
    threads: int = 0  # decoding threads; 0 lets the decoder choose
    crops: int = 1  # the model's crops per frame (tagger.crops); 1 is the centre crop
    whole_frame: int = 0  # the model takes the whole frame, trimmed to multiples of this (tagger.whole_frame)

    @property
    def streams(self) -> tuple[str, ...]:
        """The streams this job's video is scored on."""
        return (VIDEO, AUDIO) if self.audio is not None else (VIDEO,)

    @classmethod
    def for_model(cls, contract: ModelContract, path: str | os.PathLike, *, job_id: int = 0,
                  hop: float | None = None, decoders: tuple[str, ...] = DECODERS,
                  audio_contract: ModelContract | None = None, **options) -> VideoJob:
        """The job that samples `path` the way a scan does for `contract`'s video model (and hears
        it for `audio_contract`'s sound model, when given)."""
        audio = (audio_contract.sample_rate, audio_contract.patch_seconds) if audio_contract else None
        return cls(job_id, str(path), contract.resize, tuple(contract.size), contract.clip_len,
                   contract.frame_interval, hop, tuple(decoders), audio=audio, crops=contract.crops,
                   whole_frame=contract.whole_frame, **options)


# The events `decode_windows` yields, in order: Opened, Inputs (video) ..., then when sound is
# wanted Inputs (audio) ... or SoundMissing, then Decoded. Restarted when a decoder failed midway
# and the next one starts over; Failed when none could read the video.
@dataclass(frozen=True)
class Opened:
    """A decoder opened the video: what it is and the windows it will be cut into."""

    info: VideoInfo
    decoder: str
    starts: np.ndarray  # (W,) seconds
    ends: np.ndarray  # (W,) seconds


@dataclass(frozen=True)
class Inputs:
    """Model inputs for windows first .. first + len(data) - 1 of one stream."""

    stream: str  # VIDEO: (n, T*C, H, W, 3) uint8 clips, frame-major; AUDIO: (n, S) float32 patches
    first: int
    data: np.ndarray


@dataclass(frozen=True)
class SoundMissing:
    """The sound track is absent or unreadable: the video is tagged from vision alone."""

    reason: str


@dataclass(frozen=True)
class Restarted:
    """A decoder failed midway; the inputs sent so far are void and the next decoder starts over."""

    reason: str


@dataclass(frozen=True)
class Decoded:
    """Every input of the video has been sent."""


@dataclass(frozen=True)
class Failed:
    """No decoder could read the video."""

    reason: str
    detail: str = ""  # the decoders' own words, where `reason` says it plainly (shown with --debug)


Event = Opened | Inputs | SoundMissing | Restarted | Decoded | Failed


@dataclass(frozen=True)
class VideoScores:
    """The per-video step's result: every window's scores, per stream, and what was decoded."""

    path: str
    decoder: str
    info: VideoInfo
    starts: np.ndarray  # (W,)
    ends: np.ndarray  # (W,)
    scores: Mapping[str, np.ndarray]  # stream -> (W, K); AUDIO absent when the sound was not used
    sound_note: str | None = None  # why the sound track was not used
    features: Mapping[str, np.ndarray] = field(default_factory=dict)  # stream -> (W, D) float16, models with features


@dataclass(frozen=True)
class VideoFailure:
    """The per-video step failed for this video; `reason` is one line for the user, `detail` the
    decoders' own words behind it, when they differ (shown with --debug, never stored)."""

    path: str
    reason: str
    detail: str = field(default="", compare=False)


Outcome = VideoScores | VideoFailure


def stream_windows(source: FrameSource, plan: WindowPlan, size: tuple[int, int], chunk: int,
                   crops: int = 1, whole: int = 0) -> Iterator[Inputs]:
    """Decode each needed frame once and yield video Inputs of `chunk` clips (n, T*C, H, W, 3).

    Each frame gives what the model sees of it (`model_views`): `crops` (C) crops of `size`, frame
    t's crops being rows t*C .. t*C+C-1 of its clip, or with `whole` the whole trimmed frame (C = 1).
    A frame's crops stay cached only until the last window that samples
    it has been emitted, so memory is a few windows' worth whatever the video's length.
    """
    last_use = np.full(plan.frame_indices.max() + 1, -1)
    for window, row in enumerate(plan.frame_indices):
        last_use[row] = window
    window_ends = plan.frame_indices.max(axis=1)  # ascending: windows start in order
    cache: dict[int, np.ndarray] = {}
    pending: list[np.ndarray] = []
    next_window = first_pending = 0
    for index, frame in source.read(plan.needed_frames):
        cache[int(index)] = model_views(frame, size, crops, whole)  # (C, H, W, 3)
        while next_window < len(plan) and window_ends[next_window] <= index:
            clip = np.stack([cache[int(i)] for i in plan.frame_indices[next_window]])  # (T, C, H, W, 3)
            pending.append(clip.reshape(-1, *clip.shape[2:]))  # (T*C, H, W, 3)
            for i in plan.frame_indices[next_window]:
                if last_use[i] == next_window:
                    cache.pop(int(i), None)
            next_window += 1
            if len(pending) == chunk:
                yield Inputs(VIDEO, first_pending, np.stack(pending))
                first_pending, pending = next_window, []
    if next_window < len(plan):
        raise DecodeError(f"decoder stopped at window {next_window} of {len(plan)}")
    if pending:
        yield Inputs(VIDEO, first_pending, np.stack(pending))


def decode_windows(job: VideoJob) -> Iterator[Event]:
    """Every event for one video, trying each decoder in turn until one reads it to the end.

    Never raises for a bad video: any decoder error, or a bug inside a decoder, ends in Failed.
    """
    try:
        yield from _decode_windows(job)
    except Exception as exc:  # noqa: BLE001 - a decoder bug becomes this video's failure
        yield Failed(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])


def _decode_windows(job: VideoJob) -> Iterator[Event]:
    reasons: list[str] = []
    try:
        check_readable(job.path)
    except DecodeError as exc:
        yield Failed(str(exc))
        return
    for name in job.decoders:
        try:
            source = open_video(job.path, job.short_side, (name,), job.threads)
        except DecodeError as exc:
            reasons.append(str(exc))
            continue
        try:
            plan = plan_windows(source.timestamps, source.info.duration, job.clip_len, job.frame_interval, job.hop,
                                source.keyframes)
            yield Opened(source.info, source.name, plan.starts, plan.ends)
            yield from stream_windows(source, plan, job.size, job.chunk, job.crops, job.whole_frame)
        except DecodeError as exc:
            reasons.append(f"{source.name}: {exc}")
            yield Restarted(reasons[-1])
            continue
        finally:
            source.close()
        if job.audio is not None:
            yield from _sound_events(job, plan, source.info.duration)
        yield Decoded()
        return
    yield decode_failure(reasons)


NOT_A_VIDEO = "not a video (no decodable video stream)"
_NO_VIDEO_STREAM = ("pyav: Invalid data found", "pyav: no video stream")  # FFmpeg's probe: no video in it


def decode_failure(reasons: list[str]) -> Failed:
    """Why no decoder read a video: the decoders' reasons, one after another; or, where FFmpeg's
    probe (PyAV) found no video stream in the file at all (text, random bytes, sound only, an MP4
    cut before its index), plainly NOT_A_VIDEO with their words kept as the detail."""
    words = "; ".join(reasons) or "no decoder could read it"
    if any(reason.startswith(_NO_VIDEO_STREAM) for reason in reasons):
        return Failed(NOT_A_VIDEO, words)
    return Failed(words)


def _sound_events(job: VideoJob, plan: WindowPlan, duration: float) -> Iterator[Event]:
    """Audio Inputs aligned with the plan's windows, or SoundMissing.

    A missing or undecodable sound track never fails the video: it is tagged from vision alone.
    """
    sample_rate, patch_seconds = job.audio
    bounds = patch_bounds(plan.starts, plan.ends, duration, patch_seconds, sample_rate)
    try:
        for first, patches in read_patches(job.path, bounds, sample_rate, job.chunk):
            yield Inputs(AUDIO, first, patches)
    except NoAudio:
        yield SoundMissing("no audio stream")
    except DecodeError as exc:
        yield SoundMissing(str(exc))


@dataclass
class ScoreSheet:
    """One video's window scores, filled in as its inputs are scored (in any order, in any batch).

    `labels` gives each stream's label count. Inputs of a superseded decoder (after Restarted) or of
    a sound track that failed midway are refused by `wants`, so late scores never mix in.
    """

    path: str
    labels: Mapping[str, int]  # stream -> K
    generation: int = 0  # bumps on Restarted: inputs tagged with an older generation are void
    opened: Opened | None = None
    decoded: bool = False
    sound_note: str | None = None
    scores: dict[str, np.ndarray] = field(default_factory=dict)
    scored: dict[str, int] = field(default_factory=dict)
    features: dict[str, np.ndarray] = field(default_factory=dict)  # stream -> (W, D) float16, once filled

    def apply(self, event: Event) -> None:
        """Record an event other than Inputs and Failed (which the caller scores or reports)."""
        if isinstance(event, Opened):
            self.opened = event
            self.scores = {stream: np.zeros((len(event.starts), k), np.float32) for stream, k in self.labels.items()}
            self.scored = dict.fromkeys(self.labels, 0)
        elif isinstance(event, SoundMissing):
            self.sound_note = event.reason
            self.scores.pop(AUDIO, None)
            self.features.pop(AUDIO, None)
        elif isinstance(event, Restarted):
            self.generation, self.opened, self.scores, self.scored = self.generation + 1, None, {}, {}
            self.features = {}
        elif isinstance(event, Decoded):
            self.decoded = True

    def wants(self, stream: str, generation: int) -> bool:
        """Whether scores of `stream` inputs sent under `generation` still count."""
        return generation == self.generation and stream in self.scores

    def fill(self, stream: str, first: int, scored: Scored) -> None:
        """Store the scores (n, K), and the features (n, D) when the model gives them, of windows
        first .. first + n - 1."""
        self.scores[stream][first : first + len(scored.scores)] = scored.scores
        if scored.features is not None:
            if stream not in self.features:
                self.features[stream] = np.zeros((len(self.opened.starts), scored.features.shape[1]), np.float16)
            self.features[stream][first : first + len(scored.features)] = scored.features
        self.scored[stream] += len(scored.scores)

    def complete(self) -> bool:
        return self.decoded and all(self.scored[s] >= len(self.opened.starts) for s in self.scores)

    def result(self) -> VideoScores:
        """The finished video's scores; call once `complete()`."""
        opened = self.opened
        return VideoScores(self.path, opened.decoder, opened.info, opened.starts, opened.ends, dict(self.scores),
                           self.sound_note, dict(self.features))


Scorer = Callable[[np.ndarray], Scored]  # inputs (n, ...) -> scores (n, K) and features: LoadedModel.run


def score_in_batches(score: Scorer, inputs: np.ndarray, batch_size: int) -> Scored:
    """Scores (and features) of `inputs`, `batch_size` rows per call: decoders send larger chunks
    than a CPU likes."""
    parts = [score(inputs[i : i + batch_size]) for i in range(0, len(inputs), batch_size)]
    features = None if parts[0].features is None else np.concatenate([p.features for p in parts])
    return Scored(np.concatenate([p.scores for p in parts]), features)


def score_video(job: VideoJob, scorers: Mapping[str, Scorer], labels: Mapping[str, int],
                batch_sizes: Mapping[str, int], progress: Callable[[], None] | None = None) -> Outcome:
    """The whole per-video step in this process: decode `job`, score its inputs, return the scores.

    Args:
        job: the video and how to sample it (VideoJob.for_model).
        scorers: stream -> scoring function (LoadedModel.run) for each of `job.streams`.
        labels: stream -> label count of its model.
        batch_sizes: stream -> rows per scoring call.
        progress: called after every event, so a supervisor can tell a slow video from a hung one.
    """
    sheet = ScoreSheet(job.path, {stream: labels[stream] for stream in job.streams})
    for event in decode_windows(job):
        if progress is not None:
            progress()
        if isinstance(event, Failed):
            return VideoFailure(job.path, event.reason, event.detail)
        if isinstance(event, Inputs):
            if sheet.wants(event.stream, sheet.generation):
                sheet.fill(event.stream, event.first, score_in_batches(scorers[event.stream], event.data,
                                                                     batch_sizes[event.stream]))
        else:
            sheet.apply(event)
    return sheet.result()


def window_inputs(job: VideoJob) -> np.ndarray:
    """Every video input the scan feeds the model for `job`'s video, (W, T*C, H, W, 3) uint8.

    Raises:
        DecodeError: no decoder could read the video.
    """
    clips: list[np.ndarray] = []
    for event in decode_windows(job):
        if isinstance(event, Inputs) and event.stream == VIDEO:
            clips.append(event.data)
        elif isinstance(event, Restarted):
            clips = []
        elif isinstance(event, Failed):
            raise DecodeError(event.reason)
    return np.concatenate(clips)
