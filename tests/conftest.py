"""Shared fixtures: databases on both backends, a fixed clock, ledger engines.

Integration tests take the `backend` fixture (or `db`, `fresh_db`, `engine`…) and so run on SQLite and
PostgreSQL. PostgreSQL comes from QIANBAO_TEST_POSTGRES_URL (default postgresql://postgres@127.0.0.1:5432/test);
each test session creates its own databases there and drops them at the end. If PostgreSQL is not
reachable, its tests are skipped, except with CI=true, where they fail.
"""

from __future__ import annotations

import itertools
import os
import secrets
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from qianbao.clock import FixedClock
from qianbao.ledger.engine import LedgerEngine
from qianbao.ledger.queries import LedgerReader
from qianbao.store import migrate
from qianbao.store.database import Database, normalise_url

POSTGRES_URL = os.environ.get("QIANBAO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
BACKENDS = ("sqlite", "postgresql")
_ids = itertools.count()


def unique(prefix: str = "t") -> str:
    """An id no other test in this session uses (tests share a database per backend)."""
    return f"{prefix}-{os.getpid()}-{next(_ids)}-{secrets.token_hex(3)}"


class PostgresServer:
    """Creates per-session databases on the test server: a migrated template, clones of it, cleanup."""

    def __init__(self, url: str) -> None:
        self.url = make_url(normalise_url(url))
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT")
        self.prefix = f"qianbao_test_{secrets.token_hex(3)}"
        self.created: list[str] = []
        self.template: str | None = None

    def database_url(self, name: str) -> str:
        return self.url.set(database=name).render_as_string(hide_password=False)

    def create(self, template: str | None = None) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        with self.admin.connect() as conn:
            suffix = f' TEMPLATE "{template}"' if template else ""
            conn.execute(text(f'CREATE DATABASE "{name}"{suffix}'))
        self.created.append(name)
        return self.database_url(name)

    def migrated_template(self) -> str:
        if self.template is None:
            url = self.create()
            db = Database(url)
            migrate.upgrade(db)
            db.dispose()
            self.template = self.created[-1]
        return self.template

    def drop_all(self) -> None:
        with self.admin.connect() as conn:
            for name in reversed(self.created):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        self.admin.dispose()


@pytest.fixture(scope="session")
def postgres_server(pytestconfig: pytest.Config) -> Iterator[PostgresServer]:
    server = PostgresServer(POSTGRES_URL)
    try:
        with server.admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        server.admin.dispose()
        message = f"PostgreSQL at {POSTGRES_URL} is not reachable: {exc}"
        if IN_CI:
            pytest.fail(message + " (CI=true: PostgreSQL tests must run)")
        pytest.skip(message)
    # Dropped when pytest exits, not in this fixture's teardown: that teardown runs inside the last
    # test's timeout (some tests set 40 s), and dropping every database of a worker on a loaded
    # machine can take longer than that.
    pytestconfig.add_cleanup(server.drop_all)
    yield server


class SqliteFiles:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.count = 0
        self.template: Path | None = None

    def migrated_template(self) -> Path:
        if self.template is None:
            path = self.root / "template.db"
            db = Database(f"sqlite:///{path}")
            migrate.upgrade(db)
            db.dispose()
            # Fold the WAL into the main file so a plain copy is a complete database.
            with sqlite3.connect(path) as conn:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            self.template = path
        return self.template

    def fresh(self) -> str:
        self.count += 1
        path = self.root / f"db{self.count}.db"
        shutil.copyfile(self.migrated_template(), path)
        return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def sqlite_files(tmp_path_factory: pytest.TempPathFactory) -> SqliteFiles:
    return SqliteFiles(tmp_path_factory.mktemp("sqlite"))


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _fresh_url(backend: str, request: pytest.FixtureRequest) -> str:
    if backend == "postgresql":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        return server.create(template=server.migrated_template())
    files: SqliteFiles = request.getfixturevalue("sqlite_files")
    return files.fresh()


@pytest.fixture(scope="session")
def _shared_urls() -> dict[str, str]:
    return {}


@pytest.fixture
def database_url(backend: str, request: pytest.FixtureRequest, _shared_urls: dict[str, str]) -> str:
    """A migrated database shared by the tests of this session on this backend: use `unique()` ids."""
    if backend not in _shared_urls:
        _shared_urls[backend] = _fresh_url(backend, request)
    return _shared_urls[backend]


@pytest.fixture
def fresh_database_url(backend: str, request: pytest.FixtureRequest) -> str:
    """A migrated database of this test's own (for whole-ledger checks and tampering)."""
    return _fresh_url(backend, request)


@pytest.fixture
def db(database_url: str) -> Iterator[Database]:
    database = Database(database_url)
    yield database
    database.dispose()


@pytest.fixture
def fresh_db(fresh_database_url: str) -> Iterator[Database]:
    database = Database(fresh_database_url)
    yield database
    database.dispose()


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock()


@pytest.fixture
def engine(db: Database, clock: FixedClock) -> LedgerEngine:
    return LedgerEngine(db, clock)


@pytest.fixture
def fresh_engine(fresh_db: Database, clock: FixedClock) -> LedgerEngine:
    return LedgerEngine(fresh_db, clock)


@pytest.fixture
def reader(db: Database) -> LedgerReader:
    return LedgerReader(db)
