"""The `tagger` command line: thin Typer commands that call the library and render with Rich.

One error boundary (`_boundary`) turns every TaggerError into `Error: ...` on one line and its
exit code; `--debug`, anywhere on the command line, shows the traceback as well.
"""

from __future__ import annotations

import functools
import json
import logging
import signal
import traceback
from typing import Annotated, Optional

import typer
from rich.console import Console
from typer.core import TyperGroup

from tagger import errors
from tagger.config import (
    ScanSettings,
    resolve_audio_model,
    resolve_db,
    resolve_model,
)
from tagger.discover import DiscoveryRules
from tagger.export import printable, undecodable_escaped
from tagger.segments import SegmentRules


_ClickUsageError = typer.BadParameter.__mro__[1]  # click's UsageError (typer 0.29 vendors click)


class _OneLineUsageError(_ClickUsageError):
    """Click's usage errors (bad flag, bad value) as one `Error: ...` line, like every other error."""

    def show(self, file=None) -> None:
        hint = f" (see {self.ctx.command_path} --help)" if self.ctx is not None else ""
        typer.echo(f"Error: {self.format_message()}{hint}", file=file, err=file is None)


def _one_line(exc):
    if isinstance(exc, _OneLineUsageError) or type(exc).__name__ == "NoArgsIsHelpError":
        return exc  # NoArgsIsHelpError: a bare `tagger` shows the help, as asked
    return _OneLineUsageError(exc.format_message(), exc.ctx)


class _TaggerGroup(TyperGroup):
    """Accepts `--debug` anywhere before `--` (errors tell users to add it, wherever they are), and
    reports usage errors on one line with no usage block above them."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:
        end = args.index("--") if "--" in args else len(args)
        if "--debug" in args[:end]:
            args = ["--debug", *(a for a in args[:end] if a != "--debug"), *args[end:]]
        try:
            return super().parse_args(ctx, args)
        except _ClickUsageError as exc:
            raise _one_line(exc) from exc

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except _ClickUsageError as exc:
            raise _one_line(exc) from exc


app = typer.Typer(
    cls=_TaggerGroup,
    help="Tag videos by content: scan folders, store per-segment tags, query them back.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: "[env: TAGGER_DB; ...]" is text, not Rich markup that vanishes
)
out = Console(soft_wrap=True)
err = Console(stderr=True, soft_wrap=True)
_state = {"debug": False}

DbOption = Annotated[Optional[str], typer.Option("--db", help="SQLite file or SQLAlchemy URL [env: TAGGER_DB; default: user data dir]")]
ModelOption = Annotated[Optional[str], typer.Option("--model", help="Exported ONNX model [env: TAGGER_MODEL; default: shipped model]")]
DeviceOption = Annotated[str, typer.Option("--device", help="auto (CUDA when usable, else CPU), cpu or cuda")]
LabelOption = Annotated[Optional[list[str]], typer.Option("--label", "-l", help="Only these labels (repeatable)")]
MinScoreOption = Annotated[Optional[float], typer.Option("--min-score", help="Only segments scoring at least this")]
AudioModelOption = Annotated[Optional[str], typer.Option("--audio-model", help="Exported audio ONNX model [env: TAGGER_AUDIO_MODEL; default: the one the vision model names, or the shipped one with the shipped model]")]
PathOption = Annotated[Optional[str], typer.Option("--path", help="Only videos whose path matches this glob or contains this text")]


class _WarningLines(logging.Handler):
    """The library's warnings (what discovery skipped, and why) as `warning: ...` lines on stderr."""

    def emit(self, record: logging.LogRecord) -> None:
        err.print(f"warning: {printable(record.getMessage())}", markup=False, highlight=False)


_library_log = logging.getLogger("tagger")
if not any(isinstance(h, _WarningLines) for h in _library_log.handlers):
    _library_log.addHandler(_WarningLines(logging.WARNING))


