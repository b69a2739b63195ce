"""The outbox dispatcher on both databases: fan-out to the feed, deliveries and notifications; signed
sending, retries, the 24-hour cut-off, leases; and on PostgreSQL, racing dispatchers that never send the
same delivery twice. The clock and the HTTP transport are injected: nothing here depends on timing."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx2 as httpx
import pytest
from sqlalchemy import func, select, update

from qianbao.clock import FixedClock
from qianbao.events.dispatcher import Dispatcher
from qianbao.events.fanout import fan_out_batch, fan_out_pending
from qianbao.events.model import RETRY_WINDOW_S
from qianbao.events.sending import claim_due, lease_due
from qianbao.events.signing import verify_signature
from qianbao.events.tables import (
    event_recipients,
    notifications,
    webhook_attempts,
    webhook_deliveries,
    webhook_endpoints,
)
from qianbao.events.webhooks import insert_endpoint
from qianbao.security.crypto import KeyMaterial
from qianbao.security.keyring import KeyRing
from qianbao.store.database import Database
from qianbao.store.outbox import OutboxEvent, outbox
from qianbao.store.unit_of_work import UnitOfWork
from tests.conftest import PostgresServer
from tests.support.receiver import PUBLIC_ADDRESS, public_resolver

S = 1_000_000
MONEY = {"amount": 12_345, "currency": "CNY"}


@dataclass
class Env:
    db: Database
    keys: KeyRing
    clock: FixedClock

    def endpoint(self, owner: str, events: list[str], *, enabled: bool = True, url: str | None = None) -> Any:
        with self.db.write() as conn:
            return insert_endpoint(
                conn,
                self.keys,
                owner=owner,
                url=url or f"https://hooks.example.com/{owner}",
                events=tuple(events),
                description=None,
                now=self.clock.now_us(),
                enabled=enabled,
            )

    def emit(self, *events: OutboxEvent) -> list[str]:
        with UnitOfWork(self.db, self.clock) as uow:
            for event in events:
                uow.emit(event)
            uow.commit()
        return [e.id for e in events]

    def dispatcher(self, receiver: Receiver, **options: Any) -> Dispatcher:
        options.setdefault("resolver", public_resolver)
        options.setdefault("concurrency", 4)
        return Dispatcher(self.db, self.keys, self.clock, transport=httpx.MockTransport(receiver), **options)

    def rows(self, table: Any, *where: Any) -> list[Any]:
        with self.db.read() as conn:
            return list(conn.execute(select(table).where(*where)).all())


@dataclass
class Receiver:
    """A webhook receiver behind httpx's MockTransport: answers in turn, records what it got."""

    answers: list[int] = field(default_factory=lambda: [200])
    hold: threading.Event | None = None
    requests: list[httpx.Request] = field(default_factory=list)
    entered: threading.Semaphore = field(default_factory=lambda: threading.Semaphore(0))
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        with self._lock:
            self.requests.append(request)
            status = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        self.entered.release()
        if self.hold is not None:
            assert self.hold.wait(30)
        return httpx.Response(status, text=f"answer {status} " + "x" * 600)


@pytest.fixture
def env(fresh_db: Database, clock: FixedClock) -> Env:
    keys = KeyRing(fresh_db, clock, KeyMaterial(os.urandom(32), os.urandom(32)))
    keys.ensure_active_key()
    return Env(fresh_db, keys, clock)


def transfer(a: str, b: str) -> OutboxEvent:
    payload = {
        "transfer_id": "trf_x",
        "from_user_id": a,
        "to_user_id": b,
        "amount": MONEY,
        "failure_code": None,
    }
    return OutboxEvent("transfer.succeeded", "transfer", "trf_x", payload)


