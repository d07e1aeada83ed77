"""The database schema: its tables, their row types and the migrations between versions.

`tagger.database` opens a database with this schema; the selects here are what the planner and
the claims read of a stored video, and the one way stored window rows become arrays.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import sqlalchemy as sa

SCHEMA_VERSION = 4
# What brings a database from the version before each key up to it: (table, column, its type),
# added where the column is not there yet, so a migration cut short can run again. New tables need
# no entry: `metadata.create_all` adds them.
MIGRATIONS = {
    2: [("videos", "settings", sa.String())],  # tagging settings
    3: [("scans", "owner", sa.String()),  # with the claims table
        ("scans", "alive_at", sa.Float())],
    4: [("windows", "features", sa.LargeBinary())],  # stored window features
}
metadata = sa.MetaData()

UNDECODABLE_PREFIX = "bytes:"  # never the start of a stored path: every path a scan stores is absolute


class LosslessText(sa.types.TypeDecorator):
    """Text that may hold a file name's bytes that are not UTF-8, stored losslessly.

    Python holds such bytes as surrogate escapes, which no database encoding accepts. Text without
    them is stored as it is (so globs and older rows work unchanged); text with them is stored as
    "bytes:" + the text with backslashes doubled and each such byte written \\xNN, and read back
    to the very same string, so the file opens again on the next scan.
    """

    impl = sa.String
    cache_ok = True

    def process_bind_param(self, value, dialect):
        if value is None or not (_UNDECODABLE.search(value) or value.startswith(UNDECODABLE_PREFIX)):
            return value
        return UNDECODABLE_PREFIX + _UNDECODABLE_OR_BACKSLASH.sub(
            lambda m: "\\\\" if m.group() == "\\" else f"\\x{ord(m.group()) - 0xDC00:02x}", value)

    def process_result_value(self, value, dialect):
        if value is None or not value.startswith(UNDECODABLE_PREFIX):
            return value
        return _ESCAPE.sub(lambda m: "\\" if m.group() == "\\\\" else chr(0xDC00 + int(m.group()[2:], 16)),
                           value[len(UNDECODABLE_PREFIX):])


_UNDECODABLE = re.compile("[\udc80-\udcff]")
_UNDECODABLE_OR_BACKSLASH = re.compile("[\udc80-\udcff\\\\]")
_ESCAPE = re.compile(r"\\\\|\\x[0-9a-f]{2}")

meta_table = sa.Table(
    "meta", metadata, sa.Column("key", sa.String, primary_key=True), sa.Column("value", sa.String)
)
models = sa.Table(
    "models",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("sha256", sa.String(64), unique=True, nullable=False),
    sa.Column("name", sa.String, nullable=False),
    sa.Column("labels", sa.JSON, nullable=False),
    sa.Column("meta", sa.JSON, nullable=False),
)
videos = sa.Table(
    "videos",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("path", LosslessText, unique=True, nullable=False),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("fingerprint", sa.String),
    sa.Column("duration", sa.Float),
    sa.Column("fps", sa.Float),
    sa.Column("frames", sa.Integer),
    sa.Column("width", sa.Integer),
    sa.Column("height", sa.Integer),
    sa.Column("status", sa.String(8), nullable=False),  # ok | failed
    sa.Column("error", LosslessText),
    sa.Column("decoder", sa.String(16)),
    sa.Column("scanned_at", sa.Float, nullable=False),
    sa.Column("model_id", sa.ForeignKey("models.id")),
    # The settings its tags were made with (ScanSettings.tagging_key, JSON); NULL when stored by
    # schema 1, before they were recorded.
    sa.Column("settings", sa.String),
)
windows = sa.Table(
    "windows",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("video_id", sa.ForeignKey("videos.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("model_id", sa.ForeignKey("models.id"), nullable=False),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("end", sa.Float, nullable=False),
    sa.Column("scores", sa.LargeBinary, nullable=False),  # float32 little-endian, model label order
    # What the model's backbone saw (its `features` output), float16 little-endian; NULL for models
    # without features, scans with --no-features and windows stored before schema 4.
    sa.Column("features", sa.LargeBinary),
)
segments = sa.Table(
    "segments",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("video_id", sa.ForeignKey("videos.id", ondelete="CASCADE"), nullable=False, index=True),
    sa.Column("model_id", sa.ForeignKey("models.id"), nullable=False),
    sa.Column("label", sa.String, nullable=False),
    sa.Column("start", sa.Float, nullable=False),
    sa.Column("end", sa.Float, nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("max_score", sa.Float, nullable=False),
    sa.Column("source", sa.String(8), nullable=False, server_default="video"),
    sa.Index("ix_segments_label_score", "label", "score"),
)
scans = sa.Table(
    "scans",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("started_at", sa.Float, nullable=False),
    sa.Column("finished_at", sa.Float),
    sa.Column("status", sa.String(12), nullable=False),  # running | finished | interrupted
    sa.Column("roots", sa.JSON, nullable=False),
    sa.Column("model_id", sa.ForeignKey("models.id")),
    sa.Column("counts", sa.JSON),
    sa.Column("options", sa.JSON),
    sa.Column("owner", sa.String),  # the scan process, as its claims name it
    sa.Column("alive_at", sa.Float),  # when it last renewed its claims: a running scan that stops is dead
)

# A video a scan is decoding: claimed before it is decoded, released when it is stored. The claim
# is a lease, renewed while its scan lives, so the video of a scan that died is free again once
# `expires_at` passes (seconds since the epoch, by the database's clock on PostgreSQL).
claims = sa.Table(
    "claims",
    metadata,
    sa.Column("path", LosslessText, primary_key=True),  # as videos.path
    sa.Column("owner", sa.String, nullable=False),  # machine:pid:random of the claiming scan
    sa.Column("expires_at", sa.Float, nullable=False),
)


class StoredVideo(NamedTuple):
    """What the database holds about a video's last scan, for deciding whether to scan it again."""

    size: int
    mtime_ns: int
    model_id: int | None
    status: str
    settings: str | None  # ScanSettings.tagging_key; None when stored by schema 1
    scanned_at: float


