"""Guessing payment codes, bounded twice: per merchant, and per device from all merchants together.

Both limits are decided and counted in the one transaction that redeems a code (`payment_codes.redeem`),
under locks taken in a fixed order (merchant, then device: no deadlock), so concurrent requests on any
number of server processes are decided one after another, each seeing what those before it wrote:

1. Per merchant (`payment_code_model.MERCHANT_FAILURE_LIMITS`): every failure (wrong, stale, used,
   revoked or malformed code) is a row of `payment_code_failures` with the merchant's id, counted under a
   per-merchant lock *before* the code is tried. A merchant that reached a limit is refused with
   `429 rate_limited`, even for a right code, and nothing is tried, spent or counted. Why not the rate
   limiter: checking it before and counting after let concurrent guesses all pass the check, and
   counting every attempt up front would spend the limit on honest payments too (the limiter cannot give
   a slot back); with memory storage it is also per process. The lock serialises only the redeeming of
   one merchant's codes (a few milliseconds each); other merchants do not wait.
2. Per device number (`DEVICE_FAILURE_LIMIT` within `DEVICE_FAILURE_WINDOW_S`): a merchant who saw a
   customer's device number at the till could otherwise guess that customer's codes from many merchant
   accounts at once. Every wrong code is recorded by the number it named, whether or not a device has it:
   the merchant's answer and the work done are the same either way, so counting tells nobody which
   numbers exist. The device's row is locked before its state is read; once its wrong codes reach the
   limit it is blocked (`blocked_at`) in the same transaction, and no code naming it is tested any more,
   a right one included, until the owner enables payment codes again (step-up; a new secret and a new
   number). The owner hears of it (event `payment_code.device_blocked`, an in-app notification) and the
   audit log records it, once.

The database, not a process-local or Redis counter, holds both: a block must outlive restarts and hold
on every worker. On SQLite the write transaction (`BEGIN IMMEDIATE`) already excludes every other writer.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, text, update

from qianbao.clock import rfc3339
from qianbao.errors import QianbaoError, RateLimited
from qianbao.ids import new_id
from qianbao.payments import payment_code_model
from qianbao.payments.code_tables import payment_code_devices, payment_code_failures
from qianbao.security import audit
from qianbao.store.outbox import OutboxEvent
from qianbao.store.unit_of_work import UnitOfWork

MERCHANT_RULE = "payment_code_failure"  # the `rule` of its 429 problem
BLOCKED_EVENT = "payment_code.device_blocked"


class PaymentCodeBlocked(QianbaoError):
    code = "payment_code_blocked"


@dataclass(frozen=True, slots=True)
class LockedDevice:
    """The active device a code names, its row locked for the rest of the transaction."""

    row: Row[Any]
    guesses: payment_code_model.DeviceGuesses
    failures_since: int


def lock_merchant(conn: Connection, merchant_id: str) -> None:
    """Take the merchant's turn: its code attempts are decided one at a time until this transaction ends
    (PostgreSQL: a transaction-scoped advisory lock; SQLite's write transaction excludes the others)."""
    if conn.dialect.name == "postgresql":
        name = f"payment_code_merchant:{merchant_id}".encode()
        key = int.from_bytes(hashlib.sha256(name).digest()[:8], "big", signed=True)
        conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": key})


def refuse_merchant_over_limit(conn: Connection, merchant_id: str, now: int) -> None:
    """`RateLimited` (429, Retry-After) if the merchant's wrong codes reached a limit: checked before any
    code is tried, so a right one after the limit pays nothing either. Counts nothing. The caller holds
    the merchant's lock (`lock_merchant`) until it has recorded this attempt's outcome."""
    limits = payment_code_model.MERCHANT_FAILURE_LIMITS
    failed_at = payment_code_failures.c.failed_at
    counts = conn.execute(
        select(*(func.count().filter(failed_at >= now - window * 1_000_000) for _, window in limits)).where(
            payment_code_failures.c.merchant_id == merchant_id,
            failed_at >= now - max(window for _, window in limits) * 1_000_000,
        )
    ).one()
    reached = payment_code_model.merchant_limits_reached([int(count) for count in counts])
    if reached:
        raise RateLimited(
            "too many wrong payment codes from this merchant ("
            + "; ".join(f"{count} in {window} s" for count, window in reached)
            + ")",
            retry_after=max(_seconds_until_under(conn, merchant_id, limit, now) for limit in reached),
            rule=MERCHANT_RULE,
        )


def _seconds_until_under(conn: Connection, merchant_id: str, limit: tuple[int, int], now: int) -> int:
    """When the merchant is under this limit again: once the `count`-th newest failure leaves the window."""
    count, window = limit
    window_us = window * 1_000_000
    failed_at = payment_code_failures.c.failed_at
    oldest_that_counts = conn.execute(
        select(failed_at)
        .where(payment_code_failures.c.merchant_id == merchant_id, failed_at >= now - window_us)
        .order_by(failed_at.desc())
        .offset(count - 1)
        .limit(1)
    ).scalar_one()
    return max(1, math.ceil((int(oldest_that_counts) + window_us - now) / 1_000_000))


def lock_device(conn: Connection, number: str, now: int) -> LockedDevice | None:
    """The active device with this number, locked (`FOR UPDATE`; no-op on SQLite, whose write transaction
    is exclusive), with its state: concurrent codes for it wait here and see what this one records."""
    row = conn.execute(
        select(payment_code_devices)
        .where(payment_code_devices.c.number == number, payment_code_devices.c.status == "active")
        .with_for_update()
    ).first()
    if row is None:
        return None
    since = payment_code_model.device_failures_since(now, int(row.created_at))
    failures = conn.execute(
        select(func.count()).where(
            payment_code_failures.c.number == number, payment_code_failures.c.failed_at >= since
        )
    ).scalar_one()
    guesses = payment_code_model.DeviceGuesses(blocked=row.blocked_at is not None, failures=int(failures))
    return LockedDevice(row, guesses, since)


def record_failure(
    uow: UnitOfWork, merchant_id: str, number: str | None, device: LockedDevice | None, now: int
) -> None:
    """Record a failed code presented by `merchant_id`: against the device `number` too when it was a guess
    at it (None: against the merchant only), blocking `device` (which has that number) when this wrong
    code reaches its limit. The caller holds the merchant's lock and the device's."""
    conn = uow.conn
    conn.execute(
        insert(payment_code_failures).values(
            id=new_id("pcf"), number=number, merchant_id=merchant_id, failed_at=now
        )
    )
    if number is None or device is None or not payment_code_model.blocks_device(device.guesses):
        return
    row = device.row
    conn.execute(
        update(payment_code_devices).where(payment_code_devices.c.id == row.id).values(blocked_at=now)
    )
    audit.record(
        conn,
        now,
        BLOCKED_EVENT,
        audit.Actor.system(),
        subject_user_id=str(row.user_id),
        details={
            "payment_code_device_id": str(row.id),
            "wrong_codes": device.guesses.failures + 1,
            "merchant_ids": _merchants(conn, number, device.failures_since),
        },
    )
    uow.emit(
        OutboxEvent(
            BLOCKED_EVENT,
            "payment_code_device",
            str(row.id),
            {
                "user_id": str(row.user_id),
                "payment_code_device_id": str(row.id),
                "wallet_id": str(row.wallet_id),
                "blocked_at": rfc3339(now),
            },
        )
    )


def _merchants(conn: Connection, number: str, since_us: int) -> list[str]:
    """Which merchants (up to 20) presented wrong codes for `number` since then."""
    merchants = conn.execute(
        select(payment_code_failures.c.merchant_id)
        .where(payment_code_failures.c.number == number, payment_code_failures.c.failed_at >= since_us)
        .distinct()
        .limit(20)
    ).scalars()
    return sorted(str(m) for m in merchants)
