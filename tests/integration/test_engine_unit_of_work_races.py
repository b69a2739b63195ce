"""The payment engine's unit of work under real concurrency (PostgreSQL).

Each test holds a first unit of work open at a chosen point (inside a hook that runs after its locks are
taken) until a second transaction is seen waiting for a lock (pg_stat_activity), then lets it commit:
no sleeps, no timing. They guard three things the decision core's unit of work must keep:
  - a retry with the same Idempotency-Key that overlapped its first attempt replays that payment, even
    when the first attempt took the whole balance (P2P and merchant payments through the payment
    pipeline, the retry reaching another worker's pipeline);
  - a merchant payment locks every account its ledger chain touches, the fee account included, in one
    id-ordered step, so a refund to the same customer at the same moment cannot deadlock with it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import text

from qianbao.bootstrap import Container, build_container
from qianbao.errors import QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.payments.funding import sandbox_fund
from qianbao.payments.merchant_flow import run_planned
from qianbao.payments.merchant_payments import PaymentPlan
from qianbao.payments.refunds import RefundRequest, refund_payment
from qianbao.payments.transfers import TransferRequest, send_transfer
from qianbao.wallets.service import wallet_row
from tests.integration.test_refund_race import open_shop, pay_static
from tests.support.population import register_principal as register

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


def _outcome(call: Callable[[], Any]) -> tuple[str, Any]:
    try:
        return "ok", call()
    except QianbaoError as exc:
        return exc.code, exc


def _until_someone_waits_for_a_lock(container: Container) -> None:
    with container.db.engine.connect() as probe:
        for _ in range(20_000):
            waiting = probe.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity"
                    " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar_one()
            if waiting:
                return
            probe.rollback()
    raise AssertionError("the second transaction never waited for the first")


class _Holder:
    """A hook that, the first time it runs, holds its unit of work open until another transaction
    waits for one of its locks."""

    def __init__(self, container: Container) -> None:
        self.container = container
        self.calls = 0

    def __call__(self, _conn: Any, _record: Any) -> None:
        self.calls += 1
        if self.calls == 1:
            _until_someone_waits_for_a_lock(self.container)


def _in_thread(results: dict[str, Any], name: str, call: Callable[[], Any]) -> threading.Thread:
    thread = threading.Thread(target=lambda: results.__setitem__(name, _outcome(call)))
    thread.start()
    return thread


def _first_and_retry_elsewhere(
    container: Container, pay: Callable[[IdentityContext, _Holder | None], Any]
) -> dict[str, Any]:
    """The first attempt holds its batch open (after its locks) while the retry, with the same key,
    reaches another worker (a second container, its own pipeline): only the database orders the two.
    The outcomes by name, "first" and "retry"."""
    hold = _Holder(container)
    results: dict[str, Any] = {}
    first = _in_thread(results, "first", lambda: pay(container.identity, hold))
    while hold.calls == 0 and first.is_alive():  # the first attempt is inside its batch
        first.join(0.01)
    other = build_container(container.settings)
    try:
        second = _in_thread(results, "retry", lambda: pay(other.identity, None))
        first.join(60)
        second.join(60)
    finally:
        other.close()
    return results


def test_a_p2p_retry_overlapping_its_first_attempt_replays_it(container: Container) -> None:
    ctx = container.identity
    payer, wallet = register(ctx, "王丽")
    _payee, payee_wallet = register(ctx, "李雷")
    sandbox_fund(ctx, payer, wallet_id=wallet, amount=10_000, currency_code="CNY")
    send_transfer(ctx, payer, TransferRequest(wallet, 5_000, "CNY", to_wallet_id=payee_wallet))
    request = TransferRequest(wallet, 5_000, "CNY", to_wallet_id=payee_wallet)  # the whole balance left
    results = _first_and_retry_elsewhere(
        container,
        lambda c, hold: send_transfer(c, payer, request, idempotency_key="k1", on_applied=hold),
    )
    assert results["first"][0] == "ok"
    assert results["retry"][0] == "ok", results["retry"]
    assert results["retry"][1].id == results["first"][1].id


def test_a_merchant_payment_retry_overlapping_its_first_attempt_replays_it(container: Container) -> None:
    ctx = container.identity
    _owner, shop = open_shop(ctx)
    payer, wallet = register(ctx, "王丽")
    sandbox_fund(ctx, payer, wallet_id=wallet, amount=10_000, currency_code="CNY")
    with ctx.db.read() as conn:
        source = wallet_row(conn, wallet)
    assert source is not None
    plan = PaymentPlan("qr_static", shop, source, 10_000, "CNY", ledger_id="pay:same-key-overlap")
    results = _first_and_retry_elsewhere(
        container, lambda c, hold: run_planned(c, payer, plan, claim=hold, idempotency_key="k")
    )
    assert results["first"][0] == "ok"
    assert results["retry"][0] == "ok", results["retry"]
    assert results["retry"][1].id == results["first"][1].id


def _deadlocks(container: Container) -> int:
    with container.db.engine.connect() as conn:
        found = conn.execute(
            text("SELECT deadlocks FROM pg_stat_database WHERE datname = current_database()")
        ).scalar_one()
    return int(found)


def test_a_merchant_payment_and_a_refund_to_the_same_customer_do_not_deadlock(container: Container) -> None:
    """The refund's ledger chain locks merchant 2's wallet, the fee account, then the customer's wallet;
    the payment must take the fee account with its other locks, not after the customer's wallet."""
    ctx = container.identity
    _owner1, shop1 = open_shop(ctx)
    owner2, shop2 = open_shop(ctx)
    payer, wallet = register(ctx, "王丽")
    sandbox_fund(ctx, payer, wallet_id=wallet, amount=50_000, currency_code="CNY")
    paid = pay_static(ctx, payer, wallet, shop2, 10_000)
    with ctx.db.read() as conn:
        source = wallet_row(conn, wallet)
    assert source is not None
    plan = PaymentPlan("qr_static", shop1, source, 10_000, "CNY", ledger_id="pay:with-a-refund")
    hold = _Holder(container)
    before = _deadlocks(container)
    results: dict[str, Any] = {}
    paying = _in_thread(results, "pay", lambda: run_planned(ctx, payer, plan, claim=hold))
    while hold.calls == 0 and paying.is_alive():
        paying.join(0.01)
    other = build_container(container.settings)  # another worker: its own pipeline
    try:
        refunding = _in_thread(
            results,
            "refund",
            lambda: refund_payment(other.identity, owner2, RefundRequest(paid.id, amount=5_000)),
        )
        paying.join(60)
        refunding.join(60)
    finally:
        other.close()
    assert results["pay"][0] == "ok" and results["refund"][0] == "ok", results
    assert _deadlocks(container) == before
    assert hold.calls == 1  # the payment ran once: it was never a deadlock's victim and retried
