"""The payment pipeline on PostgreSQL: batches, and several worker processes on one database.

Each worker process (tests/integration/workers/payment_worker.py) has its own pipeline; nothing but the
database orders them. Every process waits for a "go" file, so their batches really overlap.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, func, select

from qianbao.bootstrap import Container
from qianbao.errors import Conflict, IdempotencyKeyReused, QianbaoError
from qianbao.identity.model import Principal, PrincipalKind, RequestInfo
from qianbao.identity.tables import limit_usage
from qianbao.ledger.verify import verify_ledger
from qianbao.payments import dynamic_qr
from qianbao.payments.engine.orders import Answered, Done, HttpKey
from qianbao.payments.engine.pipeline import process
from qianbao.payments.funding import sandbox_fund
from qianbao.payments.qr_flow import qr_order
from qianbao.payments.qr_payments import QrPaymentRequest
from qianbao.payments.tables import transfers
from qianbao.payments.transfers import TransferRequest, transfer_order
from qianbao.store.idempotency import KeyClaim
from qianbao.wallets.service import create_sub_wallet
from tests.integration.test_refund_race import open_shop
from tests.integration.workers.common import reaped, wait_all
from tests.integration.workers.payment_worker import launch
from tests.support.population import register, register_principal

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _principal(user_id: str) -> Principal:
    return Principal(PrincipalKind.USER, user_id, user_id, device_trusted=True)


def _funded(container: Container, name: str, amount: int) -> tuple[str, str]:
    user_id, wallet = register(container.identity, name)
    if amount:
        sandbox_fund(
            container.identity, _principal(user_id), wallet_id=wallet, amount=amount, currency_code="CNY"
        )
    return user_id, wallet


def _balances(container: Container, wallets: list[str]) -> dict[str, int]:
    return {w: a.balance for w, a in container.reader.lookup_accounts(wallets).items()}


# -- one batch ----------------------------------------------------------------------------------------


def test_a_batch_with_a_decline_in_the_middle_commits_the_others(container: Container) -> None:
    ctx = container.identity
    payers = [_funded(container, f"付款人{i}", funded) for i, funded in enumerate((10_000, 500, 10_000))]
    _payee, payee_wallet = _funded(container, "收款人", 0)
    orders = [
        transfer_order(_principal(user), TransferRequest(wallet, 3_000, "CNY", to_wallet_id=payee_wallet))
        for user, wallet in payers
    ]
    first, middle, last = process(ctx, orders)
    assert isinstance(first, Done) and isinstance(last, Done)
    assert isinstance(middle, QianbaoError) and middle.code == "insufficient_funds"
    assert _balances(container, [w for _, w in payers] + [payee_wallet]) == {
        payers[0][1]: 7_000,
        payers[1][1]: 500,
        payers[2][1]: 7_000,
        payee_wallet: 6_000,
    }
    assert verify_ledger(container.db).ok


def test_payments_of_one_payer_in_one_batch_see_each_other(container: Container) -> None:
    """The second decision sees the first one's balance, today's outflow and the month's spending."""
    ctx = container.identity
    user, wallet = _funded(container, "王丽", 10_000)
    payees = [_funded(container, f"收款人{i}", 0)[1] for i in range(3)]
    orders = [
        transfer_order(_principal(user), TransferRequest(wallet, amount, "CNY", to_wallet_id=payee))
        for amount, payee in zip((6_000, 6_000, 4_000), payees, strict=True)
    ]
    results = process(ctx, orders)
    assert [r.code if isinstance(r, QianbaoError) else "ok" for r in results] == [
        "ok",
        "insufficient_funds",
        "ok",
    ]
    with ctx.db.read() as conn:
        used = conn.execute(select(limit_usage.c.outflow, limit_usage.c.payments)).one()
    assert tuple(used) == (10_000, 2)
    assert _balances(container, [wallet, *payees]) == {
        wallet: 0,
        payees[0]: 6_000,
        payees[1]: 0,
        payees[2]: 4_000,
    }


# -- several worker processes ---------------------------------------------------------------------------


def _run_workers(
    container: Container, tmp_path: Path, plans: list[list[list[dict[str, Any]]]]
) -> list[tuple[str, str, str]]:
    """Run one worker process per plan (its clients' payments), released together; every ack."""
    go = tmp_path / "go"
    procs = []
    acks = []
    with reaped(procs):
        for i, clients in enumerate(plans):
            proc, log = launch(container.settings, tmp_path, f"worker-{i}", clients, go)
            procs.append(proc)
            acks.append(log)
        go.touch()
        codes = wait_all(procs, time.monotonic() + 150)
    assert codes == [0] * len(plans), [(tmp_path / f"worker-{i}.out").read_text() for i in range(len(plans))]
    lines = [line.split("\t") for log in acks for line in log.read_text().splitlines()]
    return [(key, outcome, transfer_id) for key, outcome, transfer_id in lines]


