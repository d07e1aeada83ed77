"""Rich and plain-text rendering of what the read side returns: tables, formats, timelines, scans."""

from __future__ import annotations

import json
import sys
import time

from rich import box
from rich.console import Console
from rich.table import Table
from rich.text import Text

from tagger.errors import UsageError
from tagger.escaping import counted, printable, shortened_path
from tagger.writers import write_csv, write_json

FORMATS = ("table", "json", "csv", "tsv")


def chosen_format(requested: str | None) -> str:
    """The output format: as requested, else a table on a terminal and CSV in a pipe."""
    chosen = requested or ("table" if sys.stdout.isatty() else "csv")
    if chosen not in FORMATS:
        raise UsageError(f"--format {chosen!r} is not one of {', '.join(FORMATS)}")
    return chosen


def render_records(console: Console, records: list[dict], fields: tuple[str, ...], output_format: str,
                   columns: dict[str, str] | None = None) -> None:
    """Records as JSON, CSV or TSV with `fields`, or as a table of `columns` (field -> heading).

    The table fits the terminal: every column but `path` keeps its width, and each path gives up
    the start of its folder to fit what is left, then the middle of its file name; none wraps.
    """
    if output_format == "json":
        write_json([{k: r[k] for k in fields} for r in records], sys.stdout)
    elif output_format in ("csv", "tsv"):
        write_csv(records, sys.stdout, fields, delimiter="," if output_format == "csv" else "\t")
    else:
        columns = columns or {f: f for f in fields}
        cells = [[printable(_cell(f, record[f])) for f in columns] for record in records]
        widths = [max([len(heading), *(len(row[i]) for row in cells)]) for i, heading in enumerate(columns.values())]
        fixed = sum(w for w, f in zip(widths, columns) if f != "path") + 2 * (len(columns) - 1)
        room = max(MIN_PATH_WIDTH, console.width - fixed - 1)
        table = Table(*columns.values(), box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                      collapse_padding=True)
        for column in table.columns:  # never wrapped: a path is shortened to fit instead (shortened_path)
            column.no_wrap, column.overflow = True, "ellipsis"
        for row in cells:
            table.add_row(*(Text(shortened_path(cell, room) if f == "path" else cell) for f, cell in zip(columns, row)))
        console.print(table)
        console.print(counted(len(records), "row"))


MIN_PATH_WIDTH = 24  # below this a path column shows too little of the name to tell files apart


def _cell(field: str, value) -> str:
    if field in ("start_s", "end_s"):
        return short_timecode(value)
    if field == "similarity":
        return f"{value:.3f}"  # near neighbours differ in the third decimal
    if isinstance(value, float):
        return f"{value:.2f}"
    return str(value)  # shown as Text, not markup: a path with [brackets] prints as it is


def short_timecode(seconds: float) -> str:
    """H:MM:SS.s, the one form of a time on the terminal, in `query` and `show` alike (CSV and
    JSON keep HH:MM:SS.mmm)."""
    tenths = int(round(max(0.0, seconds) * 10))
    hours, rest = divmod(tenths, 36_000)
    minutes, rest = divmod(rest, 600)
    return f"{hours}:{minutes:02d}:{rest // 10:02d}.{rest % 10}"


def render_timeline(console: Console, timeline) -> None:
    """`tagger show`: the video's metadata, a bar per label across its duration, its segments.

    `timeline` is a `tagger.records.VideoTimeline`.
    """
    video, segments = timeline.video, timeline.segments
    duration = video.duration or 0.0
    info = Table(title=Text(printable(video.path)), show_header=False)
    info.add_row("status", Text(printable(video.status + (f": {video.error}" if video.error else ""))))
    if duration:
        info.add_row("duration", f"{short_timecode(duration)} ({duration:.2f} s)")
        info.add_row("video", f"{video.width}x{video.height} at {video.fps:.3f} fps, {video.frames} frames, "
                              f"decoded by {video.decoder}")
    info.add_row("model", Text(str(video.model)))
    if getattr(video, "settings", None):  # absent in a schema-1 database read without migrating
        info.add_row("settings", Text(readable_settings(video.settings)))
    info.add_row("windows", ", ".join(f"{count} {stream}" for stream, count in sorted(timeline.windows.items()))
                 or "none stored")
    console.print(info)
    if not duration:
        return
    width = max(20, min(100, console.width - 40))  # characters across the duration; room for label and total
    bars = Table("label", f"0 … {short_timecode(duration)}", "tagged", show_lines=False)
    for label in sorted({s["label"] for s in segments}):
        cells = [" "] * width
        total = 0.0
        for seg in (s for s in segments if s["label"] == label):
            total += seg["duration_s"]
            first = int(seg["start_s"] / duration * width)
            last = max(first, min(width - 1, int(seg["end_s"] / duration * width - 1e-9)))
            for i in range(first, last + 1):
                cells[i] = "█"
        bars.add_row(Text(label), Text("".join(cells), style="green"), f"{total:.1f} s")
    console.print(bars if segments else "no segments")
    table = Table("label", "start", "end", "score", "max", "source")
    for seg in segments:
        table.add_row(Text(seg["label"]), short_timecode(seg["start_s"]), short_timecode(seg["end_s"]),
                      f"{seg['score']:.2f}", f"{seg['max_score']:.2f}", seg["source"])
    if segments:
        console.print(table)


def readable_settings(stored: str) -> str:
    """A video's stored tagging settings (JSON) as one short line: "hop 4 s, streams both; threshold
    the model's, smooth 1, max gap 1, min duration 0 s"."""
    try:
        parsed = json.loads(stored)
        windows, rules = parsed["windows"], parsed["segments"]
        hop = "one window" if windows.get("hop") is None else f"{windows['hop']:g} s"
        threshold = "the model's" if rules.get("threshold") is None else f"{rules['threshold']:g}"
        return (f"hop {hop}, streams {windows.get('streams')}; threshold {threshold}, smooth {rules.get('smooth')}, "
                f"max gap {rules.get('max_gap')}, min duration {rules.get('min_duration'):g} s")
    except (ValueError, KeyError, TypeError, AttributeError):
        return stored


SCAN_COUNTS = ("found", "tagged", "skipped", "failed")


def render_scans(console: Console, scans, db: str) -> None:
    """`tagger show` with no video: the last scans (`tagger.records.ScanRecord`), how each ended,
    and for each one its database stopped, the error, one line each."""
    if not scans:
        console.print(Text(printable(f"no scans recorded in {db}: run `tagger scan` first")))
        return
    title = f"the last {len(scans)} scans of {db}" if len(scans) > 1 else f"the scan of {db}"
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                  title=Text(printable(title)), title_justify="left")
    for heading in ("scan", "started", "status", *SCAN_COUNTS):
        table.add_column(heading, justify="left" if heading in ("started", "status") else "right")
    for scan in scans:
        started = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(scan.started_at))
        table.add_row(str(scan.scan_id), started, scan.status, *(str(scan.counts.get(k, "-")) for k in SCAN_COUNTS))
    console.print(table)
    for scan in scans:
        if scan.error:
            console.print(Text(printable(f"scan {scan.scan_id} stopped: {scan.error}")))
