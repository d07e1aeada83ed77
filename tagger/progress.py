"""Rich rendering for scans: a live progress bar, the final summary table, the model card.

Progress goes to stderr, so `--json` and tables on stdout stay clean for pipes.
"""

from __future__ import annotations

import os
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from tagger.export import printable
from tagger.pipeline import ScanProgress, ScanSummary


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


class RichProgress(ScanProgress):
    """Overall bar: videos done of total, video-hours done, rate (video-seconds per second), ETA."""

    def __init__(self, console: Console, enabled: bool = True):
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[hours]} · {task.fields[rate]}"), TimeRemainingColumn(),
            TextColumn("{task.fields[current]}"), console=console, transient=True, disable=not enabled,
        )
        self.task = None
        self.video_seconds = 0.0
        self.began = time.monotonic()

    def __enter__(self) -> RichProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start(self, total: int, skipped: int) -> None:
        self.began = time.monotonic()
        self.task = self.progress.add_task("scanning", total=total, hours=_hours(0), rate="", current="")

    def video_started(self, path: str) -> None:
        self.progress.update(self.task, current=escape(os.path.basename(path)[-40:]))

    def video_finished(self, path: str, seconds: float, ok: bool) -> None:
        self.video_seconds += seconds
        rate = self.video_seconds / max(1e-6, time.monotonic() - self.began)
        self.progress.update(self.task, advance=1, hours=_hours(self.video_seconds), rate=f"{rate:.1f}x real time")


def render_summary(console: Console, summary: ScanSummary, db: str, audio_note: str | None = None) -> None:
    """The table printed when a scan ends: tagged, skipped, failed (with reasons), the models used.

    `audio_note` says which sound model was used and why, or why none (`ScanModels.audio_note`).
    """
    table = Table(title=Text(printable(f"scan {summary.scan_id} → {db}")), show_header=False)
    table.add_row("videos found", str(summary.found))
    table.add_row("tagged", str(summary.tagged))
    table.add_row("skipped (unchanged)", str(summary.skipped))
    table.add_row("failed", str(len(summary.failed)))
    table.add_row("segments stored", str(summary.segments))
    rate = summary.video_seconds / max(summary.wall_seconds, 1e-6)
    table.add_row("video time tagged", f"{summary.video_seconds:.1f} s in {summary.wall_seconds:.1f} s ({rate:.1f}x real time)")
    table.add_row("model", Text(f"{os.path.basename(summary.model)} on {', '.join(p.removesuffix('ExecutionProvider') for p in summary.providers)}"
                                f" ({os.path.dirname(summary.model)})"))
    table.add_row("audio model", Text(audio_note or (summary.audio_model or "none (vision only)")))
    console.print(table)
    for path, reason in summary.failed:
        console.print(Text.assemble(("failed", "red"), f" {printable(path)}: {printable(reason)}"))


def render_model(console: Console, model) -> None:
    """One model: identity, input geometry, providers, taggable labels with their thresholds."""
    c = model.contract
    table = Table(title=Text(str(model.path)), show_header=False)
    table.add_row("name / arch / version", f"{model.name} / {c.arch} / {c.version}")
    table.add_row("sha256", model.sha256)
    table.add_row("kind / output", f"{c.kind} / {c.output}")
    if c.kind == "video":
        table.add_row("window", f"{c.clip_len} frames every {c.frame_interval:.3f} s = {c.window_seconds:.2f} s, "
                      f"short side {c.resize} → crop {c.size[0]}x{c.size[1]}")
    else:
        table.add_row("patch", f"{c.patch_seconds:.3f} s of mono sound at {c.sample_rate} Hz")
    table.add_row("providers", ", ".join(model.providers))
    table.add_row("background label", c.background or "(none)")
    console.print(table)
    labels = Table("label", "threshold")
    for label in c.tag_labels:
        labels.add_row(Text(label), f"{c.threshold_for(label):.2f}")
    console.print(labels)


def render_coverage(console: Console, video, audio, audio_note: str = "") -> None:
    """Every label this pair of models can tag, and from what evidence."""
    seen = set(video.contract.tag_labels)
    heard = set(audio.contract.tag_labels) if audio else set()
    rows = Table("label", "can be tagged from", title=Text(f"sound model: {audio_note}") if audio_note else None)
    for label in sorted(seen | heard):
        source = ("vision and sound" if label in seen and label in heard else "vision" if label in seen
                  else "sound alone (stricter threshold)")
        rows.add_row(Text(label), source)
    console.print(rows)
