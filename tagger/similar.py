"""`tagger similar`: the stored windows across the archive that look most like one moment of a video.

The moment's window (the stored window covering the time asked, the one centred nearest it where
windows overlap) gives the query: its stored features. Every stored window of the same feature
space is ranked by cosine with it, through the feature index (`tagger.feature_index`), so a query
over a million windows reads no feature from the database. Each hit says the tags stored over it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from tagger.errors import UsageError, check_range
from tagger.escaping import undecodable_escaped
from tagger.feature_index import FeatureIndex
from tagger.identity import stored_models
from tagger.records import reading, stored_path, timecode
from tagger.schema import decode_features, segments, videos, windows

MAX_TOP = 10_000  # more hits than a person reads; the ranking itself has no limit
SIMILAR_FIELDS = ("rank", "path", "start_s", "end_s", "start_tc", "end_tc", "similarity", "tags")
SIMILAR_COLUMNS = {"rank": "#", "path": "path", "start_s": "start", "end_s": "end", "similarity": "similarity",
                   "tags": "tags"}  # the table at 80 columns


@dataclass(frozen=True)
class SimilarQuery:
    """Which moment to match, and how many hits."""

    path: str
    at: float  # seconds into the video
    top: int = 10
    other_videos: bool = False  # leave out the asked video's own windows (else only the asked window)

    def __post_init__(self) -> None:
        check_range("--top", self.top, 1, MAX_TOP)
        check_range("--at", self.at, 0, note=" seconds")


def similar_windows(db: str, query: SimilarQuery) -> list[dict]:
    """The `query.top` stored windows most like `query.path` at `query.at`, best first, as records
    of SIMILAR_FIELDS.

    Raises:
        UsageError: the video is not stored, `at` is past its end, or it was scanned without features.
    """
    with reading(db) as conn:
        path = stored_path(conn, query.path)
        if path is None:
            raise UsageError(f"{query.path} is not in the database: scan it first (tagger scan {query.path})")
        known = stored_models(conn)
        by_id = {row.id: row for row in known.rows.values()}
        asked, features = _window_at(conn, path, query.at, {known.rows[sha].id for sha in known.spaces})
        space = known.space_of(by_id[asked.model_id].sha256)
        vector = decode_features(features).astype(np.float32)
        with FeatureIndex.opened(conn, db, space, len(vector), known.vision_ids(space)) as index:
            leave_out = index.rows["video"] == asked.video_id if query.other_videos else index.rows["window"] == asked.id
            hits = index.best(index.cosine(vector), query.top, leave_out)
        return _records(conn, hits.rows, hits.scores)


def _window_at(conn: sa.Connection, path: str, at: float, vision_ids: set[int]) -> tuple[sa.Row, bytes]:
    """The stored vision window of `path` covering `at` (centred nearest it where several do), and
    its stored features."""
    stored = conn.execute(
        sa.select(windows.c.id, windows.c.video_id, windows.c.model_id, windows.c.start, windows.c.end,
                  windows.c.features.is_(None).label("featureless"), videos.c.duration)
        .join(videos, videos.c.id == windows.c.video_id)
        .where(videos.c.path == path, windows.c.model_id.in_(sorted(vision_ids))).order_by(windows.c.start)).all()
    shown = undecodable_escaped(path)
    if not stored:
        raise UsageError(f"{shown} has no stored windows (its scan failed: see tagger failed)")
    covering = [w for w in stored if w.start - 1e-6 <= at <= w.end + 1e-6]
    if not covering:
        raise UsageError(f"--at {at:g} s is past the end of {shown} ({stored[0].duration or stored[-1].end:.1f} s)")
    asked = min(covering, key=lambda w: abs((w.start + w.end) / 2 - at))
    if asked.featureless:
        raise UsageError(f"{shown} was scanned without features: rescan it with features "
                         f"(tagger scan --force {shown})")
    return asked, conn.execute(sa.select(windows.c.features).where(windows.c.id == asked.id)).scalar_one()


def _records(conn: sa.Connection, rows: np.ndarray, scores: np.ndarray) -> list[dict]:
    """The hits as records, with each hit's path and the labels stored over it."""
    ids = sorted({int(v) for v in rows["video"]})
    paths = dict(conn.execute(sa.select(videos.c.id, videos.c.path).where(videos.c.id.in_(ids))).all()) if ids else {}
    tagged: dict[int, list] = {}
    if ids:
        for seg in conn.execute(sa.select(segments.c.video_id, segments.c.label, segments.c.start, segments.c.end)
                                .where(segments.c.video_id.in_(ids))):
            tagged.setdefault(seg.video_id, []).append(seg)
    records = []
    for rank, (row, score) in enumerate(zip(rows, scores), 1):
        start, end, video = float(row["start"]), float(row["end"]), int(row["video"])
        labels = sorted({s.label for s in tagged.get(video, ()) if s.start < end - 1e-6 and s.end > start + 1e-6})
        records.append({"rank": rank, "path": undecodable_escaped(paths.get(video, "?")), "start_s": round(start, 3),
                        "end_s": round(end, 3), "start_tc": timecode(start), "end_tc": timecode(end),
                        "similarity": round(float(score), 4), "tags": " ".join(labels)})
    return records
