"""The `scans` table: a row per scan, recording when it ran, over what, with which options, and how
it ended (running, finished, interrupted)."""

from __future__ import annotations

import time
from collections.abc import Sequence

import sqlalchemy as sa

from tagger.claims import claimer_gone
from tagger.database import Database, database_time
from tagger.schema import scans


def record_scan_start(db: Database, roots: Sequence[str], model_id: int, options: dict, owner: str) -> int:
    """Record that a scan began; returns its id. Scans still recorded as running whose process is
    gone, or that stopped renewing their claims three leases ago, were killed: they are recorded as
    interrupted."""
    with db.write() as conn:
        now = database_time(conn)
        running = conn.execute(sa.select(scans.c.id, scans.c.owner, scans.c.alive_at, scans.c.options)
                               .where(scans.c.status == "running")).all()
        dead = [row.id for row in running if row.owner is None or claimer_gone(row.owner)
                or (row.alive_at or 0) + 3 * float((row.options or {}).get("lease", 60)) < now]
        if dead:
            conn.execute(sa.update(scans).where(scans.c.id.in_(dead)).values(status="interrupted"))
        return conn.execute(
            sa.insert(scans).values(started_at=time.time(), status="running", roots=list(roots),
                                    model_id=model_id, options=options, owner=owner, alive_at=now)
        ).inserted_primary_key[0]


def record_scan_end(db: Database, scan_id: int, status: str, counts: dict) -> None:
    """Record how a scan ended."""
    with db.write() as conn:
        conn.execute(sa.update(scans).where(scans.c.id == scan_id).values(
            finished_at=time.time(), status=status, counts=counts))
