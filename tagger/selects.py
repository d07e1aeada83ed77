"""Read-side SQL: segments, windows, label summaries, one video, failures, the last scans.

Every filter value is a bound parameter; a path pattern is matched literally except for the glob
wildcards `*`, `?` (SQLite's GLOB, LIKE with escaping elsewhere). No SQL is built from user text.
"""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from tagger.errors import check_choice, check_range
from tagger.schema import models, scans, segments, videos, windows

ORDERS = ("path", "score", "time")
SOURCES = ("video", "audio", "both")
WINDOW_ROWS_PER_FETCH = 2000  # window rows held at once while streaming them


@dataclass(frozen=True)
class SegmentQuery:
    """Filters for reading tags back."""

    labels: tuple[str, ...] = ()
    min_score: float | None = None
    path: str | None = None  # glob with * and ?, or else a plain substring
    exact_path: str | None = None  # one video, as stored
    min_duration: float | None = None
    model: str | None = None  # model name or sha256 prefix
    source: str | None = None  # video | audio | both
    limit: int | None = None
    order: str = "path"  # path | score | time

    def __post_init__(self) -> None:
        check_range("--min-score", self.min_score, 0, 1)
        check_range("--min-duration", self.min_duration, 0, note=" seconds")
        check_range("--limit", self.limit, 1)
        check_choice("--sort", self.order, ORDERS)
        check_choice("--source", self.source, SOURCES)


def _like_escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _glob(column, pattern: str, dialect: str):
    """`column` matches the glob `pattern` (* and ?; brackets are literal)."""
    if dialect == "sqlite":
        return column.op("GLOB")("".join(f"[{c}]" if c in "[]" else c for c in pattern))
    return column.like(_like_escape(pattern).replace("*", "%").replace("?", "_"), escape="\\")


def path_condition(column, pattern: str, dialect: str):
    """Match `pattern` against `column`: a glob when it has * or ? (a glob without a folder
    matches the file name too), else a substring."""
    if not any(c in pattern for c in "*?"):
        return _glob(column, f"*{pattern}*", dialect)
    if "/" not in pattern:
        return sa.or_(_glob(column, pattern, dialect), _glob(column, "*/" + pattern, dialect))
    return _glob(column, pattern, dialect)


def _model_condition(table, model: str):
    """`table` (models or an alias) is `model`: a name, a sha256 prefix, or one part of a "vision+sound" pair."""
    return sa.or_(
        table.c.name == model,
        table.c.name.startswith(model + "+", autoescape=True),
        table.c.name.endswith("+" + model, autoescape=True),
        table.c.sha256.startswith(model, autoescape=True),
    )


def _video_filters(stmt, query: SegmentQuery, dialect: str):
    """Filters on the video (path) and, for segments, on the model that made them."""
    if query.path:
        stmt = stmt.where(path_condition(videos.c.path, query.path, dialect))
    if query.exact_path is not None:
        stmt = stmt.where(videos.c.path == query.exact_path)
    return stmt


def _segment_model_filter(stmt, query: SegmentQuery):
    return stmt.where(_model_condition(models, query.model)) if query.model else stmt


def _segment_filters(stmt, query: SegmentQuery, dialect: str):
    """Every filter on segments, in one place for listing and summarising alike."""
    stmt = _segment_model_filter(_video_filters(stmt, query, dialect), query)
    if query.labels:
        stmt = stmt.where(segments.c.label.in_(query.labels))
    if query.min_score is not None:
        stmt = stmt.where(segments.c.score >= query.min_score)
    if query.min_duration is not None:
        stmt = stmt.where(segments.c.end - segments.c.start >= query.min_duration - 1e-9)
    if query.source:
        stmt = stmt.where(segments.c.source == query.source)
    return stmt


def select_segments(conn: sa.Connection, query: SegmentQuery) -> list[sa.Row]:
    """Stored segments with their video and model, filtered and ordered as `query` says."""
    stmt = (
        sa.select(
            videos.c.path, segments.c.label, segments.c.start, segments.c.end, segments.c.score,
            segments.c.max_score, segments.c.source, models.c.name.label("model"),
            videos.c.duration.label("video_duration"), videos.c.fps,
        )
        .join(videos, videos.c.id == segments.c.video_id)
        .join(models, models.c.id == segments.c.model_id)
    )
    stmt = _segment_filters(stmt, query, conn.dialect.name)
    order = {
        "path": (videos.c.path, segments.c.start, segments.c.label),
        "score": (segments.c.score.desc(), videos.c.path, segments.c.start),
        "time": (segments.c.start, videos.c.path, segments.c.label),
    }[query.order]
    stmt = stmt.order_by(*order)
    if query.limit:
        stmt = stmt.limit(query.limit)
    return list(conn.execute(stmt))


