"""Sending webhook deliveries: claim under a lease, POST signed, record the attempt.

A worker *claims* due deliveries by moving their `next_attempt_at` to the end of a lease and stamping its
own `lease_token` (`SKIP LOCKED` on PostgreSQL, the single writer on SQLite), so no other worker takes
the same attempt while the lease runs. It POSTs outside any transaction and records the attempt under its
token: 2xx is delivered; anything else is retried with backoff and jitter (`model.next_attempt_at`)
until 24 hours after the event, then failed. A worker that dies mid-send loses its lease and the
delivery is attempted again later (at-least-once: receivers deduplicate by event id).

Every request goes through `pinning.PinnedTransport` (the host resolved once, every address vetted, the
connection made to a vetted address). An attempt that got no answer records one word of `AttemptError`,
never the exception's text, and no latency: the error and its time are logged on the server only, in one
line (`log_failure`).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import httpx2 as httpx
from sqlalchemy import Connection, insert, select, update

from qianbao import __version__
from qianbao.events import signing
from qianbao.events.model import (
    SNIPPET_CHARS,
    DeliveryStatus,
    Uniform,
    event_body,
    next_attempt_at,
    snippet,
)
from qianbao.events.pinning import DestinationRefused, PinnedTransport, Resolver, system_resolver
from qianbao.events.tables import webhook_attempts, webhook_deliveries, webhook_endpoints
from qianbao.events.webhooks import signing_secrets
from qianbao.ids import new_id
from qianbao.security.keyring import KeyRing
from qianbao.store.database import Database
from qianbao.store.outbox import outbox

DEFAULT_TIMEOUT_S = 10.0
READ_LIMIT = 4 * SNIPPET_CHARS  # bytes of an answer read: enough for the snippet, never a whole body
USER_AGENT = f"qianbao-webhooks/{__version__}"

deliveries = webhook_deliveries
endpoints = webhook_endpoints
log = logging.getLogger(__name__)


class AttemptError(StrEnum):
    """What the delivery log says of an attempt that got no answer: a fixed word, never the exception.

    The log is read by whoever registered the URL, who may aim it at somebody else's host. So every
    failure before a connection to the URL's host is established (for https: a TLS session whose
    certificate is valid for that host name) is the one word `connection_failed`: a refused port, a
    silent one, a service that is not TLS (`WRONG_VERSION_NUMBER`) and a bad certificate look alike, and
    the log cannot be used to scan ports. Only after that, on a server that proved it is the URL's host,
    a timeout and a broken answer are told apart."""

    DESTINATION_NOT_ALLOWED = "destination_not_allowed"  # no public address (or did not resolve): not sent
    CONNECTION_FAILED = "connection_failed"  # no (verified) connection to the host
    TIMEOUT = "timeout"  # connected, but no complete answer in time
    BAD_RESPONSE = "bad_response"  # connected, but the connection broke or the answer was not HTTP


def attempt_error(exc: Exception) -> AttemptError:
    # httpx raises Connect* for everything up to an established (TLS-verified) connection, and Read*,
    # Write* or protocol errors only afterwards (httpcore's backends map the TLS handshake to Connect*).
    if isinstance(exc, DestinationRefused):
        return AttemptError.DESTINATION_NOT_ALLOWED
    if isinstance(exc, httpx.ReadTimeout | httpx.WriteTimeout):
        return AttemptError.TIMEOUT
    if isinstance(exc, httpx.ReadError | httpx.WriteError | httpx.RemoteProtocolError | httpx.DecodingError):
        return AttemptError.BAD_RESPONSE
    return AttemptError.CONNECTION_FAILED  # connect errors and timeouts, TLS, anything unforeseen


@dataclass(frozen=True, slots=True)
class Outgoing:
    """A claimed delivery, ready to send."""

    delivery_id: str
    endpoint_id: str
    url: str
    secrets: tuple[str, ...]
    event_id: str
    event_type: str
    event_created_at: int
    payload: Mapping[str, Any]

    @property
    def body(self) -> bytes:
        return event_body(self.event_id, self.event_type, self.event_created_at, self.payload)


@dataclass(frozen=True, slots=True)
class AttemptResult:
    status_code: int | None
    latency_ms: int | None  # until the answer; None without one (timing would tell what `error` hides)
    response_snippet: str | None
    error: str | None

    @property
    def succeeded(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300


def new_http_client(
    timeout_s: float = DEFAULT_TIMEOUT_S,
    transport: httpx.BaseTransport | None = None,
    *,
    resolver: Resolver = system_resolver,
    allow_loopback: bool = False,
) -> httpx.Client:
    """The client webhooks are sent with: pinned to vetted addresses (`transport`, if given, is what the
    pinned requests go through: tests pass a mock), never through an environment's proxy."""
    return httpx.Client(
        transport=PinnedTransport(transport, resolver=resolver, allow_loopback=allow_loopback),
        trust_env=False,  # no proxy and no .netrc credentials from the environment
        timeout=httpx.Timeout(timeout_s, connect=min(5.0, timeout_s)),
        follow_redirects=False,  # a redirect is an answer (not 2xx), never followed to another host
        headers={"User-Agent": USER_AGENT},
    )


