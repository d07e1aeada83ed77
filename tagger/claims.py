"""Claims: which scan is decoding which video, so scans sharing a database split a tree.

A video is claimed just before it is decoded and released when it is stored. A claim is a lease:
its scan renews it (`Lease`, a thread) while it runs, so the videos of a scan that died are free
again once the lease runs out, and at once when the dead scan ran on this machine
(`claimer_gone`). Whether a video still needs its scan is decided inside the claiming
transaction, from the video as stored at that moment, by the planner's rule (`Freshness`): a video
another scan tagged meanwhile is not claimed.
"""

from __future__ import annotations

import os
import socket
import threading
import uuid

import sqlalchemy as sa

from tagger.database import Database, database_time, insert_ignoring_conflict
from tagger.discover import FoundVideo
from tagger.planner import Freshness
from tagger.schema import claims, scans, stored_video


class Claims:
    """The claims of one scan (`owner`) on one database, each a lease of `lease` seconds."""

    def __init__(self, db: Database, owner: str, lease: float):
        self.db, self.owner, self.lease = db, owner, lease

    def claim(self, video: FoundVideo, fresh: Freshness) -> str:
        """Claim `video` before decoding it: "claimed", "busy" or "current".

        In one transaction: a claim of another owner that has neither expired nor is gone (its scan
        known dead) wins ("busy"); else, if the video as stored now needs nothing by `fresh`'s rule
        (another scan tagged it meanwhile), nothing is claimed ("current"); else the claim is taken
        or renewed ("claimed"). On PostgreSQL the claim row is locked (FOR UPDATE), so a scan never
        claims a video another scan is storing, and a race to insert is settled by the primary key.
        """
        with self.db.write() as conn:
            now = database_time(conn)
            held = conn.execute(sa.select(claims.c.owner, claims.c.expires_at).where(claims.c.path == video.path)
                                .with_for_update()).one_or_none()
            if held is not None and held.owner != self.owner and held.expires_at > now and not claimer_gone(held.owner):
                return "busy"
            if fresh.state(video, stored_video(conn, video.path)) == "current":
                return "current"
            expires = now + self.lease
            if held is not None:
                conn.execute(sa.update(claims).where(claims.c.path == video.path)
                             .values(owner=self.owner, expires_at=expires))
                return "claimed"
            inserted = conn.execute(insert_ignoring_conflict(conn, claims, "path")
                                    .values(path=video.path, owner=self.owner, expires_at=expires)
                                    .returning(claims.c.path)).first()
            return "claimed" if inserted is not None else "busy"

    def renew(self) -> None:
        """Extend every claim of this scan to a lease from now, and record that it is alive."""
        with self.db.write() as conn:
            now = database_time(conn)
            conn.execute(sa.update(claims).where(claims.c.owner == self.owner).values(expires_at=now + self.lease))
            conn.execute(sa.update(scans).where(scans.c.owner == self.owner, scans.c.status == "running")
                         .values(alive_at=now))

    def release(self) -> None:
        """Drop every claim this scan still holds (videos it did not finish)."""
        with self.db.write() as conn:
            conn.execute(sa.delete(claims).where(claims.c.owner == self.owner))


class Lease:
    """Renews a scan's claims every third of the lease while the scan runs (a context manager)."""

    def __init__(self, claimed: Claims):
        self.claimed = claimed
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="tagger-lease", daemon=True)

    def _renew(self) -> None:
        while not self._stop.wait(self.claimed.lease / 3):
            try:
                self.claimed.renew()
            except Exception:  # noqa: BLE001 - a missed renewal is retried; the lease has slack
                continue

    def __enter__(self) -> Lease:
        _RUNNING.add(self.claimed.owner)
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        _RUNNING.discard(self.claimed.owner)
        self._stop.set()
        self._thread.join(1)  # a renewal waiting on a locked database must not hold the scan up


def _machine() -> str:
    """Where process ids mean the same as here, as claims name it: host name, boot id and process id
    namespace (containers on one host may share a host name and the boot id, not the namespace)."""
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            boot = handle.read().strip()[:8]
        namespace = os.readlink("/proc/self/ns/pid").strip("pid:[]")
    except OSError:
        boot = namespace = "-"
    return f"{socket.gethostname()}/{boot}/{namespace}"


def claim_owner() -> str:
    """Who a scan is, as its claims record it: machine:pid:random."""
    return f"{_machine()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


_RUNNING: set[str] = set()  # the owners of the scans running in this process (inside their Lease)


def claimer_gone(owner: str) -> bool:
    """Whether the scan that wrote `owner` ran on this machine and has ended (its process killed, or
    an earlier scan of this process that stopped on a database error): its claims are free at once.
    Other machines' claims are free when their lease expires."""
    host, _, rest = owner.partition(":")
    pid = rest.partition(":")[0]
    if host != _machine() or not pid.isdigit():
        return False
    if int(pid) == os.getpid():
        return owner not in _RUNNING
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False
