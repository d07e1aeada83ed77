"""The read side: stored tags as flat records, re-thresholded from window scores when asked.

Commands call these functions and render what they return; all SQL lives in `tagger.queries`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from itertools import groupby
from types import SimpleNamespace

import numpy as np
import sqlalchemy as sa

from tagger.errors import UsageError
from tagger.export import segment_record
from tagger.queries import (
    ORDERS, SOURCES, SegmentQuery, select_failed, select_label_summary, select_models, select_segments,
    select_video, select_windows,
)
from tagger.segments import SegmentRules, merge_segments
from tagger.store import Store, decode_scores


@contextmanager
def reading(db: str) -> Iterator[sa.Connection]:
    """A read-only snapshot of an existing database."""
    store = Store(db, create=False)
    try:
        with store.read() as conn:
            yield conn
    finally:
        store.close()


def check_query(query: SegmentQuery) -> None:
    """Raise UsageError for a sort order or source that does not exist."""
    if query.order not in ORDERS:
        raise UsageError(f"--sort {query.order!r} is not one of {', '.join(ORDERS)}")
    if query.source is not None and query.source not in SOURCES:
        raise UsageError(f"--source {query.source!r} is not one of {', '.join(SOURCES)}")


def segment_records(db: str, query: SegmentQuery, threshold: float | None = None,
                    rules: SegmentRules = SegmentRules()) -> list[dict]:
    """Segments matching `query`; with `threshold`, re-derived from stored window scores."""
    check_query(query)
    with reading(db) as conn:
        if threshold is None:
            return [segment_record(row) for row in select_segments(conn, query)]
        # One video's windows in memory at a time; only the (far fewer) segments are kept.
        derived = _rethreshold(select_windows(conn, query), select_models(conn), query, threshold, rules)
        records = [segment_record(seg) for seg in derived]
    key = {
        "path": lambda r: (r["path"], r["start_s"], r["label"]),
        "score": lambda r: (-r["score"], r["path"], r["start_s"]),
        "time": lambda r: (r["start_s"], r["path"], r["label"]),
    }[query.order]
    records.sort(key=key)
    return records[: query.limit] if query.limit else records


def _rethreshold(rows, known: dict, query: SegmentQuery, threshold: float,
                 rules: SegmentRules) -> Iterator[SimpleNamespace]:
    """Vision evidence only: a video's audio windows (another model) are left out of the re-derivation.

    `rows` come from `select_windows` (video, then time order), `known` from `select_models`.
    """
    if query.source not in (None, "video"):
        return
    seen = (r for r in rows if known[r.model_id].meta.get("tagger.kind", "video") == "video")
    for _, group in groupby(seen, key=lambda r: (r.video_id, r.model_id)):
        group = list(group)
        first, model = group[0], known[group[0].model_id]
        background = model.meta.get("tagger.background") or None
        labels = list(model.labels)
        wanted = {label: threshold for label in labels
                  if label != background and (not query.labels or label in query.labels)}
        scores = np.stack([decode_scores(r.scores) for r in group])
        starts = np.array([r.start for r in group])
        ends = np.array([r.end for r in group])
        for seg in merge_segments(scores, starts, ends, labels, wanted, rules):
            if query.min_score is not None and seg.score < query.min_score:
                continue
            if query.min_duration is not None and seg.duration < query.min_duration - 1e-9:
                continue
            yield SimpleNamespace(path=first.path, label=seg.label, start=seg.start, end=seg.end, score=seg.score,
                       max_score=seg.max_score, source="video", model=first.model,
                       video_duration=first.video_duration, fps=first.fps)


def label_summary(db: str, query: SegmentQuery) -> list[dict]:
    """Per label: videos, segments and total tagged seconds."""
    check_query(query)
    with reading(db) as conn:
        return [
            {"label": r.label, "videos": r.videos, "segments": r.segments, "tagged_s": round(r.seconds or 0.0, 3)}
            for r in select_label_summary(conn, query)
        ]


WINDOW_FIELDS = ("path", "model", "start_s", "end_s", "label", "score")


def window_records(db: str, query: SegmentQuery) -> Iterator[dict]:
    """Raw window scores, one record per window and label (long format: any model's labels fit)."""
    check_query(query)
    with reading(db) as conn:  # open while the caller consumes the records: windows are streamed
        known = select_models(conn)
        for row in select_windows(conn, query):
            for label, score in zip(known[row.model_id].labels, decode_scores(row.scores)):
                if query.labels and label not in query.labels:
                    continue
                yield {"path": row.path, "model": row.model, "start_s": round(row.start, 3), "end_s": round(row.end, 3),
                       "label": label, "score": round(float(score), 4)}


def video_timeline(db: str, path: str) -> tuple[sa.Row, list[dict], list[sa.Row]]:
    """One video's stored row, its segments and its windows.

    Raises:
        UsageError: the video is not in the database.
    """
    full = os.path.abspath(os.path.expanduser(path))
    with reading(db) as conn:
        video = select_video(conn, full) or select_video(conn, path)
        if video is None:
            raise UsageError(f"{path} is not in the database: scan it first (tagger scan {path})")
        exact = SegmentQuery(exact_path=video.path, order="time")
        segs = [segment_record(r) for r in select_segments(conn, exact)]
        wins = list(select_windows(conn, exact))
    return video, segs, wins


def failed_videos(db: str) -> list[tuple[str, str]]:
    """(path, reason) of every video whose last scan failed."""
    with reading(db) as conn:
        return [(row.path, row.error or "") for row in select_failed(conn)]
