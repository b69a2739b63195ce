"""The event feed (`GET /v1/events`): the public events about a user, newest first, for integrators who
poll instead of (or as well as) receiving webhooks. Event ids are the outbox ids: the same id a webhook
delivery carries, so a receiver can deduplicate across both."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from qianbao.errors import NotFound
from qianbao.events.tables import event_recipients
from qianbao.identity.context import IdentityContext
from qianbao.store.outbox import outbox

MAX_EVENT_ID = 64


@dataclass(frozen=True, slots=True)
class FeedEvent:
    id: str
    seq: int
    type: str
    created_at: int
    data: Mapping[str, Any]


def _query() -> Any:
    return select(
        event_recipients.c.event_id,
        event_recipients.c.event_seq,
        event_recipients.c.type,
        event_recipients.c.created_at,
        outbox.c.payload,
    ).join(outbox, outbox.c.id == event_recipients.c.event_id)


def _event(row: Any) -> FeedEvent:
    return FeedEvent(row.event_id, row.event_seq, row.type, row.created_at, dict(row.payload))


def list_events(
    ctx: IdentityContext, user_id: str, *, limit: int, before_seq: int | None, event_type: str | None
) -> tuple[list[FeedEvent], str | None]:
    query = _query().where(event_recipients.c.user_id == user_id)
    if event_type is not None:
        query = query.where(event_recipients.c.type == event_type)
    if before_seq is not None:
        query = query.where(event_recipients.c.event_seq < before_seq)
    query = query.order_by(event_recipients.c.event_seq.desc()).limit(limit + 1)
    with ctx.db.read() as conn:
        rows = conn.execute(query).all()
    found = [_event(r) for r in rows[:limit]]
    return found, str(found[-1].seq) if len(rows) > limit and found else None


def get_event(ctx: IdentityContext, user_id: str, event_id: str) -> FeedEvent:
    """One event about the user; anyone else's event does not exist for them (404)."""
    if len(event_id) > MAX_EVENT_ID:
        raise NotFound("no such event")
    with ctx.db.read() as conn:
        row = conn.execute(
            _query().where(event_recipients.c.user_id == user_id, event_recipients.c.event_id == event_id)
        ).first()
    if row is None:
        raise NotFound("no such event")
    return _event(row)
