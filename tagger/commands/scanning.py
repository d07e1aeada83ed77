"""`tagger scan` and `tagger models`: tag videos, and show the models a scan would use."""

from __future__ import annotations

import json
from typing import Annotated, Optional

import typer

from tagger import errors
from tagger.cli_app import (
    AudioModelOption, DbOption, DeviceOption, HeadsOption, ModelOption, app, boundary, debugging, err, out,
)
from tagger.config import ScanSettings, resolve_audio_model, resolve_db, resolve_heads, resolve_model
from tagger.discover import DiscoveryRules
from tagger.escaping import printable, undecodable_escaped
from tagger.segments import SegmentRules


@app.command()
@boundary
def scan(
    paths: Annotated[list[str], typer.Argument(metavar="PATH...", help="Folders to walk and/or video files")],
    db: DbOption = None,
    model: ModelOption = None,
    device: DeviceOption = ScanSettings.device,
    hop: Annotated[Optional[float], typer.Option(metavar="SECONDS", help="Seconds between window starts [default: one window]")] = None,
    threshold: Annotated[Optional[float], typer.Option(metavar="SCORE", help="Score threshold (0-1) for every label [default: the model's]")] = None,
    smooth: Annotated[int, typer.Option(metavar="WINDOWS", help="Moving-average width over windows (1 = off)")] = SegmentRules.smooth,
    min_duration: Annotated[float, typer.Option(metavar="SECONDS", help="Drop segments shorter than this many seconds")] = SegmentRules.min_duration,
    max_gap: Annotated[int, typer.Option(metavar="WINDOWS", help="Windows below threshold bridged inside a segment (1: one dip does not split a performance)")] = SegmentRules.max_gap,
    include: Annotated[Optional[list[str]], typer.Option(metavar="GLOB", help="Only paths matching this glob (repeatable)")] = None,
    exclude: Annotated[Optional[list[str]], typer.Option(metavar="GLOB", help="Skip paths matching this glob (repeatable)")] = None,
    hidden: Annotated[bool, typer.Option(help="Also scan hidden files and folders")] = False,
    follow_symlinks: Annotated[bool, typer.Option(help="Follow symbolic links (cycles are detected)")] = False,
    force: Annotated[bool, typer.Option(help="Re-tag videos even when unchanged")] = False,
    workers: Annotated[Optional[int], typer.Option(metavar="N", help="Decoder processes (1-64), or Ray actors with --executor ray [default: one per core, or per CPU of the cluster]")] = None,
    timeout: Annotated[float, typer.Option(metavar="SECONDS", help="Seconds a decoder may make no progress before it is killed")] = ScanSettings.timeout,
    batch_size: Annotated[int, typer.Option(metavar="N", help="Windows per inference batch; 0 = auto (about 16 frames on CPU, measured on CUDA)")] = ScanSettings.batch_size,
    decoders: Annotated[str, typer.Option(metavar="NAMES", help="Decoders to try in order: pyav, decord, or module:FrameSourceClass")] = ",".join(ScanSettings.decoders),
    streams: Annotated[str, typer.Option(metavar="STREAMS", help="both: vision and sound (when a sound model goes with the vision model); video: vision only")] = ScanSettings.streams,
    audio_model: AudioModelOption = None,
    executor: Annotated[str, typer.Option(metavar="EXECUTOR", help="local (processes on this machine) or ray (a Ray cluster)")] = ScanSettings.executor,
    ray_address: Annotated[Optional[str], typer.Option("--ray-address", metavar="HOST:PORT", help="With --executor ray: HOST:PORT or auto [env: RAY_ADDRESS; default: a new local Ray]")] = None,
    lease: Annotated[float, typer.Option(metavar="SECONDS", help="Seconds the claims of a scan that died keep its videos from other scans")] = ScanSettings.lease,
    features: Annotated[bool, typer.Option("--features/--no-features", help="Store what the model saw in each window, so labels taught later (tagger learn) and searches (tagger similar) need no decoding")] = ScanSettings.features,
    heads: HeadsOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or table; errors only")] = False,
    json_summary: Annotated[bool, typer.Option("--json", help="Print a JSON summary at the end")] = False,
) -> None:
    """Find and tag the videos under PATHs; store their segments.

    Each video is cut into time windows, each window scored by the model, and the windows above
    threshold merged into segments per label, stored in the database.

    Example: tagger scan ~/videos --db tags.db
    """
    from tagger.model import load_scan_models
    from tagger.pipeline import ScanStopped, scan as run_scan
    from tagger.progress import RichProgress, render_summary
    from tagger.database import shown_target

    settings = ScanSettings(
        db=resolve_db(db), model=resolve_model(model), device=device, hop=hop,
        segment_rules=SegmentRules(threshold=threshold, smooth=smooth, min_duration=min_duration, max_gap=max_gap),
        discovery=DiscoveryRules(include=tuple(include or ()), exclude=tuple(exclude or ()), hidden=hidden,
                                 follow_symlinks=follow_symlinks),
        batch_size=batch_size, workers=workers, timeout=timeout, force=force,
        decoders=tuple(name.strip() for name in decoders.split(",") if name.strip()),
        streams=streams, audio_model=resolve_audio_model(audio_model), executor=executor, ray_address=ray_address,
        lease=lease, features=features, heads=heads,
    )
    models = load_scan_models(settings)
    show = not quiet and not json_summary
    try:
        with RichProgress(err, enabled=show) as progress:
            summary = run_scan(paths, settings, progress, models)
    except ScanStopped as stopped:  # exit 5: what was done, and how the scan is recorded, then the error
        if json_summary:
            _print_json(stopped.summary, models.audio_note)
        raise
    if json_summary:
        _print_json(summary, models.audio_note)
    elif not quiet:
        render_summary(out, summary, shown_target(settings.db), models.audio_note, details=debugging())
    for failure in summary.failed if quiet else ():
        detail = f" [{failure.detail}]" if debugging() and failure.detail else ""
        err.print(f"failed: {printable(failure.path)}: {printable(failure.reason + detail)}", markup=False,
                  highlight=False)
    if summary.failed:
        raise typer.Exit(errors.EXIT_VIDEOS_FAILED)


