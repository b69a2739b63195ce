"""The SQLite database and its write-ahead log are readable by their owner only (0600), like the key file."""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from qianbao.store.database import Database


@pytest.fixture(autouse=True)
def usual_umask() -> Iterator[None]:
    """With the common umask 022, SQLite of old created the database 0644: readable by everyone."""
    previous = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(previous)


def modes(database: Path) -> dict[str, str]:
    files = [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    return {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files if p.exists()}


def write_something(db: Database) -> None:
    with db.write() as conn:
        conn.exec_driver_sql("CREATE TABLE IF NOT EXISTS t (a INTEGER)")
        conn.exec_driver_sql("INSERT INTO t VALUES (1)")


def test_a_new_database_and_its_journal_are_created_private(tmp_path: Path) -> None:
    database = tmp_path / "var" / "qianbao.db"
    db = Database(f"sqlite:///{database}")
    try:
        write_something(db)
        assert modes(database) == {
            "qianbao.db": "0o600",
            "qianbao.db-wal": "0o600",
            "qianbao.db-shm": "0o600",
        }
    finally:
        db.dispose()


def test_an_existing_database_open_to_others_is_tightened_and_said_so(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    database = tmp_path / "qianbao.db"
    db = Database(f"sqlite:///{database}")
    write_something(db)
    db.dispose()  # the last connection checkpoints and removes the write-ahead log
    wal = Path(f"{database}-wal")
    wal.touch()  # as a crash would leave it
    for path in (database, wal):
        os.chmod(path, 0o644)
    with caplog.at_level(logging.WARNING, logger="qianbao.store.database"):
        reopened = Database(f"sqlite:///{database}")
    try:
        write_something(reopened)
        assert set(modes(database).values()) == {"0o600"}
    finally:
        reopened.dispose()
    warned = [r.getMessage() for r in caplog.records]
    assert any("qianbao.db was open to group or others (mode 0644)" in m for m in warned), warned
    assert any("qianbao.db-wal was open to group or others" in m for m in warned), warned
