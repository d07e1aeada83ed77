"""The sound track as fixed-length PCM patches, one per video window, decoded with PyAV.

Each window gets the `patch_seconds` of sound centred on its midpoint (kept inside the track), so
audio scores line up row for row with the window's video scores. Decoding streams: only the
samples still needed by a pending patch are held, whatever the video's length.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from tagger.decode import _first_line
from tagger.errors import DecodeError


class NoAudio(Exception):
    """The file has no audio stream."""


def patch_bounds(starts: np.ndarray, ends: np.ndarray, duration: float, patch_seconds: float,
                 sample_rate: int) -> np.ndarray:
    """(W, 2) sample ranges: `patch_seconds` centred on each window, shifted to stay in [0, duration]."""
    length = int(round(patch_seconds * sample_rate))
    centres = (np.asarray(starts) + np.asarray(ends)) / 2 * sample_rate
    first = np.round(centres - length / 2).astype(np.int64)
    last_start = max(0, int(round(duration * sample_rate)) - length)
    first = np.clip(first, 0, last_start)
    return np.stack([first, first + length], axis=1)


def _resampled(path: str, sample_rate: int) -> Iterator[np.ndarray]:
    """Mono float32 PCM chunks at `sample_rate` from the first audio stream."""
    import av

    try:
        with av.open(path) as container:
            if not container.streams.audio:
                raise NoAudio(path)
            stream = container.streams.audio[0]
            # Keep the channels and average them here: FFmpeg's own downmix adds them at -3 dB,
            # louder than the channel mean the music model was trained on (librosa's to_mono).
            resampler = av.AudioResampler(format="fltp", rate=sample_rate)
            for frame in container.decode(stream):
                for out in resampler.resample(frame):
                    yield out.to_ndarray().mean(axis=0)
            for out in resampler.resample(None):
                yield out.to_ndarray().mean(axis=0)
    except av.FFmpegError as exc:
        raise DecodeError(f"audio: {_first_line(exc.strerror or str(exc))}") from exc


def read_patches(path: str, bounds: np.ndarray, sample_rate: int, chunk: int) -> Iterator[tuple[int, np.ndarray]]:
    """Yield (first window, patches (n, S) float32) in window order; silence pads a short track.

    Raises:
        NoAudio: the file has no audio stream.
        DecodeError: the audio stream cannot be decoded.
    """
    buffer = np.zeros(0, np.float32)
    offset = 0  # sample index of buffer[0]
    pending: list[np.ndarray] = []
    first = next_patch = 0

    def take(start: int, stop: int) -> np.ndarray:
        patch = np.zeros(stop - start, np.float32)
        lo, hi = max(start, offset), min(stop, offset + len(buffer))
        if hi > lo:
            patch[lo - start : hi - start] = buffer[lo - offset : hi - offset]
        return np.clip(patch, -1.0, 1.0)

    def ready(final: bool) -> Iterator[tuple[int, np.ndarray]]:
        nonlocal next_patch, first, pending, buffer, offset
        while next_patch < len(bounds) and (final or bounds[next_patch][1] <= offset + len(buffer)):
            pending.append(take(*bounds[next_patch]))
            next_patch += 1
            if len(pending) == chunk:
                yield first, np.stack(pending)
                first, pending = next_patch, []
        if next_patch < len(bounds):  # drop samples no pending patch needs
            keep_from = int(bounds[next_patch][0])
            if keep_from > offset:
                buffer, offset = buffer[keep_from - offset :], keep_from
        if final and pending:
            yield first, np.stack(pending)

    for samples in _resampled(path, sample_rate):
        buffer = np.concatenate([buffer, samples.astype(np.float32, copy=False)])
        yield from ready(final=False)
    yield from ready(final=True)
