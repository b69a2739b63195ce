"""The daily outflow limit under a real race on PostgreSQL: concurrent payments can never take a user's day
past the limit, and the ledger moves exactly what the limit let through.

A tier-4 user (daily limit ¥5,000, balance cap ¥10,000) holds ¥9,000; 20 threads pay ¥400 each at once to
20 different recipients through the payments service (¥400 needs no step-up: under the new-payee and
amount thresholds, on a trusted device). 12 × ¥400 = ¥4,800 ≤ ¥5,000 < 13 × ¥400, so exactly 12 succeed
and 8 are refused with `limit_exceeded_daily`, however the threads interleave.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from qianbao.bootstrap import Container
from qianbao.identity.model import Principal, PrincipalKind
from qianbao.identity.tables import limit_usage
from qianbao.ledger.verify import verify_ledger
from qianbao.payments.funding import sandbox_fund
from qianbao.payments.tables import transfers
from qianbao.payments.transfers import TransferRequest, send_transfer
from tests.support.population import race, register

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PAYMENTS = 20
AMOUNT = 40_000  # ¥400
FUNDED = 900_000  # ¥9,000 (tier 4's balance cap is ¥10,000)
DAILY_LIMIT = 500_000  # tier 4: ¥5,000
EXPECTED_OK = DAILY_LIMIT // AMOUNT  # 12


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_payments_never_exceed_the_daily_limit(container: Container, round_: int) -> None:
    ctx = container.identity
    payer_id, payer_wallet = register(ctx, "王丽")
    recipients = [register(ctx, f"收款人{i}")[1] for i in range(PAYMENTS)]
    payer = Principal(PrincipalKind.USER, payer_id, payer_id, device_trusted=True)
    sandbox_fund(ctx, payer, wallet_id=payer_wallet, amount=FUNDED, currency_code="CNY")

    def pay(recipient_wallet: str) -> Callable[[], Any]:
        request = TransferRequest(payer_wallet, AMOUNT, "CNY", to_wallet_id=recipient_wallet)
        return lambda: send_transfer(ctx, payer, request)

    outcomes = [code for code, _ in race([pay(w) for w in recipients])]

    assert Counter(outcomes) == {"ok": EXPECTED_OK, "limit_exceeded_daily": PAYMENTS - EXPECTED_OK}, round_
    with ctx.db.read() as conn:
        usage = conn.execute(
            select(limit_usage.c.outflow, limit_usage.c.payments).where(limit_usage.c.user_id == payer_id)
        ).one()
        succeeded = conn.execute(
            select(func.count()).select_from(transfers).where(transfers.c.status == "succeeded")
        ).scalar_one()
    assert (usage.outflow, usage.payments) == (EXPECTED_OK * AMOUNT, EXPECTED_OK)
    assert succeeded == EXPECTED_OK
    accounts = container.reader.lookup_accounts([payer_wallet, *recipients])
    assert accounts[payer_wallet].balance == FUNDED - EXPECTED_OK * AMOUNT
    received = sorted(accounts[w].balance for w in recipients)
    assert received == [0] * (PAYMENTS - EXPECTED_OK) + [AMOUNT] * EXPECTED_OK
    report = verify_ledger(container.db)
    assert report.ok, report
