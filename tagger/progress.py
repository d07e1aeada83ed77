"""Rich rendering for scans: a live progress bar, the final summary table, the model card.

Progress goes to stderr, so `--json` and tables on stdout stay clean for pipes.
"""

from __future__ import annotations

import os
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Column, Table
from rich.text import Text

from tagger.escaping import counted, printable, shortened_path
from tagger.model import provider_names
from tagger.pipeline import ScanProgress, ScanSummary


def _hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


class RichProgress(ScanProgress):
    """Overall bar: videos done of total, video-hours done, rate (video-seconds per second), ETA."""

    def __init__(self, console: Console, enabled: bool = True):
        # Only on a terminal: elsewhere Rich draws nothing yet ends with a blank line (before any error).
        self.enabled = enabled = enabled and console.is_terminal
        # Count, hours, rate and ETA never wrap or shrink; the bar is short and the file name takes
        # what is left, cut with an ellipsis, so an 80-column terminal keeps the numbers that matter.
        fixed = dict(no_wrap=True, overflow="ignore")
        self.progress = Progress(
            TextColumn("[bold]{task.description}", table_column=Column(**fixed)),
            BarColumn(bar_width=12, table_column=Column(**fixed)),
            MofNCompleteColumn(table_column=Column(**fixed)),
            TextColumn("{task.fields[hours]} {task.fields[rate]}", table_column=Column(**fixed)),
            TimeRemainingColumn(table_column=Column(**fixed)),
            TextColumn("{task.fields[current]}", table_column=Column(no_wrap=True, overflow="ellipsis", ratio=1)),
            console=console, transient=True, disable=not enabled, expand=True,
        )
        self.task = None
        self.video_seconds = 0.0
        self.began = time.monotonic()

    def __enter__(self) -> RichProgress:
        self._terminal = _quiet_control_keys(self.progress.console) if self.enabled else None
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.progress.__exit__(*exc)
        finally:
            if self._terminal is not None:
                _restore_terminal(*self._terminal)

    def start(self, total: int, skipped: int) -> None:
        self.began = time.monotonic()
        if total:  # nothing to do (everything unchanged): no "0/0" bar; the summary says what was skipped
            self.task = self.progress.add_task("scanning", total=total, hours=_hours(0), rate="", current="")

    def video_started(self, path: str) -> None:
        if self.task is not None:
            self.progress.update(self.task, current=escape(printable(os.path.basename(path))))

    def video_passed(self, path: str) -> None:
        self.progress.update(self.task, advance=1)

    def video_finished(self, path: str, seconds: float, ok: bool) -> None:
        self.video_seconds += seconds
        rate = self.video_seconds / max(1e-6, time.monotonic() - self.began)
        if self.task is not None:
            self.progress.update(self.task, advance=1, hours=_hours(self.video_seconds), rate=f"{rate:.1f}x")


def _quiet_control_keys(console: Console):
    """Stop the terminal echoing "^C": echoed after a full-width progress line it wraps, so the
    display erased the wrong line on exit and each Ctrl-C left a copy of the bar behind.
    Returns what `_restore_terminal` needs, or None where there is no terminal to change."""
    try:
        import termios
    except ImportError:  # not a POSIX terminal
        return None
    try:
        fd = console.file.fileno()
        if not os.isatty(fd):
            return None
        saved = termios.tcgetattr(fd)
        quiet = list(saved)
        quiet[3] &= ~termios.ECHOCTL
        termios.tcsetattr(fd, termios.TCSANOW, quiet)
        return fd, saved
    except (AttributeError, OSError, ValueError, termios.error):  # no real file behind the console
        return None


def _restore_terminal(fd: int, saved) -> None:
    import termios

    try:
        termios.tcsetattr(fd, termios.TCSANOW, saved)
    except (OSError, termios.error):
        pass


