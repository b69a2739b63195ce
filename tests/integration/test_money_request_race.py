"""Concurrent accepts of one money request on PostgreSQL: it is paid exactly once.

The payer holds enough for every attempt; 12 threads accept the same request at once through the use case
(half with their own Idempotency-Key, half without), from two different wallets. Each attempt passes the
pre-checks while the request is still pending, so only the conditional UPDATE inside the transfer's unit
of work stands between them and a double payment: exactly one succeeds, the others are refused with
`request_not_pending` and their transfers roll back (ledger, transfer record and daily-limit usage alike).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import func, select

from qianbao.bootstrap import Container
from qianbao.identity.model import RequestInfo
from qianbao.identity.tables import limit_usage
from qianbao.ledger.verify import verify_ledger
from qianbao.payments.funding import sandbox_fund
from qianbao.payments.request_flow import accept_request
from qianbao.payments.request_tables import money_requests
from qianbao.payments.requests import NewMoneyRequest, create_request
from qianbao.payments.tables import transfers
from qianbao.payments.transfers import TransferRequest, send_transfer
from qianbao.store.outbox import outbox
from qianbao.wallets.service import create_sub_wallet
from tests.support.population import race
from tests.support.population import register_principal as register

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

ATTEMPTS = 12
AMOUNT = 10_000  # ¥100: no step-up (under the new-payee and amount thresholds, trusted device)


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_accepts_pay_a_request_once(container: Container, round_: int) -> None:
    ctx = container.identity
    requester, requester_wallet = register(ctx, "王丽")
    payer, payer_wallet = register(ctx, "李四")
    sandbox_fund(ctx, payer, wallet_id=payer_wallet, amount=ATTEMPTS * AMOUNT, currency_code="CNY")
    # A second wallet of the payer's, funded by a move (no outflow limit), so attempts pay from either.
    sub = create_sub_wallet(
        ctx, payer, name="零钱", purpose="custom", currency_code="CNY", info=RequestInfo()
    ).id
    send_transfer(ctx, payer, TransferRequest(payer_wallet, ATTEMPTS * AMOUNT // 2, "CNY", to_wallet_id=sub))
    request = create_request(
        ctx,
        requester,
        NewMoneyRequest(
            to_wallet_id=requester_wallet, amount=AMOUNT, currency="CNY", payer_wallet_id=payer_wallet
        ),
    ).request

    def attempt(i: int) -> Callable[[], Any]:
        source = payer_wallet if i % 2 else sub
        key = f"accept-{round_}-{i}" if i % 3 else None
        return lambda: accept_request(ctx, payer, request.id, from_wallet_id=source, idempotency_key=key)

    outcomes = ["paid" if code == "ok" else code for code, _ in race([attempt(i) for i in range(ATTEMPTS)])]

    assert Counter(outcomes) == {"paid": 1, "request_not_pending": ATTEMPTS - 1}, outcomes
    with ctx.db.read() as conn:
        row = conn.execute(select(money_requests).where(money_requests.c.id == request.id)).one()
        paid = conn.execute(
            select(transfers.c.id, transfers.c.from_wallet_id).where(
                transfers.c.status == "succeeded", transfers.c.from_user_id == payer.user_id,
                transfers.c.to_user_id == requester.user_id,
            )
        ).all()  # fmt: skip
        usage = conn.execute(
            select(limit_usage.c.outflow, limit_usage.c.payments).where(
                limit_usage.c.user_id == payer.user_id
            )
        ).one()
        paid_events = conn.execute(
            select(func.count()).select_from(outbox).where(outbox.c.type == "money_request.paid")
        ).scalar_one()
    assert row.status == "paid" and [(row.transfer_id, row.from_wallet_id)] == [tuple(p) for p in paid]
    assert (usage.outflow, usage.payments) == (AMOUNT, 1)
    assert paid_events == 1
    balances = container.reader.lookup_accounts([payer_wallet, sub, requester_wallet])
    assert balances[requester_wallet].balance == AMOUNT
    assert balances[payer_wallet].balance + balances[sub].balance == ATTEMPTS * AMOUNT - AMOUNT
    report = verify_ledger(container.db)
    assert report.ok, report
