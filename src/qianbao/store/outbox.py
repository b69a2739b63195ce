"""The transactional outbox: events are written in the same transaction as the change they announce.

Consumers (webhooks, notifications) read unpublished rows later; a crash between the change and the
delivery can therefore delay an event but never lose or invent one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    String,
    Table,
    insert,
    select,
    text,
)

from qianbao.ids import new_id
from qianbao.store.metadata import metadata

outbox = Table(
    "outbox",
    metadata,
    Column("seq", BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True),
    Column("id", String(64), nullable=False, unique=True),
    Column("type", String(128), nullable=False),
    Column("aggregate_type", String(64), nullable=False),
    Column("aggregate_id", String(128), nullable=False),
    Column("payload", JSON, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("published_at", BigInteger, nullable=True),
    Index("ix_outbox_created_at", "created_at"),  # housekeeping
    Index(
        "ix_outbox_unpublished",
        "seq",
        postgresql_where=text("published_at IS NULL"),
        sqlite_where=text("published_at IS NULL"),
    ),
)


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    type: str
    aggregate_type: str
    aggregate_id: str
    payload: Mapping[str, Any]
    id: str = field(default_factory=lambda: new_id("evt"))


@dataclass(frozen=True, slots=True)
class StoredEvent:
    seq: int
    id: str
    type: str
    aggregate_type: str
    aggregate_id: str
    payload: Mapping[str, Any]
    created_at: int
    published_at: int | None


def append_events(conn: Connection, events: Iterable[OutboxEvent], now_us: int) -> None:
    rows = [
        {
            "id": e.id,
            "type": e.type,
            "aggregate_type": e.aggregate_type,
            "aggregate_id": e.aggregate_id,
            "payload": dict(e.payload),
            "created_at": now_us,
        }
        for e in events
    ]
    if rows:
        conn.execute(insert(outbox), rows)


def claim_unpublished(conn: Connection, limit: int = 100) -> list[StoredEvent]:
    """Unpublished events, oldest first; on PostgreSQL rows other workers hold are skipped, not waited on."""
    query = select(outbox).where(outbox.c.published_at.is_(None)).order_by(outbox.c.seq).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    return [StoredEvent(**row._mapping) for row in conn.execute(query)]


def mark_published(conn: Connection, seqs: Sequence[int], now_us: int) -> None:
    if seqs:
        conn.execute(outbox.update().where(outbox.c.seq.in_(seqs)).values(published_at=now_us))
