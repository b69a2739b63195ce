"""A blocking monthly budget under real races on PostgreSQL: concurrent payments can never take a wallet's
month past its budget, and the ledger moves exactly what the budget let through.

1. Two transactions add spending to the same wallet at once through `budgets.add_spendings` (a batch's
   upsert): the second waits for the first's row, then sees the committed total past the budget and is
   refused, so its batch rolls back (the decision over what it read alone would have let both through).
2. 16 threads pay ¥100 each from a sub-wallet with a blocking ¥1,000 budget to 16 recipients through the
   payments service: exactly 10 succeed and 6 are refused with `budget_exceeded`, however they interleave.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import Connection, select, text

from qianbao.bootstrap import Container
from qianbao.findings import Finding
from qianbao.identity.model import Principal, PrincipalKind, RequestInfo
from qianbao.ledger.verify import verify_ledger
from qianbao.payments.engine.declines import error_for
from qianbao.payments.funding import sandbox_fund
from qianbao.payments.transfers import TransferRequest, send_transfer
from qianbao.store.outbox import outbox
from qianbao.wallets.budgets import Spend, add_spendings, month_of
from qianbao.wallets.service import create_sub_wallet
from qianbao.wallets.settings import BudgetChange, WalletChanges
from qianbao.wallets.spend_rules import monthly_budget
from qianbao.wallets.spending import source_states
from qianbao.wallets.tables import wallet_budget_months
from tests.support.population import race, register

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PAYMENTS = 16
AMOUNT = 10_000  # ¥100: no step-up (under the new-payee and amount thresholds, on a trusted device)
BUDGET = 100_000  # ¥1,000, blocking
FUNDED = 300_000
EXPECTED_OK = BUDGET // AMOUNT  # 10


def budgeted_wallet(container: Container) -> tuple[Principal, str]:
    ctx = container.identity
    payer_id, _main = register(ctx, "王丽")
    payer = Principal(PrincipalKind.USER, payer_id, payer_id, device_trusted=True)
    changes = WalletChanges(budget=BudgetChange(BUDGET, "CNY", "block"))
    sub = create_sub_wallet(
        ctx, payer, name="购物", purpose="shopping", currency_code=None, info=RequestInfo(), changes=changes
    )
    sandbox_fund(ctx, payer, wallet_id=sub.id, amount=FUNDED, currency_code="CNY")
    return payer, sub.id


def spent(container: Container, wallet_id: str) -> int:
    with container.db.read() as conn:
        found = conn.execute(
            select(wallet_budget_months.c.spent).where(
                wallet_budget_months.c.wallet_id == wallet_id,
                wallet_budget_months.c.month == month_of(container.clock.now_us()),
            )
        ).scalar()
    return int(found or 0)


def test_the_second_of_two_concurrent_spends_rechecks_the_committed_total(container: Container) -> None:
    payer, wallet_id = budgeted_wallet(container)
    assert payer.user_id is not None
    now = container.clock.now_us()
    engine = container.db.engine
    outcome: list[object] = []

    def spend(conn: Connection) -> tuple[list[Any], dict[str, Finding]]:
        state = source_states(conn, [wallet_id], now)[wallet_id]
        budget = None if state.settings is None else state.settings.budget
        return add_spendings(conn, [Spend(state.user_id, wallet_id, 60_000, "CNY", budget)], now)

    def second() -> None:
        with engine.connect() as conn, conn.begin():
            state = source_states(conn, [wallet_id], now)[wallet_id]  # sees nothing committed: it passes
            assert monthly_budget(state.settings, state.month_spent, 60_000) is None
            _events, refused = spend(conn)
            if not refused:
                outcome.append("spent")
            else:  # the refusal as the payer hears it; the batch rolls back
                outcome.append(error_for(refused[wallet_id], "CNY").extra["spent"])
                conn.rollback()

    with engine.connect() as first, first.begin():
        spend(first)
        other = threading.Thread(target=second)
        other.start()
        # Commit only once the second transaction is queued on the row (no sleeps, no timing).
        with engine.connect() as probe:
            for _ in range(2_000):
                waiting = probe.execute(
                    text(
                        "SELECT count(*) FROM pg_stat_activity"
                        " WHERE wait_event_type = 'Lock' AND datname = current_database()"
                    )
                ).scalar_one()
                if waiting:
                    break
                probe.rollback()
            assert waiting, "the second transaction never waited for the first"
    other.join(30)
    assert outcome == [{"amount": 60_000, "currency": "CNY"}]
    assert spent(container, wallet_id) == 60_000


@pytest.mark.parametrize("round_", range(2))
def test_concurrent_payments_never_exceed_a_blocking_budget(container: Container, round_: int) -> None:
    ctx = container.identity
    payer, wallet_id = budgeted_wallet(container)
    recipients = [register(ctx, f"收款人{i}")[1] for i in range(PAYMENTS)]

    def pay(recipient_wallet: str) -> Callable[[], Any]:
        request = TransferRequest(wallet_id, AMOUNT, "CNY", to_wallet_id=recipient_wallet)
        return lambda: send_transfer(ctx, payer, request)

    outcomes = [code for code, _ in race([pay(w) for w in recipients])]

    assert Counter(outcomes) == {"ok": EXPECTED_OK, "budget_exceeded": PAYMENTS - EXPECTED_OK}, round_
    assert spent(container, wallet_id) == BUDGET
    accounts = container.reader.lookup_accounts([wallet_id, *recipients])
    assert accounts[wallet_id].balance == FUNDED - BUDGET
    assert (
        sorted(accounts[w].balance for w in recipients)
        == [0] * (PAYMENTS - EXPECTED_OK) + [AMOUNT] * EXPECTED_OK
    )
    with container.db.read() as conn:
        announced = conn.execute(
            select(outbox.c.payload["threshold"].as_integer())
            .where(outbox.c.type == "wallet.budget_threshold_reached", outbox.c.aggregate_id == wallet_id)
            .order_by(outbox.c.seq)
        ).scalars()
        assert list(announced) == [80, 100]
    report = verify_ledger(container.db)
    assert report.ok, report