def render_summary(console: Console, summary: ScanSummary, db: str, audio_note: str | None = None,
                   details: bool = False) -> None:
    """The table printed when a scan ends: tagged (here and by other scans sharing the database),
    skipped, failed (with reasons), the time, the models and executor used, what a cluster lost.

    It fits the console: a path that does not fit is shown by its file name, never cut mid-word.
    `audio_note` says which sound model was used and why, or why none (`ScanModels.audio_note`);
    `details` (--debug) adds the decoders' own words to each failure that has them.
    """
    rate = summary.video_seconds / max(summary.wall_seconds, 1e-6)
    shared = summary.tagged_elsewhere or summary.elsewhere
    rows = [
        ("videos found", str(summary.found)),
        ("tagged", str(summary.tagged)),
        ("tagged by another scan", str(summary.tagged_elsewhere)) if summary.tagged_elsewhere else None,
        ("skipped (unchanged)", str(summary.skipped)),
        ("failed", str(len(summary.failed))),
        ("left to other scans", f"{summary.elsewhere} (being tagged by another scan of this database)")
        if summary.elsewhere else None,
        ("from stored features", f"{summary.rescored} of the tagged (scored again, not decoded)")
        if summary.rescored else None,
        ("segments stored", str(summary.segments)),
        ("video time tagged", f"{summary.video_seconds:.1f} s in {summary.wall_seconds:.1f} s ({rate:.1f}x real time"
                              f"{', this scan alone' if shared else ''})"),
        ("model", None),
        ("executor", f"{summary.executor}, started in {summary.startup_seconds:.1f} s (counted in the time above)")
        if summary.executor != "local" else None,
        ("cluster", recovered(summary.recoveries)) if summary.recoveries.workers_lost else None,
        ("audio model", audio_note or (summary.audio_model or "none (vision only)")),
        ("add-on heads", ", ".join(summary.heads)) if summary.heads else None,
    ]
    rows = [row for row in rows if row is not None]
    room = console.width - max(len(name) for name, _ in rows) - 7  # the value column, inside the borders
    on = f" on {provider_names(summary.providers)}"
    folder = os.path.dirname(summary.model)
    model = f"{os.path.basename(summary.model)}{on}" + (f" ({folder})" if folder else "")
    if len(model) > room:  # the file name alone, never the folder cut in two
        model = shortened_path(os.path.basename(summary.model), max(1, room - len(on))) + on
    title = f"scan {summary.scan_id} → "
    table = Table(title=Text(printable(title + shortened_path(db, max(1, console.width - len(title))))),
                  show_header=False)
    for name, value in rows:
        table.add_row(name, Text(printable(model if name == "model" else value)))
    console.print(table)
    for failure in summary.failed:
        detail = f" [{failure.detail}]" if details and failure.detail else ""
        console.print(Text.assemble(("failed", "red"), f" {printable(failure.path)}: {printable(failure.reason + detail)}"))


def recovered(recoveries) -> str:
    """What a cluster survived, as the summary says it: "1 node lost, 2 videos retried"."""
    lost = (counted(recoveries.nodes_lost, "node") if recoveries.nodes_lost
            else counted(recoveries.workers_lost, "Ray worker"))
    return f"{lost} lost, {counted(recoveries.videos_retried, 'video')} retried"


def render_model(console: Console, model, taught: tuple[str, ...] = ()) -> None:
    """One model: identity, input geometry, providers, its sha256 on a line of its own (a table cell
    would wrap it at 80 columns), taggable labels with their thresholds, and the labels it
    deliberately leaves out with the reason (`tagger.left_out`), but for those an add-on head
    teaches (`taught`)."""
    c = model.contract
    table = Table(title=Text(printable(shortened_path(str(model.path), console.width))), show_header=False)
    table.add_row("name / arch / version", f"{model.name} / {c.arch} / {c.version}")
    table.add_row("kind / output", f"{c.kind} / {c.output}")
    if c.kind == "video":
        table.add_row("window", f"{c.clip_len} frames every {c.frame_interval:.3f} s = {c.window_seconds:.2f} s")
        crop = f"{c.size[0]}x{c.size[1]}"
        crops = f"{c.crops} crops {crop} across long side" if c.crops > 1 else f"crop {crop}"
        table.add_row("crop", f"short side {c.resize} → {crops}")
    else:
        table.add_row("patch", f"{c.patch_seconds:.3f} s of mono sound at {c.sample_rate} Hz")
    table.add_row("providers", ", ".join(model.providers))
    table.add_row("background label", c.background or "(none)")
    table.add_row("stored features", f"{c.feature_dim} values a window (tagger learn, similar)" if c.feature_dim
                  else "none (labels taught later need a rescan)")
    console.print(table)
    console.print(f"sha256 {model.sha256}", markup=False, highlight=False, soft_wrap=True)  # one line: copied whole
    labels = Table("label", "threshold")
    for label in c.tag_labels:
        labels.add_row(Text(label), f"{c.threshold_for(label):.2f}")
    console.print(labels)
    for label, reason in c.left_out.items():
        if label not in taught:
            console.print(Text(f"not tagged: {label}: {reason}"))


def render_coverage(console: Console, video, audio, audio_note: str = "", taught: tuple[str, ...] = ()) -> None:
    """Every label this pair of models can tag, and from what evidence (`taught`: the labels of the
    add-on heads, seen through the vision model's features)."""
    seen = set(video.contract.tag_labels) | set(taught)
    heard = set(audio.contract.tag_labels) if audio else set()
    rows = Table("label", "can be tagged from", title=Text(f"sound model: {audio_note}") if audio_note else None)
    for label in sorted(seen | heard):
        source = ("vision and sound" if label in seen and label in heard else "vision" if label in seen
                  else "sound alone (stricter threshold)")
        rows.add_row(Text(label), source)
    console.print(rows)
