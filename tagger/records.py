"""Stored tags as flat records, re-derived from window scores when asked.

Commands call these functions and render what they return (`tagger.listing`, `tagger.writers`,
`tagger.sidecars`, `tagger.report`); the SQL is in `tagger.selects`. Re-deriving (`--threshold`)
runs the scan's own deriver (`tagger.deriver.Deriver`) on the stored video and sound windows
with the contracts stored beside them, so `query --threshold X` gives exactly the segments a
scan at `--threshold X` stores.
"""

from __future__ import annotations

import difflib
import os
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import groupby
from types import SimpleNamespace

import sqlalchemy as sa

from tagger.contract import ModelContract
from tagger.errors import ModelError, UsageError
from tagger.database import Database
from tagger.deriver import Deriver
from tagger.escaping import undecodable_escaped
from tagger.fusion import FusionRules
from tagger.selects import (
    SegmentQuery, select_failed, select_label_summary, select_last_scans, select_models, select_paths_named,
    select_segments, select_video, select_windows,
)
from tagger.schema import decode_scores, group_windows
from tagger.scoring import extend_contract, extend_scores, is_addon_row, stored_addon_labels
from tagger.segments import SegmentRules


SEGMENT_FIELDS = (
    "path", "label", "start_s", "end_s", "duration_s", "start_tc", "end_tc",
    "score", "max_score", "source", "model", "video_duration_s", "fps",
)