def select_windows(conn: sa.Connection, query: SegmentQuery, whole_videos: bool = False) -> sa.CursorResult:
    """Stored window scores in video then time order, streamed: iterate while `conn` is open.

    Rows carry `model_id` (the model that scored the window) and `video_model` (the name of the
    model, or vision+sound pair, the video was tagged with, as its stored segments name it); look
    labels and contracts up in `select_models` rather than reading them again for every window
    (an archive holds millions of windows). `query.model` matches the window's model, or with
    `whole_videos` also the video's, so every window of a video tagged by a matching pair comes back.
    """
    tagged_by = models.alias("tagged_by")
    stmt = (
        sa.select(
            videos.c.id.label("video_id"), videos.c.path, windows.c.start, windows.c.end, windows.c.scores,
            windows.c.model_id, models.c.name.label("model"), tagged_by.c.name.label("video_model"),
            videos.c.duration.label("video_duration"), videos.c.fps,
        )
        .join(videos, videos.c.id == windows.c.video_id)
        .join(models, models.c.id == windows.c.model_id)
        .join(tagged_by, tagged_by.c.id == videos.c.model_id, isouter=True)
    )
    stmt = _video_filters(stmt, query, conn.dialect.name)
    if query.model:
        matches = _model_condition(models, query.model)
        if whole_videos:
            matches = sa.or_(matches, _model_condition(tagged_by, query.model))
        stmt = stmt.where(matches)
    return conn.execute(stmt.order_by(videos.c.path, windows.c.start),
                        execution_options={"yield_per": WINDOW_ROWS_PER_FETCH})


def select_models(conn: sa.Connection) -> dict[int, sa.Row]:
    """Every stored model by id: name, labels, meta."""
    return {row.id: row for row in conn.execute(sa.select(models.c.id, models.c.name, models.c.labels, models.c.meta))}


def select_label_summary(conn: sa.Connection, query: SegmentQuery) -> list[sa.Row]:
    """Per label: how many videos and segments, and the total tagged seconds."""
    stmt = (
        sa.select(
            segments.c.label,
            sa.func.count(sa.distinct(segments.c.video_id)).label("videos"),
            sa.func.count().label("segments"),
            sa.func.sum(segments.c.end - segments.c.start).label("seconds"),
        )
        .join(videos, videos.c.id == segments.c.video_id)
        .join(models, models.c.id == segments.c.model_id)
        .group_by(segments.c.label)
        .order_by(segments.c.label)
    )
    return list(conn.execute(_segment_filters(stmt, query, conn.dialect.name)))


def select_video(conn: sa.Connection, path: str) -> sa.Row | None:
    """One stored video with its model's name."""
    stmt = (
        sa.select(*_stored_columns(conn, videos), models.c.name.label("model"))
        .join(models, models.c.id == videos.c.model_id, isouter=True)
        .where(videos.c.path == path)
    )
    return conn.execute(stmt).one_or_none()


def select_paths_named(conn: sa.Connection, name: str) -> list[str]:
    """Stored video paths whose file name is `name`."""
    stmt = sa.select(videos.c.path).where(videos.c.path.endswith("/" + name, autoescape=True))
    return [row.path for row in conn.execute(stmt)]


def _stored_columns(conn: sa.Connection, table: sa.Table) -> list[sa.Column]:
    """The columns of `table` this database has: an older one read without migrating lacks some."""
    present = {column["name"] for column in sa.inspect(conn).get_columns(table.name)}
    return [column for column in table.c if column.name in present]


def select_failed(conn: sa.Connection) -> list[sa.Row]:
    """Videos whose last scan failed, with the reason."""
    stmt = sa.select(videos.c.path, videos.c.error, videos.c.scanned_at).where(videos.c.status == "failed")
    return list(conn.execute(stmt.order_by(videos.c.path)))


def select_videos(conn: sa.Connection) -> list[sa.Row]:
    """Every stored video, tagged or failed, with its model's name, in path order."""
    stmt = (
        sa.select(videos.c.path, videos.c.status, videos.c.error, videos.c.duration, videos.c.fps, videos.c.width,
                  videos.c.height, videos.c.decoder, models.c.name.label("model"))
        .join(models, models.c.id == videos.c.model_id, isouter=True)
    )
    return list(conn.execute(stmt.order_by(videos.c.path)))


def select_last_scans(conn: sa.Connection, count: int) -> list[sa.Row]:
    """The last `count` scans recorded, oldest first: when, how they ended, their counts."""
    stmt = sa.select(scans.c.id, scans.c.started_at, scans.c.status, scans.c.counts).order_by(scans.c.id.desc())
    return list(reversed(conn.execute(stmt.limit(count)).all()))
