"""Single-use payments under a real race on PostgreSQL: a dynamic QR code that several customers (or one
customer's several taps) pay at once is paid once, and so is a checkout intent confirmed several times
at once. The others are refused with the state's code, and the money moves exactly once."""

from __future__ import annotations

from collections import Counter
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import select

from qianbao.bootstrap import Container
from qianbao.identity.model import Principal
from qianbao.ledger.system_accounts import FEES, system_account_id
from qianbao.ledger.verify import verify_ledger
from qianbao.payments import dynamic_qr, intents
from qianbao.payments.code_tables import payment_intents
from qianbao.payments.fees import fee_for
from qianbao.payments.funding import sandbox_fund
from qianbao.payments.merchant_records import PaymentRecord
from qianbao.payments.merchant_tables import merchant_payments, merchant_qr_codes
from qianbao.payments.merchants import Merchant
from qianbao.payments.qr_flow import pay_by_qr
from qianbao.payments.qr_payments import QrPaymentRequest
from tests.integration.test_refund_race import balances, open_shop, register
from tests.support.population import race

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

CUSTOMERS = 8
AMOUNT = 12_345  # ¥123.45, fee 47 fen (46.911)
FEE = fee_for(AMOUNT, 3_800)
FUNDED = 100_000


def customers(container: Container, count: int) -> list[tuple[Principal, str]]:
    ctx = container.identity
    found = [register(ctx, f"顾客{i}") for i in range(count)]
    for principal, wallet in found:
        sandbox_fund(ctx, principal, wallet_id=wallet, amount=FUNDED, currency_code="CNY")
    return found


def check_money_moved_once(
    container: Container, merchant: Merchant, payers: list[tuple[Principal, str]], winner: PaymentRecord
) -> None:
    wallets = sorted({wallet for _, wallet in payers})
    expected = {w: FUNDED - (AMOUNT if w == winner.payer_wallet_id else 0) for w in wallets}
    assert dict(zip(wallets, balances(container, *wallets), strict=True)) == expected
    fees = system_account_id(FEES, "CNY")
    assert balances(container, merchant.wallet_id, fees) == [AMOUNT - FEE, FEE]
    with container.db.read() as conn:
        paid = conn.execute(
            select(merchant_payments.c.id, merchant_payments.c.amount).where(
                merchant_payments.c.merchant_id == merchant.id, merchant_payments.c.status == "succeeded"
            )
        ).all()
    assert [tuple(p) for p in paid] == [(winner.id, AMOUNT)]
    report = verify_ledger(container.db)
    assert report.ok, report


# -- a dynamic code --------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["different customers", "one customer tapping again and again"])
def test_a_dynamic_code_paid_by_many_at_once_is_paid_once(container: Container, who: str) -> None:
    ctx = container.identity
    owner, merchant = open_shop(ctx)
    payers = customers(container, CUSTOMERS) if who == "different customers" else customers(container, 1)
    _merchant, code = dynamic_qr.create_code(
        ctx, owner, merchant.id, amount=AMOUNT, currency_code="CNY", order_id="T-1", expires_in_s=None
    )
    payload = dynamic_qr.payload_for(merchant, code)

    def pay(payer: Principal, wallet: str, i: int) -> Any:
        request = QrPaymentRequest(wallet, payload)
        return lambda: pay_by_qr(ctx, payer, request, idempotency_key=f"tap-{i}")

    calls = [pay(*payers[i % len(payers)], i) for i in range(CUSTOMERS)]
    outcomes = race(calls)
    assert Counter(code for code, _ in outcomes) == {"ok": 1, "qr_code_used": CUSTOMERS - 1}, outcomes
    (winner,) = [result for kind, result in outcomes if kind == "ok"]
    assert (winner.status, winner.method, winner.qr_code_id, winner.fee) == (
        "succeeded",
        "qr_dynamic",
        code.id,
        FEE,
    )
    with ctx.db.read() as conn:
        row = conn.execute(select(merchant_qr_codes).where(merchant_qr_codes.c.id == code.id)).one()
    assert (row.status, row.payment_id) == ("paid", winner.id)
    check_money_moved_once(container, merchant, payers, winner)


def test_a_retry_that_overlapped_the_first_payment_gets_the_payment(
    container: Container, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving of a client's retry racing its own first request, made deterministic: the retry's
    batch reads the code unpaid (the first had not committed), then holds its locks after the first
    committed: it finds the first payment by its key and answers it, not `qr_code_used`."""
    ctx = container.identity
    owner, merchant = open_shop(ctx)
    ((payer, wallet),) = customers(container, 1)
    _merchant, code = dynamic_qr.create_code(
        ctx, owner, merchant.id, amount=AMOUNT, currency_code="CNY", order_id=None, expires_in_s=None
    )
    request = QrPaymentRequest(wallet, dynamic_qr.payload_for(merchant, code))
    first = pay_by_qr(ctx, payer, request, idempotency_key="retry-1")
    real = dynamic_qr.code_by_reference
    read: list[bool] = []

    def first_read_before_the_first_committed(*args: Any, **kwargs: Any) -> dynamic_qr.DynamicQr | None:
        found = real(*args, **kwargs)
        if not read and found is not None:  # the retry's batch reads the code as the first left it: unpaid
            read.append(True)
            return replace(found, status="active", payment_id=None)
        return found

    monkeypatch.setattr(dynamic_qr, "code_by_reference", first_read_before_the_first_committed)
    again = pay_by_qr(ctx, payer, request, idempotency_key="retry-1")
    assert again.id == first.id


# -- a checkout intent -----------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["different customers", "one customer confirming again and again"])
def test_an_intent_confirmed_many_times_at_once_is_paid_once(container: Container, who: str) -> None:
    ctx = container.identity
    owner, merchant = open_shop(ctx)
    payers = customers(container, CUSTOMERS) if who == "different customers" else customers(container, 1)
    intent = intents.create_intent(
        ctx,
        owner,
        merchant_id=merchant.id,
        amount=AMOUNT,
        currency_code="CNY",
        order_id="WEB-1",
        description="龙井 250g",
        return_url=None,
        expires_in_s=None,
    )

    def confirm(payer: Principal, wallet: str) -> Any:
        return lambda: intents.confirm_intent(ctx, payer, intent.id, from_wallet_id=wallet, step_up=None)

    outcomes = race([confirm(*payers[i % len(payers)]) for i in range(CUSTOMERS)])
    assert Counter(code for code, _ in outcomes) == {"ok": 1, "intent_state_conflict": CUSTOMERS - 1}, (
        outcomes
    )
    ((shown, winner),) = [result for kind, result in outcomes if kind == "ok"]
    assert (shown.status, shown.payment_id) == ("succeeded", winner.id)
    assert (winner.status, winner.method, winner.ledger_transfer_id) == (
        "succeeded",
        "checkout",
        f"pi:{intent.id}",
    )
    with ctx.db.read() as conn:
        row = conn.execute(select(payment_intents).where(payment_intents.c.id == intent.id)).one()
    assert (row.status, row.payment_id, row.payer_user_id) == ("succeeded", winner.id, winner.payer_user_id)
    check_money_moved_once(container, merchant, payers, winner)
