"""Refunds, sandbox funding and wallet closing as orders of the payment pipeline, in batches with each
other and with payments (SQLite and PostgreSQL): requests in one batch see each other, a decline in
the middle commits the others, and the ledger, the payment's counters and the records agree.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import select

from qianbao.bootstrap import Container
from qianbao.errors import QianbaoError
from qianbao.identity.model import Principal, RequestInfo
from qianbao.ledger.model import AccountStatus
from qianbao.ledger.verify import verify_ledger
from qianbao.payments.engine.orders import Done, Order
from qianbao.payments.engine.pipeline import process
from qianbao.payments.funding import FUNDINGS, FundingAsk, ensure_sandbox_funding_account, sandbox_fund
from qianbao.payments.merchant_records import payment_by
from qianbao.payments.merchant_tables import refunds
from qianbao.payments.refunds import RefundRequest, refund_order
from qianbao.payments.request_flow import accept_order
from qianbao.payments.request_tables import money_requests
from qianbao.payments.requests import NewMoneyRequest, create_request
from qianbao.payments.transfers import TransferRequest, transfer_order
from qianbao.store.outbox import outbox
from qianbao.wallets.closing import CLOSINGS, CloseAsk, close_order, close_transfer_id
from qianbao.wallets.service import create_sub_wallet, wallet_row
from tests.integration.test_refund_race import open_shop, pay_static
from tests.support.population import register_principal as register

pytestmark = [pytest.mark.timeout(120)]


def _codes(results: list[Any]) -> list[str]:
    return [r.code if isinstance(r, QianbaoError) else "ok" for r in results]


def _balance(container: Container, wallet: str) -> int:
    return container.reader.lookup_accounts([wallet])[wallet].balance


def _sub_wallet(container: Container, owner: Principal, name: str) -> str:
    made = create_sub_wallet(
        container.identity, owner, name=name, purpose=None, currency_code="CNY", info=RequestInfo()
    )
    return made.id


def _funding(principal: Principal, wallet: str, amount: int, n: int) -> Order:
    ask = FundingAsk(wallet, amount, "CNY")
    return Order(FUNDINGS, principal, ask, f"sandbox:test-{wallet}-{n}", key=f"key-{n}")


def test_refunds_of_one_payment_in_one_batch_see_each_other(container: Container) -> None:
    ctx = container.identity
    owner, shop = open_shop(ctx)
    payer, wallet = register(ctx, "王丽")
    sandbox_fund(ctx, payer, wallet_id=wallet, amount=50_000, currency_code="CNY")
    paid = pay_static(ctx, payer, wallet, shop, 10_000)  # fee 38 at 0.38 %
    asks = [3_000, 7_001, 7_000]
    orders = [refund_order(owner, RefundRequest(paid.id, amount, "CNY")) for amount in asks]
    results = process(ctx, orders)
    assert _codes(results) == ["ok", "refund_exceeds_payment", "ok"]
    assert isinstance(results[1], QianbaoError) and results[1].extra["remaining"]["amount"] == 7_000
    done = [r.record for r in results if isinstance(r, Done)]
    assert sum(r.fee_refunded for r in done) == 38  # refunded in full: exactly the whole fee back
    with ctx.db.read() as conn:
        payment = payment_by(conn, ctx.keys, id=paid.id)
        rows = conn.execute(select(refunds.c.status, refunds.c.amount)).all()
    assert payment is not None and (payment.refunded_amount, payment.fee_refunded) == (10_000, 38)
    assert sorted(tuple(r) for r in rows) == [("succeeded", 3_000), ("succeeded", 7_000)]  # not recorded
    assert _balance(container, wallet) == 50_000
    assert _balance(container, shop.wallet_id) == 0
    assert verify_ledger(container.db).ok


def test_a_refund_to_a_closed_wallet_goes_to_the_main_wallet_in_the_same_batch_as_payments(
    container: Container,
) -> None:
    ctx = container.identity
    owner, shop = open_shop(ctx)
    payer, main = register(ctx, "王丽")
    sub = _sub_wallet(container, payer, "旅行")
    sandbox_fund(ctx, payer, wallet_id=sub, amount=20_000, currency_code="CNY")
    paid = pay_static(ctx, payer, sub, shop, 10_000)
    closed = process(ctx, [Order(CLOSINGS, payer, CloseAsk(sub, RequestInfo()), close_transfer_id(sub))])
    assert _codes(closed) == ["ok"]
    other, other_wallet = register(ctx, "李雷")
    sandbox_fund(ctx, other, wallet_id=other_wallet, amount=5_000, currency_code="CNY")
    orders = [
        refund_order(owner, RefundRequest(paid.id, 4_000, "CNY")),
        transfer_order(other, TransferRequest(other_wallet, 6_000, "CNY", to_wallet_id=main)),  # declined
        transfer_order(other, TransferRequest(other_wallet, 1_000, "CNY", to_wallet_id=main)),
    ]
    results = process(ctx, orders)
    assert _codes(results) == ["ok", "insufficient_funds", "ok"]
    refund = results[0]
    assert isinstance(refund, Done) and refund.record.to_wallet_id == main
    assert _balance(container, main) == 10_000 + 4_000 + 1_000
    assert verify_ledger(container.db).ok


def test_fundings_in_one_batch_share_the_owners_balance_cap(container: Container) -> None:
    """Tier 4: ¥10,000 over all of a user's wallets, sub-wallets included."""
    ctx = container.identity
    ensure_sandbox_funding_account(ctx, "CNY")
    user, main = register(ctx, "王丽")
    sub = _sub_wallet(container, user, "零钱")
    orders = [
        _funding(user, main, 600_000, 1),
        _funding(user, sub, 400_001, 2),
        _funding(user, sub, 400_000, 3),
    ]
    results = process(ctx, orders)
    assert _codes(results) == ["ok", "balance_cap_exceeded", "ok"]
    assert isinstance(results[1], QianbaoError) and results[1].extra["remaining"]["amount"] == 400_000
    assert (_balance(container, main), _balance(container, sub)) == (600_000, 400_000)
    again = process(ctx, [_funding(user, main, 600_000, 1)])  # the same key: the same funding, replayed
    assert isinstance(again[0], Done) and again[0].record.transaction_id == "sandbox:test-" + main + "-1"
    assert _balance(container, main) == 600_000
    assert verify_ledger(container.db).ok


