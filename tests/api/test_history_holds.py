"""A held payment (a payment code above the password-free allowance) is one transaction in the payer's
wallet history: held, it is `pending`; confirmed, `succeeded` at the place where the money moved,
with the balance after it; called off or expired, `canceled` or `failed`, and no money moved. The
filters, the text search and the CSV export see that one row too (docs/p2p.md#wallet-history)."""

from __future__ import annotations

import csv
import io
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from qianbao.payments.merchant_tables import merchant_payments
from tests.api.test_merchant_payments import fund, open_merchant
from tests.api.test_payment_codes import charge, code_now, enable
from tests.support.api import SignedUp, with_step_up


@pytest.fixture
def shop(client: TestClient, bob: SignedUp) -> dict[str, Any]:
    return open_merchant(client, bob, name="便利店", mcc="5411", city="北京")


def held(client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], amount: int) -> str:
    """Bob's till charges Alice's payment code above her allowance: the payment's id (held)."""
    r = charge(client, bob, shop["id"], code_now(enable(client, alice)), amount)
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def history(client: TestClient, user: SignedUp, wallet_id: str, **params: Any) -> list[dict[str, Any]]:
    r = client.get(f"/v1/wallets/{wallet_id}/transactions", params=params, headers=user.auth)
    assert r.status_code == 200, r.text
    return list(r.json()["data"])


def about(rows: list[dict[str, Any]], payment_id: str) -> list[tuple[Any, ...]]:
    """The rows of one payment: (id, direction, amount, balance after, status)."""
    return [
        (t["id"], t["direction"], t["amount"]["amount"], t["balance_after"]["amount"], t["status"])
        for t in rows
        if t["payment_id"] == payment_id and t["type"] == "merchant_payment"
    ]


def assert_balances_chain(rows: list[dict[str, Any]]) -> None:
    """Newest first: each row's balance after, less what it moved, is the next (older) row's."""
    for newer, older in zip(rows, rows[1:], strict=False):
        moved = 0 if newer["status"] != "succeeded" else newer["amount"]["amount"]
        sign = -1 if newer["direction"] == "debit" else 1
        assert newer["balance_after"]["amount"] - sign * moved == older["balance_after"]["amount"], newer


def test_a_confirmed_hold_is_one_row_that_moves_to_where_the_money_left(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 200_000)
    payment = held(client, alice, bob, shop, 150_000)
    [(hold_id, *row)] = about(history(client, alice, alice.wallet_id), payment)
    assert row == ["debit", 150_000, 200_000, "pending"]
    fund(client, alice, 5_000)  # money in while the payment is held
    done = with_step_up(client, alice, "POST", f"/v1/payments/{payment}/confirm")
    assert done.status_code == 200, done.text

    rows = history(client, alice, alice.wallet_id)
    assert about(rows, payment) == [(hold_id, "debit", 150_000, 55_000, "succeeded")]
    assert rows[0]["id"] == hold_id and len(rows) == 3  # the payment, the two top-ups
    assert_balances_chain(rows)

    # Filters, the text search and the CSV see the same one row.
    assert about(history(client, alice, alice.wallet_id, type="merchant_payment"), payment) == [
        (hold_id, "debit", 150_000, 55_000, "succeeded")
    ]
    assert [t["id"] for t in history(client, alice, alice.wallet_id, q=shop["name"])] == [hold_id]
    assert history(client, alice, alice.wallet_id, min_amount=100_000, direction="debit")[0]["id"] == hold_id
    exported = client.get(f"/v1/wallets/{alice.wallet_id}/transactions.csv", headers=alice.auth)
    table = list(csv.DictReader(io.StringIO(exported.text.removeprefix("\ufeff"))))
    assert [(r["id"], r["status"], r["balance_after"]) for r in table if r["type"] == "merchant_payment"] == [
        (hold_id, "succeeded", "550.00")
    ]


def test_a_hold_called_off_or_expired_is_one_row_and_moved_nothing(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 400_000)
    canceled = held(client, alice, bob, shop, 150_000)
    assert client.post(f"/v1/payments/{canceled}/cancel", headers=alice.auth).status_code == 200
    expired = held(client, alice, bob, shop, 120_000)
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    with ctx.db.write() as conn:  # as if the minute had passed
        conn.execute(
            update(merchant_payments)
            .where(merchant_payments.c.id == expired)
            .values(expires_at=ctx.now() - 1)
        )
    late = client.post(f"/v1/payments/{expired}/confirm", headers=alice.auth)
    assert late.json()["code"] == "payment_confirmation_expired"

    rows = history(client, alice, alice.wallet_id)
    assert [(status, after) for *_, after, status in about(rows, canceled)] == [("canceled", 400_000)]
    assert [(status, after) for *_, after, status in about(rows, expired)] == [("failed", 400_000)]
    assert len(rows) == 3
    assert_balances_chain(rows)