def _split(
    payments: list[dict[str, Any]], processes: int = 2, clients: int = 4
) -> list[list[list[dict[str, Any]]]]:
    """Deal the payments round-robin to `processes` × `clients` threads."""
    lanes: list[list[dict[str, Any]]] = [[] for _ in range(processes * clients)]
    for i, payment in enumerate(payments):
        lanes[i % len(lanes)].append(payment)
    return [lanes[p * clients : (p + 1) * clients] for p in range(processes)]


def test_two_worker_processes_never_take_a_payer_past_the_daily_limit(
    container: Container, tmp_path: Path
) -> None:
    """Tier 4: ¥5,000 a day. 20 × ¥400 from one payer, from two processes: exactly 12 pass."""
    payer, wallet = _funded(container, "王丽", 900_000)
    payees = [_funded(container, f"收款人{i}", 0)[1] for i in range(20)]
    payments = [
        {"payer": payer, "from": wallet, "to": payee, "amount": 40_000, "key": f"day-{i}"}
        for i, payee in enumerate(payees)
    ]
    acks = _run_workers(container, tmp_path, _split(payments))
    assert Counter(outcome for _, outcome, _ in acks) == {"ok": 12, "limit_exceeded_daily": 8}
    with container.db.read() as conn:
        used = conn.execute(
            select(limit_usage.c.outflow, limit_usage.c.payments).where(limit_usage.c.user_id == payer)
        ).one()
    assert tuple(used) == (480_000, 12)
    assert _balances(container, [wallet])[wallet] == 900_000 - 480_000
    assert verify_ledger(container.db).ok


def test_two_worker_processes_never_take_a_recipient_past_the_balance_cap(
    container: Container, tmp_path: Path
) -> None:
    """Tier 4: ¥10,000 over all of a user's wallets. The recipient holds ¥9,000; ten payers send ¥300
    each from two processes: exactly three fit."""
    _recipient, recipient_wallet = _funded(container, "收款人", 900_000)
    payers = [_funded(container, f"付款人{i}", 50_000) for i in range(10)]
    payments = [
        {"payer": user, "from": wallet, "to": recipient_wallet, "amount": 30_000, "key": f"cap-{i}"}
        for i, (user, wallet) in enumerate(payers)
    ]
    acks = _run_workers(container, tmp_path, _split(payments, clients=5))
    assert Counter(outcome for _, outcome, _ in acks) == {"ok": 3, "balance_cap_exceeded": 7}
    assert _balances(container, [recipient_wallet])[recipient_wallet] == 990_000
    assert verify_ledger(container.db).ok


def test_twenty_concurrent_requests_with_one_key_make_one_payment(
    container: Container, tmp_path: Path
) -> None:
    payer, wallet = _funded(container, "王丽", 10_000)
    _payee, payee_wallet = _funded(container, "李雷", 0)
    same = {"payer": payer, "from": wallet, "to": payee_wallet, "amount": 7_000, "key": "one-key"}
    acks = _run_workers(container, tmp_path, [[[same]] * 10, [[same]] * 10])
    assert len(acks) == 20
    assert {outcome for _, outcome, _ in acks} == {"ok"}
    assert len({transfer_id for _, _, transfer_id in acks}) == 1  # every answer is the one payment
    with container.db.read() as conn:
        paid = conn.execute(select(func.count()).select_from(transfers)).scalar_one()
    assert paid == 1
    assert _balances(container, [wallet, payee_wallet]) == {wallet: 3_000, payee_wallet: 7_000}


# -- what the review of the pipeline found -------------------------------------------------------------


def _code(result: Any) -> str:
    return result.code if isinstance(result, QianbaoError) else type(result).__name__


