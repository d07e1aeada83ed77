"""Segment thumbnails: the middle frame of a segment, decoded by the scan's own frame sources.

A video is opened once with `tagger.decode.open_video` (the decoder that scanned it first, the
others as fallbacks) and its wanted frames are read in one ordered pass, already reduced to a
small short side; each frame is written as a JPEG by FFmpeg's MJPEG encoder through PyAV, so no
image library is needed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from tagger.decode import DECODERS, open_video
from tagger.errors import DecodeError

THUMB_SHORT_SIDE = 90  # pixels: a 16:9 video gives 160x90, sharp enough at the page's 72 px height
JPEG_QUALITY = 4  # FFmpeg qscale, 2 (best) .. 31: about 3 KB per 160x90 frame, no visible blocks


@dataclass(frozen=True)
class ThumbnailRequest:
    """The frames wanted from one video: the times (seconds) and the files to write them to."""

    path: str
    decoder: str | None  # the decoder the scan used, tried first
    times: tuple[float, ...]
    targets: tuple[Path, ...]


def frame_indices(timestamps: np.ndarray, times: Sequence[float]) -> list[int]:
    """For each time, the index of the frame showing at that time (the last starting at or before it)."""
    found = np.searchsorted(timestamps, np.asarray(times, dtype=np.float64), side="right") - 1
    return [int(i) for i in np.clip(found, 0, len(timestamps) - 1)]


def middle_frames(path: str, times: Sequence[float], decoders: Sequence[str] = DECODERS,
                  short_side: int = THUMB_SHORT_SIDE) -> list[np.ndarray]:
    """The frames (H, W, 3 RGB) showing at `times` in `path`, decoded once each, in time order.

    Raises:
        DecodeError: no decoder can open or read the video.
    """
    source = open_video(path, short_side, decoders, threads=1)
    try:
        indices = frame_indices(source.timestamps, times)
        frames = dict(source.read(sorted(set(indices))))
    finally:
        source.close()
    return [frames[index] for index in indices]


def encode_jpeg(image: np.ndarray, quality: int = JPEG_QUALITY) -> bytes:
    """A JPEG file's bytes for one RGB frame (H, W, 3 uint8)."""
    import av

    codec = av.CodecContext.create("mjpeg", "w")
    codec.height, codec.width = image.shape[:2]
    codec.pix_fmt = "yuvj420p"  # full-range 4:2:0: what JPEG viewers expect
    codec.time_base = Fraction(1, 25)  # required by the encoder, meaningless for one frame
    codec.options = {"qmin": str(quality), "qmax": str(quality)}
    frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24").reformat(format="yuvj420p")
    return b"".join(bytes(packet) for packet in [*codec.encode(frame), *codec.encode(None)])


def write_thumbnails(request: ThumbnailRequest) -> int:
    """Write the requested frames as JPEG files; returns how many were written.

    A video that cannot be decoded any more (moved, changed, broken) gets no thumbnails rather
    than stopping the report: 0 is returned.
    """
    first = (request.decoder,) if request.decoder in DECODERS else ()  # a custom test decoder is not reused
    order = (*first, *(name for name in DECODERS if name not in first))
    try:
        frames = middle_frames(request.path, request.times, order)
    except (DecodeError, OSError, RuntimeError, ValueError):  # decoders raise more than DecodeError on odd files
        return 0
    for frame, target in zip(frames, request.targets):
        target.write_bytes(encode_jpeg(frame))
    return len(frames)
