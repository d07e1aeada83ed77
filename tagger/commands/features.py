"""The commands on stored features: learn (teach a label), retag (re-score stored videos), similar."""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from tagger import errors
from tagger.cli_app import DbOption, HeadsOption, ModelOption, app, boundary, err, out
from tagger.commands.reading import FormatOption
from tagger.config import resolve_db, resolve_model

EXAMPLE = "PATH[@START-END]"
QUERY = "label=L,path=GLOB,min-score=S"


@app.command()
@boundary
def learn(
    label: Annotated[str, typer.Argument(help="The label to teach: a new one, or one the model has (the head then replaces its scores)")],
    positive: Annotated[Optional[list[str]], typer.Option(metavar=EXAMPLE, help="An example of LABEL: a stored video, a span of one (times as seconds, MM:SS or HH:MM:SS), or a folder of them (repeatable)")] = None,
    negative: Annotated[Optional[list[str]], typer.Option(metavar=EXAMPLE, help="An example of what LABEL is not, as --positive [default: a sample of the other stored windows]")] = None,
    positive_query: Annotated[Optional[list[str]], typer.Option(metavar=QUERY, help="Stored segments as positives (label=, with path= and min-score= optional), or whole videos (path= alone) (repeatable)")] = None,
    negative_query: Annotated[Optional[list[str]], typer.Option(metavar=QUERY, help="Stored segments or videos as negatives, as --positive-query")] = None,
    model: ModelOption = None,
    heads: HeadsOption = None,
    db: DbOption = None,
) -> None:
    """Teach a label from examples, on stored features: no decoding.

    Fits a head, checks it on held-out videos, picks its threshold there and writes it as an add-on
    head. At least 3 positives; without negatives, a sample of the other stored windows stands for
    everything else. `tagger retag` (or the next scan) then tags the stored videos with it.

    Example: tagger learn PlayingDaf --positive daf1.mp4 --positive concert.mp4@1:20-2:05 --positive daf3.mp4
    """
    from tagger.feature_views import render_lesson
    from tagger.learning import LearnSettings, learn as teach

    lesson = teach(LearnSettings(
        db=resolve_db(db), label=label, positive=tuple(positive or ()), negative=tuple(negative or ()),
        positive_query=tuple(positive_query or ()), negative_query=tuple(negative_query or ()),
        model=resolve_model(model), heads=heads))
    render_lesson(out, lesson)


@app.command()
@boundary
def retag(
    model: ModelOption = None,
    heads: HeadsOption = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress or summary; only the videos not re-tagged")] = False,
    db: DbOption = None,
) -> None:
    """Re-tag stored videos from their stored features: no decoding.

    With the model and the add-on heads a scan would use now; the files need not be there. Each
    video keeps its windows, its sound and its segment settings. Videos that cannot be re-tagged
    without decoding are listed, path TAB reason, and the exit code is 3: a rescan with features
    fixes them.

    Example: tagger retag --db tags.db
    """
    from tagger.feature_views import RichRetagProgress, render_retag
    from tagger.retag import RetagSettings, retag as run_retag

    with RichRetagProgress(err, enabled=not quiet) as progress:
        summary = run_retag(RetagSettings(db=resolve_db(db), model=resolve_model(model), heads=heads), progress)
    render_retag(out, err, summary, quiet)
    if summary.not_retagged:
        raise typer.Exit(errors.EXIT_VIDEOS_FAILED)


@app.command()
@boundary
def similar(
    path: Annotated[str, typer.Argument(help="A scanned video")],
    at: Annotated[str, typer.Option("--at", help="The moment: seconds (75.5), MM:SS or HH:MM:SS")],
    top: Annotated[int, typer.Option("--top", help="How many windows to list")] = 10,
    other_videos: Annotated[bool, typer.Option("--other-videos", help="Leave out the windows of PATH itself")] = False,
    output_format: FormatOption = None,
    db: DbOption = None,
) -> None:
    """List the stored moments most like one moment of a video.

    Cosine on the stored features of every window of the same feature space, best first, with the
    tags stored over each.

    Example: tagger similar concert.mp4 --at 1:23 --top 20 --format json
    """
    from tagger.listing import chosen_format, render_records
    from tagger.records import parse_time
    from tagger.similar import SIMILAR_COLUMNS, SIMILAR_FIELDS, SimilarQuery, similar_windows

    chosen = chosen_format(output_format)
    records = similar_windows(resolve_db(db), SimilarQuery(path, parse_time(at), top, other_videos))
    render_records(out, records, SIMILAR_FIELDS, chosen, SIMILAR_COLUMNS)
