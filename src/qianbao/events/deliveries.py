"""The delivery log of a webhook endpoint, and re-sending a delivery by hand.

Each delivery is one event for one endpoint; each attempt records the status code, latency, the first
500 characters of the answer or the error. A manual resend is one more attempt, sent at once (it does
not wait for the schedule, and does not change it unless it succeeds).
"""

from __future__ import annotations

import random
import re
import threading
from dataclasses import dataclass
from typing import Any

import httpx2 as httpx
from sqlalchemy import Connection, select

from qianbao import invalid
from qianbao.errors import NotFound, RateLimited
from qianbao.events.model import DeliveryStatus
from qianbao.events.pinning import Resolver, system_resolver
from qianbao.events.sending import AttemptResult, load_outgoing, new_http_client, record_attempt, send
from qianbao.events.tables import webhook_attempts, webhook_deliveries
from qianbao.events.webhooks import loopback_allowed, own_endpoint_row, owner_of
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal

DELIVERY_ID = re.compile(r"whd_[0-9a-z]{26}")
deliveries = webhook_deliveries
attempts = webhook_attempts


@dataclass(frozen=True, slots=True)
class AttemptView:
    id: str
    number: int
    manual: bool
    attempted_at: int
    status_code: int | None
    latency_ms: int | None
    response_snippet: str | None
    error: str | None
    succeeded: bool


@dataclass(frozen=True, slots=True)
class DeliveryView:
    id: str
    endpoint_id: str
    event_id: str
    event_type: str
    status: str
    attempt_count: int
    next_attempt_at: int | None  # while pending (during an attempt: the end of the worker's lease)
    created_at: int
    last_attempt_at: int | None
    delivered_at: int | None
    attempts: tuple[AttemptView, ...]  # all of them for one delivery; the latest only in a list


def _attempt(row: Any) -> AttemptView:
    return AttemptView(
        id=row.id,
        number=row.number,
        manual=bool(row.manual),
        attempted_at=row.attempted_at,
        status_code=row.status_code,
        latency_ms=row.latency_ms,
        response_snippet=row.response_snippet,
        error=row.error,
        succeeded=bool(row.succeeded),
    )


def _attempts_of(
    conn: Connection, delivery_ids: list[str], *, latest_only: bool
) -> dict[str, list[AttemptView]]:
    found: dict[str, list[AttemptView]] = {d: [] for d in delivery_ids}
    if not delivery_ids:
        return found
    rows = conn.execute(
        select(attempts)
        .where(attempts.c.delivery_id.in_(delivery_ids))
        .order_by(attempts.c.delivery_id, attempts.c.number.desc())
    )
    for row in rows:
        bucket = found[row.delivery_id]
        if not (latest_only and bucket):
            bucket.append(_attempt(row))
    return found


def _view(row: Any, attempt_views: list[AttemptView]) -> DeliveryView:
    return DeliveryView(
        id=row.id,
        endpoint_id=row.endpoint_id,
        event_id=row.event_id,
        event_type=row.event_type,
        status=row.status,
        attempt_count=row.attempt_count,
        next_attempt_at=row.next_attempt_at,
        created_at=row.created_at,
        last_attempt_at=row.last_attempt_at,
        delivered_at=row.delivered_at,
        attempts=tuple(attempt_views),
    )


def list_deliveries(
    ctx: IdentityContext,
    principal: Principal,
    endpoint_id: str,
    *,
    limit: int,
    cursor: str | None,
    status: str | None = None,
) -> tuple[list[DeliveryView], str | None]:
    """The endpoint's deliveries, newest first, each with its latest attempt."""
    query = select(deliveries).where(deliveries.c.endpoint_id == endpoint_id)
    if status is not None:
        if status not in {s.value for s in DeliveryStatus}:
            raise invalid.one_of("status", [s.value for s in DeliveryStatus])
        query = query.where(deliveries.c.status == status)
    if cursor:
        if not DELIVERY_ID.fullmatch(cursor):
            raise invalid.cursor()
        query = query.where(deliveries.c.id < cursor)
    with ctx.db.read() as conn:
        own_endpoint_row(conn, owner_of(principal), endpoint_id)
        rows = conn.execute(query.order_by(deliveries.c.id.desc()).limit(limit + 1)).all()
        page = rows[:limit]
        latest = _attempts_of(conn, [r.id for r in page], latest_only=True)
    found = [_view(r, latest[r.id]) for r in page]
    return found, found[-1].id if len(rows) > limit and found else None


def _own_delivery(conn: Connection, principal: Principal, endpoint_id: str, delivery_id: str) -> Any:
    own_endpoint_row(conn, owner_of(principal), endpoint_id)
    if not DELIVERY_ID.fullmatch(delivery_id):
        raise NotFound("no such delivery")
    row = conn.execute(
        select(deliveries).where(deliveries.c.id == delivery_id, deliveries.c.endpoint_id == endpoint_id)
    ).first()
    if row is None:
        raise NotFound("no such delivery")
    return row


def get_delivery(
    ctx: IdentityContext, principal: Principal, endpoint_id: str, delivery_id: str
) -> DeliveryView:
    """One delivery with every attempt, newest first."""
    with ctx.db.read() as conn:
        row = _own_delivery(conn, principal, endpoint_id, delivery_id)
        return _view(row, _attempts_of(conn, [row.id], latest_only=False)[row.id])


# Manual resends wait on a receiver the caller chose (up to the request timeout) on one of the server's
# few request threads; at most this many at once per process, so they can never occupy all of them.
MAX_CONCURRENT_RESENDS = 2
_resends = threading.BoundedSemaphore(MAX_CONCURRENT_RESENDS)


def resend_delivery(
    ctx: IdentityContext,
    principal: Principal,
    endpoint_id: str,
    delivery_id: str,
    *,
    transport: httpx.BaseTransport | None = None,
    resolver: Resolver = system_resolver,
) -> tuple[DeliveryView, AttemptResult]:
    """Send the delivery again now (one manual attempt, signed afresh, to a vetted address) and log it.
    `transport` and `resolver` are for tests."""
    now = ctx.now()
    with ctx.db.read() as conn:
        _own_delivery(conn, principal, endpoint_id, delivery_id)
        message = load_outgoing(conn, ctx.keys, delivery_id, now)
    if message is None:  # the event's outbox row is gone: nothing to send
        raise NotFound("no such delivery")
    if not _resends.acquire(blocking=False):
        raise RateLimited("other manual resends are being sent: try again in a few seconds", retry_after=5)
    try:
        # Outside any transaction: a slow receiver holds no database lock.
        with new_http_client(
            transport=transport, resolver=resolver, allow_loopback=loopback_allowed(ctx.settings)
        ) as client:
            result = send(client, message, timestamp_s=now // 1_000_000)
    finally:
        _resends.release()
    record_attempt(
        ctx.db,
        delivery_id,
        result,
        now_us=ctx.now(),
        rng=random.SystemRandom(),
        lease_token=None,
        manual=True,
    )
    return get_delivery(ctx, principal, endpoint_id, delivery_id), result
