"""The audit log is append-only in the database itself: raw SQL cannot change or remove an entry."""

from __future__ import annotations

import pytest
from sqlalchemy import text

from qianbao.security import audit
from qianbao.store.database import Database
from qianbao.store.errors import DATABASE_ERRORS
from tests.conftest import unique


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE audit_events SET outcome = 'success' WHERE id = :id",
        "UPDATE audit_events SET details = '{}' WHERE id = :id",
        "DELETE FROM audit_events WHERE id = :id",
    ],
)
def test_entries_cannot_be_changed_or_deleted(db: Database, statement: str) -> None:
    actor = audit.Actor("user", unique("usr"), ip="203.0.113.7")
    with db.write() as conn:
        event_id = audit.record(conn, 1, "session.sign_in", actor, outcome="failure", details={"why": "x"})
    with pytest.raises(DATABASE_ERRORS), db.write() as conn:
        conn.execute(text(statement), {"id": event_id})
    with db.read() as conn:
        row = conn.execute(text("SELECT outcome FROM audit_events WHERE id = :id"), {"id": event_id}).one()
    assert row.outcome == "failure"


def test_truncate_is_refused_on_postgresql(db: Database) -> None:
    if not db.is_postgresql:
        pytest.skip("SQLite has no TRUNCATE")
    with db.write() as conn:
        audit.record(conn, 1, "x", audit.Actor.system())
    with pytest.raises(DATABASE_ERRORS), db.write() as conn:
        conn.execute(text("TRUNCATE audit_events"))


def test_users_see_their_own_events_newest_first(db: Database) -> None:
    me, other = unique("usr"), unique("usr")
    with db.write() as conn:
        for n in range(3):
            audit.record(conn, 10 + n, f"event.{n}", audit.Actor("user", me), subject_user_id=me)
        audit.record(conn, 20, "event.other", audit.Actor("user", other), subject_user_id=other)
    with db.read() as conn:
        events = audit.list_events(conn, subject_user_id=me, limit=10)
        page = audit.list_events(conn, subject_user_id=me, limit=2)
        rest = audit.list_events(conn, subject_user_id=me, limit=2, before_seq=page[-1].seq)
    assert [e.event for e in events] == ["event.2", "event.1", "event.0"]
    assert [e.event for e in page + rest] == ["event.2", "event.1", "event.0"]
