"""Frame sources: PyAV first, decord as the fallback, both resizing while they decode.

A `FrameSource` knows a video's frame timestamps before any frame is decoded, so the window plan
can pick exactly the frames it needs, and `read(indices)` decodes each needed frame once, in
order, at the reduced size (short side scaled to the model's `resize`, aspect ratio kept).
`model_views` then gives what the model sees of each frame: crops (`frame_crops`) or the whole
frame (`whole_frame`).

PyAV decodes only what the needed frames depend on (`tagger.decode_plan`) and offers its
keyframes to stand in for the frames on screen where every time has one close by
(`tagger.windows`); `SequentialPyAVSource` decodes every frame, as scans did before.
"""

from __future__ import annotations

import importlib
import os
import re
import stat
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from tagger.decode_plan import JUMP_COST, SEQUENTIAL, DecodePlan, PacketIndex, TimestampMismatch, decoded_frames
from tagger.decode_plan import frames_shown, plan_decoding
from tagger.errors import DecodeError, UsageError

DECODERS = ("pyav", "decord")  # default order: PyAV decodes long-GOP H.264 2.4x faster (see README)


@dataclass(frozen=True)
class VideoInfo:
    """What a decoder learned about a video before decoding it."""

    width: int  # as decoded (rotation applied where the decoder applies it)
    height: int
    fps: float  # average frame rate
    frames: int
    duration: float  # seconds, from the first frame's start to the last frame's end


MAX_ASPECT = 8.0  # wider (or taller) than 8:1 the centre crop shows under 1/8 of the frame; no camera films that
MAX_SOURCE_PIXELS = 8192 * 8192  # 67 megapixels: one such frame alone takes 200 MB as RGB


def check_frame_size(width: int, height: int, short_side: int) -> None:
    """Refuse, with the reason, a frame whose decoding would take unbounded memory.

    Frames are scaled so their short side is the model's; a 10000x10 frame would become
    224000x224 (150 MB a frame, 1.3 GB in one decoder) to feed a 224x224 crop.

    Raises:
        DecodeError: the frame is more than MAX_ASPECT times wider than high (or the reverse), or
            larger than MAX_SOURCE_PIXELS.
    """
    if width * height > MAX_SOURCE_PIXELS:
        raise DecodeError(f"frames of {width}x{height} are over {MAX_SOURCE_PIXELS // 1_000_000} megapixels: "
                          "too large to decode in bounded memory; scale the video down first")
    ratio = max(width, height) / max(1, min(width, height))
    if ratio > MAX_ASPECT:
        out_w, out_h = scaled_size(width, height, short_side)
        raise DecodeError(f"frames of {width}x{height} have an aspect ratio of {ratio:.0f}:1 (at most {MAX_ASPECT:g}:1 "
                          f"is decoded): scaled to {out_w}x{out_h} for the model they would take "
                          f"{out_w * out_h * 3 // 1_000_000} MB each")