def test_fan_out_routes_each_event_to_its_people_their_endpoints_and_notifications(env: Env) -> None:
    everything = env.endpoint("usr_a", ["*"]).endpoint.id
    transfers_only = env.endpoint("usr_b", ["transfer.succeeded"]).endpoint.id
    env.endpoint("usr_b", ["payment.*"])  # B is not in the payment below
    env.endpoint("usr_a", ["*"], enabled=False)
    env.endpoint("usr_d", ["*"])  # about nothing here
    merchant = env.endpoint("usr_m", ["payment.succeeded"]).endpoint.id
    payment = OutboxEvent(
        "payment.succeeded",
        "payment",
        "pay_1",
        {"payment_id": "pay_1", "payer_user_id": "usr_a", "merchant_user_id": "usr_m", "amount": MONEY},
    )
    opened = OutboxEvent("wallet.opened", "wallet", "wal_1", {"wallet_id": "wal_1", "user_id": "usr_a"})
    internal = OutboxEvent("user.created", "user", "usr_a", {"user_id": "usr_a", "kyc_tier": 4})
    t, p, o, i = env.emit(transfer("usr_a", "usr_b"), payment, opened, internal)

    assert fan_out_pending(env.db, env.clock) == 4
    assert env.rows(outbox, outbox.c.published_at.is_(None)) == []
    feed = {(r.user_id, r.event_id) for r in env.rows(event_recipients)}
    assert feed == {("usr_a", t), ("usr_b", t), ("usr_a", p), ("usr_m", p), ("usr_a", o)}  # not user.created
    sends = Counter((r.endpoint_id, r.event_id) for r in env.rows(webhook_deliveries))
    assert sends == Counter(
        {(everything, t): 1, (everything, p): 1, (everything, o): 1, (transfers_only, t): 1, (merchant, p): 1}
    )
    assert all(
        r.status == "pending" and r.next_attempt_at == env.clock.now_us()
        for r in env.rows(webhook_deliveries)
    )
    notes = {(r.user_id, r.event_id, r.kind) for r in env.rows(notifications)}
    assert notes == {
        ("usr_a", t, "transfer_sent"),
        ("usr_b", t, "transfer_received"),
        ("usr_a", p, "payment_paid"),
        ("usr_m", p, "payment_received"),
    }
    assert i not in {r.event_id for r in env.rows(notifications)}
    # A second pass finds nothing: the events were published with their fan-out, in one transaction.
    assert fan_out_pending(env.db, env.clock) == 0
    assert len(env.rows(webhook_deliveries)) == 5


def test_a_delivery_is_signed_with_the_endpoint_secret_and_logged(env: Env) -> None:
    created = env.endpoint("usr_b", ["transfer.succeeded"])
    [event_id] = env.emit(transfer("usr_a", "usr_b"))
    receiver = Receiver([200])
    dispatcher = env.dispatcher(receiver)
    try:
        report = dispatcher.dispatch_once()
    finally:
        dispatcher.close()
    assert (report.events, report.attempts, report.delivered) == (1, 1, 1)
    [request] = receiver.requests
    # Sent to the vetted address of the endpoint's host, named in `Host` (and to TLS as SNI).
    assert str(request.url) == f"https://{PUBLIC_ADDRESS}/usr_b"
    assert request.headers["Host"] == "hooks.example.com"
    assert request.headers["Qianbao-Event-Id"] == event_id
    assert request.headers["Qianbao-Event-Type"] == "transfer.succeeded"
    assert request.headers["Content-Type"] == "application/json"
    now_s = env.clock.now_us() / S
    verify_signature(created.secret, request.headers["Qianbao-Signature"], request.content, now=now_s)
    body = json.loads(request.content)
    assert body["id"] == event_id and body["type"] == "transfer.succeeded"
    assert body["data"]["amount"] == MONEY and body["created_at"].endswith("Z")
    [delivery] = env.rows(webhook_deliveries)
    assert (delivery.status, delivery.attempt_count, delivery.next_attempt_at) == ("delivered", 1, None)
    assert delivery.delivered_at == env.clock.now_us() and delivery.lease_token is None
    [attempt] = env.rows(webhook_attempts)
    assert (attempt.number, attempt.status_code, attempt.succeeded, attempt.manual) == (1, 200, True, False)
    assert attempt.response_snippet.startswith("answer 200 ") and len(attempt.response_snippet) == 500


