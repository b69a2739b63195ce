"""Housekeeping: delete rows once nothing can use them any more.

Expired one-time codes, WebAuthn ceremonies and step-up challenges, remembered API nonces, old
idempotency records, the record of used payment codes and of wrong ones would otherwise grow without
bound; so would the event feed, webhook deliveries (with their attempt logs) and published outbox rows,
kept for `event_retention_days`, and in-app notifications, kept for `notification_retention_days`. Each
worker's sweeper calls `purge_due` every minute: batches of deletes until nothing is past its retention
or a time budget is spent (a busy server writes thousands of event rows a minute, more than one batch per
table). The deletes are idempotent and bounded, so several workers running them at once is harmless. The
audit log is never purged (it is append-only in the database), nor are payments, transfers or the ledger.
"""

from __future__ import annotations

import time

from sqlalchemy import ColumnElement, Table, delete, select, true

from qianbao.events.tables import event_recipients, notifications, webhook_deliveries
from qianbao.identity.tables import api_nonces, ceremonies, challenges, verifications
from qianbao.payments.code_tables import payment_code_failures, payment_code_uses
from qianbao.payments.payment_code_model import DEVICE_FAILURE_WINDOW_S
from qianbao.store.database import Database
from qianbao.store.idempotency_tables import idempotency_keys
from qianbao.store.outbox import outbox

HOUR_US = 3_600_000_000
# Keep expired rows a while for support and investigations, then drop them.
RETENTION_US: dict[str, int] = {
    "verifications": 24 * HOUR_US,
    "auth_ceremonies": 24 * HOUR_US,
    "challenges": 30 * 24 * HOUR_US,
    "api_nonces": 1 * HOUR_US,  # the replay window is 5 minutes
    "idempotency_keys": 48 * HOUR_US,  # API.md promises at least 24 hours
    # A payment code is accepted for about two minutes; its "used" row must outlive that, no more.
    "payment_code_uses": 1 * HOUR_US,
    # Wrong payment codes count against their device for a window; past it they count for nothing.
    "payment_code_failures": DEVICE_FAILURE_WINDOW_S * 1_000_000 + 24 * HOUR_US,
}
DAY_US = 24 * HOUR_US
DEFAULT_EVENT_RETENTION_US = 30 * DAY_US
DEFAULT_NOTIFICATION_RETENTION_US = 90 * DAY_US
BATCH = 1000


def _purge(db: Database, table: Table, column: str, before_us: int, key: tuple[str, ...]) -> int:
    col = table.c[column]
    with db.write() as conn:
        keys = conn.execute(select(*(table.c[k] for k in key)).where(col < before_us).limit(BATCH)).all()
        if not keys:
            return 0
        if len(key) == 1:
            conn.execute(delete(table).where(table.c[key[0]].in_([k[0] for k in keys])))
        else:
            for row in keys:
                conn.execute(delete(table).where(*(table.c[k] == v for k, v in zip(key, row, strict=True))))
        return len(keys)


def _purge_older(db: Database, table: Table, before_us: int, also: ColumnElement[bool] | None = None) -> int:
    """Delete about one batch of the oldest rows created before `before_us` (by the `created_at` index):
    everything up to the created_at of the BATCH-th oldest, so rows sharing that time go together."""
    created = table.c.created_at
    old = created < before_us
    if also is not None:
        old = old & also
    with db.write() as conn:
        edge = conn.execute(select(created).where(old).order_by(created).offset(BATCH - 1).limit(1)).scalar()
        bound = created <= edge if edge is not None else true()
        return int(conn.execute(delete(table).where(old, bound)).rowcount or 0)


def purge_events(
    db: Database,
    now_us: int,
    *,
    event_retention_us: int = DEFAULT_EVENT_RETENTION_US,
    notification_retention_us: int = DEFAULT_NOTIFICATION_RETENTION_US,
) -> int:
    """One batch each of old webhook deliveries (their attempts go with them), feed rows, published
    outbox rows and notifications. An unpublished outbox row is never deleted: it has not been fanned
    out yet. A delivery outlives its event by at most the fan-out delay; resending one whose event is
    gone answers that there is nothing to send."""
    cutoff = now_us - event_retention_us
    return (
        _purge_older(db, webhook_deliveries, cutoff)
        + _purge_older(db, event_recipients, cutoff)
        + _purge_older(db, outbox, cutoff, outbox.c.published_at.is_not(None))
        + _purge_older(db, notifications, now_us - notification_retention_us)
    )


def purge_expired(
    db: Database,
    now_us: int,
    *,
    event_retention_us: int = DEFAULT_EVENT_RETENTION_US,
    notification_retention_us: int = DEFAULT_NOTIFICATION_RETENTION_US,
) -> int:
    """Delete one batch of each kind of expired row; returns how many rows went."""
    events = purge_events(
        db, now_us, event_retention_us=event_retention_us, notification_retention_us=notification_retention_us
    )
    return events + (
        _purge(db, verifications, "expires_at", now_us - RETENTION_US["verifications"], ("id",))
        + _purge(db, ceremonies, "expires_at", now_us - RETENTION_US["auth_ceremonies"], ("id",))
        + _purge(db, challenges, "expires_at", now_us - RETENTION_US["challenges"], ("id",))
        + _purge(db, api_nonces, "seen_at", now_us - RETENTION_US["api_nonces"], ("key_id", "nonce"))
        + _purge(
            db, idempotency_keys, "created_at", now_us - RETENTION_US["idempotency_keys"], ("scope", "key")
        )
        + _purge(
            db,
            payment_code_uses,
            "used_at",
            now_us - RETENTION_US["payment_code_uses"],
            ("device_id", "step", "seq"),
        )
        + _purge(
            db,
            payment_code_failures,
            "failed_at",
            now_us - RETENTION_US["payment_code_failures"],
            ("id",),
        )
    )


def purge_due(
    db: Database,
    now_us: int,
    *,
    event_retention_us: int = DEFAULT_EVENT_RETENTION_US,
    notification_retention_us: int = DEFAULT_NOTIFICATION_RETENTION_US,
    budget_s: float = 5.0,
    max_rounds: int = 100,
) -> int:
    """`purge_expired` again and again until a round finds nothing, the time budget is spent or
    `max_rounds` ran (the next sweep carries on); returns how many rows went."""
    started = time.monotonic()
    total = 0
    for _ in range(max_rounds):
        done = purge_expired(
            db,
            now_us,
            event_retention_us=event_retention_us,
            notification_retention_us=notification_retention_us,
        )
        total += done
        if done == 0 or time.monotonic() - started >= budget_s:
            break
    return total
