"""What a video's tags are made with: the vision model, the sound model and the add-on heads.

Each combination is a row of the `models` table, and a stored video names the row its tags were
made under (`videos.model_id`), so adding, removing or teaching again a head, like changing a
model, makes stored videos out of date. The vision model alone is its own row, and a vision+sound
pair the row it always was, so databases from before add-on heads stay current.

`rescore_problem` is the one rule of when stored tags can be brought up to date from the stored
features, without decoding: the same sound, and features of the same space, scored either by the
same vision model or by one that records its own head (`tagger.head`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import sqlalchemy as sa

from tagger.contract import ModelContract
from tagger.errors import ModelError
from tagger.heads import feature_space
from tagger.schema import models


@dataclass(frozen=True)
class TagIdentity:
    """The models a video's tags come from, by sha256."""

    video: str
    audio: str | None = None
    heads: str | None = None  # AddOns.sha256; None without add-ons

    @property
    def sha256(self) -> str:
        """The identity's row: the vision model's own without sound or heads, the pair's with sound."""
        if self.heads:
            return hashlib.sha256(f"{self.video}+{self.audio or ''}+heads:{self.heads}".encode()).hexdigest()
        if self.audio:
            return hashlib.sha256(f"{self.video}+{self.audio}".encode()).hexdigest()
        return self.video

    @property
    def meta(self) -> dict:
        """What the identity's row stores (a pair's row stores the first two, as it always has)."""
        parts = {"video": self.video, "audio": self.audio}
        return {**parts, "heads": self.heads} if self.heads else parts

    @property
    def is_model(self) -> bool:
        """Whether the identity is the vision model's own row (no sound, no heads)."""
        return not (self.audio or self.heads)


@dataclass(frozen=True)
class StoredModels:
    """What the models table says: every row's identity (for tag rows) and vision models' spaces."""

    identities: dict[int, TagIdentity]  # model id -> identity, for the rows tags can be stored under
    spaces: dict[str, str | None]  # vision model sha256 -> its feature space (None: gives no features)
    rows: dict[str, sa.Row]  # sha256 -> its row (id, sha256, name, labels, meta), every row

    def space_of(self, sha256: str) -> str | None:
        return self.spaces.get(sha256)

    def name_of(self, sha256: str | None) -> str:
        row = self.rows.get(sha256 or "")
        return row.name if row is not None else "its model"

    def vision_ids(self, space: str | None) -> frozenset[int]:
        """The ids of the vision models whose features are of `space` (none for None)."""
        if space is None:
            return frozenset()
        return frozenset(self.rows[sha].id for sha, found in self.spaces.items() if found == space)


def stored_models(conn: sa.Connection) -> StoredModels:
    """Read the models table."""
    identities, spaces, rows = {}, {}, {}
    for row in conn.execute(sa.select(models.c.id, models.c.sha256, models.c.name, models.c.labels, models.c.meta)):
        meta = row.meta or {}
        rows[row.sha256] = row
        if "video" in meta:  # a pair's or an identity's row
            identities[row.id] = TagIdentity(meta["video"], meta.get("audio"), meta.get("heads"))
        elif meta.get("tagger.kind", "video") == "video" and "tagger.labels" in meta:
            identities[row.id] = TagIdentity(row.sha256)
            try:
                spaces[row.sha256] = feature_space(ModelContract.from_metadata(meta, row.name))
            except ModelError:
                spaces[row.sha256] = None
    return StoredModels(identities, spaces, rows)


def rescore_problem(stored: TagIdentity, target: TagIdentity, known: StoredModels, target_space: str | None,
                    own_head: bool) -> str | None:
    """Why tags made with `stored` cannot be re-scored for `target` from stored features, or None
    when they can (a video must also have its features stored: see `Scoring.restore`).

    `target_space` is the target vision model's feature space; `own_head` whether it records its own
    head (needed to score features another model of the space stored).
    """
    if stored.audio != target.audio:
        return "heard by another sound model"
    space = known.space_of(stored.video)
    if space is None or target_space is None:
        return f"{known.name_of(stored.video if space is None else target.video)} gives no features"
    if space != target_space:
        return f"its features are of another space ({space}, not {target_space})"
    if stored.video != target.video and not own_head:
        return "the new model records no head of its own (tagger.head) to score the stored features with"
    return None