def test_failures_are_retried_with_backoff_until_a_2xx(env: Env) -> None:
    env.endpoint("usr_b", ["*"])
    env.emit(transfer("usr_a", "usr_b"))
    receiver = Receiver([500, 302, 200])
    dispatcher = env.dispatcher(receiver)
    try:
        first = dispatcher.dispatch_once()
        assert (first.attempts, first.delivered) == (1, 0)
        [delivery] = env.rows(webhook_deliveries)
        assert delivery.status == "pending"
        wait = delivery.next_attempt_at - env.clock.now_us()
        assert 1 * S <= wait <= 10 * S  # full jitter under the first ceiling
        # Not due yet: nothing is sent.
        assert dispatcher.dispatch_once().attempts == 0
        env.clock.advance(microseconds=wait)
        assert dispatcher.dispatch_once().attempts == 1  # the redirect is not followed and not a success
        [delivery] = env.rows(webhook_deliveries)
        env.clock.advance(microseconds=delivery.next_attempt_at - env.clock.now_us())
        assert dispatcher.dispatch_once().delivered == 1
    finally:
        dispatcher.close()
    assert len(receiver.requests) == 3
    attempts = sorted(env.rows(webhook_attempts), key=lambda a: a.number)
    assert [(a.number, a.status_code, a.succeeded) for a in attempts] == [
        (1, 500, False),
        (2, 302, False),
        (3, 200, True),
    ]
    assert env.rows(webhook_deliveries)[0].status == "delivered"


def test_network_errors_are_attempts_too(env: Env) -> None:
    env.endpoint("usr_b", ["*"])
    env.emit(transfer("usr_a", "usr_b"))

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    dispatcher = Dispatcher(
        env.db, env.keys, env.clock, transport=httpx.MockTransport(refuse), resolver=public_resolver
    )
    try:
        dispatcher.dispatch_once()
    finally:
        dispatcher.close()
    [attempt] = env.rows(webhook_attempts)
    assert attempt.status_code is None and not attempt.succeeded
    assert attempt.error == "connection_failed"  # one neutral word, never the exception's text
    assert env.rows(webhook_deliveries)[0].status == "pending"


def test_it_gives_up_24_hours_after_the_event(env: Env) -> None:
    env.endpoint("usr_b", ["*"])
    env.emit(transfer("usr_a", "usr_b"))
    created = env.clock.now_us()
    receiver = Receiver([503])
    dispatcher = env.dispatcher(receiver)
    try:
        while True:
            report = dispatcher.dispatch_once()
            assert report.attempts == 1
            [delivery] = env.rows(webhook_deliveries)
            if delivery.status != "pending":
                break
            env.clock.advance(microseconds=delivery.next_attempt_at - env.clock.now_us())
    finally:
        dispatcher.close()
    assert delivery.status == "failed" and delivery.next_attempt_at is None
    assert env.clock.now_us() == created + RETRY_WINDOW_S * S  # the last attempt was at the deadline
    assert delivery.attempt_count == len(receiver.requests) == len(env.rows(webhook_attempts))
    assert report.failed == 1


