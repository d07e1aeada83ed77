"""The sink: the last stage of a scan, writing each video in one transaction.

A video's rows (its row in `videos`, its windows and segments) are replaced together, so a scan
killed at any moment leaves each video either fully old or fully new, and the next scan resumes
where it stopped. Storing a video also releases its claim. New segments derived from stored
windows are written only if the video is still stored as the planner saw it (compare and set):
another scan may have re-tagged it, with other windows, in between.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence

import numpy as np
import sqlalchemy as sa

from tagger.database import Database, database_time, insert_ignoring_conflict
from tagger.model import LoadedModel
from tagger.schema import StoredVideo, VideoResult, claims, models, segments, videos, windows
from tagger.step import AUDIO, VIDEO


class Sink:
    """Writes a scan's results into `db`."""

    def __init__(self, db: Database):
        self.db = db

    def register_model(self, sha256: str, name: str, labels: Sequence[str], meta: dict) -> int:
        """The id of the model with `sha256`, adding it on first use."""
        with self.db.write() as conn:  # scans starting together on PostgreSQL may add it at once: one wins
            conn.execute(insert_ignoring_conflict(conn, models, "sha256")
                         .values(sha256=sha256, name=name, labels=list(labels), meta=meta))
            return conn.execute(sa.select(models.c.id).where(models.c.sha256 == sha256)).scalar_one()

    def register_models(self, loaded: Mapping[str, LoadedModel]) -> tuple[dict[str, int], int]:
        """Store each model once; returns (stream -> the id its window scores are stored under, the
        id its tags are stored under: the video model's, or the vision+sound pair's)."""
        ids = {stream: self.register_model(m.sha256, m.name, m.contract.labels, m.contract.to_metadata())
               for stream, m in loaded.items()}
        if AUDIO not in loaded:
            return ids, ids[VIDEO]
        video, audio = loaded[VIDEO], loaded[AUDIO]
        pair = hashlib.sha256(f"{video.sha256}+{audio.sha256}".encode()).hexdigest()
        pair_id = self.register_model(pair, f"{video.name}+{audio.name}",
                                      [*video.contract.labels, *audio.contract.labels],
                                      {"video": video.sha256, "audio": audio.sha256})
        return ids, pair_id

    def save_video(self, result: VideoResult, model_id: int) -> None:
        """Replace everything stored for `result.path` in one transaction, and release its claim.

        A failure for an unchanged file keeps the tags of its last good scan: they still describe it.
        """
        with self.db.write() as conn:
            old = conn.execute(
                sa.select(videos.c.id, videos.c.size, videos.c.mtime_ns).where(videos.c.path == result.path)
            ).one_or_none()
            keep_old_tags = (
                result.status != "ok" and old is not None and (old.size, old.mtime_ns) == (result.size, result.mtime_ns)
            )
            values = {
                "size": result.size, "mtime_ns": result.mtime_ns, "fingerprint": result.fingerprint,
                "status": result.status, "error": result.error, "scanned_at": database_time(conn),
                "model_id": model_id,
            }
            if not keep_old_tags:
                values.update(
                    decoder=result.decoder, duration=result.duration, fps=result.fps, frames=result.frames,
                    width=result.width, height=result.height, settings=result.settings,
                )
            if old is None:
                video_id = conn.execute(sa.insert(videos).values(path=result.path, **values)).inserted_primary_key[0]
            else:
                video_id = old.id
                conn.execute(sa.update(videos).where(videos.c.id == video_id).values(**values))
                if not keep_old_tags:
                    conn.execute(sa.delete(windows).where(windows.c.video_id == video_id))
                    conn.execute(sa.delete(segments).where(segments.c.video_id == video_id))
            for window_model, scores in (result.window_scores or {}).items() if result.status == "ok" else ():
                features = (result.window_features or {}).get(window_model)
                vectors = np.asarray(features, dtype="<f2") if features is not None else [None] * len(scores)
                conn.execute(sa.insert(windows), [
                    {"video_id": video_id, "model_id": window_model, "start": float(s), "end": float(e),
                     "scores": row.tobytes(), "features": None if vector is None else vector.tobytes()}
                    for s, e, row, vector in zip(result.window_starts, result.window_ends,
                                                 np.asarray(scores, dtype="<f4"), vectors)
                ])
            if result.status == "ok":
                _insert_segments(conn, video_id, model_id, result.segments)
            conn.execute(sa.delete(claims).where(claims.c.path == result.path))  # stored: free for later scans

    def replace_segments(self, path: str, expect: StoredVideo, found: Sequence, settings: str) -> bool:
        """Replace the segments of the video at `path` with `found`, recording `settings`, in one
        transaction; False, writing nothing, if it is no longer stored as `expect` says (another
        scan stored it since)."""
        with self.db.write() as conn:
            row = conn.execute(
                sa.select(videos.c.id, videos.c.size, videos.c.mtime_ns, videos.c.model_id, videos.c.status,
                          videos.c.settings, videos.c.scanned_at).where(videos.c.path == path)
            ).one_or_none()
            if row is None or StoredVideo(*row[1:]) != expect:
                return False
            conn.execute(sa.delete(segments).where(segments.c.video_id == row.id))
            _insert_segments(conn, row.id, row.model_id, found)
            conn.execute(sa.update(videos).where(videos.c.id == row.id).values(settings=settings,
                                                                               scanned_at=database_time(conn)))
            return True


def _insert_segments(conn: sa.Connection, video_id: int, model_id: int, found: Sequence) -> None:
    if found:
        conn.execute(sa.insert(segments), [
            {"video_id": video_id, "model_id": model_id, "label": seg.label, "start": seg.start, "end": seg.end,
             "score": seg.score, "max_score": seg.max_score, "source": seg.source}
            for seg in found
        ])
