"""Guessing payment codes, bounded twice: per merchant, and per device from all merchants together.

1. Per merchant (the `payment_code_failure` rate limit): consulted *before* a code is tried, so a till
   that reached its limit is refused with `429 rate_limited` even when it presents a correct code, and
   nothing is paid; each wrong code counts against it.
2. Per device number (`payment_code_model.DEVICE_FAILURE_LIMIT` within `DEVICE_FAILURE_WINDOW_S`): a
   merchant who saw a customer's device number at the till could otherwise guess that customer's codes
   from many merchant accounts at once. Every wrong code is recorded in the database by the number it
   named (`payment_code_failures`), whether or not a device has that number: the merchant's answer and
   the work done are the same either way, so counting tells nobody which numbers exist. When a device's
   count reaches the limit it is blocked (`blocked_at`): its codes pay no more, correct ones included,
   until the owner enables payment codes again (step-up; a new secret and a new number). The owner hears
   of it (event `payment_code.device_blocked`, an in-app notification) and the audit log records it.

Counting and blocking are one transaction under a lock on the device's row, so concurrent wrong codes
on several server processes cannot all slip under the limit, and exactly one of them blocks the device
(and notifies). The database, not a process-local or Redis counter, holds both: a block must outlive
restarts and hold on every worker.
"""

from __future__ import annotations

from sqlalchemy import Connection, func, insert, select, update

from qianbao.clock import rfc3339
from qianbao.errors import QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.ids import new_id
from qianbao.payments import payment_code_model
from qianbao.payments.code_tables import payment_code_devices, payment_code_failures
from qianbao.security import audit
from qianbao.store.outbox import OutboxEvent

MERCHANT_RULE = "payment_code_failure"
BLOCKED_EVENT = "payment_code.device_blocked"


class PaymentCodeBlocked(QianbaoError):
    code = "payment_code_blocked"


def refuse_merchant_over_limit(ctx: IdentityContext, merchant_id: str) -> None:
    """`RateLimited` (429, Retry-After) if the merchant has presented too many wrong codes: checked before
    any code is tried, so a right guess after the limit pays nothing either. Counts nothing."""
    if not ctx.limiter.check(MERCHANT_RULE, merchant_id):
        ctx.limiter.hit(MERCHANT_RULE, merchant_id)  # raises RateLimited with Retry-After


def count_merchant_failure(ctx: IdentityContext, merchant_id: str) -> None:
    ctx.limiter.hit(MERCHANT_RULE, merchant_id)


def count_device_failure(ctx: IdentityContext, number: str, merchant_id: str) -> None:
    """Record a wrong code for device `number` presented by `merchant_id`, and block the device (if one
    has the number) when its wrong codes reach the limit."""
    now = ctx.now()
    with ctx.uow() as uow:
        conn = uow.conn
        # Lock first: concurrent wrong codes for one device count one after another.
        device = conn.execute(
            select(payment_code_devices)
            .where(
                payment_code_devices.c.number == number,
                payment_code_devices.c.status == "active",
                payment_code_devices.c.blocked_at.is_(None),
            )
            .with_for_update()
        ).first()
        conn.execute(
            insert(payment_code_failures).values(
                id=new_id("pcf"), number=number, merchant_id=merchant_id, failed_at=now
            )
        )
        if device is not None:
            since = payment_code_model.device_failures_since(now, int(device.created_at))
            failures, merchants = _failures(conn, number, since)
            if payment_code_model.device_blocked_by(failures) and _block(conn, str(device.id), now):
                audit.record(
                    conn,
                    now,
                    BLOCKED_EVENT,
                    audit.Actor.system(),
                    subject_user_id=str(device.user_id),
                    details={
                        "payment_code_device_id": str(device.id),
                        "wrong_codes": failures,
                        "merchant_ids": merchants,
                    },
                )
                uow.emit(
                    OutboxEvent(
                        BLOCKED_EVENT,
                        "payment_code_device",
                        str(device.id),
                        {
                            "user_id": str(device.user_id),
                            "payment_code_device_id": str(device.id),
                            "wallet_id": str(device.wallet_id),
                            "blocked_at": rfc3339(now),
                        },
                    )
                )
        uow.commit()


def _failures(conn: Connection, number: str, since_us: int) -> tuple[int, list[str]]:
    """How many wrong codes named `number` since then, and from which merchants."""
    recent = (payment_code_failures.c.number == number, payment_code_failures.c.failed_at >= since_us)
    count = conn.execute(select(func.count()).select_from(payment_code_failures).where(*recent)).scalar_one()
    merchants = conn.execute(
        select(payment_code_failures.c.merchant_id).where(*recent).distinct().limit(20)
    ).scalars()
    return int(count), sorted(str(m) for m in merchants)


def _block(conn: Connection, device_id: str, now: int) -> bool:
    """Block the device; False if it already was (then someone else told its owner)."""
    done = conn.execute(
        update(payment_code_devices)
        .where(payment_code_devices.c.id == device_id, payment_code_devices.c.blocked_at.is_(None))
        .values(blocked_at=now)
    )
    return done.rowcount == 1
