"""The database: opening it (SQLite by default, any SQLAlchemy URL accepted), creating and
migrating its schema, and its transactions. The tables are in `tagger.schema`; what is written
where: `tagger.sink` (a scan's videos), `tagger.claims` (who is decoding what), `tagger.scan_records`
(the scans table); the read side's queries are in `tagger.selects`.

SQLite runs in WAL mode, so readers work while a scan writes; writes take the lock up front
(BEGIN IMMEDIATE), so concurrent scans queue instead of deadlocking.
"""

from __future__ import annotations

import os
import sqlite3
import time
import urllib.parse
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import sqlalchemy as sa
from sqlalchemy import event

from tagger.errors import DatabaseError
from tagger.schema import MIGRATIONS, SCHEMA_VERSION, meta_table, metadata

LOCK_WAIT_MS = 60_000  # how long a write waits for another process's lock (SQLite; PostgreSQL rows)
SCHEMA_LOCK = 0x7461676765  # PostgreSQL advisory lock held while the schema is created or migrated


POSTGRES_SCHEMES = ("postgresql://", "postgres://")  # plain URLs get psycopg 3, the driver of tagger[postgres]


def database_url(target: str) -> str:
    """A SQLAlchemy URL for `target`: a URL as it is (postgresql:// meaning psycopg 3), else a SQLite
    file path."""
    for scheme in POSTGRES_SCHEMES:
        if target.startswith(scheme):
            return "postgresql+psycopg://" + target[len(scheme):]
    if "://" in target:
        return target
    path = Path(target).expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatabaseError(f"cannot create the database folder {path.parent}: {exc.strerror}; pass --db PATH") from exc
    return f"sqlite:///{path}"


