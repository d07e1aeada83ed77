"""The decode plan: which packets of a video stream to decode for the frames a window plan needs.

The demux pass (`PyAVSource`) records every packet's presentation timestamp and keyframe flag, in
decode order: a `PacketIndex`, the video's GOP structure. `plan_decoding` turns the frames wanted
into the packets to send to the decoder, and `decoded_frames` sends them:

- a frame depends on the packets from the keyframe before it (in decode order, shown no later
  than it) up to its own packet, so only those spans are sent; between spans the decoder is
  drained and flushed, as FFmpeg does after a seek, and the packets in between are not decoded;
- inside a span, packets that are not wanted are decoded with `skip_frame` NONREF, so frames no
  other frame references (most B-frames of H.264, HEVC, MPEG-4) are not reconstructed; the wanted
  frames themselves are always decoded in full, so every frame returned is bit for bit the one
  a decoder of every frame shows;
- a gap between two spans is decoded through rather than jumped over where it is shorter than
  what a jump costs (`JUMP_COST`), so videos whose keyframes are sparse, or whose needed frames
  are close together, are decoded sequentially.

Decoded frames are then matched to frame indices by timestamp, which needs timestamps that are
presentation times; `PacketIndex.trusted` says whether they are. Where they are not (AVI, which
stores decode order only, with B-frames; packets without timestamps), the plan is plain
sequential decoding of every frame, matched by position, as before this plan existed.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from tagger.errors import DecodeError

# Packets: a gap between two spans shorter than this is decoded through (its non-reference frames
# skipped) rather than jumped over. A jump drains the decoder, flushes it and restarts it at a
# keyframe; measured on this machine, H.264 then rebuilds its tables: 25 ms a jump against 5 ms a
# frame at 720p with 1 thread (8 against 5 ms with 2), MPEG-4 part 2 about two frames' time. A gap
# costs at most a frame per packet (less where B-frames are skipped): one shorter than the dearest
# jump measured, rounded up, is never worth jumping over.
JUMP_COST = 6

SEQUENTIAL, SKIP, SEEK, KEYFRAMES = "sequential", "skip", "seek", "keyframes"  # DecodePlan.strategy


class TimestampMismatch(Exception):
    """A decoded frame's timestamp contradicts the demux pass: match frames by position instead."""


@dataclass(frozen=True)
class PacketIndex:
    """A video stream's packets in decode order, as the demux pass saw them."""

    pts: np.ndarray  # (P,) int64 presentation timestamps, decode order
    keyframe: np.ndarray  # (P,) bool
    trusted: bool  # the pts are distinct presentation times: decoded frames can be matched by them

    @classmethod
    def from_demux(cls, pts: Sequence[int | None], keyframe: Sequence[bool], reorders: bool,
                   container_format: str) -> PacketIndex:
        """The index of the packets the demux pass kept (those with data), and whether to trust it.

        Args:
            pts: each packet's pts, None where the container gave none.
            keyframe: each packet's keyframe flag.
            reorders: the decoder may output frames in another order than it reads them (B-frames).
            container_format: FFmpeg's name for the container (`avi`, `matroska,webm`, ...).
        """
        known = [p for p in pts if p is not None]
        table = np.asarray(known, dtype=np.int64)
        flags = np.asarray([k for p, k in zip(pts, keyframe) if p is not None], dtype=bool)
        trusted = len(known) == len(pts) > 0 and len(np.unique(table)) == len(table)
        if trusted and reorders:
            # AVI stores no presentation times (its timestamps count frames in decode order, or are
            # guessed for packed B-frames); nor does any container whose pts never go back while
            # the decoder reorders.
            never_back = bool(np.all(np.diff(table) > 0))
            trusted = "avi" not in container_format.split(",") and not never_back
        return cls(table, flags, trusted)

    @property
    def frame_pts(self) -> np.ndarray:
        """The pts of frame i (frames in presentation order): the packets' pts, sorted."""
        return np.sort(self.pts)

    @property
    def keyframes(self) -> np.ndarray:
        """Frame indices (presentation order) of the keyframes."""
        return np.searchsorted(self.frame_pts, np.sort(self.pts[self.keyframe]))

    def positions(self, frames: np.ndarray) -> np.ndarray:
        """Decode-order position of the packet of each frame index in `frames`."""
        return np.argsort(self.pts, kind="stable")[frames]

    def anchors(self, frames: np.ndarray) -> np.ndarray:
        """Decode-order position where decoding must start to reconstruct each frame in `frames`:
        the last keyframe read before the frame and shown no later than it (an open GOP's leading
        frames, shown before their keyframe, depend on the GOP before); 0 where there is none."""
        positions = self.positions(frames)
        frame_pts = self.frame_pts[frames]
        keys = np.flatnonzero(self.keyframe)
        anchors = np.zeros(len(frames), dtype=np.int64)
        for i, (position, pts) in enumerate(zip(positions, frame_pts)):
            k = int(np.searchsorted(keys, position, side="right")) - 1
            while k >= 0 and self.pts[keys[k]] > pts:
                k -= 1
            anchors[i] = keys[k] if k >= 0 else 0
        return anchors


