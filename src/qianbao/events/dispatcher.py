"""The outbox dispatcher: each pass fans new events out (`fanout`) and sends the deliveries that are due
(`sending`), several at once (bounded by `concurrency`).

It runs inside `qianbao serve` (a daemon thread per server process, `QIANBAO_DISPATCHER=inline`, the
default) or as `qianbao worker`; any number of them may run against one database. Payments never wait
for any of this: events are written with the payment and delivered afterwards, so a receiver that is down
or slow costs a webhook slot for at most the timeout, never a payment.
"""

from __future__ import annotations

import logging
import random
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
from sqlalchemy import select

from qianbao.clock import Clock
from qianbao.events.fanout import fan_out_pending
from qianbao.events.model import DeliveryStatus, Uniform
from qianbao.events.pinning import Resolver, system_resolver
from qianbao.events.sending import (
    DEFAULT_TIMEOUT_S,
    Outgoing,
    claim_due,
    new_http_client,
    record_attempt,
    send,
)
from qianbao.events.tables import webhook_deliveries as deliveries
from qianbao.events.tables import webhook_endpoints as endpoints
from qianbao.events.webhooks import loopback_allowed
from qianbao.identity.context import IdentityContext
from qianbao.security.keyring import KeyRing
from qianbao.store.database import Database

log = logging.getLogger(__name__)

DEFAULT_CONCURRENCY = 8
DEFAULT_INTERVAL_S = 1.0
# After a pass that found work, the next waits this long: events of payments arriving meanwhile are then
# fanned out together. Passing again at once costs several transactions for one or two events each
# (measured: 2.4 ms of server CPU per payment at 60 payments/s, about one payment in six).
GATHER_S = 0.1


@dataclass
class DispatchReport:
    events: int = 0
    attempts: int = 0
    delivered: int = 0
    failed: int = 0  # gave up: the retry window is over
    outcomes: list[tuple[str, str]] = field(default_factory=list)  # (delivery id, status after)

    @property
    def busy(self) -> bool:
        return self.events > 0 or self.attempts > 0


def has_due(db: Database, now_us: int) -> bool:
    # A read first: an idle poll must not take SQLite's write lock away from payments.
    with db.read() as conn:
        query = (
            select(deliveries.c.id)
            .join(endpoints, endpoints.c.id == deliveries.c.endpoint_id)
            .where(
                deliveries.c.status == DeliveryStatus.PENDING.value,
                deliveries.c.next_attempt_at <= now_us,
                endpoints.c.enabled.is_(True),
            )
        )
        return conn.execute(query.limit(1)).first() is not None


class Dispatcher:
    """One process's dispatcher. `dispatch_once()` does one pass; `run()` loops until told to stop."""

    def __init__(
        self,
        db: Database,
        keys: KeyRing,
        clock: Clock,
        *,
        allow_loopback: bool = False,
        transport: httpx.BaseTransport | None = None,
        concurrency: int = DEFAULT_CONCURRENCY,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        rng: Uniform | None = None,
        resolver: Resolver = system_resolver,
    ) -> None:
        if concurrency < 1:
            raise ValueError("concurrency must be at least 1")
        self.db, self.keys, self.clock = db, keys, clock
        self.concurrency = concurrency
        # Always pinned to vetted addresses; `transport` (tests) is what the pinned requests go through.
        self.client = new_http_client(timeout_s, transport, resolver=resolver, allow_loopback=allow_loopback)
        self.rng: Uniform = rng or random.SystemRandom()
        # The lease outlasts one send (connect + read timeouts) with room to record it.
        self.lease_us = int((2 * timeout_s + 30) * 1_000_000)
        self._pool = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="webhook")

    def fan_out(self) -> int:
        return fan_out_pending(self.db, self.clock)

    def deliver_due(self, report: DispatchReport | None = None) -> DispatchReport:
        """Attempt each delivery due when the pass starts, once (a retry scheduled meanwhile waits for the
        next pass), `concurrency` at a time."""
        report = report or DispatchReport()
        started = self.clock.now_us()
        while has_due(self.db, started):
            token, batch = claim_due(
                self.db,
                self.keys,
                now_us=self.clock.now_us(),
                due_by=started,
                limit=self.concurrency,
                lease_us=self.lease_us,
            )
            for delivery_id, status in self._pool.map(self._attempt, batch, [token] * len(batch)):
                report.attempts += 1
                if status is not None:
                    report.outcomes.append((delivery_id, status.value))
                    report.delivered += int(status is DeliveryStatus.DELIVERED)
                    report.failed += int(status is DeliveryStatus.FAILED)
            if len(batch) < self.concurrency:
                break
        return report

    def _attempt(self, message: Outgoing, token: str) -> tuple[str, DeliveryStatus | None]:
        result = send(self.client, message, timestamp_s=self.clock.now_us() // 1_000_000)
        status = record_attempt(
            self.db, message.delivery_id, result, now_us=self.clock.now_us(), rng=self.rng, lease_token=token
        )
        return message.delivery_id, status

    def dispatch_once(self) -> DispatchReport:
        """Fan out every unpublished event, then attempt every delivery due now (once each)."""
        report = DispatchReport(events=self.fan_out())
        return self.deliver_due(report)

    def run(
        self, stop: threading.Event, interval_s: float = DEFAULT_INTERVAL_S, gather_s: float = GATHER_S
    ) -> None:
        """Pass after pass until `stop` is set: `interval_s` apart while there is nothing to do, `gather_s`
        apart while there is (each pass drains what it finds, so a backlog never waits behind this)."""
        while not stop.is_set():
            busy = False
            try:
                busy = self.dispatch_once().busy
            except Exception:  # noqa: BLE001 - the database may be down for a while: log and retry
                log.exception("dispatching events failed; retrying")
            stop.wait(min(gather_s, interval_s) if busy else interval_s)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()


def dispatcher_for(
    ctx: IdentityContext,
    *,
    clock: Clock | None = None,
    transport: httpx.BaseTransport | None = None,
    resolver: Resolver = system_resolver,
    rng: Uniform | None = None,
    concurrency: int = DEFAULT_CONCURRENCY,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Dispatcher:
    """A dispatcher on the context's database and keys (tests inject the clock, the HTTP transport under
    the pinning and the resolver)."""
    return Dispatcher(
        ctx.db,
        ctx.keys,
        clock or ctx.clock,
        allow_loopback=loopback_allowed(ctx.settings),
        transport=transport,
        resolver=resolver,
        concurrency=concurrency,
        timeout_s=timeout_s,
        rng=rng,
    )


def dispatch_once(ctx: IdentityContext, **options: Any) -> DispatchReport:
    """One pass with a throw-away dispatcher (`options` as for `dispatcher_for`)."""
    dispatcher = dispatcher_for(ctx, **options)
    try:
        return dispatcher.dispatch_once()
    finally:
        dispatcher.close()


class BackgroundDispatcher:
    """The dispatcher on a daemon thread: what `qianbao serve` runs unless QIANBAO_DISPATCHER=off."""

    def __init__(self, dispatcher: Dispatcher, interval_s: float = DEFAULT_INTERVAL_S) -> None:
        self.dispatcher = dispatcher
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=dispatcher.run, args=(self._stop, interval_s), name="event-dispatcher", daemon=True
        )

    def start(self) -> BackgroundDispatcher:
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 30.0) -> None:
        self._stop.set()
        self._thread.join(timeout_s)
        if not self._thread.is_alive():
            self.dispatcher.close()


def start_inline(ctx: IdentityContext) -> BackgroundDispatcher:
    return BackgroundDispatcher(dispatcher_for(ctx)).start()