def test_a_closing_in_a_batch_moves_what_the_payments_before_it_left(container: Container) -> None:
    ctx = container.identity
    user, main = register(ctx, "王丽")
    sub = _sub_wallet(container, user, "旅行")
    sandbox_fund(ctx, user, wallet_id=sub, amount=20_000, currency_code="CNY")
    friend, friend_wallet = register(ctx, "李雷")
    close = Order(CLOSINGS, user, CloseAsk(sub, RequestInfo(ip="203.0.113.9")), close_transfer_id(sub))
    orders = [
        transfer_order(user, TransferRequest(sub, 5_000, "CNY", to_wallet_id=friend_wallet)),
        close,
        transfer_order(user, TransferRequest(sub, 1_000, "CNY", to_wallet_id=friend_wallet)),  # too late
    ]
    results = process(ctx, orders)
    assert _codes(results) == ["ok", "ok", "wallet_frozen"]
    assert isinstance(results[1], Done) and results[1].record.moved == 15_000
    assert (_balance(container, main), _balance(container, friend_wallet)) == (15_000, 5_000)
    assert container.reader.lookup_accounts([sub])[sub].status is AccountStatus.CLOSED
    with ctx.db.read() as conn:
        row = wallet_row(conn, sub)
        closed_events = conn.execute(
            select(outbox.c.aggregate_id).where(outbox.c.type == "wallet.closed")
        ).all()
    assert row is not None and row.closed_at is not None
    assert [tuple(e) for e in closed_events] == [(sub,)]
    again = process(ctx, [close])  # closing again answers the first closing, moving nothing
    assert isinstance(again[0], Done)
    assert _balance(container, main) == 15_000
    del friend
    assert verify_ledger(container.db).ok


def test_two_closings_of_one_wallet_in_one_batch_both_answer_the_closing(container: Container) -> None:
    """A double tap: both requests reach one batch; the second is answered with what the first did."""
    ctx = container.identity
    user, main = register(ctx, "王丽")
    sub = _sub_wallet(container, user, "旅行")
    sandbox_fund(ctx, user, wallet_id=sub, amount=20_000, currency_code="CNY")
    results = process(ctx, [close_order(user, sub, RequestInfo()), close_order(user, sub, RequestInfo())])
    assert all(isinstance(r, Done) for r in results), results
    assert _balance(container, main) == 20_000
    with ctx.db.read() as conn:
        closed = conn.execute(select(outbox.c.type).where(outbox.c.type == "wallet.closed")).all()
    assert len(closed) == 1


def test_two_accepts_of_one_money_request_in_one_batch_pay_it_once(container: Container) -> None:
    ctx = container.identity
    requester, requester_wallet = register(ctx, "王丽")
    payer, payer_wallet = register(ctx, "李四")
    sandbox_fund(ctx, payer, wallet_id=payer_wallet, amount=4_000, currency_code="CNY")
    asked = NewMoneyRequest(
        to_wallet_id=requester_wallet, amount=3_000, currency="CNY", payer_wallet_id=payer_wallet
    )
    request = create_request(ctx, requester, asked).request
    results = process(
        ctx,
        [
            accept_order(payer, request.id, idempotency_key="a"),
            accept_order(payer, request.id, idempotency_key="b"),
        ],
    )
    assert _codes(results) == ["ok", "request_not_pending"]  # not the balance the first one left
    with ctx.db.read() as conn:
        assert conn.execute(select(money_requests.c.status)).scalars().all() == ["paid"]
    assert (_balance(container, payer_wallet), _balance(container, requester_wallet)) == (1_000, 3_000)
    assert verify_ledger(container.db).ok
