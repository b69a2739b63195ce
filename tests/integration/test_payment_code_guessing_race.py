"""Guessing one customer's payment code from many merchants at once, on PostgreSQL: the wrong codes are
counted one after another under the device's row lock, so however the requests interleave (as on several
server processes) the device ends blocked, blocked once (one audit entry, one event for its owner), and
its right code pays no more."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable

import pyotp
import pytest
from sqlalchemy import func, insert, select

from qianbao.bootstrap import Container
from qianbao.ids import new_id
from qianbao.payments import payment_code_guard, payment_code_model, payment_codes
from qianbao.payments.code_tables import payment_code_devices, payment_code_failures
from qianbao.security.tables import audit_events
from qianbao.store.outbox import outbox
from tests.support.population import race, register_principal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

THREADS = 2 * payment_code_model.DEVICE_FAILURE_LIMIT
NUMBER = "7654321"


def test_wrong_codes_from_many_merchants_at_once_block_the_device_once(container: Container) -> None:
    ctx = container.identity
    owner, wallet = register_principal(ctx, "王丽")
    secret = pyotp.random_base32()
    device_id = new_id("pcd")
    with ctx.db.write() as conn:
        conn.execute(
            insert(payment_code_devices).values(
                id=device_id,
                user_id=owner.user_id,
                device_id="phone-1",
                wallet_id=wallet,
                number=NUMBER,
                secret_cipher=ctx.keys.encrypt(secret, context=payment_codes.SECRET_CONTEXT),
                status="active",
                created_at=ctx.now(),
            )
        )
    right = payment_code_model.payment_code(secret, NUMBER, time.time())
    wrong = right[:10] + f"{(int(right[10:]) + 1) % 10**8:08d}"

    def guess(i: int) -> Callable[[], object]:
        return lambda: payment_codes.redeem(ctx, wrong, f"mch_guesser{i}", f"chg:guess-{i}")

    outcomes = race([guess(i) for i in range(THREADS)])
    assert Counter(code for code, _ in outcomes) == {"payment_code_invalid": THREADS}

    with ctx.db.read() as conn:
        blocked_at = conn.execute(
            select(payment_code_devices.c.blocked_at).where(payment_code_devices.c.id == device_id)
        ).scalar_one()
        failures = conn.execute(select(func.count()).select_from(payment_code_failures)).scalar_one()
        audited = conn.execute(
            select(func.count()).where(audit_events.c.event == payment_code_guard.BLOCKED_EVENT)
        ).scalar_one()
        events = conn.execute(
            select(func.count()).where(outbox.c.type == payment_code_guard.BLOCKED_EVENT)
        ).scalar_one()
    assert blocked_at is not None and failures == THREADS
    assert (audited, events) == (1, 1)
    with pytest.raises(payment_code_guard.PaymentCodeBlocked):
        payment_codes.redeem(ctx, right, "mch_honest", "chg:honest")