def test_a_leased_delivery_is_not_sent_by_another_dispatcher(env: Env) -> None:
    """A holds the first two deliveries (stuck in the receiver); B sends the rest and never those two."""
    env.endpoint("usr_b", ["*"])
    env.emit(*(transfer("usr_a", "usr_b") for _ in range(6)))
    fan_out_pending(env.db, env.clock)
    held = Receiver([200], hold=threading.Event())
    first = env.dispatcher(held, concurrency=2)
    second_receiver = Receiver([200])
    second = env.dispatcher(second_receiver, concurrency=2)
    worker = threading.Thread(target=first.deliver_due)
    worker.start()
    try:
        for _ in range(2):
            assert held.entered.acquire(timeout=30)
        report = second.deliver_due()
    finally:
        assert held.hold is not None
        held.hold.set()
        worker.join(30)
        first.close()
        second.close()
    a = [r.headers["Qianbao-Delivery-Id"] for r in held.requests]
    b = [r.headers["Qianbao-Delivery-Id"] for r in second_receiver.requests]
    assert report.attempts == 4 and len(a) == 2
    assert not set(a) & set(b) and len(set(a + b)) == 6
    assert {r.status for r in env.rows(webhook_deliveries)} == {"delivered"}
    assert len(env.rows(webhook_attempts)) == 6


def test_disabled_endpoints_wait_and_deleted_ones_take_their_log_along(env: Env) -> None:
    endpoint = env.endpoint("usr_b", ["*"]).endpoint.id
    env.emit(transfer("usr_a", "usr_b"))
    fan_out_pending(env.db, env.clock)
    with env.db.write() as conn:
        conn.execute(update(webhook_endpoints).values(enabled=False))
    receiver = Receiver([500])
    dispatcher = env.dispatcher(receiver)
    try:
        assert dispatcher.deliver_due().attempts == 0
        with env.db.write() as conn:
            conn.execute(update(webhook_endpoints).values(enabled=True))
        assert dispatcher.deliver_due().attempts == 1
    finally:
        dispatcher.close()
    with env.db.write() as conn:
        conn.execute(webhook_endpoints.delete().where(webhook_endpoints.c.id == endpoint))
    assert env.rows(webhook_deliveries) == [] and env.rows(webhook_attempts) == []


def test_a_rotated_secret_signs_alongside_the_new_one_until_it_expires(env: Env) -> None:
    old = env.endpoint("usr_b", ["*"])
    new_secret = "whsec_new"  # noqa: S105 - a test secret
    with env.db.write() as conn:
        conn.execute(
            update(webhook_endpoints).values(
                secret_cipher=env.keys.encrypt(new_secret, context="webhook_endpoints.secret_cipher"),
                previous_secret_cipher=env.keys.encrypt(
                    old.secret, context="webhook_endpoints.previous_secret_cipher"
                ),
                previous_secret_expires_at=env.clock.now_us() + 60 * S,
            )
        )
    env.emit(transfer("usr_a", "usr_b"))
    receiver = Receiver([200])
    dispatcher = env.dispatcher(receiver)
    try:
        dispatcher.dispatch_once()
        env.clock.advance(61)
        env.emit(transfer("usr_a", "usr_b"))
        dispatcher.dispatch_once()
    finally:
        dispatcher.close()
    during, after = receiver.requests
    now = env.clock.now_us() / S
    for secret in (new_secret, old.secret):
        verify_signature(secret, during.headers["Qianbao-Signature"], during.content, now=now)
    assert during.headers["Qianbao-Signature"].count("v1=") == 2
    assert after.headers["Qianbao-Signature"].count("v1=") == 1
    verify_signature(new_secret, after.headers["Qianbao-Signature"], after.content, now=now)


