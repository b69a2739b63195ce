"""Guessing payment codes concurrently, on SQLite and PostgreSQL, in the worst interleaving.

A conductor holds every request inside the one-time-code check (`payment_code_model.matching_step`) until
each of the others is held there too, has finished, or waits for a database lock. So every request that
*can* get as far as testing its code before any wrong code is counted does, all at once (several server
processes could do that without the locks). What the locks must still guarantee: per device, at most
`DEVICE_FAILURE_LIMIT` wrong codes tested, a right code that pays only while the device was under its
limit, and one block (one audit entry, one event); per merchant, at most its limit of wrong codes tested.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pyotp
import pytest
from sqlalchemy import Connection, event, func, insert, select

from qianbao.bootstrap import Container, build_container
from qianbao.errors import QianbaoError
from qianbao.ids import new_id
from qianbao.payments import payment_code_guard, payment_code_model, payment_codes
from qianbao.payments.code_tables import payment_code_devices, payment_code_failures
from qianbao.security.tables import audit_events
from qianbao.store.database import Database
from qianbao.store.outbox import outbox
from tests.support.api import make_settings
from tests.support.population import register_principal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

LIMIT = payment_code_model.DEVICE_FAILURE_LIMIT
MERCHANT_LIMIT = payment_code_model.MERCHANT_FAILURE_LIMITS[0][0]
DEADLINE_S = 60.0  # liveness only: a conductor that cannot settle in this time reports what it saw


@pytest.fixture
def services(fresh_database_url: str, tmp_path: Path) -> Iterator[Container]:
    """Services on a database of this test's own, on each backend."""
    built = build_container(make_settings(fresh_database_url, tmp_path / "var"))
    built.identity.keys.ensure_active_key()  # as `start` does: on SQLite, not from inside a write
    try:
        yield built
    finally:
        built.close()


