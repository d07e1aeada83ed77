"""The read side's commands: query, export-csv, show, failed, export, report."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tagger import errors
from tagger.cli_app import (
    DbOption, LabelOption, MinScoreOption, PathOption, app, boundary, err, out,
)
from tagger.config import resolve_db
from tagger.escaping import counted, printable
from tagger.segments import SegmentRules


MinDurationOption = Annotated[Optional[float], typer.Option("--min-duration", metavar="SECONDS", help="Only segments at least this many seconds long")]
QueryModelOption = Annotated[Optional[str], typer.Option("--model", metavar="MODEL", help="Only tags from this model (name or sha256 prefix)")]
SourceOption = Annotated[Optional[str], typer.Option("--source", metavar="EVIDENCE", help="Only segments with this evidence: video, audio or both")]
ThresholdOption = Annotated[Optional[float], typer.Option("--threshold", metavar="SCORE", help="Re-derive segments from stored window scores at this threshold (0-1), exactly as `scan --threshold` would")]
SmoothOption = Annotated[int, typer.Option("--smooth", metavar="WINDOWS", help="With --threshold: moving-average width over windows")]
MaxGapOption = Annotated[int, typer.Option("--max-gap", metavar="WINDOWS", help="With --threshold: windows below threshold bridged inside a segment")]
FormatOption = Annotated[Optional[str], typer.Option("--format", metavar="FORMAT", help="table, json, csv or tsv [default: table on a terminal, else csv]")]

def _rederiving(threshold: float | None, smooth: int, max_gap: int) -> SegmentRules | None:
    """The rules to re-derive stored segments with: only with --threshold (--smooth and --max-gap
    are checked either way)."""
    rules = SegmentRules(threshold=threshold, smooth=smooth, max_gap=max_gap)
    return rules if threshold is not None else None


SEGMENT_COLUMNS = {"path": "path", "label": "label", "start_s": "start", "end_s": "end", "score": "score",
                   "source": "source"}  # fits 80 columns with room for a file name


@app.command()
@boundary
def query(
    label: LabelOption = None,
    min_score: MinScoreOption = None,
    path: PathOption = None,
    min_duration: MinDurationOption = None,
    model: QueryModelOption = None,
    source: SourceOption = None,
    limit: Annotated[Optional[int], typer.Option(metavar="N", help="At most this many rows")] = None,
    sort: Annotated[str, typer.Option(metavar="ORDER", help="path, score or time")] = "path",  # SegmentQuery.order; importing it costs 0.3 s of SQLAlchemy
    all_labels: Annotated[bool, typer.Option("--all", help="List every segment (with no --label, the default is a per-label summary)")] = False,
    threshold: ThresholdOption = None,
    smooth: SmoothOption = SegmentRules.smooth,
    max_gap: MaxGapOption = SegmentRules.max_gap,
    output_format: FormatOption = None,
    db: DbOption = None,
) -> None:
    """List stored segments, or a per-label summary without --label.

    The segments matching the filters (--all: every one); with no --label, videos, segments and
    tagged time per label.

    Example: tagger query --label PlayingSitar --min-score 0.8 --format csv
    """
    from tagger.listing import chosen_format, render_records
    from tagger.records import SEGMENT_FIELDS, label_summary, segment_records
    from tagger.selects import SegmentQuery

    chosen = chosen_format(output_format)
    query = SegmentQuery(tuple(label or ()), min_score, path, None, min_duration, model, source, limit, sort)
    if not label and not all_labels and threshold is None:
        records = label_summary(resolve_db(db), query)
        render_records(out, records, ("label", "videos", "segments", "tagged_s"), chosen)
        return
    records = segment_records(resolve_db(db), query, _rederiving(threshold, smooth, max_gap))
    render_records(out, records, SEGMENT_FIELDS, chosen, SEGMENT_COLUMNS)


@app.command("export-csv")
@boundary
def export_csv(
    output: Annotated[str, typer.Option("--output", "-o", metavar="FILE", help="CSV file to write, or - for standard output")] = "-",
    label: LabelOption = None,
    min_score: MinScoreOption = None,
    path: PathOption = None,
    min_duration: MinDurationOption = None,
    model: QueryModelOption = None,
    source: SourceOption = None,
    threshold: ThresholdOption = None,
    smooth: SmoothOption = SegmentRules.smooth,
    max_gap: MaxGapOption = SegmentRules.max_gap,
    windows: Annotated[bool, typer.Option("--windows", help="Export raw per-window scores (one row per window and label)")] = False,
    db: DbOption = None,
) -> None:
    """Write stored segments (or windows) as CSV.

    One row per segment, or per window and label with --windows.

    Example: tagger export-csv -o tags.csv --label PlayingGuitar
    """
    from tagger.records import SEGMENT_FIELDS, WINDOW_FIELDS, segment_records, window_records
    from tagger.selects import SegmentQuery
    from tagger.writers import write_csv_file

    query = SegmentQuery(tuple(label or ()), min_score, path, None, min_duration, model, source)
    if windows:
        count = write_csv_file(window_records(resolve_db(db), query), output, WINDOW_FIELDS)
    else:
        records = segment_records(resolve_db(db), query, _rederiving(threshold, smooth, max_gap))
        count = write_csv_file(records, output, SEGMENT_FIELDS)
    if output != "-":
        err.print(f"wrote {counted(count, 'row')} to {output}", markup=False, highlight=False)


@app.command()
@boundary
def show(
    video: Annotated[Optional[str], typer.Argument(metavar="VIDEO", help="A scanned video's path [default: the last scans]")] = None,
    db: DbOption = None,
) -> None:
    """Show a video's timelines and segments, or the last scans.

    With VIDEO: its metadata, a timeline per label and its segments. Without: the database's last
    10 scans, how each ended and, for one its database stopped, why.

    Example: tagger show ~/videos/concert.mp4
    """
    from tagger.database import shown_target
    from tagger.listing import render_scans, render_timeline
    from tagger.records import last_scans, video_timeline

    target = resolve_db(db)
    if video is None:
        render_scans(out, last_scans(target), shown_target(target))
        return
    render_timeline(out, video_timeline(target, video))


@app.command()
@boundary
def failed(db: DbOption = None) -> None:
    """List the videos whose last scan failed, with the reason.

    One line each, path TAB reason (tabs, line breaks and undecodable bytes inside either escaped).

    Example: tagger failed --db tags.db
    """
    from tagger.records import failed_videos

    target = resolve_db(db)
    found = failed_videos(target)
    for video in found:
        typer.echo(f"{printable(video.path)}\t{printable(video.reason)}")
    if not found:
        err.print(f"no failed videos in {target}", markup=False, highlight=False)


@app.command("export")
@boundary
def export_tags(
    output_format: Annotated[str, typer.Option("--format", "-f", metavar="FORMAT", help="csv, json, vtt, srt (players), edl or otio (editors)")] = "csv",
    output: Annotated[Optional[str], typer.Option("--output", "-o", metavar="PATH", help="csv, json: a file, or - for standard output; vtt, srt, edl, otio: a folder")] = None,
    sidecar: Annotated[bool, typer.Option("--sidecar", help="vtt, srt, edl, otio: write each video's file beside it (<stem>.tagger.<format>)")] = False,
    label: LabelOption = None,
    min_score: MinScoreOption = None,
    path: PathOption = None,
    min_duration: MinDurationOption = None,
    model: QueryModelOption = None,
    source: SourceOption = None,
    threshold: ThresholdOption = None,
    smooth: SmoothOption = SegmentRules.smooth,
    max_gap: MaxGapOption = SegmentRules.max_gap,
    db: DbOption = None,
) -> None:
    """Write segments as csv, json, vtt, srt, edl or otio.

    CSV or JSON rows, subtitles for players (vtt, srt) or markers for editors (edl, otio).

    Example: tagger export --format vtt --sidecar --label PlayingGuitar
    """
    from tagger.records import segment_records
    from tagger.selects import SegmentQuery
    from tagger.writers import ExportTarget

    target = ExportTarget.check(output_format, output, sidecar)
    query = SegmentQuery(tuple(label or ()), min_score, path, None, min_duration, model, source)
    records = segment_records(resolve_db(db), query, _rederiving(threshold, smooth, max_gap))
    done = target.write(records)
    if done:
        err.print(done, markup=False, highlight=False)


@app.command()
@boundary
def report(
    output: Annotated[str, typer.Option("--output", "-o", metavar="FOLDER", help="Folder for index.html and thumbs/ (created when missing)")] = "tagger-report",
    thumbnails: Annotated[int, typer.Option("--thumbnails", metavar="N", help="Thumbnails per video at most: the best segments' middle frames")] = 3,
    no_thumbnails: Annotated[bool, typer.Option("--no-thumbnails", help="Decode nothing: a page without thumbnails")] = False,
    db: DbOption = None,
) -> None:
    """Write a static HTML report: timelines, thumbnails, filters.

    One page with the summary, a timeline per label for every video and thumbnails of the best
    segments; it needs no server and opens offline.

    Example: tagger report -o report && xdg-open report/index.html
    """
    from pathlib import Path

    from tagger.report import ReportSettings, write_report

    if thumbnails < 0:
        raise errors.UsageError(f"--thumbnails must be 0 or more, got {thumbnails}")
    done = write_report(resolve_db(db), ReportSettings(Path(output), 0 if no_thumbnails else thumbnails))
    err.print(f"wrote {done.page} in {done.seconds:.1f} s", markup=False, highlight=False)  # two lines: 80 columns
    err.print(f"{counted(done.videos, 'video')} ({done.failed} failed), {counted(done.segments, 'segment')}, "
              f"{counted(done.thumbnails, 'thumbnail')}", markup=False, highlight=False)