@pytest.mark.parametrize("mixed", [False, True])
def test_a_request_in_another_currency_does_not_blind_the_batch_to_balance_caps(
    container: Container, mixed: bool
) -> None:
    """The recipient holds ¥9,900 of a ¥10,000 cap over two wallets: ¥300 more is refused, also when
    someone else's request in the same batch asks for USD (declined: its wallet holds CNY)."""
    ctx = container.identity
    recipient, main = _funded(container, "收款人", 500_000)
    pocket = create_sub_wallet(
        ctx, _principal(recipient), name="存钱", purpose="savings", currency_code=None, info=RequestInfo()
    ).id
    sandbox_fund(ctx, _principal(recipient), wallet_id=pocket, amount=490_000, currency_code="CNY")
    payer, payer_wallet = _funded(container, "付款人", 100_000)
    other, other_wallet = _funded(container, "路人", 100_000)
    orders = []
    if mixed:
        usd = TransferRequest(other_wallet, 100, "USD", to_wallet_id=payer_wallet)
        orders.append(transfer_order(_principal(other), usd))
    cny = TransferRequest(payer_wallet, 30_000, "CNY", to_wallet_id=main)
    orders.append(transfer_order(_principal(payer), cny))
    results = process(ctx, orders)
    assert [_code(r) for r in results] == ["currency_mismatch"] * mixed + ["balance_cap_exceeded"]
    assert sum(_balances(container, [main, pocket]).values()) == 990_000


def test_an_orders_own_refusal_fails_only_that_order(container: Container) -> None:
    """A money request's hook refuses (it was paid meanwhile): its neighbour in the batch is paid."""
    ctx = container.identity
    a, a_wallet = _funded(container, "甲", 100_000)
    b, b_wallet = _funded(container, "乙", 100_000)
    _c, c_wallet = _funded(container, "丙", 0)

    class NotPending(Conflict):
        code = "money_request_not_pending"

    def hook(_conn: Connection, _record: Any) -> None:
        raise NotPending("already paid")

    good = transfer_order(_principal(a), TransferRequest(a_wallet, 1_000, "CNY", to_wallet_id=c_wallet))
    bad = transfer_order(
        _principal(b), TransferRequest(b_wallet, 1_000, "CNY", to_wallet_id=c_wallet), on_applied=hook
    )
    results = process(ctx, [good, bad])
    assert isinstance(results[0], Done) and _code(results[1]) == "money_request_not_pending"
    assert _balances(container, [a_wallet, b_wallet, c_wallet]) == {
        a_wallet: 99_000,
        b_wallet: 100_000,
        c_wallet: 1_000,
    }


def _http(user: str, key: str, fingerprint: str) -> HttpKey:
    return HttpKey(
        KeyClaim(user, key, fingerprint),
        False,
        lambda record, _conn=None, _seen=None: (201, {"id": record.id}),
        lambda error: (409 if error.code.startswith("idempotency") else 422, {"code": error.code}),
    )


def test_a_repeated_key_in_one_batch_is_answered_from_what_is_stored(container: Container) -> None:
    """Key K is bound to request A. A batch holds K with another body, then K with A again: the first is
    `idempotency_key_reused`, the second gets A's stored answer, as it would alone."""
    ctx = container.identity
    a, a_wallet = _funded(container, "甲", 100_000)
    _b, b_wallet = _funded(container, "乙", 0)
    asked = TransferRequest(a_wallet, 1_000, "CNY", to_wallet_id=b_wallet)
    [first] = process(
        ctx, [transfer_order(_principal(a), asked, idempotency_key="k", http=_http(a, "k", "A"))]
    )
    assert isinstance(first, Done) and first.answer is not None
    other = TransferRequest(a_wallet, 2_000, "CNY", to_wallet_id=b_wallet)
    wrong = transfer_order(_principal(a), other, idempotency_key="k", http=_http(a, "k", "B"))
    again = transfer_order(_principal(a), asked, idempotency_key="k", http=_http(a, "k", "A"))
    reused, replayed = process(ctx, [wrong, again])
    assert isinstance(reused, IdempotencyKeyReused)
    assert isinstance(replayed, Answered) and (replayed.status, replayed.payload) == first.answer
    assert _balances(container, [a_wallet])[a_wallet] == 99_000


def test_one_dynamic_code_paid_twice_in_a_batch_is_paid_once(container: Container) -> None:
    ctx = container.identity
    owner, merchant = open_shop(ctx)
    (p1, w1), (p2, w2) = register_principal(ctx, "顾客1"), register_principal(ctx, "顾客2")
    for principal, wallet in ((p1, w1), (p2, w2)):
        sandbox_fund(ctx, principal, wallet_id=wallet, amount=100_000, currency_code="CNY")
    _merchant, code = dynamic_qr.create_code(
        ctx, owner, merchant.id, amount=1_000, currency_code="CNY", order_id="T-1", expires_in_s=None
    )
    payload = dynamic_qr.payload_for(merchant, code)
    orders = [qr_order(p1, QrPaymentRequest(w1, payload)), qr_order(p2, QrPaymentRequest(w2, payload))]
    results = process(ctx, orders)
    assert sorted(_code(r) for r in results) == ["Done", "qr_code_used"]
    assert sum(_balances(container, [w1, w2]).values()) == 199_000
