"""The feature index: every stored window of one feature space as a memory-mapped matrix.

`tagger similar` ranks every stored window by cosine against one of them, and `tagger learn`
scores a new head on all of them to say what it would tag. Reading a million feature blobs out of
the database for each question takes far longer than the arithmetic, so the index keeps a copy in
the cache folder (`$TAGGER_CACHE`, else the user cache directory), one folder per database and
feature space:

- `unit.f32`: (N, D) float32, each window's features divided by their length: cosine is one
  matrix-vector product over the mapped file, and the features are the rows times their `norm`.
  float32 rather than the stored float16 because numpy converts float16 at a tenth of the speed
  the product runs at (measured: 1.0 s against 0.2 s for a million rows of 274), so the copy is
  twice the size of the stored features and a query at a million windows reads 1.1 GB of page cache;
- `rows.bin`: (N,) records of window id, video id, start, end and norm; a row whose video id is
  -1 is gone;
- `videos.npy`: the videos the rows mirror, with the `scanned_at` each had when it was read;
- `state.json`: how many rows are valid, how many are gone, the dimension and the space.

It is refreshed incrementally before each use: every write of a video's windows sets its
`scanned_at`, so the rows of videos stored again (or gone) are dropped and the windows of new and
changed videos appended; nothing else is read. A refresh cut short leaves rows past the valid
count, ignored and overwritten by the next one. The folder is compacted when a quarter of its rows
are gone. A cache folder that cannot be written gives a temporary index, rebuilt each time.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from tagger.schema import decode_features, videos, windows

ENV_CACHE = "TAGGER_CACHE"
FORMAT = 1  # raise when the files' layout changes: an index of another format is rebuilt
ROW = np.dtype([("window", "<i8"), ("video", "<i8"), ("start", "<f4"), ("end", "<f4"), ("norm", "<f4")])
CHUNK = 16384  # rows normalised or copied at once while the index is written
VIDEOS_PER_SELECT = 500  # video ids per IN (...) list while reading windows
READ_BATCH = 4096  # window rows held at once while reading: 2 MB of features at D = 274


def cache_root() -> Path:
    """$TAGGER_CACHE, else `features/` in the user cache directory (~/.cache/tagger on Linux)."""
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE]).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("tagger", appauthor=False)) / "features"


def index_folder(database: str, space: str) -> Path:
    """The cache folder of one database (as --db names it, passwords hidden) and feature space."""
    where = database if "://" in database else str(Path(database).expanduser().resolve())
    digest = hashlib.sha256
    return cache_root() / digest(where.encode()).hexdigest()[:16] / digest(space.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Hits:
    """The best rows of a ranking: their records and scores, best first."""

    rows: np.ndarray  # (n,) ROW records
    scores: np.ndarray  # (n,) float32


class FeatureIndex:
    """The stored windows of one feature space (the vision models `model_ids`) of one database."""

    def __init__(self, folder: Path, space: str, dim: int, rows: np.ndarray, unit: np.ndarray):
        self.folder, self.space, self.dim, self.rows, self.unit = folder, space, dim, rows, unit

    @property
    def size(self) -> int:
        """Rows in the index, gone ones included (see `live`)."""
        return len(self.rows)

    @property
    def live(self) -> np.ndarray:
        """(N,) bool: the rows still stored."""
        return self.rows["video"] >= 0

    @classmethod
    @contextmanager
    def opened(cls, conn: sa.Connection, database: str, space: str, dim: int,
               model_ids: frozenset[int]) -> Iterator[FeatureIndex]:
        """The index of `space`, brought up to date with the database `conn` reads."""
        folder = index_folder(database, space)
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with _locked(folder):  # loaded under the lock: no compaction swaps the files in between
                _refresh(folder, conn, space, dim, model_ids)
                index = cls.load(folder)
        except OSError:  # no writable cache: a temporary index, built for this question only
            with tempfile.TemporaryDirectory(prefix="tagger-features-") as scratch:
                _refresh(Path(scratch), conn, space, dim, model_ids)
                yield cls.load(Path(scratch))
            return
        yield index

    @classmethod
    def load(cls, folder: Path) -> FeatureIndex:
        state = json.loads((folder / "state.json").read_text())
        count, dim = state["rows"], state["dim"]
        if not count:
            return cls(folder, state["space"], dim, np.zeros(0, ROW), np.zeros((0, dim), np.float32))
        rows = np.memmap(folder / "rows.bin", ROW, "r", shape=(count,))
        unit = np.memmap(folder / "unit.f32", np.float32, "r", shape=(count, dim))
        return cls(folder, state["space"], dim, rows, unit)

    def cosine(self, query: np.ndarray) -> np.ndarray:
        """(N,) cosine of every row with the (D,) `query`; -inf for rows that are gone."""
        length = float(np.linalg.norm(query))
        unit = np.asarray(query, np.float32) / (length or 1.0)
        return np.where(self.live, np.clip(self.unit @ unit, -1.0, 1.0), -np.inf).astype(np.float32)

    def linear(self, weights: np.ndarray, bias: np.ndarray) -> np.ndarray:
        """(N, K) features @ weights.T + bias of every row (a head's logits)."""
        return (self.unit @ np.asarray(weights, np.float32).T) * self.rows["norm"][:, None] + bias

    def features(self, rows: np.ndarray) -> np.ndarray:
        """(n, D) float32 features of the rows at the (n,) positions `rows`."""
        return np.asarray(self.unit[rows], np.float32) * self.rows["norm"][rows][:, None]

    def best(self, scores: np.ndarray, n: int, leave_out: np.ndarray | None = None) -> Hits:
        """The `n` rows of highest `scores`, best first, without the rows `leave_out` marks."""
        scores = scores if leave_out is None else np.where(leave_out, -np.inf, scores)
        n = min(n, int(np.isfinite(scores).sum()))
        if n == 0:
            return Hits(np.zeros(0, ROW), np.zeros(0, np.float32))
        top = np.argpartition(-scores, n - 1)[:n]
        top = top[np.lexsort((self.rows["start"][top], self.rows["video"][top], -scores[top]))]
        return Hits(np.asarray(self.rows[top]), scores[top])


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """One refresh of a folder at a time (other processes wait); readers need no lock."""
    try:
        import fcntl
    except ImportError:  # not POSIX: refreshes are not guarded against each other
        yield
        return
    with open(folder / "lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_state(folder: Path, space: str, dim: int) -> tuple[dict, np.ndarray]:
    """The folder's state and its videos (id, scanned_at), or an empty index of `space`."""
    empty = {"format": FORMAT, "space": space, "dim": dim, "rows": 0, "gone": 0}
    try:
        state = json.loads((folder / "state.json").read_text())
        cached = np.load(folder / "videos.npy")
        if (state.get("format"), state.get("space"), state.get("dim")) == (FORMAT, space, dim):
            return state, cached
    except (OSError, ValueError, KeyError):
        pass
    return empty, np.zeros((0, 2), np.float64)


def _write_state(folder: Path, state: dict, included: np.ndarray) -> None:
    """Replace state.json and videos.npy, each atomically: videos first, so a crash between them
    only ever under-states what the rows hold."""
    partial = folder / "videos.partial.npy"
    np.save(partial, included)
    os.replace(partial, folder / "videos.npy")
    (folder / "state.partial").write_text(json.dumps(state))
    os.replace(folder / "state.partial", folder / "state.json")


def _refresh(folder: Path, conn: sa.Connection, space: str, dim: int, model_ids: frozenset[int]) -> None:
    """Bring the folder's index up to date with the database: see the module docstring."""
    state, cached = _read_state(folder, space, dim)
    current = np.array([tuple(row) for row in conn.execute(sa.select(videos.c.id, videos.c.scanned_at)
                                                               .order_by(videos.c.id))], dtype=np.float64).reshape(-1, 2)
    unchanged = _unchanged(cached, current)
    todo = current[~unchanged]
    kept = current[unchanged]
    gone = np.setdiff1d(cached[:, 0], kept[:, 0]).astype(np.int64)
    if not len(todo) and not len(gone) and (folder / "state.json").exists():
        return
    _write_state(folder, state, kept)  # the videos being read again count as absent until they are in
    count = state["rows"]
    if len(gone) and count:
        rows = np.memmap(folder / "rows.bin", ROW, "r+", shape=(count,))
        dropped = np.isin(rows["video"], gone)
        rows["video"][dropped] = -1
        rows.flush()
        state["gone"] += int(dropped.sum())
        del rows
    added = _append_windows(folder, conn, todo[:, 0].astype(np.int64), count, dim, model_ids)
    state["rows"] = count + added
    included = np.concatenate([kept, todo])
    included = included[np.argsort(included[:, 0], kind="stable")]
    _write_state(folder, state, included)
    if state["gone"] > state["rows"] // 4:
        _compact(folder, state, included)


def _unchanged(cached: np.ndarray, current: np.ndarray) -> np.ndarray:
    """(len(current),) bool: the videos the index holds with the same scanned_at."""
    if not len(cached):
        return np.zeros(len(current), bool)
    at = np.clip(np.searchsorted(cached[:, 0], current[:, 0]), 0, len(cached) - 1)
    return (cached[at, 0] == current[:, 0]) & (cached[at, 1] == current[:, 1])


def _append_windows(folder: Path, conn: sa.Connection, video_ids: np.ndarray, count: int, dim: int,
                    model_ids: frozenset[int]) -> int:
    """Append the featured windows of `video_ids` after the first `count` rows; how many were added."""
    added = 0
    with open(folder / "rows.bin", "r+b" if (folder / "rows.bin").exists() else "wb") as rows_file, \
            open(folder / "unit.f32", "r+b" if (folder / "unit.f32").exists() else "wb") as unit_file:
        rows_file.truncate(count * ROW.itemsize)
        unit_file.truncate(count * dim * 4)
        rows_file.seek(0, os.SEEK_END)
        unit_file.seek(0, os.SEEK_END)
        for first in range(0, len(video_ids), VIDEOS_PER_SELECT) if model_ids else ():
            chosen = [int(v) for v in video_ids[first : first + VIDEOS_PER_SELECT]]
            found = conn.execute(
                sa.select(windows.c.id, windows.c.video_id, windows.c.start, windows.c.end, windows.c.features)
                .where(windows.c.video_id.in_(chosen), windows.c.model_id.in_(sorted(model_ids)),
                       windows.c.features.is_not(None))
                .order_by(windows.c.video_id, windows.c.start), execution_options={"yield_per": READ_BATCH})
            for batch in found.partitions(READ_BATCH):
                features = np.stack([decode_features(r.features) for r in batch]).astype(np.float32)
                norms = np.linalg.norm(features, axis=1)
                records = np.array([(r.id, r.video_id, r.start, r.end, n) for r, n in zip(batch, norms)], ROW)
                rows_file.write(records.tobytes())
                unit_file.write((features / np.maximum(norms, 1e-12)[:, None]).astype("<f4").tobytes())
                added += len(batch)
    return added


def _compact(folder: Path, state: dict, included: np.ndarray) -> None:
    """Rewrite the folder without the rows that are gone."""
    index = FeatureIndex.load(folder)
    keep = np.flatnonzero(index.live)
    for name, array in (("rows.bin", index.rows), ("unit.f32", index.unit)):
        with open(folder / f"{name}.partial", "wb") as handle:
            for first in range(0, len(keep), CHUNK):
                handle.write(np.ascontiguousarray(array[keep[first : first + CHUNK]]).tobytes())
    del index
    state = {**state, "rows": len(keep), "gone": 0}
    _write_state(folder, {**state, "rows": 0}, np.zeros((0, 2)))  # while the files are swapped: nothing valid
    for name in ("rows.bin", "unit.f32"):
        os.replace(folder / f"{name}.partial", folder / name)
    _write_state(folder, state, included)
