"""Concurrent partial refunds of one merchant payment on PostgreSQL: however the threads interleave, the
refunds together never exceed the payment, the payment's counters equal the refunds that succeeded, the
fee comes back exactly pro-rata, and the ledger agrees.

A payment of ¥100 (fee 38 fen at 0.38 %) is refunded by 16 threads at once through the refunds service
(`qianbao.payments.refunds.refund_payment`), with amounts that add up to more than was paid. A refused
refund must have been refused for the right reason: at the end, what is left to refund is less than it
asked for (what is left only ever shrinks).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import pytest
from sqlalchemy import func, select

from qianbao.bootstrap import Container
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, RequestInfo
from qianbao.ledger.system_accounts import FEES, system_account_id
from qianbao.ledger.verify import verify_ledger
from qianbao.payments import merchants, refund_flow
from qianbao.payments.funding import sandbox_fund
from qianbao.payments.merchant_records import PaymentRecord, RefundRecord
from qianbao.payments.merchant_tables import merchant_payments, refunds
from qianbao.payments.merchants import Merchant
from qianbao.payments.qr_flow import pay_by_qr
from qianbao.payments.qr_payments import QrPaymentRequest
from qianbao.payments.refunds import RefundRequest, refund_payment
from tests.support.population import race
from tests.support.population import register_principal as register

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]

THREADS = 16
AMOUNT = 10_000  # ¥100
FEE = 38  # 0.38 %, half-up
FUNDED = 50_000


# -- shared with test_dynamic_qr_race.py ------------------------------------------------------------


def open_shop(ctx: IdentityContext) -> tuple[Principal, Merchant]:
    owner, _wallet = register(ctx, "店主")
    merchant = merchants.create_merchant(
        ctx, owner, name="老王面馆", mcc="5812", city="上海", currency_code=None, info=RequestInfo()
    )
    return owner, merchant


def pay_static(
    ctx: IdentityContext, payer: Principal, wallet_id: str, merchant: Merchant, amount: int
) -> PaymentRecord:
    request = QrPaymentRequest(wallet_id, merchants.static_qr_payload(merchant), amount, "CNY")
    return pay_by_qr(ctx, payer, request)


def balances(container: Container, *ids: str) -> list[int]:
    found = container.reader.lookup_accounts(ids)
    return [found[i].balance for i in ids]


def pro_rata(fee: int, refunded: int, amount: int) -> int:
    """The fee returned after refunds totalling `refunded`: round(fee × refunded / amount), half-up."""
    return int((Decimal(fee * refunded) / Decimal(amount)).quantize(Decimal(1), rounding=ROUND_HALF_UP))


# -- the race ---------------------------------------------------------------------------------------


@dataclass
class Scene:
    container: Container
    owner: Principal
    merchant: Merchant
    payer_wallet: str
    payment: PaymentRecord


@pytest.fixture
def scene(container: Container) -> Scene:
    ctx = container.identity
    owner, merchant = open_shop(ctx)
    payer, wallet = register(ctx, "王丽")
    sandbox_fund(ctx, payer, wallet_id=wallet, amount=FUNDED, currency_code="CNY")
    payment = pay_static(ctx, payer, wallet, merchant, AMOUNT)
    assert (payment.status, payment.fee) == ("succeeded", FEE)
    return Scene(container, owner, merchant, wallet, payment)


def _plans() -> dict[str, list[int | None]]:
    rng = random.Random(4)  # noqa: S311 - test data
    return {
        "equal parts": [900] * THREADS,  # 11 fit (9,900), 5 cannot
        "mixed parts": [rng.randint(1, 1_500) for _ in range(THREADS)],
        "partials and full refunds": [None, 2_500, None, 3_333, 1, 1_234, None, 4_000] * 2,
        "odd fen": [333] * 10 + [3_334] * 6,  # pro-rata shares of 12.66 fen: rounding under a race
    }


def check_the_outcome(scene: Scene, asked: list[int | None], outcomes: list[tuple[str, Any]]) -> None:
    container, payment = scene.container, scene.payment
    assert {code for code, _ in outcomes} <= {"ok", "refund_exceeds_payment"}, outcomes
    done: list[RefundRecord] = [result for code, result in outcomes if code == "ok"]
    refunded = sum(r.amount for r in done)
    left = AMOUNT - refunded
    assert 0 < refunded <= AMOUNT
    for amount, (code, result) in zip(asked, outcomes, strict=True):
        if code == "ok":
            assert amount is None or result.amount == amount
            assert result.status == "succeeded" and result.to_wallet_id == scene.payer_wallet
            assert 0 <= result.fee_refunded <= result.amount
        else:  # refused only when it did not fit, and told how much was left then (≥ what is left now)
            remaining = result.extra["remaining"]["amount"]
            assert left <= remaining
            if amount is not None:
                assert amount > remaining >= left
    fee_back = pro_rata(FEE, refunded, AMOUNT)
    assert sum(r.fee_refunded for r in done) == fee_back

    ctx = container.identity
    with ctx.db.read() as conn:
        row = conn.execute(select(merchant_payments).where(merchant_payments.c.id == payment.id)).one()
        succeeded = conn.execute(
            select(
                func.count(), func.coalesce(func.sum(refunds.c.amount), 0), func.sum(refunds.c.fee_refunded)
            ).where(refunds.c.payment_id == payment.id, refunds.c.status == "succeeded")
        ).one()
        failed = (
            conn.execute(
                select(refunds.c.failure_code).where(
                    refunds.c.payment_id == payment.id, refunds.c.status == "failed"
                )
            )
            .scalars()
            .all()
        )
    assert (row.refunded_amount, row.fee_refunded, row.status) == (refunded, fee_back, "succeeded")
    assert tuple(succeeded) == (len(done), refunded, fee_back)
    # A refusal inside the unit of work is recorded (bound to its key); one refused by the check before
    # it (the payment already looked fully refunded) is not.
    assert set(failed) <= {"refund_exceeds_payment"} and len(failed) <= len(outcomes) - len(done)

    fees = system_account_id(FEES, "CNY")
    payer, merchant_wallet, fee_account = balances(
        container, scene.payer_wallet, scene.merchant.wallet_id, fees
    )
    assert payer == FUNDED - AMOUNT + refunded
    assert merchant_wallet == AMOUNT - FEE - refunded + fee_back
    assert fee_account == FEE - fee_back  # this database saw one payment only
    report = verify_ledger(container.db)
    assert report.ok, report


@pytest.mark.parametrize("plan", list(_plans()))
def test_concurrent_partial_refunds_never_exceed_the_payment(scene: Scene, plan: str) -> None:
    asked = _plans()[plan]
    ctx = scene.container.identity

    def refund(amount: int | None) -> Callable[[], RefundRecord]:
        return lambda: refund_payment(ctx, scene.owner, RefundRequest(scene.payment.id, amount, "CNY"))

    outcomes = race([refund(a) for a in asked])
    check_the_outcome(scene, asked, outcomes)


def test_concurrent_full_refunds_refund_once(scene: Scene) -> None:
    ctx = scene.container.identity
    asked: list[int | None] = [None] * 8
    outcomes = race([lambda: refund_payment(ctx, scene.owner, RefundRequest(scene.payment.id))] * len(asked))
    assert [code for code, _ in outcomes].count("ok") == 1, outcomes
    check_the_outcome(scene, asked, outcomes)
    payer, merchant_wallet = balances(scene.container, scene.payer_wallet, scene.merchant.wallet_id)
    assert (payer, merchant_wallet) == (FUNDED, 0)


def _retries(scene: Scene, amount: int) -> list[tuple[str, Any]]:
    ctx = scene.container.identity
    request = RefundRequest(scene.payment.id, amount, "CNY")
    return race([lambda: refund_payment(ctx, scene.owner, request, idempotency_key="retry-1")] * 8)


@pytest.mark.parametrize("amount", [3_000, 6_000])
def test_concurrent_retries_with_one_idempotency_key_move_money_once(scene: Scene, amount: int) -> None:
    """A client retrying while its first request still runs (same key, same body): one refund. With ¥30
    every retry would fit into what is left, with ¥60 none does after the first."""
    outcomes = _retries(scene, amount)
    done = [result for code, result in outcomes if code == "ok"]
    assert done, outcomes
    assert len({r.id for r in done}) == 1
    ctx = scene.container.identity
    with ctx.db.read() as conn:
        rows = conn.execute(select(refunds).where(refunds.c.payment_id == scene.payment.id)).all()
    assert [(r.status, r.amount) for r in rows] == [("succeeded", amount)]
    payer, merchant_wallet = balances(scene.container, scene.payer_wallet, scene.merchant.wallet_id)
    fee_back = pro_rata(FEE, amount, AMOUNT)
    assert payer == FUNDED - AMOUNT + amount
    assert merchant_wallet == AMOUNT - FEE - amount + fee_back
    assert verify_ledger(scene.container.db).ok


@pytest.mark.parametrize("amount", [3_000, 6_000])
def test_a_retry_that_overlapped_the_first_request_gets_the_refund(
    scene: Scene, amount: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interleaving of the race above, made deterministic: the retry's look-up by key misses (the
    first request had not committed yet), then it runs after the first one committed."""
    ctx = scene.container.identity
    request = RefundRequest(scene.payment.id, amount, "CNY")
    first = refund_payment(ctx, scene.owner, request, idempotency_key="retry-2")
    real = refund_flow.refunds_by_ledger_ids
    missed: list[bool] = []

    def first_look_up_misses(*args: Any, **kwargs: Any) -> dict[str, RefundRecord]:
        if not missed:  # the batch's staging: misses; once the locks are held: finds it
            missed.append(True)
            return {}
        return real(*args, **kwargs)

    monkeypatch.setattr(refund_flow, "refunds_by_ledger_ids", first_look_up_misses)
    again = refund_payment(ctx, scene.owner, request, idempotency_key="retry-2")
    assert again.id == first.id
