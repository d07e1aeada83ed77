"""The examples `tagger learn` is shown: which stored windows they name, and their features.

An example is a stored video, or a span of one (`PATH@START-END`), or every stored video under a
folder; a query (`label=PlayingGuitar,path=*/concerts/*,min-score=0.8`) names the stored segments
it matches as spans, or without `label` the videos whose path matches. A span takes the windows it
covers for at least half of the window (or half of the span, for a span shorter than a window).
Every example must have its features stored, of the feature space the head is taught for; each
problem is one line naming the example and what fixes it.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np
import sqlalchemy as sa

from tagger.errors import UsageError
from tagger.escaping import undecodable_escaped
from tagger.identity import StoredModels
from tagger.records import parse_time, stored_path
from tagger.schema import decode_features, segments, videos, windows
from tagger.selects import path_condition

SPAN = re.compile(r"@(?P<start>[0-9:.]+)-(?P<end>[0-9:.]+)$")
QUERY_KEYS = ("label", "path", "min-score")


@dataclass(frozen=True)
class Example:
    """One example as named: a stored video, or a span of it."""

    given: str  # as the user wrote it (a query's examples name the query)
    path: str  # as stored
    start: float | None = None  # None: the whole video
    end: float | None = None


@dataclass(frozen=True)
class ExampleWindows:
    """The windows a set of examples names, with their features."""

    features: np.ndarray  # (n, D) float32
    video_ids: np.ndarray  # (n,) the stored video of each window
    example: np.ndarray  # (n,) index of the example that named it
    window_ids: np.ndarray  # (n,)

    @property
    def videos(self) -> int:
        return len(set(self.video_ids.tolist()))


def named_examples(conn: sa.Connection, given: list[str], queries: list[str], option: str) -> list[Example]:
    """The examples of `--positive`/`--negative` values `given` and `--...-query` values `queries`.

    Raises:
        UsageError: a path not stored, a bad span or query, a query that matches nothing.
    """
    found: list[Example] = []
    for text in given:
        found += _path_examples(conn, text, option)
    for text in queries:
        found += _query_examples(conn, text, f"{option}-query")
    return found


def _path_examples(conn: sa.Connection, text: str, option: str) -> list[Example]:
    span = SPAN.search(text)
    path = text[: span.start()] if span and stored_path(conn, text) is None else text
    stored = stored_path(conn, path)
    if stored is None and os.path.isdir(path):
        folder = os.path.abspath(os.path.expanduser(path)).rstrip("/")
        under = conn.execute(sa.select(videos.c.path).where(videos.c.path.startswith(folder + "/", autoescape=True),
                                                            videos.c.status == "ok").order_by(videos.c.path)).scalars()
        examples = [Example(text, p) for p in under]
        if not examples:
            raise UsageError(f"{option} {text}: no video under this folder is in the database: scan it first "
                             f"(tagger scan {text})")
        return examples
    if stored is None:
        raise UsageError(f"{option} {text}: not in the database: scan it first (tagger scan {path})")
    if path == text:
        return [Example(text, stored)]
    start, end = parse_time(span["start"]), parse_time(span["end"])
    if end <= start:
        raise UsageError(f"{option} {text}: the span ends before it starts: give START-END")
    duration = conn.execute(sa.select(videos.c.duration).where(videos.c.path == stored)).scalar_one()
    if duration is not None and (start >= duration or end > duration + 0.001):
        raise UsageError(f"{option} {text}: the span is outside the video, which is {duration:.3f} s long")
    return [Example(text, stored, start, end)]


def _query_examples(conn: sa.Connection, text: str, option: str) -> list[Example]:
    terms = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        key, equals, value = part.partition("=")
        key = key.strip().replace("_", "-")
        if not equals or key not in QUERY_KEYS or not value.strip():
            raise UsageError(f"{option} {text!r}: {part!r} is not KEY=VALUE with KEY one of {', '.join(QUERY_KEYS)}")
        terms[key] = value.strip()
    if not terms:
        raise UsageError(f"{option} {text!r} names nothing: give label=LABEL and/or path=GLOB")
    dialect = conn.dialect.name
    if "label" not in terms:
        if "min-score" in terms:
            raise UsageError(f"{option} {text!r}: min-score needs label=LABEL")
        stmt = sa.select(videos.c.path).where(path_condition(videos.c.path, terms["path"], dialect),
                                              videos.c.status == "ok")
        examples = [Example(text, p) for p in conn.execute(stmt.order_by(videos.c.path)).scalars()]
    else:
        stmt = (sa.select(videos.c.path, segments.c.start, segments.c.end)
                .join(videos, videos.c.id == segments.c.video_id).where(segments.c.label == terms["label"]))
        if "path" in terms:
            stmt = stmt.where(path_condition(videos.c.path, terms["path"], dialect))
        if "min-score" in terms:
            try:
                stmt = stmt.where(segments.c.score >= float(terms["min-score"]))
            except ValueError:
                raise UsageError(f"{option} {text!r}: min-score must be a number from 0 to 1") from None
        rows = conn.execute(stmt.order_by(videos.c.path, segments.c.start)).all()
        examples = [Example(text, row.path, row.start, row.end) for row in rows]
    if not examples:
        raise UsageError(f"{option} {text!r} matches no stored {'segment' if 'label' in terms else 'video'}")
    return examples


def example_windows(conn: sa.Connection, examples: list[Example], known: StoredModels, space: str,
                    model: str) -> ExampleWindows:
    """The featured windows `examples` name, of feature space `space` (the model `model` taught for).

    Raises:
        UsageError: an example's video failed, was scanned without features, or with features of
            another space.
    """
    vision = {row.id: sha for sha, row in known.rows.items() if sha in known.spaces}
    features, video_ids, which, window_ids = [], [], [], []
    cache: dict[str, list] = {}
    for index, example in enumerate(examples):
        if example.path not in cache:
            cache[example.path] = _featured_windows(conn, example, vision, known, space, model)
        for row in cache[example.path]:
            if example.start is not None and not _covers(example.start, example.end, row.start, row.end):
                continue
            features.append(decode_features(row.features))
            video_ids.append(row.video_id)
            which.append(index)
            window_ids.append(row.id)
    empty = sorted(set(range(len(examples))) - set(which))
    if empty:
        example = examples[empty[0]]
        raise UsageError(f"{example.given}: the span covers no stored window of {undecodable_escaped(example.path)} "
                         "(it falls between windows: widen it)")
    dim = len(features[0]) if features else 0
    return ExampleWindows(np.array(features, np.float32).reshape(-1, dim), np.array(video_ids, np.int64),
                          np.array(which, np.int64), np.array(window_ids, np.int64))


def _featured_windows(conn: sa.Connection, example: Example, vision: dict[int, str], known: StoredModels,
                      space: str, model: str) -> list:
    shown = undecodable_escaped(example.path)
    rows = conn.execute(
        sa.select(windows.c.id, windows.c.video_id, windows.c.model_id, windows.c.start, windows.c.end,
                  windows.c.features)
        .join(videos, videos.c.id == windows.c.video_id)
        .where(videos.c.path == example.path, windows.c.model_id.in_(sorted(vision))).order_by(windows.c.start)).all()
    if not rows:
        raise UsageError(f"{shown} has no stored windows (its scan failed: see tagger failed)")
    if any(row.features is None for row in rows):
        raise UsageError(f"{shown} was scanned without features: rescan it with features "
                         f"(tagger scan --force {shown})")
    found = known.space_of(vision[rows[0].model_id])
    if found != space:
        raise UsageError(f"{shown} has features of another space ({found}, by {known.name_of(vision[rows[0].model_id])}), "
                         f"not {space} of {model}: rescan it with {model} (tagger scan --force {shown})")
    return rows


def _covers(start: float, end: float, window_start: float, window_end: float) -> bool:
    """Whether the span [start, end] covers the window for half of the window (or of the span)."""
    overlap = min(end, window_end) - max(start, window_start)
    return overlap > 0 and overlap + 1e-9 >= 0.5 * min(window_end - window_start, end - start)