def lease_due(
    conn: Connection, *, now_us: int, limit: int, lease_us: int, token: str, due_by: int | None = None
) -> list[Any]:
    """In the caller's transaction: lease up to `limit` deliveries of enabled endpoints due by `due_by`
    (default: now) to `token`, until `now_us + lease_us`; returns them ready to load (`outgoing`)."""
    due_by = now_us if due_by is None else due_by
    due = (
        select(deliveries.c.id)
        .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
        .where(
            deliveries.c.status == DeliveryStatus.PENDING.value,
            deliveries.c.next_attempt_at <= due_by,
            endpoints.c.enabled.is_(True),
        )
        .order_by(deliveries.c.next_attempt_at)
        .limit(limit)
    )
    if conn.dialect.name == "postgresql":
        # Rows another worker is leasing right now are skipped, not waited for.
        due = due.with_for_update(skip_locked=True, of=deliveries)
    ids = list(conn.execute(due).scalars())
    if not ids:
        return []
    # Conditional: only rows still due are taken, whatever another worker did in between.
    conn.execute(
        update(deliveries)
        .where(
            deliveries.c.id.in_(ids),
            deliveries.c.status == DeliveryStatus.PENDING.value,
            deliveries.c.next_attempt_at <= due_by,
        )
        .values(next_attempt_at=now_us + lease_us, lease_token=token)
    )
    return list(conn.execute(_outgoing_query().where(deliveries.c.lease_token == token)).all())


def claim_due(
    db: Database, keys: KeyRing, *, now_us: int, limit: int, lease_us: int, due_by: int | None = None
) -> tuple[str, list[Outgoing]]:
    """Lease up to `limit` due deliveries to this caller: (lease token, deliveries to send)."""
    token = secrets.token_hex(16)
    with db.write() as conn:
        rows = lease_due(conn, now_us=now_us, limit=limit, lease_us=lease_us, token=token, due_by=due_by)
    # Secrets are decrypted after COMMIT: the key ring may need the database itself.
    return token, [outgoing(keys, row, now_us) for row in rows]


def _outgoing_query() -> Any:
    return (
        select(
            deliveries.c.id,
            deliveries.c.endpoint_id,
            deliveries.c.event_id,
            deliveries.c.event_type,
            deliveries.c.event_created_at,
            endpoints.c.url,
            endpoints.c.secret_cipher,
            endpoints.c.previous_secret_cipher,
            endpoints.c.previous_secret_expires_at,
            outbox.c.payload,
        )
        .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
        .join(outbox, outbox.c.id == deliveries.c.event_id)
    )


def outgoing(keys: KeyRing, row: Any, now_us: int) -> Outgoing:
    return Outgoing(
        delivery_id=row.id,
        endpoint_id=row.endpoint_id,
        url=row.url,
        secrets=signing_secrets(keys, row, now_us),
        event_id=row.event_id,
        event_type=row.event_type,
        event_created_at=row.event_created_at,
        payload=dict(row.payload),
    )


def load_outgoing(conn: Connection, keys: KeyRing, delivery_id: str, now_us: int) -> Outgoing | None:
    row = conn.execute(_outgoing_query().where(deliveries.c.id == delivery_id)).first()
    return None if row is None else outgoing(keys, row, now_us)


# What a receiver, the network or a refused destination raise: ordinary, and repeated by every endpoint
# that never answers, so each is one line without a traceback. Anything else is a bug of ours.
ORDINARY_FAILURES = (httpx.RequestError, httpx.InvalidURL)