def _boundary(command):
    """Run a command; map errors to one line on stderr and the documented exit codes."""

    @functools.wraps(command)
    def wrapper(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except errors.TaggerError as exc:
            if _state["debug"]:
                traceback.print_exc()
            err.print(f"Error: {printable(str(exc))}", markup=False, highlight=False)  # one line, even for odd names
            raise typer.Exit(exc.exit_code) from None
        except KeyboardInterrupt:
            err.print("Interrupted: finished videos are stored; run the same scan again to resume.")
            raise typer.Exit(errors.EXIT_INTERRUPTED) from None
        except Exception as exc:  # noqa: BLE001 - the last line of defence
            if _state["debug"]:
                traceback.print_exc()
            err.print(f"Error: unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)",
                      markup=False, highlight=False)
            raise typer.Exit(errors.EXIT_UNEXPECTED) from None

    return wrapper


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks for errors (accepted anywhere on the command line)")] = False) -> None:
    """Tag videos by content: scan folders, store per-segment tags, query them back.

    Example: tagger scan ~/videos && tagger query --label PlayingGuitar
    """
    _state["debug"] = debug


@app.command()
@_boundary
def scan(
    paths: Annotated[list[str], typer.Argument(help="Folders to walk and/or video files")],
    db: DbOption = None,
    model: ModelOption = None,
    device: DeviceOption = ScanSettings.device,
    hop: Annotated[Optional[float], typer.Option(help="Seconds between window starts [default: one window]")] = None,
    threshold: Annotated[Optional[float], typer.Option(help="Score threshold (0-1) for every label [default: the model's]")] = None,
    smooth: Annotated[int, typer.Option(help="Moving-average width over windows (1 = off)")] = SegmentRules.smooth,
    min_duration: Annotated[float, typer.Option(help="Drop segments shorter than this many seconds")] = SegmentRules.min_duration,
    max_gap: Annotated[int, typer.Option(help="Windows below threshold bridged inside a segment (1: one dip does not split a performance)")] = SegmentRules.max_gap,
    include: Annotated[Optional[list[str]], typer.Option(help="Only paths matching this glob (repeatable)")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(help="Skip paths matching this glob (repeatable)")] = None,
    hidden: Annotated[bool, typer.Option(help="Also scan hidden files and folders")] = False,
    follow_symlinks: Annotated[bool, typer.Option(help="Follow symbolic links (cycles are detected)")] = False,
    force: Annotated[bool, typer.Option(help="Re-tag videos even when unchanged")] = False,
    workers: Annotated[Optional[int], typer.Option(help="Decoder processes (1-64), or Ray actors with --executor ray [default: one per core, or per CPU of the cluster]")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds a decoder may make no progress before it is killed")] = ScanSettings.timeout,
    batch_size: Annotated[int, typer.Option(help="Windows per inference batch; 0 = auto (about 16 frames on CPU, 64 on CUDA)")] = ScanSettings.batch_size,
    decoders: Annotated[str, typer.Option(help="Decoders to try in order: pyav, decord, or module:FrameSourceClass")] = ",".join(ScanSettings.decoders),
    streams: Annotated[str, typer.Option(help="both: vision and sound (when a sound model goes with the vision model); video: vision only")] = ScanSettings.streams,
    audio_model: AudioModelOption = None,
    executor: Annotated[str, typer.Option(help="local (processes on this machine) or ray (a Ray cluster)")] = ScanSettings.executor,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", help="With --executor ray: HOST:PORT or auto [env: RAY_ADDRESS; default: a new local Ray]")] = None,
    lease: Annotated[float, typer.Option(help="Seconds the claims of a scan that died keep its videos from other scans")] = ScanSettings.lease,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or table; errors only")] = False,
    json_summary: Annotated[bool, typer.Option("--json", help="Print a JSON summary at the end")] = False,
) -> None:
    """Find videos under PATHS, tag them window by window, store segments in the database.

    Example: tagger scan ~/videos --db tags.db
    """
    from tagger.model import load_scan_models
    from tagger.pipeline import scan as run_scan
    from tagger.progress import RichProgress, render_summary
    from tagger.store import shown_target

    settings = ScanSettings(
        db=resolve_db(db), model=resolve_model(model), device=device, hop=hop, threshold=threshold,
        segment_rules=SegmentRules(smooth=smooth, min_duration=min_duration, max_gap=max_gap),
        discovery=DiscoveryRules(include=tuple(include or ()), exclude=tuple(exclude or ()), hidden=hidden,
                                 follow_symlinks=follow_symlinks),
        batch_size=batch_size, workers=workers, timeout=timeout, force=force,
        decoders=tuple(name.strip() for name in decoders.split(",") if name.strip()),
        streams=streams, audio_model=resolve_audio_model(audio_model), executor=executor, ray_address=ray_address,
        lease=lease,
    )
    models = load_scan_models(settings)
    show = not quiet and not json_summary
    with RichProgress(err, enabled=show) as progress:
        summary = run_scan(paths, settings, progress, models)
    if json_summary:
        report = {**summary.as_dict(), "audio_note": models.audio_note}
        report["failed"] = [{k: undecodable_escaped(v) for k, v in f.items()} for f in report["failed"]]
        out.print_json(json.dumps(report))
    elif not quiet:
        render_summary(out, summary, shown_target(settings.db), models.audio_note)
    for failure in summary.failed if quiet else ():
        err.print(f"failed: {printable(failure.path)}: {printable(failure.reason)}", markup=False, highlight=False)
    if summary.failed:
        raise typer.Exit(errors.EXIT_VIDEOS_FAILED)


@app.command()
@_boundary
def models(
    model: ModelOption = None,
    audio_model: AudioModelOption = None,
    device: DeviceOption = ScanSettings.device,
) -> None:
    """Show the models a scan would use: labels, thresholds, window, providers, what they can tag.

    Example: tagger models --model exports/default.onnx
    """
    from tagger.model import load_scan_models
    from tagger.progress import render_coverage, render_model

    chosen = load_scan_models(ScanSettings(db="", model=resolve_model(model), device=device,
                                           audio_model=resolve_audio_model(audio_model)))
    for loaded in (chosen.video, chosen.audio) if chosen.audio else (chosen.video,):
        render_model(out, loaded)
    render_coverage(out, chosen.video, chosen.audio, chosen.audio_note)


MinDurationOption = Annotated[Optional[float], typer.Option("--min-duration", help="Only segments at least this many seconds long")]
QueryModelOption = Annotated[Optional[str], typer.Option("--model", help="Only tags from this model (name or sha256 prefix)")]
SourceOption = Annotated[Optional[str], typer.Option("--source", help="Only segments with this evidence: video, audio or both")]
ThresholdOption = Annotated[Optional[float], typer.Option("--threshold", help="Re-derive segments from stored window scores at this threshold (0-1), exactly as `scan --threshold` would")]
SmoothOption = Annotated[int, typer.Option("--smooth", help="With --threshold: moving-average width over windows")]
MaxGapOption = Annotated[int, typer.Option("--max-gap", help="With --threshold: windows below threshold bridged inside a segment")]
FormatOption = Annotated[Optional[str], typer.Option("--format", help="table, json, csv or tsv [default: table on a terminal, else csv]")]

SEGMENT_COLUMNS = {"path": "path", "label": "label", "start_s": "start", "end_s": "end", "score": "score",
                   "source": "source"}  # fits 80 columns with room for a file name


@app.command()
@_boundary
def query(
    label: LabelOption = None,
    min_score: MinScoreOption = None,
    path: PathOption = None,
    min_duration: MinDurationOption = None,
    model: QueryModelOption = None,
    source: SourceOption = None,
    limit: Annotated[Optional[int], typer.Option(help="At most this many rows")] = None,
    sort: Annotated[str, typer.Option(help="path, score or time")] = "path",  # SegmentQuery.order; importing it costs 0.3 s of SQLAlchemy
    all_labels: Annotated[bool, typer.Option("--all", help="List every segment (with no --label, the default is a per-label summary)")] = False,
    threshold: ThresholdOption = None,
    smooth: SmoothOption = SegmentRules.smooth,
    max_gap: MaxGapOption = SegmentRules.max_gap,
    output_format: FormatOption = None,
    db: DbOption = None,
) -> None:
    """List stored segments matching the filters; with no --label, a per-label summary.

    Example: tagger query --label PlayingSitar --min-score 0.8 --format csv
    """
    from tagger.export import SEGMENT_FIELDS
    from tagger.queries import SegmentQuery
    from tagger.reading import label_summary, segment_records
    from tagger.views import chosen_format, render_records

    chosen = chosen_format(output_format)
    query = SegmentQuery(tuple(label or ()), min_score, path, None, min_duration, model, source, limit, sort)
    if not label and not all_labels and threshold is None:
        records = label_summary(resolve_db(db), query)
        render_records(out, records, ("label", "videos", "segments", "tagged_s"), chosen)
        return
    rules = SegmentRules(smooth=smooth, max_gap=max_gap)
    records = segment_records(resolve_db(db), query, threshold, rules)
    render_records(out, records, SEGMENT_FIELDS, chosen, SEGMENT_COLUMNS)


@app.command("export-csv")
@_boundary
def export_csv(
    output: Annotated[str, typer.Option("--output", "-o", help="CSV file to write, or - for standard output")] = "-",
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
    """Write stored segments as CSV, one row per segment (or per window with --windows).

    Example: tagger export-csv -o tags.csv --label PlayingGuitar
    """
    from tagger.export import SEGMENT_FIELDS, write_csv_file
    from tagger.queries import SegmentQuery
    from tagger.reading import WINDOW_FIELDS, segment_records, window_records

    query = SegmentQuery(tuple(label or ()), min_score, path, None, min_duration, model, source)
    if windows:
        count = write_csv_file(window_records(resolve_db(db), query), output, WINDOW_FIELDS)
    else:
        records = segment_records(resolve_db(db), query, threshold, SegmentRules(smooth=smooth, max_gap=max_gap))
        count = write_csv_file(records, output, SEGMENT_FIELDS)
    if output != "-":
        err.print(f"wrote {count} rows to {output}", markup=False, highlight=False)


@app.command()
@_boundary
def show(
    video: Annotated[str, typer.Argument(help="A scanned video's path")],
    db: DbOption = None,
) -> None:
    """Show one video's timeline per label, its metadata and its segments.

    Example: tagger show ~/videos/concert.mp4
    """
    from tagger.reading import video_timeline
    from tagger.views import render_timeline

    render_timeline(out, video_timeline(resolve_db(db), video))


@app.command()
@_boundary
def failed(db: DbOption = None) -> None:
    """List videos whose last scan failed, with the reason (path TAB reason; tabs, line breaks and
    undecodable bytes inside either are escaped, so each failure is exactly one line).

    Example: tagger failed --db tags.db
    """
    from tagger.reading import failed_videos

    target = resolve_db(db)
    found = failed_videos(target)
    for video in found:
        typer.echo(f"{printable(video.path)}\t{printable(video.reason)}")
    if not found:
        err.print(f"no failed videos in {target}", markup=False, highlight=False)


@app.command("export")
@_boundary
def export_tags(
    output_format: Annotated[str, typer.Option("--format", "-f", help="csv, json, vtt, srt (players), edl or otio (editors)")] = "csv",
    output: Annotated[Optional[str], typer.Option("--output", "-o", help="csv, json: a file, or - for standard output; vtt, srt, edl, otio: a folder")] = None,
    sidecar: Annotated[bool, typer.Option("--sidecar", help="vtt, srt, edl, otio: write each video's file beside it (<stem>.tagger.vtt)")] = False,
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
    """Write stored segments as CSV or JSON, subtitles for players (vtt, srt) or markers for editors (edl, otio).

    Example: tagger export --format vtt --sidecar --label PlayingGuitar
    """
    from tagger.export import ExportTarget
    from tagger.queries import SegmentQuery
    from tagger.reading import segment_records

    target = ExportTarget.check(output_format, output, sidecar)
    query = SegmentQuery(tuple(label or ()), min_score, path, None, min_duration, model, source)
    records = segment_records(resolve_db(db), query, threshold, SegmentRules(smooth=smooth, max_gap=max_gap))
    done = target.write(records)
    if done:
        err.print(done, markup=False, highlight=False)


@app.command()
@_boundary
def report(
    output: Annotated[str, typer.Option("--output", "-o", help="Folder for index.html and thumbs/ (created when missing)")] = "tagger-report",
    thumbnails: Annotated[int, typer.Option("--thumbnails", help="Thumbnails per video at most: the best segments' middle frames")] = 3,
    no_thumbnails: Annotated[bool, typer.Option("--no-thumbnails", help="Decode nothing: a page without thumbnails")] = False,
    db: DbOption = None,
) -> None:
    """Write a static HTML report: summary, timelines per label, thumbnails, filters; opens offline.

    Example: tagger report -o report && xdg-open report/index.html
    """
    from pathlib import Path

    from tagger.report import ReportSettings, write_report

    if thumbnails < 0:
        raise errors.UsageError(f"--thumbnails must be 0 or more, got {thumbnails}")
    done = write_report(resolve_db(db), ReportSettings(Path(output), 0 if no_thumbnails else thumbnails))
    err.print(f"wrote {done.page}: {done.videos} videos, {done.failed} failed, {done.segments} segments, "
              f"{done.thumbnails} thumbnails in {done.seconds:.1f} s", markup=False, highlight=False)


def _terminated(signum, frame) -> None:
    raise KeyboardInterrupt  # SIGTERM (kill, systemd, a batch scheduler) stops a scan as Ctrl-C does


def main() -> None:
    """Console-script entry point."""
    signal.signal(signal.SIGTERM, _terminated)
    app()


if __name__ == "__main__":
    main()