def timecode(seconds: float) -> str:
    """HH:MM:SS.mmm"""
    millis = int(round(max(0.0, seconds) * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    return f"{hours:02d}:{minutes:02d}:{rest // 1000:02d}.{rest % 1000:03d}"


def segment_record(row) -> dict:
    """One stored segment row as the flat record every output format uses."""
    return {
        "path": undecodable_escaped(row.path),
        "label": row.label,
        "start_s": round(row.start, 3),
        "end_s": round(row.end, 3),
        "duration_s": round(row.end - row.start, 3),
        "start_tc": timecode(row.start),
        "end_tc": timecode(row.end),
        "score": round(row.score, 4),
        "max_score": round(row.max_score, 4),
        "source": row.source,
        "model": row.model,
        "video_duration_s": round(row.video_duration, 3) if row.video_duration is not None else None,
        "fps": round(row.fps, 3) if row.fps is not None else None,
    }


@contextmanager
def reading(db: str) -> Iterator[sa.Connection]:
    """A read-only snapshot of an existing database."""
    store = Database(db, create=False)
    try:
        with store.read() as conn:
            yield conn
    finally:
        store.close()


def check_labels(conn: sa.Connection, query: SegmentQuery) -> None:
    """Raise UsageError for a --label no stored model tags, naming the close matches among those it
    does: a model's background label (or a label it scores but never tags) is neither accepted
    nor suggested, since no segment can ever carry it."""
    taggable: set[str] = set()
    never: dict[str, str] = {}  # label -> why no segment carries it
    for model in select_models(conn).values():
        try:
            contract = ModelContract.from_metadata(model.meta or {}, model.name)
        except ModelError:  # a vision+sound pair's row (its models have rows of their own), or unreadable
            if "video" not in (model.meta or {}):
                taggable.update(model.labels or ())
            continue
        taggable.update(contract.tag_labels)
        never.update({label: f"{model.name}'s background label, never a tag" if label == contract.background
                      else f"a label {model.name} scores but never tags"
                      for label in contract.labels if label not in contract.tag_labels})
    hint = "`tagger query` with no --label lists the stored labels"
    for label in query.labels:
        if label in taggable:
            continue
        if label in never:
            raise UsageError(f"{label!r} is {never[label]}: {hint}")
        known = sorted(taggable)
        close = [k for k in known if k.lower() == label.lower()] or difflib.get_close_matches(label, known, 3, 0.6)
        raise UsageError(f"no stored model has the label {label!r}: "
                         + (f"did you mean {' or '.join(close)}?" if close else hint))


def segment_records(db: str, query: SegmentQuery, rules: SegmentRules | None = None) -> list[dict]:
    """Segments matching `query`: as stored, or with `rules`, re-derived from the stored window
    scores exactly as a scan with those rules (`--threshold`, `--smooth`, ...) derives them."""
    with reading(db) as conn:
        check_labels(conn, query)
        if rules is None:
            return [segment_record(row) for row in select_segments(conn, query)]
        # One video's windows in memory at a time; only the (far fewer) segments are kept.
        derived = rederive(select_windows(conn, query, whole_videos=True), select_models(conn), query, rules)
        records = [segment_record(seg) for seg in derived]
    key = {
        "path": lambda r: (r["path"], r["start_s"], r["label"]),
        "score": lambda r: (-r["score"], r["path"], r["start_s"]),
        "time": lambda r: (r["start_s"], r["path"], r["label"]),
    }[query.order]
    records.sort(key=key)
    return records[: query.limit] if query.limit else records


def rederive(rows: Iterable, known: dict, query: SegmentQuery, rules: SegmentRules,
             fusion: FusionRules = FusionRules()) -> Iterator[SimpleNamespace]:
    """Segments of every video in `rows` (from `select_windows`, video then time order) derived
    from its stored vision, add-on and sound windows by the scan's deriver, then filtered by `query`.

    `known` comes from `select_models`: each window model's stored metadata is its contract.
    """
    contracts: dict[int, ModelContract | None] = {}

    def contract_of(model_id: int) -> ModelContract | None:
        if model_id not in contracts:
            try:
                contracts[model_id] = ModelContract.from_metadata(known[model_id].meta or {}, known[model_id].name)
            except ModelError:
                contracts[model_id] = None  # not a model's contract (a vision+sound pair's row)
        return contracts[model_id]

    derivers: dict[tuple, Deriver] = {}
    for _, video_rows in groupby(rows, key=lambda r: r.video_id):
        video_rows = list(video_rows)
        streams: dict[str, tuple[ModelContract, object]] = {}
        added = None  # (the add-on row's labels and thresholds, its windows)
        for model_id, arrays in group_windows(video_rows).items():
            if is_addon_row(known[model_id].meta):
                added = (model_id, stored_addon_labels(known[model_id].meta), arrays)
                continue
            contract = contract_of(model_id)
            if contract is not None and contract.kind not in streams:
                streams[contract.kind] = (contract, arrays)
        if "video" not in streams:
            continue
        (seen_contract, seen), heard = streams["video"], streams.get("audio")
        if heard is not None and len(heard[1].starts) != len(seen.starts):
            heard = None  # not windows of the same plan: never stored so by a scan
        if added is not None and len(added[2].starts) != len(seen.starts):
            added = None
        key = (id(seen_contract), id(heard[0]) if heard else None, added[0] if added else None)
        if key not in derivers:
            extended = extend_contract(seen_contract, *added[1]) if added else seen_contract
            derivers[key] = Deriver(extended, heard[0] if heard else None, rules, fusion)
        scores = extend_scores(seen_contract, seen.scores, added[1][0], added[2].scores) if added else seen.scores
        first = video_rows[0]
        for seg in derivers[key].segments(seen.starts, seen.ends, scores, heard[1].scores if heard else None):
            if query.labels and seg.label not in query.labels:
                continue
            if query.source is not None and seg.source != query.source:
                continue
            if query.min_score is not None and seg.score < query.min_score:
                continue
            if query.min_duration is not None and seg.duration < query.min_duration - 1e-9:
                continue
            yield SimpleNamespace(path=first.path, label=seg.label, start=seg.start, end=seg.end, score=seg.score,
                                  max_score=seg.max_score, source=seg.source, model=first.video_model or first.model,
                                  video_duration=first.video_duration, fps=first.fps)


def label_summary(db: str, query: SegmentQuery) -> list[dict]:
    """Per label: videos, segments and total tagged seconds."""
    with reading(db) as conn:
        check_labels(conn, query)
        return [
            {"label": r.label, "videos": r.videos, "segments": r.segments, "tagged_s": round(r.seconds or 0.0, 3)}
            for r in select_label_summary(conn, query)
        ]


WINDOW_FIELDS = ("path", "model", "start_s", "end_s", "label", "score")


def window_records(db: str, query: SegmentQuery) -> Iterator[dict]:
    """Raw window scores, one record per window and label (long format: any model's labels fit)."""
    with reading(db) as conn:  # open while the caller consumes the records: windows are streamed
        check_labels(conn, query)
        known = select_models(conn)
        for row in select_windows(conn, query):
            for label, score in zip(known[row.model_id].labels, decode_scores(row.scores)):
                if query.labels and label not in query.labels:
                    continue
                yield {"path": undecodable_escaped(row.path), "model": row.model, "start_s": round(row.start, 3), "end_s": round(row.end, 3),
                       "label": label, "score": round(float(score), 4)}


@dataclass(frozen=True)
class VideoTimeline:
    """What `tagger show` prints about one stored video."""

    video: sa.Row  # the stored video row with its model's name
    segments: list[dict]  # segment records in time order
    windows: dict[str, int]  # windows stored per stream ("video", "audio")


def video_timeline(db: str, path: str) -> VideoTimeline:
    """One video's stored row, its segments and how many windows each stream stored.

    Raises:
        UsageError: the video is not in the database.
    """
    with reading(db) as conn:
        video = select_video(conn, stored_path(conn, path))
        if video is None:
            raise UsageError(f"{path} is not in the database: scan it first (tagger scan {path})")
        exact = SegmentQuery(exact_path=video.path, order="time")
        segs = [segment_record(r) for r in select_segments(conn, exact)]
        known = select_models(conn)
        counts: dict[str, int] = {}
        for row in select_windows(conn, exact):
            kind = (known[row.model_id].meta or {}).get("tagger.kind", "video")
            counts[kind] = counts.get(kind, 0) + 1
    return VideoTimeline(video, segs, counts)


def stored_path(conn: sa.Connection, path: str) -> str | None:
    """The path the video at `path` is stored under (as given, absolute, resolved, or another route to
    the same file, such as a symlinked folder), or None when it is not stored."""
    for spelling in _spellings(path):
        if select_video(conn, spelling) is not None:
            return spelling
    same = [p for p in select_paths_named(conn, os.path.basename(path)) if _same_file(p, path)]
    return same[0] if same else None


TIME_FORMS = "seconds (75.5), MM:SS or HH:MM:SS(.s)"


def parse_time(text: str) -> float:
    """Seconds from `75.5`, `1:15.5` or `0:01:15.5`; UsageError naming the forms otherwise."""
    try:
        parts = [float(part) for part in text.strip().split(":")]
        if not 1 <= len(parts) <= 3 or any(p < 0 or p != p for p in parts) or any(p >= 60 for p in parts[1:]):
            raise ValueError(text)
    except ValueError:
        raise UsageError(f"{text!r} is not a time: give {TIME_FORMS}") from None
    seconds = 0.0
    for part in parts:
        seconds = seconds * 60 + part
    return seconds


def _spellings(path: str) -> list[str]:
    """The ways a scan may have stored `path`: absolute from the shell's working folder ($PWD keeps
    symbolic links that os.getcwd() resolves), absolute from os.getcwd(), resolved, and as given."""
    given = os.path.expanduser(path)
    shell = os.environ.get("PWD")
    spelled = [os.path.normpath(os.path.join(shell, given))] if shell and _same_file(shell, ".") else []
    return list(dict.fromkeys([*spelled, os.path.abspath(given), os.path.realpath(given), path]))


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@dataclass(frozen=True)
class FailedVideo:
    """A video whose last scan failed, and why."""

    path: str
    reason: str


def failed_videos(db: str) -> list[FailedVideo]:
    """Every video whose last scan failed, with the reason."""
    with reading(db) as conn:
        return [FailedVideo(row.path, row.error or "") for row in select_failed(conn)]


@dataclass(frozen=True)
class ScanRecord:
    """One scan as the scans table records it."""

    scan_id: int
    started_at: float  # seconds since the epoch
    status: str  # running | finished | interrupted
    counts: dict  # found, tagged, skipped, failed, ...; empty while running or after a kill
    error: str | None  # the database error that stopped it, when one did


def last_scans(db: str, count: int = 10) -> list[ScanRecord]:
    """The last `count` scans of the database, oldest first."""
    with reading(db) as conn:
        rows = select_last_scans(conn, count)
    return [ScanRecord(row.id, row.started_at, row.status, {k: v for k, v in (row.counts or {}).items() if k != "error"},
                       (row.counts or {}).get("error")) for row in rows]