@pytest.mark.parametrize(
    ("addresses", "allow_loopback", "sent"),
    [
        (["93.184.216.34"], False, True),
        (["2606:2800:220:1:248:1893:25c8:1946", "93.184.216.34"], False, True),
        (["64:ff9b::5db8:d822"], False, True),  # NAT64 of a public address (DNS64 networks)
        (["93.184.216.34", "10.0.0.7"], False, False),  # every address is vetted, not just the first
        (["127.0.0.1"], False, False),
        (["127.0.0.1"], True, True),
        (["::1", "127.0.0.1"], True, True),
        (["127.0.0.1", "10.0.0.7"], True, False),  # loopback only, never the private network
        (["169.254.169.254"], True, False),
        (["::ffff:169.254.169.254"], False, False),
        (["64:ff9b::a00:7"], False, False),  # NAT64 of 10.0.0.7
        (["2002:a00:7::1"], False, False),  # 6to4 of 10.0.0.7
        (["::a00:7"], False, False),  # IPv4-compatible 10.0.0.7
        (["fd00:ec2::254"], False, False),  # a unique-local metadata address
        (["fe80::1%2"], False, False),
        (["100.100.100.200"], False, False),  # shared address space (a metadata service)
        ([], False, False),
    ],
)
def test_each_attempt_resolves_once_vets_every_address_and_is_sent_to_a_vetted_one(
    env: Env, addresses: list[str], allow_loopback: bool, sent: bool
) -> None:
    env.endpoint("usr_b", ["*"])
    env.emit(transfer("usr_a", "usr_b"))
    receiver = Receiver([200])
    resolved: list[str] = []

    def resolver(host: str, port: int) -> list[str]:
        resolved.append(f"{host}:{port}")
        return addresses

    dispatcher = env.dispatcher(receiver, allow_loopback=allow_loopback, resolver=resolver)
    try:
        dispatcher.dispatch_once()
    finally:
        dispatcher.close()
    assert resolved == ["hooks.example.com:443"]
    [attempt] = env.rows(webhook_attempts)
    assert attempt.succeeded is sent
    if sent:
        [request] = receiver.requests
        # The connection goes to the first vetted address; TLS and the Host header name the host.
        assert request.url.host == addresses[0] and request.url.path == "/usr_b"
        assert request.headers["Host"] == "hooks.example.com"
        assert request.extensions["sni_hostname"] == "hooks.example.com"
    else:
        assert receiver.requests == []
        assert attempt.error == "destination_not_allowed"


def test_a_host_that_does_not_resolve_is_not_allowed_either(env: Env) -> None:
    env.endpoint("usr_b", ["*"])
    env.emit(transfer("usr_a", "usr_b"))
    receiver = Receiver([200])

    def unknown(host: str, port: int) -> list[str]:
        raise socket.gaierror(socket.EAI_NONAME, f"{host}:{port} not known")

    dispatcher = env.dispatcher(receiver, resolver=unknown)
    try:
        dispatcher.dispatch_once()
    finally:
        dispatcher.close()
    [attempt] = env.rows(webhook_attempts)
    # The same word as a private address: the log does not tell which internal names exist.
    assert receiver.requests == [] and attempt.error == "destination_not_allowed"


def test_a_rebinding_answer_reaches_only_the_address_that_was_vetted(env: Env) -> None:
    env.endpoint("usr_b", ["*"])
    env.emit(transfer("usr_a", "usr_b"))
    receiver = Receiver([500, 200])
    answers = [["93.184.216.34"], ["127.0.0.1"], ["93.184.216.35"]]
    resolved: list[str] = []

    def rebinding(host: str, port: int) -> list[str]:
        resolved.append(host)
        return answers.pop(0)

    dispatcher = env.dispatcher(receiver, resolver=rebinding)
    try:
        dispatcher.dispatch_once()  # public at the only look-up: sent there (and answered 500)
        env.clock.advance(seconds=3600)
        dispatcher.dispatch_once()  # loopback now: refused, nothing sent
        env.clock.advance(seconds=3600)
        dispatcher.dispatch_once()  # public again: sent to the new address
    finally:
        dispatcher.close()
    assert resolved == ["hooks.example.com"] * 3  # once per attempt, never again to connect
    assert [r.url.host for r in receiver.requests] == ["93.184.216.34", "93.184.216.35"]
    attempts = sorted(env.rows(webhook_attempts), key=lambda a: a.number)
    assert [(a.status_code, a.error) for a in attempts] == [
        (500, None),
        (None, "destination_not_allowed"),
        (200, None),
    ]


