"""The `scans` table: a row per scan, recording when it ran, over what, with which options, and how
it ended (running, finished, interrupted; with the error's line when its database stopped it)."""

from __future__ import annotations

import threading
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


def record_scan_end(db: Database, scan_id: int, status: str, counts: dict, wait_ms: int | None = None) -> None:
    """Record how a scan ended: its status and `counts` (with, for a scan stopped by an error, the
    error's line under "error"). `wait_ms`: how long to wait for a lock (Database.write)."""
    with db.write(wait_ms) as conn:
        conn.execute(sa.update(scans).where(scans.c.id == scan_id).values(
            finished_at=time.time(), status=status, counts=counts))


STOPPED_WAIT_MS = 2000  # the one try at recording a scan its database stopped: short, the user waits


def record_scan_stopped(db: Database, scan_id: int, counts: dict, error: str) -> bool:
    """Record as interrupted, with `error`, a scan its database just stopped (locked past the
    timeout, disk full): one try of at most about STOPPED_WAIT_MS, in a thread so that nothing (a
    lock, a server that stopped answering) holds up the error's line for longer. True if recorded;
    if not, the row stays `running` until the next scan finds it dead."""
    recorded: list[bool] = []

    def attempt() -> None:
        try:
            record_scan_end(db, scan_id, "interrupted", {**counts, "error": error}, wait_ms=STOPPED_WAIT_MS)
            recorded.append(True)
        except Exception:  # noqa: BLE001 - the database refused again: the original error is the one to show
            pass

    thread = threading.Thread(target=attempt, name="tagger-scan-stopped", daemon=True)
    thread.start()
    thread.join(STOPPED_WAIT_MS / 1000 + 1)
    return bool(recorded)
