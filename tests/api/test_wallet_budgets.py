"""Monthly budgets through the API: spending counts, 80 % and 100 % are announced once per month each,
`block` refuses what would go over (before any step-up, bound to the Idempotency-Key), own moves are not
spending, a new month (China time) starts over, and refunds lower the month's spending."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from qianbao.clock import FixedClock
from qianbao.ledger.queries import LedgerReader
from qianbao.wallets.spending import record_unspend
from qianbao.wallets.tables import wallet_budget_months
from tests.api.test_wallet_settings import (
    HOUR,
    clock,
    clocked,
    db_of,
    events,
    fund,
    money,
    open_sub,
    patch,
    pay,
    wallet,
)
from tests.support.api import SignedUp, sign_up

__all__ = ["clock", "clocked"]  # fixtures

EVENT = "wallet.budget_threshold_reached"


def budgeted(client: TestClient, user: SignedUp, amount: int, on_limit: str, funded: int = 50_000) -> str:
    sub = open_sub(
        client, user, "购物", purpose="shopping", budget={"amount": money(amount), "on_limit": on_limit}
    )
    fund(client, user, sub["id"], funded)
    return str(sub["id"])


def thresholds(client: TestClient, wallet_id: str) -> list[tuple[int, int, str]]:
    return [(e["threshold"], e["spent"]["amount"], e["month"]) for e in events(client, EVENT, wallet_id)]


def balance(client: TestClient, wallet_id: str) -> int:
    account = LedgerReader(db_of(client)).get_account(wallet_id)
    assert account is not None
    return account.balance


def test_a_warning_budget_announces_80_and_100_once_and_lets_payments_through(
    clocked: TestClient, clock: FixedClock
) -> None:
    alice, bob = sign_up(clocked), sign_up(clocked)
    sub = budgeted(clocked, alice, 10_000, "warn")
    assert pay(clocked, alice, sub, bob.wallet_id, 5_000).status_code == 201
    assert thresholds(clocked, sub) == []
    assert pay(clocked, alice, sub, bob.wallet_id, 3_000).status_code == 201  # 80 % exactly
    assert thresholds(clocked, sub) == [(80, 8_000, "2026-11")]
    assert pay(clocked, alice, sub, bob.wallet_id, 1_000).status_code == 201
    assert pay(clocked, alice, sub, bob.wallet_id, 2_000).status_code == 201  # over: warn only
    assert pay(clocked, alice, sub, bob.wallet_id, 500).status_code == 201
    assert thresholds(clocked, sub) == [(80, 8_000, "2026-11"), (100, 11_000, "2026-11")]
    shown = wallet(clocked, alice, sub)["budget"]
    assert shown == {
        "amount": money(10_000),
        "on_limit": "warn",
        "month": "2026-11",
        "spent": money(11_500),
        "remaining": money(0),
        "percent": 115,
    }
    payload = events(clocked, EVENT, sub)[1]
    assert payload == {
        "user_id": alice.user_id,
        "wallet_id": sub,
        "threshold": 100,
        "budget": money(10_000),
        "spent": money(11_000),
        "month": "2026-11",
    }


def test_one_payment_past_both_thresholds_announces_both(clocked: TestClient) -> None:
    alice, bob = sign_up(clocked), sign_up(clocked)
    sub = budgeted(clocked, alice, 10_000, "warn")
    assert pay(clocked, alice, sub, bob.wallet_id, 12_000).status_code == 201
    assert thresholds(clocked, sub) == [(80, 12_000, "2026-11"), (100, 12_000, "2026-11")]


def test_a_blocking_budget_refuses_what_would_go_over(clocked: TestClient) -> None:
    alice, bob = sign_up(clocked), sign_up(clocked)
    sub = budgeted(clocked, alice, 10_000, "block")
    assert pay(clocked, alice, sub, bob.wallet_id, 8_000).status_code == 201
    refused = pay(clocked, alice, sub, bob.wallet_id, 3_000, **{"Idempotency-Key": "over-1"})
    assert refused.status_code == 422, refused.text
    problem = refused.json()
    assert problem["code"] == "budget_exceeded"
    assert (problem["budget"], problem["spent"], problem["remaining"]) == (
        money(10_000),
        money(8_000),
        money(2_000),
    )
    assert problem["next_step"] == "adjust_budget" and "challenge_id" not in problem
    assert balance(clocked, sub) == 50_000 - 8_000
    # The decline is bound to the key: the same request answers the same, even with room made meanwhile.
    patch(clocked, alice, sub, budget={"amount": money(20_000), "on_limit": "block"})
    again = pay(clocked, alice, sub, bob.wallet_id, 3_000, **{"Idempotency-Key": "over-1"})
    assert (again.status_code, again.json()["code"]) == (422, "budget_exceeded")
    assert pay(clocked, alice, sub, bob.wallet_id, 3_000, **{"Idempotency-Key": "over-2"}).status_code == 201
    patch(clocked, alice, sub, budget={"amount": money(13_000), "on_limit": "block"})
    assert pay(clocked, alice, sub, bob.wallet_id, 2_000).status_code == 201  # exactly 100 % is allowed
    over = pay(clocked, alice, sub, bob.wallet_id, 1)
    assert (over.status_code, over.json()["code"]) == (422, "budget_exceeded")
    assert over.json()["remaining"] == money(0)
    assert thresholds(clocked, sub) == [(80, 8_000, "2026-11"), (100, 13_000, "2026-11")]
    assert wallet(clocked, alice, sub)["budget"]["spent"] == money(13_000)
    assert balance(clocked, sub) == 50_000 - 13_000


def test_a_blocking_budget_is_checked_before_step_up(clocked: TestClient) -> None:
    """Over ¥500 to a new payee needs step-up; over the budget it is refused without a challenge."""
    alice, bob = sign_up(clocked), sign_up(clocked)
    sub = budgeted(clocked, alice, 80_000, "block", funded=100_000)
    refused = pay(clocked, alice, sub, bob.wallet_id, 90_000)
    assert (refused.status_code, refused.json()["code"]) == (422, "budget_exceeded")
    asked = pay(clocked, alice, sub, bob.wallet_id, 60_000)
    assert (asked.status_code, asked.json()["code"]) == (401, "step_up_required")


def test_moves_between_own_wallets_are_not_spending(clocked: TestClient) -> None:
    alice, bob = sign_up(clocked), sign_up(clocked)
    sub = budgeted(clocked, alice, 10_000, "block")
    other = open_sub(clocked, alice, "旅行", purpose="travel")["id"]
    assert pay(clocked, alice, sub, alice.wallet_id, 20_000).status_code == 201
    assert pay(clocked, alice, sub, other, 15_000).status_code == 201
    assert wallet(clocked, alice, sub)["budget"]["spent"] == money(0)
    assert thresholds(clocked, sub) == []
    # Money moved in and paid out from the other wallet counts there, not here.
    assert pay(clocked, alice, other, bob.wallet_id, 1_000).status_code == 201
    assert wallet(clocked, alice, sub)["budget"]["spent"] == money(0)


def test_a_new_month_in_china_time_starts_over(clocked: TestClient, clock: FixedClock) -> None:
    alice, bob = sign_up(clocked), sign_up(clocked)
    sub = budgeted(clocked, alice, 10_000, "block")
    assert pay(clocked, alice, sub, bob.wallet_id, 10_000).status_code == 201
    assert pay(clocked, alice, sub, bob.wallet_id, 100).json()["code"] == "budget_exceeded"
    clock.advance(2 * HOUR)  # 01:00 on 1 December in China; still 30 November in UTC
    shown = wallet(clocked, alice, sub)["budget"]
    assert (shown["month"], shown["spent"], shown["percent"]) == ("2026-12", money(0), 0)
    assert pay(clocked, alice, sub, bob.wallet_id, 8_500).status_code == 201
    assert pay(clocked, alice, sub, bob.wallet_id, 1_500).status_code == 201
    assert thresholds(clocked, sub) == [
        (80, 10_000, "2026-11"),
        (100, 10_000, "2026-11"),
        (80, 8_500, "2026-12"),
        (100, 10_000, "2026-12"),
    ]
    with db_of(clocked).read() as conn:
        months = conn.execute(
            select(wallet_budget_months.c.month, wallet_budget_months.c.spent)
            .where(wallet_budget_months.c.wallet_id == sub)
            .order_by(wallet_budget_months.c.month)
        ).all()
    assert [tuple(m) for m in months] == [("2026-11", 10_000), ("2026-12", 10_000)]


def test_each_threshold_is_announced_once_a_month_even_if_the_budget_changes(clocked: TestClient) -> None:
    alice, bob = sign_up(clocked), sign_up(clocked)
    sub = budgeted(clocked, alice, 10_000, "warn")
    assert pay(clocked, alice, sub, bob.wallet_id, 8_000).status_code == 201
    patch(clocked, alice, sub, budget={"amount": money(20_000), "on_limit": "warn"})
    assert pay(clocked, alice, sub, bob.wallet_id, 8_000).status_code == 201  # 80 % of the new budget
    patch(clocked, alice, sub, budget=None)
    assert wallet(clocked, alice, sub)["budget"] is None
    assert pay(clocked, alice, sub, bob.wallet_id, 1_000).status_code == 201
    patch(clocked, alice, sub, budget={"amount": money(10_000), "on_limit": "warn"})
    assert wallet(clocked, alice, sub)["budget"]["spent"] == money(17_000)  # the month's spending so far
    assert pay(clocked, alice, sub, bob.wallet_id, 1_000).status_code == 201
    assert thresholds(clocked, sub) == [(80, 8_000, "2026-11"), (100, 18_000, "2026-11")]


def test_refunds_lower_the_months_spending(clocked: TestClient, clock: FixedClock) -> None:
    alice, bob = sign_up(clocked), sign_up(clocked)
    sub = budgeted(clocked, alice, 10_000, "block")
    spent_at = clock.now_us()
    assert pay(clocked, alice, sub, bob.wallet_id, 9_000).status_code == 201
    with db_of(clocked).write() as conn:  # what a refund's unit of work does
        record_unspend(conn, sub, 4_000, clock.now_us())
    assert wallet(clocked, alice, sub)["budget"]["spent"] == money(5_000)
    assert pay(clocked, alice, sub, bob.wallet_id, 5_000).status_code == 201
    with db_of(clocked).write() as conn:  # never below zero
        record_unspend(conn, sub, 50_000, clock.now_us())
    assert wallet(clocked, alice, sub)["budget"]["spent"] == money(0)
    clock.advance(2 * HOUR)  # December: a refund of November's spending leaves December alone
    assert pay(clocked, alice, sub, bob.wallet_id, 1_000).status_code == 201
    with db_of(clocked).write() as conn:
        record_unspend(conn, sub, 1_000, clock.now_us(), spent_at_us=spent_at)
    assert wallet(clocked, alice, sub)["budget"]["spent"] == money(1_000)


def test_a_budget_on_the_main_wallet(clocked: TestClient) -> None:
    alice, bob = sign_up(clocked), sign_up(clocked)
    fund(clocked, alice, alice.wallet_id, 20_000)
    response = patch(clocked, alice, alice.wallet_id, budget={"amount": money(5_000), "on_limit": "block"})
    assert response.status_code == 200, response.text
    assert pay(clocked, alice, alice.wallet_id, bob.wallet_id, 5_000).status_code == 201
    refused: Any = pay(clocked, alice, alice.wallet_id, bob.wallet_id, 1)
    assert refused.json()["code"] == "budget_exceeded"
