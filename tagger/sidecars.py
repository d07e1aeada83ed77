"""Per-video tag files for players and editors: WebVTT, SRT, CMX 3600 EDL and OpenTimelineIO.

Each video's segments become one file: subtitles (`.vtt`, `.srt`) that VLC, mpv and browsers show
while the video plays, or markers (`.edl`, `.otio`) that editors import onto the clip. Files go
beside each video (`--sidecar`) or into one folder, named `<video stem>.tagger.<ext>` so that a
video's own subtitles (`<stem>.srt`) are never overwritten.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby
from pathlib import Path

from tagger.errors import UsageError

SIDECAR_FORMATS = ("vtt", "srt", "edl", "otio")
EVIDENCE = {"video": "seen", "audio": "heard", "both": "seen and heard"}
EDL_COLOURS = ("RED", "GREEN", "BLUE", "YELLOW", "CYAN", "MAGENTA", "ORANGE", "PURPLE")  # Avid locator colours
OTIO_EXTRA = "pip install 'tagger[otio]'"


@dataclass(frozen=True)
class VideoTags:
    """One video's segments (records from `tagger.records.segment_records`), in time order."""

    path: str
    duration: float
    fps: float
    segments: tuple[dict, ...]


def videos_of(records: Iterable[dict]) -> list[VideoTags]:
    """Group segment records by video; each video's segments sorted by start, then label."""
    by_path = sorted(records, key=lambda r: (r["path"], r["start_s"], r["label"]))
    grouped = []
    for path, group in groupby(by_path, key=lambda r: r["path"]):
        group = tuple(group)
        duration = group[0]["video_duration_s"] or max(r["end_s"] for r in group)
        grouped.append(VideoTags(path, float(duration), float(group[0]["fps"] or 25.0), group))
    return grouped


def cue_text(record: dict) -> str:
    """What a player shows for one segment: `Label 0.91 (seen and heard)`, on one line."""
    label = " ".join(str(record["label"]).split())  # a newline or blank line would end the cue
    return f"{label} {record['score']:.2f} ({EVIDENCE.get(record['source'], record['source'])})"