class Database:
    """An open database with the tagger schema, created or migrated on open."""

    def __init__(self, target: str, create: bool = True):
        if "://" not in target and Path(target).expanduser().is_dir():
            raise DatabaseError(f"--db {target} is a folder, not a database file: pass a file in it, "
                                f"e.g. --db {Path(target) / 'tags.db'}")
        if not create and "://" not in target and not Path(target).expanduser().is_file():
            raise DatabaseError(f"no database at {target}: run `tagger scan` first, or pass --db")
        url = database_url(target)
        self.target = shown_target(target)
        self.engine = _create_engine(url, self.target)
        if self.engine.dialect.name == "sqlite":
            _configure_sqlite(self.engine)
        try:
            self._prepare_schema(create)
        except DatabaseError as exc:  # a refused read or write (see read, write), or not tagger's database
            cause = exc.__cause__
            if not isinstance(cause, sa.exc.OperationalError):
                raise
            if create or "://" in target or not self._open_read_only():
                if str(exc).startswith(("database is locked", "the disk holding")):
                    raise
                raise self._unusable(cause) from exc
        except sa.exc.OperationalError as exc:
            if create or "://" in target or not self._open_read_only():
                raise self._unusable(exc) from exc
        except sa.exc.SQLAlchemyError as exc:
            raise self._unusable(exc) from exc

    def _unusable(self, exc: sa.exc.SQLAlchemyError) -> DatabaseError:
        """The one line for a database that cannot be opened: a server to check, a folder that is
        not writable, or another --db."""
        if "://" not in self.target and "unable to open database file" in _reason(exc):
            folder = Path(self.target).expanduser().resolve().parent
            if not os.access(folder, os.W_OK | os.X_OK):  # SQLite creates the file, and -wal and -shm, there
                return DatabaseError(f"cannot use database {self.target}: the folder {folder} is not writable; "
                                     "pass --db PATH in a folder you can write")
        advice = "pass another --db"
        if "://" in self.target and "connect" in _reason(exc).lower():
            advice = "check that the database server is running and the URL is right, or " + advice
        return DatabaseError(f"cannot use database {self.target}: {_reason(exc)}; {advice}")

    def _open_read_only(self) -> bool:
        """Read a SQLite file we may not write (a read-only share, another user's file): read-only,
        else immutable, for a WAL database whose folder takes no -shm file. True when one works."""
        path = urllib.parse.quote(str(Path(self.target).expanduser().resolve()))
        for options in ("mode=ro", "mode=ro&immutable=1"):
            self.engine.dispose()
            uri = f"file:{path}?{options}"
            self.engine = sa.create_engine("sqlite://", creator=lambda uri=uri: sqlite3.connect(
                uri, uri=True, check_same_thread=False))
            _configure_sqlite(self.engine)
            try:
                self._prepare_schema(create=False)
                return True
            except (sa.exc.OperationalError, DatabaseError) as exc:
                if isinstance(exc, DatabaseError) and not isinstance(exc.__cause__, sa.exc.OperationalError):
                    raise  # readable, but not tagger's database
                continue
        return False

    def _check_version(self, conn: sa.Connection) -> int:
        """The schema version found (0: an empty database); DatabaseError when foreign or newer."""
        existing = sa.inspect(conn).get_table_names()
        if "meta" not in existing:
            if existing:
                raise DatabaseError(f"database {self.target} holds other tables, not tagger's: pass another --db")
            return 0
        row = conn.execute(sa.select(meta_table.c.value).where(meta_table.c.key == "schema_version"))
        stored = row.scalar_one_or_none()
        try:
            found = int(stored or (1 if "videos" in existing else 0))  # no version row: 1
        except ValueError:
            raise DatabaseError(f"database {self.target} has schema version {stored!r}, not a whole number: "
                                "it was not written by tagger; pass another --db") from None
        if found > SCHEMA_VERSION:
            raise DatabaseError(
                f"database {self.target} has schema version {found}, newer than this tagger's "
                f"{SCHEMA_VERSION}: upgrade tagger or pass another --db"
            )
        if stored is not None and found < 1:  # tagger numbers its schemas from 1
            raise DatabaseError(f"database {self.target} has schema version {stored!r}, which no tagger writes "
                                f"(1 to {SCHEMA_VERSION}): it was not written by tagger; pass another --db")
        return found

    def _prepare_schema(self, create: bool) -> None:
        if create:
            self._upgrade()
            return
        with self.read() as conn:  # readers never take the write lock: they run beside a scan under WAL
            found = self._check_version(conn)
        if not found:
            raise DatabaseError(f"{self.target} holds no tagger tables yet: run `tagger scan` first")
        if found < SCHEMA_VERSION:
            try:
                self._upgrade()  # once, to bring an older database up to date
            except (sa.exc.SQLAlchemyError, DatabaseError):
                pass  # a database we may only read (read-only file or share): read it as it is

    def _upgrade(self) -> None:
        """Create the schema in a new database, or migrate an older one, in one transaction.

        A SQLite file is switched to WAL only once it is known to be empty or tagger's own: a
        foreign file is refused untouched.
        """
        if self.engine.dialect.name == "sqlite":
            with self.read() as conn:
                self._check_version(conn)
            _switch_to_wal(self.engine)
        with self.write() as conn:
            if conn.dialect.name == "postgresql":  # one creating or migrating process at a time
                conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
            found = self._check_version(conn)
            metadata.create_all(conn)  # a new database whole; an older one gets only missing tables
            for version in range(found + 1, SCHEMA_VERSION + 1) if found else ():
                for table, column, kind in MIGRATIONS[version]:
                    if column not in {c["name"] for c in sa.inspect(conn).get_columns(table)}:
                        conn.exec_driver_sql(f"ALTER TABLE {table} ADD COLUMN {column} {kind.compile(conn.dialect)}")
            conn.execute(sa.delete(meta_table).where(meta_table.c.key == "schema_version"))
            conn.execute(sa.insert(meta_table).values(key="schema_version", value=str(SCHEMA_VERSION)))

    @contextmanager
    def write(self, wait_ms: int | None = None) -> Iterator[sa.Connection]:
        """A write transaction (BEGIN IMMEDIATE on SQLite: concurrent scans queue, never deadlock).

        `wait_ms`: how long this one waits for another process's lock (default LOCK_WAIT_MS).

        Raises:
            DatabaseError: the database stayed locked by another process, the disk is full, or the
                write failed otherwise; one line saying what to do.
        """
        try:
            with self.engine.connect().execution_options(tagger_write=True, tagger_wait_ms=wait_ms) as conn:
                with conn.begin():
                    if wait_ms is not None and conn.dialect.name == "postgresql":  # this transaction only
                        conn.exec_driver_sql(f"SET LOCAL lock_timeout = {int(wait_ms)}")
                        conn.exec_driver_sql(f"SET LOCAL statement_timeout = {int(wait_ms)}")
                    yield conn
        except sa.exc.OperationalError as exc:
            raise _write_failure(exc, self.target) from exc

    @contextmanager
    def read(self) -> Iterator[sa.Connection]:
        """A read transaction: one consistent snapshot, never blocked by a writer under WAL.

        Raises:
            DatabaseError: the database could not be read (a server gone away, a broken file).
        """
        try:
            with self.engine.connect() as conn:
                with conn.begin():
                    yield conn
        except sa.exc.OperationalError as exc:
            raise DatabaseError(f"cannot read database {self.target}: {_reason(exc)}") from exc

    def now(self) -> float:
        """Seconds since the epoch by the database's clock (see database_time)."""
        with self.read() as conn:
            return database_time(conn)

    def close(self) -> None:
        self.engine.dispose()