class _SqliteLockWaits:
    """Threads blocked on SQLite's write lock: inside `BEGIN IMMEDIATE` while another thread holds it."""

    def __init__(self, db: Database) -> None:
        self._lock = threading.Lock()
        self._beginning: set[int] = set()
        self._holders: set[int] = set()
        engine = db.engine

        @event.listens_for(engine, "before_cursor_execute")
        def _before(_conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
            if statement == "BEGIN IMMEDIATE":
                with self._lock:
                    self._beginning.add(threading.get_ident())

        @event.listens_for(engine, "after_cursor_execute")
        def _after(_conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
            if statement == "BEGIN IMMEDIATE":
                with self._lock:
                    self._beginning.discard(threading.get_ident())
                    self._holders.add(threading.get_ident())

        @event.listens_for(engine, "commit")
        @event.listens_for(engine, "rollback")
        def _end(_conn: Connection) -> None:
            with self._lock:
                self._holders.discard(threading.get_ident())

    def __call__(self) -> int:
        with self._lock:
            return len(self._beginning) if self._holders - self._beginning else 0


def _lock_waits(db: Database) -> Callable[[], int]:
    """How many of the racing requests wait for a database lock now."""
    if not db.is_postgresql:
        return _SqliteLockWaits(db)

    def postgresql() -> int:
        with db.engine.connect() as conn:
            return int(
                conn.exec_driver_sql(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).scalar_one()
            )

    return postgresql


class Conductor:
    """Runs labelled calls in threads and holds each inside the one-time-code check until released."""

    def __init__(self, db: Database, monkeypatch: pytest.MonkeyPatch) -> None:
        self._waits = _lock_waits(db)
        self._monkeypatch = monkeypatch
        self._state = threading.Condition()
        self._local = threading.local()
        self._threads: list[threading.Thread] = []
        self._held: list[tuple[str, threading.Event]] = []
        self._done = 0
        self.outcomes: list[tuple[str, str]] = []  # (label, "ok" or the error code)
        self.tested: list[tuple[str, bool]] = []  # (label, matched) in the order codes were tested
        real = payment_code_model.matching_step

        def held_check(secret: str, parts: payment_code_model.CodeParts, unix_s: float) -> int | None:
            permit = threading.Event()
            with self._state:
                self._held.append((self._local.label, permit))
            if not permit.wait(DEADLINE_S):
                raise RuntimeError("never released from the one-time-code check")
            step = real(secret, parts, unix_s)
            with self._state:
                self.tested.append((self._local.label, step is not None))
            return step

        monkeypatch.setattr(payment_code_model, "matching_step", held_check)

    def start(self, label: str, call: Callable[[], object]) -> None:
        def run() -> None:
            self._local.label = label
            try:
                call()
                outcome = "ok"
            except QianbaoError as exc:
                outcome = exc.code
            except Exception as exc:  # noqa: BLE001 - recorded, and fails the test
                outcome = f"{type(exc).__name__}: {exc}"
            with self._state:
                self.outcomes.append((label, outcome))
                self._done += 1

        thread = threading.Thread(target=run)
        self._threads.append(thread)
        thread.start()

    def settle(self) -> list[str]:
        """Wait until every request is held, finished or waiting for a lock; the labels of those held."""
        deadline = time.monotonic() + DEADLINE_S
        while True:
            with self._state:
                held, done = len(self._held), self._done
            if held + done + self._waits() >= len(self._threads):
                with self._state:
                    return [label for label, _ in self._held]
            if time.monotonic() > deadline:
                raise RuntimeError(f"no settling: {held} held, {done} done of {len(self._threads)}")
            time.sleep(0.005)

    def release(self, label: str) -> None:
        with self._state:
            for held_label, permit in self._held:
                if held_label == label:
                    permit.set()
            self._held = [(held_label, p) for held_label, p in self._held if held_label != label]

    def finished(self) -> bool:
        with self._state:
            return self._done == len(self._threads)

    def join(self) -> None:
        with self._state:
            for _, permit in self._held:
                permit.set()
            self._held = []
        for thread in self._threads:
            thread.join(DEADLINE_S)
        self._monkeypatch.undo()
        assert not any(t.is_alive() for t in self._threads), "a request is stuck"


def _device(container: Container, number: str, device: str = "phone-1") -> str:
    """A payment-code device with this number (for a new user): its secret."""
    ctx = container.identity
    owner, wallet = register_principal(ctx, "王丽")
    secret = pyotp.random_base32()
    with ctx.db.write() as conn:
        conn.execute(
            insert(payment_code_devices).values(
                id=new_id("pcd"),
                user_id=owner.user_id,
                device_id=device,
                wallet_id=wallet,
                number=number,
                secret_cipher=ctx.keys.encrypt(secret, context=payment_codes.SECRET_CONTEXT),
                status="active",
                created_at=ctx.now(),
            )
        )
    return secret


def _wrong(secret: str, number: str, seq: int = 0) -> str:
    right = payment_code_model.payment_code(secret, number, time.time(), seq)
    return right[:10] + f"{(int(right[10:]) + 1) % 10**8:08d}"


def test_a_right_code_racing_wrong_ones_pays_only_while_the_device_is_under_its_limit(
    services: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = services.identity
    number = "7654321"
    secret = _device(services, number)
    right = payment_code_model.payment_code(secret, number, time.time())
    guesses = LIMIT + 5
    conductor = Conductor(ctx.db, monkeypatch)
    try:
        for i in range(guesses):  # from as many merchants: no merchant limit in the way
            wrong = _wrong(secret, number, i % 10)
            conductor.start("wrong", lambda i=i, w=wrong: payment_codes.redeem(ctx, w, f"mch_{i}", f"g{i}"))
        conductor.settle()
        # The right code joins once every guess got as far as it can before any was counted (without
        # the locks: every guess inside the check, having read the device unblocked, and then the right
        # code too, to be released once the guesses have blocked the device).
        conductor.start("right", lambda: payment_codes.redeem(ctx, right, "mch_honest", "chg:honest"))
        conductor.settle()
        while not conductor.finished():
            held = conductor.settle()
            if "wrong" in held:
                conductor.release("wrong")
            elif "right" in held:  # only when no guess can move: each has been tested or waits
                conductor.release("right")
    finally:
        conductor.join()

    tested_wrong = [label for label, _ in conductor.tested].count("wrong")
    assert tested_wrong == LIMIT, conductor.tested  # never more; here exactly, as more were presented
    paid = ("right", "ok") in conductor.outcomes
    if paid:  # the right code was tested while the device was under its limit
        assert conductor.tested.index(("right", True)) < LIMIT, conductor.tested
    else:  # the device had reached its limit: the code was not even tested, and is answered as wrong
        assert ("right", True) not in conductor.tested, conductor.tested
    expected = Counter({"payment_code_invalid": guesses + (0 if paid else 1), "ok": 1 if paid else 0})
    assert Counter(outcome for _, outcome in conductor.outcomes) == +expected

    with ctx.db.read() as conn:
        blocked_at = conn.execute(
            select(payment_code_devices.c.blocked_at).where(payment_code_devices.c.number == number)
        ).scalar_one()
        audited = conn.execute(
            select(func.count()).where(audit_events.c.event == payment_code_guard.BLOCKED_EVENT)
        ).scalar_one()
        events = conn.execute(
            select(func.count()).where(outbox.c.type == payment_code_guard.BLOCKED_EVENT)
        ).scalar_one()
    assert blocked_at is not None
    assert (audited, events) == (1, 1)
    later = payment_code_model.payment_code(secret, number, time.time(), seq=9)
    with pytest.raises(payment_codes.PaymentCodeInvalid):
        payment_codes.redeem(ctx, later, "mch_honest", "chg:later")


def test_a_merchant_guessing_at_once_gets_only_its_limit_of_codes_tested(
    services: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    ctx = services.identity
    # A few more guesses than the limit (each request holds a pooled connection while it waits), spread
    # over three devices so that no device reaches its own limit: only the merchant's applies.
    guesses = MERCHANT_LIMIT + 2
    devices = [(f"765432{d}", _device(services, f"765432{d}", f"phone-{d}")) for d in range(3)]
    conductor = Conductor(ctx.db, monkeypatch)
    try:
        for i in range(guesses):
            number, secret = devices[i % len(devices)]
            wrong = _wrong(secret, number, i // len(devices))
            conductor.start("wrong", lambda w=wrong, i=i: payment_codes.redeem(ctx, w, "mch_till", f"g{i}"))
        while not conductor.finished():
            if "wrong" in conductor.settle():
                conductor.release("wrong")
    finally:
        conductor.join()

    assert guesses // len(devices) + 1 < LIMIT
    assert len(conductor.tested) == MERCHANT_LIMIT, conductor.tested
    assert Counter(outcome for _, outcome in conductor.outcomes) == {
        "payment_code_invalid": MERCHANT_LIMIT,
        "rate_limited": guesses - MERCHANT_LIMIT,
    }
    with ctx.db.read() as conn:
        counted = conn.execute(
            select(func.count()).where(payment_code_failures.c.merchant_id == "mch_till")
        ).scalar_one()
    assert counted == MERCHANT_LIMIT
