"""Rendering for the commands on stored features: what `learn` taught, what `retag` did, and the
add-on heads `tagger models` lists. Summaries and progress go to stderr, data to stdout."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table
from rich.text import Text

from tagger.errors import ModelError
from tagger.escaping import printable, shortened_path
from tagger.heads import ADDON_SUFFIX, feature_space, read_addon
from tagger.listing import short_timecode
from tagger.retag import RetagProgress, RetagSummary

RESCAN = "tagger scan --force PATH"


def _plain(console: Console, text: str) -> None:
    console.print(text, markup=False, highlight=False)


def _count(n: int, thing: str) -> str:
    return f"{n} {thing}{'s' * (n != 1)}"


def render_lesson(console: Console, lesson) -> None:
    """What `tagger learn` taught (a `tagger.learning.Lesson`), in short lines (80 columns but for
    long paths)."""
    negatives = (f"{_count(lesson.negative_windows, 'window')} sampled from {_count(lesson.negative_videos, 'other video')}"
                 if lesson.sampled else
                 f"{_count(lesson.negative_windows, 'window')} in {_count(lesson.negative_videos, 'video')}")
    for line in (
        f"{lesson.label}: {_count(lesson.positives, 'positive example')} "
        f"({_count(lesson.positive_windows, 'window')} in {_count(lesson.positive_videos, 'video')})",
        f"negatives: {negatives}",
        f"held out by {lesson.held_out_by}, {lesson.folds} folds: precision {lesson.precision:.2f}, "
        f"recall {lesson.recall:.2f} (windows)",
        f"  found {lesson.examples_found} of {lesson.positives} positive examples, tagged "
        f"{lesson.negative_videos_tagged} of {_count(lesson.negative_videos, 'negative video')}",
        f"threshold {lesson.threshold:.2f} (best F1 held out; L2 {lesson.penalty:g}); learnt in {lesson.seconds:.1f} s",
        f"would tag {lesson.would_tag_videos} of {_count(lesson.featured_videos, 'video')} with features: "
        f"{_count(lesson.would_tag_segments, 'segment')}, {short_timecode(lesson.would_tag_seconds)}",
        f"{'replaced' if lesson.replaced else 'wrote'} {printable(lesson.path)}",
        "tagger retag applies it to stored videos (no decoding); scans, to new ones",
    ):
        _plain(console, line)


class RichRetagProgress(RetagProgress):
    """A bar on stderr while `tagger retag` works through the stored videos (on a terminal only)."""

    def __init__(self, console: Console, enabled: bool = True):
        self.enabled = enabled and console.is_terminal
        self.progress = Progress(TextColumn("[bold]retagging"), BarColumn(bar_width=20), MofNCompleteColumn(),
                                 TimeRemainingColumn(), console=console, transient=True, disable=not self.enabled)
        self.task = None

    def __enter__(self) -> RichRetagProgress:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.progress.__exit__(*exc)

    def start(self, total: int) -> None:
        self.task = self.progress.add_task("retag", total=total)

    def video_done(self, path: str) -> None:
        self.progress.update(self.task, advance=1)


def render_retag(out: Console, err: Console, summary: RetagSummary, quiet: bool = False) -> None:
    """Each video not re-tagged as `path TAB reason` on stdout; the summary line on stderr."""
    for video in summary.not_retagged:  # as `tagger failed` lists failures: a tab, no Rich (it expands tabs)
        out.file.write(f"{printable(video.path)}\t{printable(video.reason)}\n")
    if quiet:
        return
    heads = f"; add-on heads: {', '.join(summary.heads)}" if summary.heads else "; no add-on heads"
    _plain(err, f"retagged {summary.retagged} of {_count(summary.videos, 'stored video')} from their features, "
                f"no decoding: {_count(summary.segments, 'segment')}")
    _plain(err, f"{summary.current} already current; model {Path(summary.model).name}{heads}")
    if summary.changed:
        _plain(err, f"{summary.changed} stored again by a scan meanwhile: that scan's tags stand")
    if summary.not_retagged:
        count = len(summary.not_retagged)
        _plain(err, f"{_count(count, 'video')} could not be re-tagged without decoding (listed above)")
        _plain(err, f"a rescan with features fixes {'them' if count != 1 else 'it'}: {RESCAN}")


def render_addons(console: Console, folder: Path, contract) -> None:
    """The add-on heads in `folder`: those of `contract`'s feature space in a table (label, examples,
    held-out result, threshold, when taught), the others one line each."""
    space = feature_space(contract)
    files = sorted(folder.glob(f"*{ADDON_SUFFIX}")) if folder.is_dir() else []
    if not files:
        prefix = "add-on heads (tagger learn writes them): none in "
        _plain(console, prefix + shortened_path(printable(str(folder)), max(20, console.width - len(prefix))))
        return
    title = "add-on heads in "
    table = Table("label", "examples", "held out", "threshold", "taught",
                  title=Text(title + shortened_path(printable(str(folder)), max(20, console.width - len(title)))))
    others = []
    for file in files:
        try:
            head = read_addon(file)
        except ModelError as exc:
            others.append(f"unreadable: {exc}")
            continue
        if head.space != space:
            others.append(f"not for this model: {file.name} (features of space {head.space})")
            continue
        info = head.info
        examples = f"{info.get('positives', '?')} +, {info.get('negative_windows', '?')} -"
        held = (f"P {info['precision']:.2f} R {info['recall']:.2f}" if "precision" in info else "?")
        for label in head.labels:
            table.add_row(Text(label), examples, held, f"{head.thresholds.get(label, 0.5):.2f}",
                          str(info.get("taught_at", "?"))[:10])
    if table.rows:
        console.print(table)
    for line in others:
        _plain(console, printable(line))
    if space is None:
        _plain(console, "this model gives no features (tagger.features): add-on heads need one that does")