def database_time(conn: sa.Connection) -> float:
    """Seconds since the epoch by the database's clock on PostgreSQL (the one clock every machine
    sharing it agrees on), else by this machine's."""
    if conn.dialect.name == "postgresql":
        return float(conn.exec_driver_sql("SELECT EXTRACT(EPOCH FROM clock_timestamp())").scalar_one())
    return time.time()


def insert_ignoring_conflict(conn: sa.Connection, table: sa.Table, key: str):
    """INSERT INTO `table` that does nothing (returns no row) where a row with the same unique `key`
    exists or is being inserted by another transaction."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # other databases: the unique key still refuses a second row, as an error
        return sa.insert(table)
    return insert(table).on_conflict_do_nothing(index_elements=[key])


def _switch_to_wal(engine: sa.Engine) -> None:
    """Put a SQLite file in WAL mode. Outside a transaction, as SQLite requires; a scan starting
    beside another can find the file busy even past the busy timeout (SQLite does not wait where
    waiting could deadlock), so it tries again for up to LOCK_WAIT_MS."""
    deadline = time.monotonic() + LOCK_WAIT_MS / 1000
    while True:
        raw = engine.raw_connection()
        try:
            raw.cursor().execute("PRAGMA journal_mode = WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc):
                raise
            if time.monotonic() > deadline:
                raise DatabaseError("database is locked by another process: wait and run again") from exc
        finally:
            raw.close()
        time.sleep(0.05)


def _configure_sqlite(engine: sa.Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record):
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {LOCK_WAIT_MS}")  # concurrent scans wait, not fail
        cursor.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, never corrupt
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn):
        options = conn.get_execution_options()
        wait_ms = options.get("tagger_wait_ms")  # set on every transaction: a pooled connection forgets a short one
        conn.exec_driver_sql(f"PRAGMA busy_timeout = {LOCK_WAIT_MS if wait_ms is None else int(wait_ms)}")
        conn.exec_driver_sql("BEGIN IMMEDIATE" if options.get("tagger_write", False) else "BEGIN")


def shown_target(target: str) -> str:
    """`target` (--db) as messages show it: a URL without its password."""
    if "://" not in target:
        return target
    try:
        return sa.engine.make_url(target).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return target


def _create_engine(url: str, shown: str) -> sa.Engine:
    """An engine for `url`; DatabaseError naming what to install when its driver is missing."""
    options = {"connect_args": {"options": f"-c lock_timeout={LOCK_WAIT_MS}"}} if url.startswith("postgresql+psycopg") else {}
    try:
        return sa.create_engine(url, **options)
    except ModuleNotFoundError as exc:
        driver = (exc.name or "").split(".")[0]
        package = {"MySQLdb": "mysqlclient"}.get(driver, driver)
        hint = "pip install 'tagger[postgres]'" if driver.startswith("psycopg") else f"pip install {package}"
        raise DatabaseError(f"--db {shown} needs the database driver {driver!r}, which is not installed: {hint}") from None
    except sa.exc.NoSuchModuleError:
        raise DatabaseError(f"--db {shown}: unknown kind of database URL; use a SQLite file path or "
                            "postgresql://USER@HOST/DB") from None
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise DatabaseError(f"--db {shown} is not a database URL ({exc}); use a file path or "
                            "postgresql://USER@HOST/DB") from None


def _write_failure(exc: sa.exc.OperationalError, target: str) -> DatabaseError:
    """The one-line error for a write the database refused."""
    reason = _reason(exc)
    locked = "database is locked" in reason or "database table is locked" in reason
    if locked or getattr(exc.orig, "sqlstate", "") == "55P03":  # 55P03: PostgreSQL's lock_timeout
        return DatabaseError("database is locked by another process: wait and run again")
    if "disk is full" in reason or "No space left" in reason or getattr(exc.orig, "sqlstate", "") == "53100":
        return DatabaseError(f"the disk holding {target} is full: free some space and run the scan again")
    return DatabaseError(f"cannot write to database {target}: {reason}")


def _reason(exc: sa.exc.SQLAlchemyError) -> str:
    orig = getattr(exc, "orig", None)
    return str(orig or exc).strip().splitlines()[0][:200]

