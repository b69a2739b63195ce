"""Database engines for embedded SQLite (default) and PostgreSQL (production).

We use synchronous drivers (stdlib sqlite3, psycopg 3) behind SQLAlchemy Core; docs/storage.md records
the measurement behind that choice. `Database.write()` opens a write transaction: on SQLite that is
`BEGIN IMMEDIATE`, so two writers queue on the database lock up front instead of one of them failing
when it upgrades a read lock (several server processes may share the file).
"""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError

from qianbao.errors import InvalidInput

Dialect = Literal["sqlite", "postgresql"]

log = logging.getLogger(__name__)

_READ_ONLY = "qianbao_read_only"
# A pooled PostgreSQL connection that sat idle this long is pinged before use (the server may have
# restarted, or a firewall dropped it). Pinging on every checkout (`pool_pre_ping`) cost a round trip per
# transaction, and a payment has about ten; a connection in steady use is not pinged.
IDLE_PING_S = 5.0


def normalise_url(url: str) -> str:
    """Accept plain `postgresql://` / `sqlite:///` URLs and pick our drivers for them."""
    try:
        parsed = make_url(url)
    except ArgumentError as exc:
        raise InvalidInput(f"not a database URL: {url!r}") from exc
    backend = parsed.get_backend_name()
    if backend == "postgresql":
        return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)
    if backend == "sqlite":
        return parsed.set(drivername="sqlite+pysqlite").render_as_string(hide_password=False)
    raise InvalidInput(f"unsupported database {backend!r}: use sqlite:///PATH or postgresql://…")


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


# SQLite gives the write-ahead log and shared-memory file (and a rollback journal) the database file's mode.
SQLITE_COMPANIONS = ("-wal", "-shm", "-journal")


def make_private(path: Path) -> None:
    """The database holds the ledger and (encrypted) personal data: like the key file, only its owner may
    read it. SQLite would create it 0644 (less the umask), so it is created here first, 0600, and its
    companions inherit that mode. Existing files open to group or others are tightened, and it is logged."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        os.fchmod(fd, 0o600)  # the umask can only remove bits; this makes it exactly 0600
        os.close(fd)
    for file in (path, *(path.with_name(path.name + suffix) for suffix in SQLITE_COMPANIONS)):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                os.chmod(file, mode & 0o700)
                log.warning(
                    "%s was open to group or others (mode %04o): changed to %04o",
                    file,
                    mode,
                    mode & 0o700,
                )
        except FileNotFoundError:
            continue
        except PermissionError:
            log.warning("%s is open to group or others and not ours to change: run chmod 600 %s", file, file)


class Database:
    """One engine plus the dialect-specific session settings qianbao relies on."""

    def __init__(self, url: str, *, sqlite_synchronous: str = "FULL", pool_size: int = 8) -> None:
        self.url = normalise_url(url)
        name = make_url(self.url).get_backend_name()
        self.dialect: Dialect = "postgresql" if name == "postgresql" else "sqlite"
        if self.dialect == "sqlite":
            path = sqlite_path(self.url)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                make_private(path)
            self.engine = create_engine(self.url, pool_size=pool_size, max_overflow=pool_size * 2)
            _configure_sqlite(self.engine, sqlite_synchronous)
        else:
            self.engine = create_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size * 2,
                connect_args={"application_name": f"qianbao-{os.getpid()}"},
            )
            _ping_idle_connections(self.engine)

    @property
    def is_postgresql(self) -> bool:
        return self.dialect == "postgresql"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A read-write transaction, committed when the block ends without an exception."""
        with self.engine.connect() as conn, conn.begin():
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A read transaction (on SQLite a deferred one, so it never blocks writers)."""
        with self.engine.connect() as conn:
            conn = conn.execution_options(**{_READ_ONLY: True})
            with conn.begin():
                yield conn

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
        """A read-only transaction in which every statement sees the same moment, for whole-database
        checks: PostgreSQL REPEATABLE READ (READ COMMITTED would give each statement its own snapshot);
        a SQLite read transaction is one snapshot already."""
        if not self.is_postgresql:
            with self.read() as conn:
                yield conn
            return
        with self.engine.connect() as conn:
            conn = conn.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
            with conn.begin():
                yield conn

    def dispose(self) -> None:
        self.engine.dispose()


def _ping_idle_connections(engine: Engine) -> None:
    """Ping a connection before use only if it was idle for `IDLE_PING_S`. A connection that broke while
    in use fails its request once, and SQLAlchemy then replaces every pooled connection older than it."""

    @event.listens_for(engine, "checkin")
    def _on_checkin(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if getattr(dbapi_connection, "closed", False):
            raise DisconnectionError("the connection is closed")
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_S:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as exc:  # noqa: BLE001 - any failure means: use a fresh connection
            raise DisconnectionError("the idle connection did not answer a ping") from exc


def _configure_sqlite(engine: Engine, synchronous: str) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from the sqlite3 module so we can say BEGIN IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA synchronous={synchronous}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        # Batches dirty many index pages; checkpointing every 10,000 pages (~40 MB of WAL) instead of 1,000
        # copies each hot page back once per many batches (measured ~15% more transfers/s).
        cursor.execute("PRAGMA wal_autocheckpoint=10000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        read_only = conn.get_execution_options().get(_READ_ONLY, False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")