def subtitle_time(seconds: float, separator: str = ".") -> str:
    """`HH:MM:SS.mmm` (WebVTT) or, with `separator=","`, `HH:MM:SS,mmm` (SRT)."""
    millis = int(round(max(0.0, seconds) * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}{separator}{rest % 1000:03d}"


def format_vtt(video: VideoTags) -> str:
    """A WebVTT file: one cue per segment; `&`, `<`, `>` escaped and `-->` kept out of cue text."""
    lines = ["WEBVTT", ""]
    for record in video.segments:
        text = cue_text(record).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        lines += [f"{subtitle_time(record['start_s'])} --> {subtitle_time(record['end_s'])}", text, ""]
    return "\n".join(lines)


def format_srt(video: VideoTags) -> str:
    """An SRT file: numbered cues, comma before the milliseconds, `<` escaped as players read tags."""
    lines = []
    for number, record in enumerate(video.segments, start=1):
        text = cue_text(record).replace("-->", "->").replace("<", "‹").replace(">", "›")
        lines += [str(number), f"{subtitle_time(record['start_s'], ',')} --> {subtitle_time(record['end_s'], ',')}",
                  text, ""]
    return "\n".join(lines)


def edl_rate(fps: float) -> int:
    """The nominal timecode rate of a frame rate: 29.97 counts as 30 in non-drop-frame timecode."""
    return max(1, round(fps))


def edl_timecode(seconds: float, fps: float) -> str:
    """Non-drop-frame `HH:MM:SS:FF`: frames counted at the video's rate, labelled at its nominal rate."""
    rate = edl_rate(fps)
    frames = int(round(max(0.0, seconds) * fps))
    hours, rest = divmod(frames, 3600 * rate)
    minutes, rest = divmod(rest, 60 * rate)
    return f"{hours:02d}:{minutes:02d}:{rest // rate:02d}:{rest % rate:02d}"


def _edl_text(text: str, limit: int = 70) -> str:
    """EDL comments are one ASCII line: other characters become `?`."""
    flat = " ".join(str(text).split())
    return flat.encode("ascii", "replace").decode("ascii")[:limit]


def format_edl(video: VideoTags, labels: Sequence[str]) -> str:
    """A CMX 3600 EDL: one event spanning the clip, a `* LOC:` locator at the start of each segment.

    Locators are points (CMX 3600 has no marker length); the name carries the label, score,
    evidence and end time. Colours follow the label's place in `labels`.
    """
    start, end = edl_timecode(0.0, video.fps), edl_timecode(video.duration, video.fps)
    lines = [f"TITLE: {_edl_text(Path(video.path).stem)}", "FCM: NON-DROP FRAME", "",
             f"001  AX       V     C        {start} {end} {start} {end}",
             f"* FROM CLIP NAME: {_edl_text(Path(video.path).name)}"]
    for record in video.segments:
        colour = EDL_COLOURS[labels.index(record["label"]) % len(EDL_COLOURS)]
        name = f"{cue_text(record)} to {edl_timecode(record['end_s'], video.fps)}"
        lines.append(f"* LOC: {edl_timecode(record['start_s'], video.fps)} {colour:7} {_edl_text(name)}")
    return "\n".join(lines) + "\n"


def opentimelineio():
    """The `opentimelineio` module.

    Raises:
        UsageError: it is not installed (it is the `otio` extra, kept out of a plain install).
    """
    try:
        import opentimelineio as otio
    except ImportError:
        raise UsageError(f"--format otio needs the opentimelineio package: {OTIO_EXTRA}") from None
    return otio


def build_otio(video: VideoTags, labels: Sequence[str]):
    """An OpenTimelineIO timeline: one clip referencing the video, one marker (with length) per segment.

    Raises:
        UsageError: the `opentimelineio` package is not installed (it is the `otio` extra).
    """
    otio = opentimelineio()
    frames = lambda seconds: round(seconds * video.fps)  # noqa: E731 - whole frames, as editors count
    span = lambda start, end: otio.opentime.TimeRange(  # noqa: E731
        otio.opentime.RationalTime(frames(start), video.fps),
        otio.opentime.RationalTime(frames(end) - frames(start), video.fps))
    whole = span(0.0, video.duration)
    clip = otio.schema.Clip(
        name=Path(video.path).name, source_range=whole,
        media_reference=otio.schema.ExternalReference(target_url=Path(video.path).absolute().as_uri(),
                                                      available_range=whole),
    )
    for record in video.segments:
        marker = otio.schema.Marker(
            name=cue_text(record),
            marked_range=span(record["start_s"], record["end_s"]),
            color=EDL_COLOURS[labels.index(record["label"]) % len(EDL_COLOURS)],
            metadata={"tagger": {key: record[key] for key in ("label", "start_s", "end_s", "score", "max_score",
                                                             "source", "model")}},
        )
        clip.markers.append(marker)
    timeline = otio.schema.Timeline(name=Path(video.path).stem)
    track = otio.schema.Track(name="tags", kind=otio.schema.TrackKind.Video)
    track.append(clip)
    timeline.tracks.append(track)
    return timeline


def sidecar_path(video_path: str, fmt: str, folder: Path | None, taken: set[Path]) -> Path:
    """Where a video's file goes: beside it, or in `folder`, as `<stem>.tagger.<fmt>`.

    In a folder, two videos with the same stem get names told apart by a hash of their paths.
    """
    source = Path(video_path)
    target = (folder or source.parent) / f"{source.stem}.tagger.{fmt}"
    if target in taken:
        digest = hashlib.sha1(video_path.encode("utf-8", "surrogateescape")).hexdigest()[:8]
        target = target.with_name(f"{source.stem}-{digest}.tagger.{fmt}")
    taken.add(target)
    return target


def output_folder(output: str | None, fmt: str, sidecar: bool) -> Path | None:
    """The folder to write into (created when missing), or None to write beside each video.

    Raises:
        UsageError: no destination, both destinations, or `output` is not a folder.
    """
    if sidecar and output is not None:
        raise UsageError("pass either --sidecar (files beside each video) or -o DIR, not both")
    if sidecar:
        return None
    if output is None or output == "-":
        raise UsageError(f"--format {fmt} writes one file per video: pass -o DIR or --sidecar")
    folder = Path(output).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError(f"{output} is a file; --format {fmt} writes one file per video into a folder: pass -o DIR")
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create folder {output}: {exc.strerror}; pass another -o DIR") from exc
    return folder


def write_sidecars(records: Iterable[dict], fmt: str, folder: Path | None) -> tuple[int, int]:
    """Write one `fmt` file per video that has segments; returns (files, segments) written.

    Raises:
        UsageError: a file cannot be written (a read-only video folder, say), or otio is missing.
    """
    records = list(records)
    labels = sorted({r["label"] for r in records})
    otio = opentimelineio() if fmt == "otio" else None  # missing: fail before writing anything
    text_of = {"vtt": format_vtt, "srt": format_srt, "edl": lambda video: format_edl(video, labels)}.get(fmt)
    taken: set[Path] = set()
    files = segments = 0
    for video in videos_of(records):
        target = sidecar_path(video.path, fmt, folder, taken)
        try:
            if otio is not None:
                otio.adapters.write_to_file(build_otio(video, labels), str(target), adapter_name="otio_json")
            else:
                _write_text(target, text_of(video), crlf=fmt == "edl")
        except OSError as exc:
            hint = "pass -o DIR instead of --sidecar" if folder is None else "pass another -o DIR"
            raise UsageError(f"cannot write {target}: {exc.strerror}; {hint}") from exc
        files += 1
        segments += len(video.segments)
    return files, segments


def _write_text(target: Path, text: str, crlf: bool) -> None:
    """Write whole or not at all: a partial file is renamed into place only once complete."""
    partial = target.with_name(target.name + ".partial")
    try:
        with open(partial, "w", encoding="ascii" if crlf else "utf-8", newline="\r\n" if crlf else "\n") as handle:
            handle.write(text)
        os.replace(partial, target)
    finally:
        if partial.exists():
            partial.unlink()