@dataclass(frozen=True)
class DecodePlan:
    """Which packets to decode, and how, to produce a set of frames."""

    spans: tuple[tuple[int, int], ...]  # decode-order positions, first and last inclusive
    full: frozenset[int]  # pts of the frames decoded in full; other packets skip non-reference frames
    strategy: str  # SEQUENTIAL, SKIP, SEEK or KEYFRAMES: what the plan amounts to, for people


def plan_decoding(index: PacketIndex, frames: Sequence[int], jump_cost: int = JUMP_COST) -> DecodePlan:
    """The cheapest exact way to decode `frames` (ascending indices, presentation order).

    Each frame needs the packets from its anchor keyframe to its own packet; overlapping needs are
    merged, and so are needs separated by fewer than `jump_cost` packets. With untrusted
    timestamps, every packet is decoded (SEQUENTIAL).
    """
    frames = np.unique(np.asarray(frames, dtype=np.int64))
    if not index.trusted or len(frames) == 0:
        return DecodePlan(((0, len(index.pts) - 1),), frozenset(), SEQUENTIAL)
    positions, anchors = index.positions(frames), index.anchors(frames)
    spans: list[list[int]] = []
    for first, last in sorted(zip(anchors.tolist(), positions.tolist())):
        if spans and first - spans[-1][1] - 1 < jump_cost:
            spans[-1][1] = max(spans[-1][1], last)
        else:
            spans.append([first, last])
    full = frozenset(index.frame_pts[frames].tolist())
    sent = sum(last - first + 1 for first, last in spans)
    if sent == len(frames) and index.keyframe[positions].all():
        strategy = KEYFRAMES
    elif len(spans) > 1:
        strategy = SEEK
    else:
        strategy = SKIP
    return DecodePlan(tuple((a, b) for a, b in spans), full, strategy)


def decoded_frames(container, stream, plan: DecodePlan, index: PacketIndex) -> Iterator:
    """The frames (av.VideoFrame) the decoder outputs for `plan`, in presentation order.

    `container` and `stream` are an open PyAV container and its video stream. Packets are counted
    as the demux pass counted them (those with data and a pts).

    Raises:
        TimestampMismatch: a packet's pts is not the one the demux pass saw at its position.
        av.FFmpegError: from the decoder.
    """
    codec = stream.codec_context
    sending = np.zeros(len(index.pts), dtype=bool)
    for first, last in plan.spans:
        sending[first : last + 1] = True
    end = plan.spans[-1][1]
    position, decoding, skip = -1, False, None
    for packet in container.demux(stream):
        if not packet.size or packet.pts is None:
            continue
        position += 1
        if position > end:
            break
        if packet.pts != index.pts[position]:
            raise TimestampMismatch(f"packet {position} has pts {packet.pts}, not {index.pts[position]}")
        if not sending[position]:
            if decoding:  # a jump: what the decoder holds comes out, then it starts afresh
                yield from codec.decode(None)
                codec.flush_buffers()
                decoding = False
            continue
        wanted = "DEFAULT" if packet.pts in plan.full else "NONREF"
        if wanted != skip:
            codec.skip_frame = skip = wanted
        yield from codec.decode(packet)
        decoding = True
    if decoding:
        yield from codec.decode(None)


def frames_shown(decoded: Iterable, wanted: np.ndarray) -> Iterator[tuple[int, object]]:
    """(j, frame) for each j of `wanted` (ascending pts): the decoded frame with pts wanted[j].

    A wanted frame the decoder never output (dropped as corrupt) gets the nearest frame it did
    output, and those past the last one the last, as sequential decoding repeats the last frame
    when frames run short.

    Raises:
        TimestampMismatch: the decoded frames' pts are missing or do not ascend.
        DecodeError: no frame was decoded.
    """
    j, previous = 0, None
    for frame in decoded:
        if frame.pts is None or (previous is not None and frame.pts <= previous.pts):
            raise TimestampMismatch(f"decoded pts {frame.pts} after {previous.pts if previous else None}")
        while j < len(wanted) and wanted[j] < frame.pts:  # never output: the nearer neighbour
            nearer = previous is not None and wanted[j] - previous.pts <= frame.pts - wanted[j]
            yield j, previous if nearer else frame
            j += 1
        while j < len(wanted) and wanted[j] == frame.pts:
            yield j, frame
            j += 1
        if j == len(wanted):
            return
        previous = frame
    if previous is None:
        raise DecodeError("no frame could be decoded")
    for k in range(j, len(wanted)):
        yield k, previous