@dataclass(frozen=True)
class VideoResult:
    """Everything a scan learned about one video, stored in one transaction."""

    path: str
    size: int
    mtime_ns: int
    fingerprint: str | None
    status: str  # ok | failed
    error: str | None = None
    decoder: str | None = None
    duration: float | None = None
    fps: float | None = None
    frames: int | None = None
    width: int | None = None
    height: int | None = None
    window_starts: np.ndarray | None = None  # (W,)
    window_ends: np.ndarray | None = None  # (W,)
    window_scores: dict[int, np.ndarray] | None = None  # model id -> (W, K): video, and audio if heard
    window_features: dict[int, np.ndarray] | None = None  # model id -> (W, D) float16, models with features
    segments: Sequence = ()  # tagger.segments.Segment
    settings: str | None = None  # ScanSettings.tagging_key of the scan that made the tags


def decode_scores(blob: bytes) -> np.ndarray:
    """Window scores as stored -> (K,) float32."""
    return np.frombuffer(blob, dtype="<f4")


def decode_features(blob: bytes) -> np.ndarray:
    """Window features as stored -> (D,) float16."""
    return np.frombuffer(blob, dtype="<f2")


_STORED_VIDEO = sa.select(videos.c.path, videos.c.size, videos.c.mtime_ns, videos.c.model_id, videos.c.status,
                          videos.c.settings, videos.c.scanned_at)


def stored_videos(conn: sa.Connection) -> dict[str, StoredVideo]:
    """path -> what is stored about it, for every stored video."""
    return {row.path: StoredVideo(*row[1:]) for row in conn.execute(_STORED_VIDEO)}


def stored_video(conn: sa.Connection, path: str) -> StoredVideo | None:
    """What is stored about the video at `path` now, or None."""
    row = conn.execute(_STORED_VIDEO.where(videos.c.path == path)).one_or_none()
    return StoredVideo(*row[1:]) if row is not None else None


@dataclass(frozen=True)
class WindowArrays:
    """One model's stored windows of one video, as arrays."""

    starts: np.ndarray  # (W,) seconds
    ends: np.ndarray  # (W,) seconds
    scores: np.ndarray  # (W, K) float32
    ids: np.ndarray | None = None  # (W,) window row ids, when the rows carried them
    features: np.ndarray | None = None  # (W, D) float16, when the rows carried features and every window has them


def group_windows(rows: Iterable) -> dict[int, WindowArrays]:
    """model id -> its windows, from one video's stored window rows (with model_id, start, end,
    scores; `id` and `features` too where selected) in time order; the one place stored windows
    become arrays."""
    by_model: dict[int, list] = {}
    for row in rows:
        by_model.setdefault(row.model_id, []).append(row)
    grouped = {}
    for model_id, mine in by_model.items():
        fields = mine[0]._fields
        ids = np.array([r.id for r in mine], dtype=np.int64) if "id" in fields else None
        vectors = [r.features for r in mine] if "features" in fields else [None]
        features = None if any(v is None for v in vectors) else np.stack([decode_features(v) for v in vectors])
        grouped[model_id] = WindowArrays(np.array([r.start for r in mine]), np.array([r.end for r in mine]),
                                         np.stack([decode_scores(r.scores) for r in mine]), ids, features)
    return grouped


def video_windows(conn: sa.Connection, path: str, features: bool = False) -> dict[int, WindowArrays]:
    """model id -> the stored windows of the video at `path` (empty when none are stored), with
    their row ids, and with `features` their features."""
    columns = [windows.c.id, windows.c.model_id, windows.c.start, windows.c.end, windows.c.scores]
    return group_windows(conn.execute(
        sa.select(*columns, *([windows.c.features] if features else []))
        .join(videos, videos.c.id == windows.c.video_id).where(videos.c.path == path)
        .order_by(windows.c.model_id, windows.c.start)))