# --- PostgreSQL: real races -----------------------------------------------------------------------------


@pytest.fixture
def pg_env(postgres_server: PostgresServer, clock: FixedClock) -> Iterator[Env]:
    db = Database(postgres_server.create(template=postgres_server.migrated_template()))
    keys = KeyRing(db, clock, KeyMaterial(os.urandom(32), os.urandom(32)))
    keys.ensure_active_key()
    yield Env(db, keys, clock)
    db.dispose()


def _race(workers: int, target: Callable[[int], None]) -> None:
    start = threading.Barrier(workers)
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            start.wait(30)
            target(i)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors


def test_racing_dispatchers_never_send_the_same_delivery_twice(pg_env: Env) -> None:
    env = pg_env
    env.endpoint("usr_b", ["*"])
    env.endpoint("usr_a", ["transfer.*"])
    env.emit(*(transfer("usr_a", "usr_b") for _ in range(60)))
    assert fan_out_pending(env.db, env.clock) == 60
    receiver = Receiver([200])
    # One delivery per claim: many claims per dispatcher, so they overlap.
    dispatchers = [env.dispatcher(receiver, concurrency=1) for _ in range(4)]
    try:
        _race(4, lambda i: dispatchers[i].deliver_due())
    finally:
        for d in dispatchers:
            d.close()
    sent = Counter(r.headers["Qianbao-Delivery-Id"] for r in receiver.requests)
    assert len(sent) == 120 and set(sent.values()) == {1}
    with env.db.read() as conn:
        statuses = Counter(conn.execute(select(webhook_deliveries.c.status)).scalars())
        attempts = conn.execute(select(func.count()).select_from(webhook_attempts)).scalar_one()
        published = conn.execute(select(func.count()).where(outbox.c.published_at.is_not(None))).scalar_one()
    assert statuses == {"delivered": 120} and attempts == 120 and published == 60


def test_racing_fan_outs_fan_each_event_out_once(pg_env: Env) -> None:
    env = pg_env
    env.endpoint("usr_b", ["*"])
    ids = env.emit(*(transfer("usr_a", "usr_b") for _ in range(300)))
    counts: list[int] = [0] * 3

    def fan(i: int) -> None:
        with env.db.write() as conn:
            counts[i] = fan_out_batch(conn, env.clock.now_us(), limit=100)

    _race(3, fan)
    assert sum(counts) == 300  # SKIP LOCKED: each took rows the others did not hold
    feed = Counter(r.event_id for r in env.rows(event_recipients))
    assert set(feed) == set(ids) and set(feed.values()) == {2}
    assert len(env.rows(webhook_deliveries)) == 300


def test_a_claim_skips_rows_another_worker_is_leasing_without_waiting(pg_env: Env) -> None:
    env = pg_env
    env.endpoint("usr_b", ["*"])
    env.emit(*(transfer("usr_a", "usr_b") for _ in range(10)))
    fan_out_pending(env.db, env.clock)
    now = env.clock.now_us()
    holding, release, released = threading.Event(), threading.Event(), threading.Event()
    held: list[str] = []

    def hold() -> None:
        with env.db.write() as conn:
            held.extend(r.id for r in lease_due(conn, now_us=now, limit=4, lease_us=60 * S, token="h" * 32))
            holding.set()
            release.wait(10)
        released.set()

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        _, taken = claim_due(env.db, env.keys, now_us=now, limit=100, lease_us=60 * S)
        # It answered while the other transaction still held its rows (SKIP LOCKED, not a wait).
        assert not released.is_set()
    finally:
        release.set()
        holder.join(10)
    assert len(held) == 4 and len(taken) == 6
    assert not set(held) & {m.delivery_id for m in taken}
    _, again = claim_due(env.db, env.keys, now_us=now, limit=100, lease_us=60 * S)
    assert again == []  # every delivery is leased now