def scaled_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) with the short side scaled to `short_side`, aspect ratio kept."""
    if width <= height:
        return short_side, max(short_side, round(height * short_side / width))
    return max(short_side, round(width * short_side / height)), short_side


def centre_crop(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Crop `(..., H, W, 3)` frames to `size` = (h, w) around their centre."""
    h, w = frames.shape[-3:-1]
    top, left = max(0, (h - size[0]) // 2), max(0, (w - size[1]) // 2)
    return frames[..., top : top + size[0], left : left + size[1], :]


def crop_origins(height: int, width: int, size: tuple[int, int], crops: int) -> list[tuple[int, int]]:
    """(top, left) of each of the `crops` crops of `size` = (h, w) a model takes from a scaled frame.

    One crop is the centre crop. Several are spread evenly along the frame's long side, the first
    touching one edge and the last the other: offsets = round(linspace(0, L - S, crops)) (numpy's
    round, half to even), L the long side and S the crop's extent along it; across the short side
    each crop is centred. A square frame has no long side: its crops are all the centre crop. The
    one home of this rule (see `tagger.crops` in the model contract).
    """
    top, left = max(0, (height - size[0]) // 2), max(0, (width - size[1]) // 2)
    if crops == 1 or height == width:
        return [(top, left)] * crops  # centre_crop's arithmetic: (L - S) // 2, never a rounded half
    if height > width:  # portrait: crops run top to bottom
        return [(int(t), left) for t in np.round(np.linspace(0, max(0, height - size[0]), crops))]
    return [(top, int(x)) for x in np.round(np.linspace(0, max(0, width - size[1]), crops))]


def frame_crops(frames: np.ndarray, size: tuple[int, int], crops: int = 1) -> np.ndarray:
    """The crops a video model sees of scaled `(..., H, W, 3)` frames: `(..., crops, h, w, 3)`.

    `crops` = 1 gives exactly `centre_crop`; more spread along the long side (`crop_origins`).
    """
    h, w = frames.shape[-3:-1]
    return np.stack([frames[..., top : top + size[0], left : left + size[1], :]
                     for top, left in crop_origins(h, w, size, crops)], axis=-4)


def whole_frame(frames: np.ndarray, multiple: int) -> np.ndarray:
    """Scaled `(..., H, W, 3)` frames with each side trimmed about the centre to a multiple of
    `multiple`: what a whole-frame model sees (`tagger.whole_frame`). A stride-`multiple` backbone
    then covers every pixel kept, with the same padding whatever the frame's size."""
    h, w = frames.shape[-3:-1]
    keep_h, keep_w = max(multiple, h // multiple * multiple), max(multiple, w // multiple * multiple)
    top, left = (h - keep_h) // 2, (w - keep_w) // 2
    return frames[..., top : top + keep_h, left : left + keep_w, :]


def model_views(frames: np.ndarray, size: tuple[int, int], crops: int = 1, whole: int = 0) -> np.ndarray:
    """What a video model sees of scaled `(..., H, W, 3)` frames, `(..., C, h, w, 3)`: the whole
    frame trimmed (`whole_frame`, C = 1) when `whole` is set, else `crops` crops of `size`."""
    if whole:
        return whole_frame(frames, whole)[..., None, :, :, :]
    return frame_crops(frames, size, crops)


class FrameSource(ABC):
    """One open video: its timestamps up front, then frames decoded once each, in order."""

    name: str
    threads: int = 0  # decoding threads for read(); 0 lets the backend choose (open_video sets it)
    frames_decoded: int | None = None  # frames the decoder produced so far; None where unknown (decord)
    strategy: str | None = None  # how the last read decoded (tagger.decode_plan); None where unknown
    _info: VideoInfo  # set by each backend's __init__
    _timestamps: np.ndarray

    def __init__(self, path: str, short_side: int):
        self.path = path
        self.short_side = short_side

    @property
    def info(self) -> VideoInfo:
        """The video's size, rate, frame count and duration."""
        return self._info

    @property
    def timestamps(self) -> np.ndarray:
        """Start time of every frame in seconds, first frame at 0, ascending."""
        return self._timestamps

    @property
    def keyframes(self) -> np.ndarray | None:
        """Indices of the frames this source decodes on their own, cheaply (keyframes), which may
        stand in for nearby frames (`tagger.windows.frames_on_screen`); None: decode the frames on
        screen (a decoder that seeks by itself, or whose frames cannot be located by timestamp)."""
        return None

    @abstractmethod
    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, frame HxWx3 uint8) for ascending `indices`, at the reduced size."""

    def close(self) -> None:
        """Release the decoder."""


class DecordSource(FrameSource):
    """decord.VideoReader: fast seeking and batched reads, resize inside the decoder."""

    name = "decord"
    chunk = 32  # frames per get_batch call: bounds memory while keeping calls few

    def __init__(self, path: str, short_side: int):
        super().__init__(path, short_side)
        import decord

        try:
            probe = decord.VideoReader(path, num_threads=1)
            height, width = probe[0].shape[:2] if len(probe) else (0, 0)
            fps, frames = float(probe.get_avg_fps()), len(probe)
            del probe
            if frames < 1 or width < 1:
                raise DecodeError("no decodable video frames")
            check_frame_size(width, height, short_side)
            out_w, out_h = scaled_size(width, height, short_side)
            self._reader = decord.VideoReader(path, width=out_w, height=out_h, num_threads=1)
            stamps = np.asarray(self._reader.get_frame_timestamp(range(frames)), dtype=np.float64)
        except (decord.DECORDError, RuntimeError) as exc:  # decord raises both for unreadable files
            raise DecodeError(_first_line(str(exc))) from exc
        if len(stamps) != frames or stamps.ndim != 2:
            raise DecodeError("decord returned no frame timestamps")
        self._timestamps, duration = _clean_timestamps(stamps, fps)
        self._info = VideoInfo(width, height, fps, frames, duration)

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        import decord

        for begin in range(0, len(indices), self.chunk):
            part = list(indices[begin : begin + self.chunk])
            try:
                batch = self._reader.get_batch(part).asnumpy()
            except (decord.DECORDError, RuntimeError) as exc:
                raise DecodeError(_first_line(str(exc))) from exc
            yield from zip(part, batch)

    def close(self) -> None:
        self._reader = None


def _clean_timestamps(stamps: np.ndarray, fps: float) -> tuple[np.ndarray, float]:
    """Frame start times from decord's (F, 2) [start, end] stamps, and the duration.

    Some containers (MPEG-PS among them) leave frames without timestamps, which decord reports
    as huge negative numbers; then a constant frame rate is the best estimate there is.
    """
    starts = stamps[:, 0]
    rate = fps if fps > 0 else 25.0
    plausible = np.isfinite(stamps).all() and starts.min() > -1.0 and starts.max() - starts.min() < 4 * len(starts) / rate + 10
    if not plausible:
        grid = np.arange(len(starts)) / rate
        return grid, float(len(starts) / rate)
    origin = starts[0]
    clean = np.maximum.accumulate(starts - origin)
    end = float(stamps[-1, 1] - origin)
    return clean, end if end > clean[-1] else float(clean[-1] + 1.0 / rate)


class PyAVSource(FrameSource):
    """PyAV (FFmpeg): one demux pass for timestamps and the GOP structure, then one decode pass of
    the packets the needed frames depend on (`tagger.decode_plan`). Rotation metadata is applied."""

    name = "pyav"
    every_frame = False  # True: decode every frame and match by position (SequentialPyAVSource)
    jump_cost = JUMP_COST  # packets a jump to a later keyframe must save (tagger.decode_plan)

    def __init__(self, path: str, short_side: int):
        super().__init__(path, short_side)
        import av

        try:
            with av.open(path) as container:
                if not container.streams.video:
                    raise DecodeError("no video stream")
                stream = container.streams.video[0]
                pts, keys, first = [], [], None
                for packet in container.demux(stream):  # one pass: every timestamp, and the first frame
                    if packet.size:
                        pts.append(packet.pts)
                        keys.append(packet.is_keyframe)
                    if first is None:
                        first = next(iter(packet.decode()), None)
                base = float(stream.time_base)
                rate = float(stream.average_rate or stream.guessed_rate or 0)
                self._packets = PacketIndex.from_demux(pts, keys, bool(stream.codec_context.has_b_frames),
                                                       container.format.name)
        except av.FFmpegError as exc:
            raise DecodeError(_first_line(exc.strerror or str(exc))) from exc
        pts = [p for p in pts if p is not None]
        if not pts or first is None:
            raise DecodeError("no decodable video frames")
        self._turns = round(-getattr(first, "rotation", 0) / 90) % 4  # quarter turns clockwise
        width, height = (first.height, first.width) if self._turns % 2 else (first.width, first.height)
        stamps = (np.sort(np.asarray(pts, dtype=np.float64)) - min(pts)) * base
        if rate <= 0:
            rate = (len(stamps) - 1) / stamps[-1] if stamps[-1] > 0 else 25.0
        self._timestamps = stamps
        check_frame_size(width, height, short_side)
        out_w, out_h = scaled_size(width, height, short_side)
        self._decode_size = (out_h, out_w) if self._turns % 2 else (out_w, out_h)  # before rotation
        self._info = VideoInfo(width, height, rate, len(stamps), float(stamps[-1] + 1.0 / rate))
        self._reformatter = None
        self.frames_decoded = 0

    @property
    def keyframes(self) -> np.ndarray | None:
        return None if self.every_frame or not self._packets.trusted else self._packets.keyframes

    def _to_array(self, frame) -> np.ndarray:
        from av.video.reformatter import VideoReformatter

        if self._reformatter is None:  # one scaler for the video: building one per frame cost more than scaling
            self._reformatter = VideoReformatter()
        width, height = self._decode_size
        image = self._reformatter.reformat(frame, width=width, height=height, format="rgb24").to_ndarray()
        return np.ascontiguousarray(np.rot90(image, k=-self._turns)) if self._turns else image

    def _open(self, av):
        container = av.open(self.path)
        stream = container.streams.video[0]
        stream.thread_type, stream.thread_count = "AUTO", self.threads
        return container, stream

    def read(self, indices: Sequence[int]) -> Iterator[tuple[int, np.ndarray]]:
        import av

        indices = [int(i) for i in indices]
        plan = None if self.every_frame else plan_decoding(self._packets, indices, self.jump_cost)
        self.strategy, done = plan.strategy if plan else SEQUENTIAL, 0
        try:
            if self.strategy != SEQUENTIAL:
                try:
                    for done, item in enumerate(self._read_planned(indices, plan), 1):
                        yield item
                    return
                except TimestampMismatch:  # frames cannot be found by timestamp after all: decode them all
                    self._packets, self.strategy = replace(self._packets, trusted=False), SEQUENTIAL
            yield from self._read_every_frame(indices[done:])
        except av.FFmpegError as exc:
            raise DecodeError(_first_line(exc.strerror or str(exc))) from exc

    def _read_planned(self, indices: list[int], plan: DecodePlan) -> Iterator[tuple[int, np.ndarray]]:
        """The frames at `indices`, found by timestamp among the frames `plan` decodes."""
        import av

        container, stream = self._open(av)
        with container:
            decoded = decoded_frames(container, stream, plan, self._packets)
            for j, frame in frames_shown(self._counted(decoded), self._packets.frame_pts[indices]):
                yield indices[j], self._to_array(frame)

    def _read_every_frame(self, indices: list[int]) -> Iterator[tuple[int, np.ndarray]]:
        """The frames at `indices`, decoding every frame from the start and counting positions."""
        import av

        wanted = iter(indices)
        target, last = next(wanted, None), None
        container, stream = self._open(av)
        with container:
            for position, frame in enumerate(self._counted(container.decode(stream))):
                while target is not None and target == position:
                    last = self._to_array(frame)
                    yield target, last
                    target = next(wanted, None)
                if target is None:
                    return
        if last is None:
            raise DecodeError("no frame could be decoded")
        while target is not None:  # fewer frames decoded than demuxed: repeat the last one
            yield target, last
            target = next(wanted, None)

    def _counted(self, frames: Iterator) -> Iterator:
        for frame in frames:
            self.frames_decoded += 1
            yield frame


class SequentialPyAVSource(PyAVSource):
    """PyAV decoding every frame, samples showing the frames on screen, as scans did before
    `tagger.decode_plan`: for benches and tests (`--decoders tagger.decode:SequentialPyAVSource`)."""

    name = "pyav-sequential"
    every_frame = True


def check_readable(path: str) -> None:
    """Raise DecodeError for a file no decoder could read: missing, unreadable, or empty."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        raise DecodeError("file not found (deleted or moved during the scan?)") from None
    if not stat.S_ISREG(mode):
        raise DecodeError("not a regular file (a FIFO, device or socket): only video files can be scanned")
    if not os.access(path, os.R_OK):
        raise DecodeError("permission denied: make the file readable to scan it")
    if os.path.getsize(path) == 0:
        raise DecodeError("empty file (0 bytes)")


def open_video(path: str, short_side: int, decoders: Sequence[str] = DECODERS, threads: int = 0) -> FrameSource:
    """Open `path` with the first decoder that can, in the order given, decoding with `threads`.

    Raises:
        DecodeError: no decoder could open it; the message lists each decoder's reason.
    """
    check_readable(path)
    reasons = []
    for name in decoders:
        try:
            source = source_class(name)(path, short_side)
        except DecodeError as exc:
            reasons.append(f"{name}: {str(exc).replace(path, 'the file').rstrip('.')}")
            continue
        source.threads = threads
        return source
    raise DecodeError("; ".join(reasons))


def source_class(name: str) -> type[FrameSource]:
    """The FrameSource called `name`: a built-in (decord, pyav) or a `module:Class` import path.

    Raises:
        UsageError: unknown name, or an import path that does not lead to a FrameSource.
    """
    if name in SOURCES:
        return SOURCES[name]
    module_name, _, class_name = name.partition(":")
    try:
        found = getattr(importlib.import_module(module_name), class_name) if class_name else None
    except (ImportError, AttributeError):
        found = None
    if not (isinstance(found, type) and issubclass(found, FrameSource)):
        raise UsageError(f"unknown decoder {name!r}: choose from {', '.join(SOURCES)} or give module:FrameSourceClass")
    return found


def _first_line(text: str) -> str:
    """Decoder messages span lines and carry C++ source locations; keep the part a person needs."""
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    line = _LOCATION.sub("", lines[0] if lines else "unknown decoder error")
    if line.startswith("Check failed") and ") " in line:
        line = line.rsplit(") ", 1)[1]
    return line.strip()[:300] or "unknown decoder error"


_LOCATION = re.compile(r"\[\d\d:\d\d:\d\d\] \S+:\d+: ")


SOURCES: dict[str, type[FrameSource]] = {"decord": DecordSource, "pyav": PyAVSource}