def _print_json(summary, audio_note: str) -> None:
    """`scan --json`: the summary (a ScanSummary) on standard output, odd bytes in names escaped."""
    report = {**summary.as_dict(), "audio_note": audio_note}
    shown = ("path", "reason", "detail") if debugging() else ("path", "reason")  # the decoders' words: --debug
    report["failed"] = [{k: undecodable_escaped(v) for k, v in f.items() if k in shown and (v or k != "detail")}
                        for f in report["failed"]]
    out.print_json(json.dumps(report))


@app.command()
@boundary
def models(
    model: ModelOption = None,
    audio_model: AudioModelOption = None,
    device: DeviceOption = ScanSettings.device,
    heads: HeadsOption = None,
) -> None:
    """Show the models a scan would use and what they can tag.

    Labels, thresholds, window, crops, providers, which labels come from vision, sound or both, and
    the add-on heads it would apply (labels taught with tagger learn, how they did held out).

    Example: tagger models --model exports/default.onnx
    """
    from tagger.feature_views import render_addons
    from tagger.model import load_scan_models
    from tagger.progress import render_coverage, render_model
    from tagger.scoring import AddOns

    chosen = load_scan_models(ScanSettings(db="", model=resolve_model(model), device=device,
                                           audio_model=resolve_audio_model(audio_model)))
    folder = resolve_heads(heads)
    taught = AddOns.load(folder, chosen.video.contract).labels
    for loaded in (chosen.video, chosen.audio) if chosen.audio else (chosen.video,):
        render_model(out, loaded, taught)
    render_coverage(out, chosen.video, chosen.audio, chosen.audio_note, taught)
    render_addons(out, folder, chosen.video.contract)
