"""The sink: the last stage of a scan, writing each video in one transaction.

A video's rows (its row in `videos`, its windows and segments) are replaced together, so a scan
killed at any moment leaves each video either fully old or fully new, and the next scan resumes
where it stopped. Storing a video also releases its claim. New segments derived from stored
windows, and new scores from stored features, are written only if the video is still stored as
the planner saw it (compare and set): another scan may have re-tagged it, with other windows, in
between.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import sqlalchemy as sa

from tagger.database import Database, database_time, insert_ignoring_conflict
from tagger.identity import TagIdentity
from tagger.model import LoadedModel
from tagger.schema import StoredVideo, VideoResult, claims, models, segments, videos, windows
from tagger.scoring import AddOns, ModelIds, Restored
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

    def register_models(self, loaded: Mapping[str, LoadedModel], addons: AddOns | None = None) -> ModelIds:
        """Store each model once, the add-on heads' row (when there are add-ons) and the identity
        the tags are stored under: the video model's own row, the vision+sound pair's, or the row
        of vision + sound + heads (`tagger.identity`)."""
        streams = {stream: self.register_model(m.sha256, m.name, m.contract.labels, m.contract.to_metadata())
                   for stream, m in loaded.items()}
        heads = self.register_addons(addons) if addons else None
        video, audio = loaded[VIDEO], loaded.get(AUDIO)
        identity = TagIdentity(video.sha256, audio.sha256 if audio else None, addons.sha256 if addons else None)
        tags = streams[VIDEO] if identity.is_model else self.register_identity(
            identity, [(video.name, video.contract.labels)] + ([(audio.name, audio.contract.labels)] if audio else []),
            addons)
        return ModelIds(streams, heads, tags)

    def register_addons(self, addons: AddOns) -> int:
        """The id of the row whose windows hold `addons`' scores."""
        return self.register_model(addons.sha256, addons.name, addons.labels, addons.row_meta())

    def register_identity(self, identity: TagIdentity, parts: Sequence[tuple[str, Sequence[str]]],
                          addons: AddOns | None) -> int:
        """The id of the row of `identity`, which has sound or heads (the vision model alone is its own
        row); `parts` are the (name, labels) of its vision and sound models."""
        names = [name for name, _ in parts] + ([addons.name] if addons else [])
        labels = [label for _, mine in parts for label in mine]
        labels += [label for label in (addons.labels if addons else ()) if label not in labels]
        return self.register_model(identity.sha256, "+".join(names), labels, identity.meta)

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
            row = _stored_as(conn, path, expect)
            if row is None:
                return False
            conn.execute(sa.delete(segments).where(segments.c.video_id == row.id))
            _insert_segments(conn, row.id, row.model_id, found)
            conn.execute(sa.update(videos).where(videos.c.id == row.id).values(settings=settings,
                                                                               scanned_at=database_time(conn)))
            return True

    def replace_scores(self, path: str, expect: StoredVideo, restored: Restored, found: Sequence,
                       settings: str | None, ids: ModelIds) -> bool:
        """Store a video re-scored from its stored features, in one transaction, compare and set as
        `replace_segments`: its vision windows' scores (and model) when a new vision model scored
        them, its add-on windows, its segments, and its video row under `ids.tags`. The features
        and the sound windows stay as they are."""
        with self.db.write() as conn:
            row = _stored_as(conn, path, expect)
            if row is None:
                return False
            if restored.rescored is not None:
                conn.execute(sa.update(windows).where(windows.c.id == sa.bindparam("window"))
                             .values(model_id=ids.streams[VIDEO], scores=sa.bindparam("new_scores")), [
                    {"window": int(window), "new_scores": scores.tobytes()}
                    for window, scores in zip(restored.rescored, np.asarray(restored.seen, dtype="<f4"))])
            conn.execute(sa.delete(windows).where(windows.c.video_id == row.id,
                                                  windows.c.model_id.not_in(list(ids.streams.values()))))
            if restored.added is not None:
                conn.execute(sa.insert(windows), [
                    {"video_id": row.id, "model_id": ids.heads, "start": float(s), "end": float(e),
                     "scores": scores.tobytes(), "features": None}
                    for s, e, scores in zip(restored.starts, restored.ends, np.asarray(restored.added, dtype="<f4"))])
            conn.execute(sa.delete(segments).where(segments.c.video_id == row.id))
            _insert_segments(conn, row.id, ids.tags, found)
            conn.execute(sa.update(videos).where(videos.c.id == row.id).values(
                model_id=ids.tags, settings=settings, scanned_at=database_time(conn)))
            return True


def _stored_as(conn: sa.Connection, path: str, expect: StoredVideo):
    """The video row at `path` (id, model_id) if it is still stored as `expect` says, else None."""
    row = conn.execute(
        sa.select(videos.c.id, videos.c.size, videos.c.mtime_ns, videos.c.model_id, videos.c.status,
                  videos.c.settings, videos.c.scanned_at).where(videos.c.path == path)
    ).one_or_none()
    return row if row is not None and StoredVideo(*row[1:]) == expect else None


def _insert_segments(conn: sa.Connection, video_id: int, model_id: int, found: Sequence) -> None:
    if found:
        conn.execute(sa.insert(segments), [
            {"video_id": video_id, "model_id": model_id, "label": seg.label, "start": seg.start, "end": seg.end,
             "score": seg.score, "max_score": seg.max_score, "source": seg.source}
            for seg in found
        ])