def log_failure(message: Outgoing, exc: Exception, error: AttemptError, latency_ms: int) -> None:
    """One line per failed attempt (ids, the error's type and text, never a secret or the body): INFO,
    or WARNING for a destination that is not allowed (someone aimed a webhook where it may not go). An
    unexpected exception is an ERROR with its traceback."""
    if not isinstance(exc, ORDINARY_FAILURES):
        log.error(
            "webhook delivery %s (endpoint %s) failed unexpectedly after %d ms: %s",
            message.delivery_id,
            message.endpoint_id,
            latency_ms,
            error.value,
            exc_info=exc,
        )
        return
    log.log(
        logging.WARNING if error is AttemptError.DESTINATION_NOT_ALLOWED else logging.INFO,
        "webhook delivery %s (endpoint %s) failed after %d ms: %s (%s: %s)",
        message.delivery_id,
        message.endpoint_id,
        latency_ms,
        error.value,
        type(exc).__name__,
        exc,
    )


def send(client: httpx.Client, message: Outgoing, *, timestamp_s: int) -> AttemptResult:
    """POST one delivery (no redirects, bounded reading) and describe what happened. Never raises.

    `client` comes from `new_http_client`: its transport decides where the request may go."""
    started = time.perf_counter()

    def elapsed_ms() -> int:
        return int((time.perf_counter() - started) * 1000)

    body = message.body
    headers = {
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        signing.SIGNATURE_HEADER: signing.signature_header(message.secrets, timestamp_s, body),
        signing.EVENT_ID_HEADER: message.event_id,
        signing.EVENT_TYPE_HEADER: message.event_type,
        signing.DELIVERY_ID_HEADER: message.delivery_id,
    }
    try:
        with client.stream("POST", message.url, content=body, headers=headers) as response:
            received = bytearray()
            for chunk in response.iter_bytes():
                received += chunk
                if len(received) >= READ_LIMIT:
                    break
            status = response.status_code
    except Exception as exc:  # noqa: BLE001 - any failure (network, TLS, bad URL) is this attempt's error
        error = attempt_error(exc)
        log_failure(message, exc, error, elapsed_ms())
        return AttemptResult(None, None, None, error.value)
    text = snippet(bytes(received).decode("utf-8", errors="replace"))
    return AttemptResult(status, elapsed_ms(), text or None, None)


def record_attempt(
    db: Database,
    delivery_id: str,
    result: AttemptResult,
    *,
    now_us: int,
    rng: Uniform,
    lease_token: str | None,
    manual: bool = False,
) -> DeliveryStatus | None:
    """Log the attempt and move the delivery on; None if the lease was lost or the delivery deleted.

    An automatic attempt (under `lease_token`) schedules the next try or gives up; a manual resend only
    ever upgrades the delivery to delivered, and leaves any running schedule alone."""
    with db.write() as conn:
        query = select(deliveries.c.attempt_count, deliveries.c.status, deliveries.c.event_created_at).where(
            deliveries.c.id == delivery_id
        )
        if lease_token is not None:
            query = query.where(deliveries.c.lease_token == lease_token)
        if db.is_postgresql:
            query = query.with_for_update()
        row = conn.execute(query).first()
        if row is None:
            return None
        number = int(row.attempt_count) + 1
        status = DeliveryStatus(row.status)
        values: dict[str, Any] = {"attempt_count": number, "last_attempt_at": now_us}
        if lease_token is not None:
            values["lease_token"] = None
        if result.succeeded:
            if status is not DeliveryStatus.DELIVERED:
                values.update(
                    status=DeliveryStatus.DELIVERED.value, next_attempt_at=None, delivered_at=now_us
                )
            status = DeliveryStatus.DELIVERED
        elif not manual and status is DeliveryStatus.PENDING:
            retry_at = next_attempt_at(number, now_us=now_us, event_created_us=row.event_created_at, rng=rng)
            status = DeliveryStatus.PENDING if retry_at is not None else DeliveryStatus.FAILED
            values.update(status=status.value, next_attempt_at=retry_at)
        conn.execute(update(deliveries).where(deliveries.c.id == delivery_id).values(**values))
        conn.execute(
            insert(webhook_attempts).values(
                id=new_id("wha"),
                delivery_id=delivery_id,
                number=number,
                manual=manual,
                attempted_at=now_us,
                status_code=result.status_code,
                latency_ms=result.latency_ms,
                response_snippet=result.response_snippet,
                error=result.error,
                succeeded=result.succeeded,
            )
        )
    return status
