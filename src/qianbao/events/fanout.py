"""Fan-out: turn unpublished outbox events into the feed, webhook deliveries and notifications.

One transaction per batch: claim unpublished outbox rows (`SKIP LOCKED` on PostgreSQL, so several
dispatchers share the work), and for each public event write who it is about (`event_recipients`), one
delivery per enabled endpoint of those people subscribed to its type, and the in-app notifications; then
mark the rows published. A crash before COMMIT leaves the events unpublished, to be fanned out again;
unique keys make a double fan-out impossible anyway. Internal events (not in the public catalogue) are
only marked published.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import Connection, insert, select

from qianbao.clock import Clock
from qianbao.events.model import DeliveryStatus, is_public, recipients, subscribed
from qianbao.events.notifications import notifications_for
from qianbao.events.tables import event_recipients, notifications, webhook_deliveries, webhook_endpoints
from qianbao.ids import new_id
from qianbao.store.database import Database
from qianbao.store.outbox import StoredEvent, claim_unpublished, mark_published, outbox

FAN_OUT_BATCH = 100
endpoints = webhook_endpoints


def fan_out_batch(conn: Connection, now_us: int, limit: int = FAN_OUT_BATCH) -> int:
    """Fan out up to `limit` unpublished events in the caller's transaction; returns how many."""
    events = claim_unpublished(conn, limit)
    if not events:
        return 0
    routed = [(e, recipients(e.payload)) for e in events if is_public(e.type)]
    users = sorted({user for _, found in routed for user in found})
    by_owner: dict[str, list[Any]] = defaultdict(list)
    if users:
        rows = conn.execute(
            select(endpoints.c.id, endpoints.c.owner_user_id, endpoints.c.events).where(
                endpoints.c.owner_user_id.in_(users), endpoints.c.enabled.is_(True)
            )
        )
        for row in rows:
            by_owner[row.owner_user_id].append(row)
    feed: list[dict[str, Any]] = []
    sends: list[dict[str, Any]] = []
    notes: list[dict[str, Any]] = []
    for event, people in routed:
        for user in people:
            feed.append(_recipient_row(event, user))
            for endpoint in by_owner.get(user, ()):
                if subscribed(endpoint.events, event.type):
                    sends.append(_delivery_row(event, endpoint.id, now_us))
        for user, kind in notifications_for(event.type, event.payload):
            notes.append(_notification_row(event, user, kind))
    for table, rows_to_insert in (
        (event_recipients, feed),
        (webhook_deliveries, sends),
        (notifications, notes),
    ):
        if rows_to_insert:
            conn.execute(insert(table), rows_to_insert)
    mark_published(conn, [e.seq for e in events], now_us)
    return len(events)


def _recipient_row(event: StoredEvent, user: str) -> dict[str, Any]:
    return {
        "user_id": user,
        "event_id": event.id,
        "event_seq": event.seq,
        "type": event.type,
        "created_at": event.created_at,
    }


def _delivery_row(event: StoredEvent, endpoint_id: str, now_us: int) -> dict[str, Any]:
    return {
        "id": new_id("whd"),
        "endpoint_id": endpoint_id,
        "event_id": event.id,
        "event_type": event.type,
        "event_created_at": event.created_at,
        "status": DeliveryStatus.PENDING.value,
        "attempt_count": 0,
        "next_attempt_at": now_us,
        "lease_token": None,
        "created_at": now_us,
        "last_attempt_at": None,
        "delivered_at": None,
    }


def _notification_row(event: StoredEvent, user: str, kind: str) -> dict[str, Any]:
    return {
        "id": new_id("ntf"),
        "user_id": user,
        "event_id": event.id,
        "event_seq": event.seq,
        "kind": kind,
        "data": dict(event.payload),
        "created_at": event.created_at,
        "read_at": None,
    }


def has_unpublished(db: Database) -> bool:
    # A read first: an idle poll must not take SQLite's write lock away from payments.
    with db.read() as conn:
        return (
            conn.execute(select(outbox.c.seq).where(outbox.c.published_at.is_(None)).limit(1)).first()
            is not None
        )


def fan_out_pending(db: Database, clock: Clock, *, batch: int = FAN_OUT_BATCH, max_batches: int = 100) -> int:
    total = 0
    for _ in range(max_batches):
        if not has_unpublished(db):
            break
        with db.write() as conn:
            done = fan_out_batch(conn, clock.now_us(), batch)
        total += done
        if done < batch:
            break
    return total
