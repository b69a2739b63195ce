"""Refusals of money movements in the payment pipeline that happen between the decision and the write
(a hold expiring or canceled while its confirmation waits, a refund the merchant wallet cannot pay, a
closing the main wallet cannot take, a checkout tapped twice): each answers the code the API documents,
records what it always recorded, and moves no money.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from qianbao.ledger.model import TransferSpec
from qianbao.payments import charges
from qianbao.payments import intents as intents_module
from qianbao.payments.merchant_tables import merchant_payments
from qianbao.store.outbox import outbox
from tests.api.test_checkout import confirm as confirm_intent
from tests.api.test_checkout import create as create_intent
from tests.api.test_checkout import server_key  # noqa: F401 - a fixture
from tests.api.test_merchant_payments import _paid, balance, ledger_balances, open_merchant, refund
from tests.api.test_merchant_payments import fund as fund_main
from tests.api.test_payment_codes import _cny, _held
from tests.api.test_wallet_settings import db_of, fund, open_sub
from tests.support.api import SignedUp, with_step_up


@pytest.fixture
def shop(client: TestClient, bob: SignedUp) -> dict[str, Any]:
    return open_merchant(client, bob, name="便利店", mcc="5411", city="北京")


def _events(client: TestClient, prefix: str) -> list[str]:
    with db_of(client).read() as conn:
        rows = conn.execute(
            select(outbox.c.type).where(outbox.c.type.like(f"{prefix}%")).order_by(outbox.c.seq)
        )
        return [str(r.type) for r in rows]


def test_a_refund_the_merchant_wallet_cannot_pay_is_recorded_as_failed(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    paid = _paid(client, alice, bob, shop, 10_000)  # the merchant wallet holds 10,000 less the 38 fee
    monkeypatch.setattr(client.app.state.container.identity.settings, "refund_fees_pro_rata", False)  # type: ignore[attr-defined]
    r = refund(client, bob, paid["id"])
    assert r.status_code == 422 and r.json()["code"] == "insufficient_funds", r.text
    refund_id = r.json()["refund_id"]
    listed = client.get(f"/v1/payments/{paid['id']}/refunds", headers=bob.auth).json()["data"]
    assert [(x["id"], x["status"], x["failure_code"]) for x in listed] == [
        (refund_id, "failed", "insufficient_funds")
    ]
    assert client.get(f"/v1/payments/{paid['id']}/refunds", headers=alice.auth).json()["data"] == []
    assert _events(client, "refund.") == ["refund.failed"]
    assert balance(client, shop["wallet"]["id"]) == 10_000 - 38
    # What the payment itself refuses is answered only, as always.
    over = refund(client, bob, paid["id"], 10_001)
    assert over.status_code == 422 and over.json()["code"] == "refund_exceeds_payment"
    assert "refund_id" not in over.json() and _events(client, "refund.") == ["refund.failed"]
    ledger_balances(client)


def test_a_hold_that_expired_while_its_confirmation_waited_fails_the_payment(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    fund_main(client, alice, 200_000)
    held = _held(client, alice, bob, shop, 150_000)
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    real = ctx.ledger.clock

    class TwoMinutesLater:
        def now_us(self) -> int:
            return int(real.now_us()) + 120_000_000

    # The confirmation passed its look at the payment just before the hold timed out in the ledger.
    monkeypatch.setattr(charges, "finalize_if_expired", lambda _ctx, record: record)
    monkeypatch.setattr(ctx.ledger, "clock", TwoMinutesLater())
    r = with_step_up(client, alice, "POST", f"/v1/payments/{held['id']}/confirm")
    assert r.status_code == 422 and r.json()["code"] == "payment_confirmation_expired", r.text
    assert r.json()["payment_id"] == held["id"]
    ctx.ledger.expire_pending()  # the sweeper, two minutes later: the hold's money is free again
    monkeypatch.undo()
    shown = client.get(f"/v1/payments/{held['id']}", headers=alice.auth).json()
    assert (shown["status"], shown["failure_code"]) == ("failed", "payment_confirmation_expired")
    wallet = client.get(f"/v1/wallets/{alice.wallet_id}", headers=alice.auth).json()
    assert wallet["available"] == _cny(200_000) and wallet["balance"] == _cny(200_000)
    assert balance(client, shop["wallet"]["id"]) == 0
    ledger_balances(client)


def test_a_hold_canceled_while_its_confirmation_waited_is_not_pending(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund_main(client, alice, 200_000)
    held = _held(client, alice, bob, shop, 150_000)
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    with ctx.db.read() as conn:
        hold = conn.execute(
            select(merchant_payments.c.ledger_transfer_id).where(merchant_payments.c.id == held["id"])
        ).scalar_one()
    # The merchant's cancel voided the hold in the ledger; its payment row is still read as pending.
    ctx.ledger.create_transfers([TransferSpec.void(f"{hold}:void", hold)])
    r = with_step_up(client, alice, "POST", f"/v1/payments/{held['id']}/confirm")
    assert r.status_code == 409 and r.json()["code"] == "payment_not_pending", r.text
    assert balance(client, shop["wallet"]["id"]) == 0
    wallet = client.get(f"/v1/wallets/{alice.wallet_id}", headers=alice.auth).json()
    assert wallet["available"] == _cny(200_000)
    ledger_balances(client)


def test_a_wallet_is_not_closed_into_a_main_wallet_without_room(client: TestClient, alice: SignedUp) -> None:
    fund(client, alice, alice.wallet_id, 1_000)
    sub = open_sub(client, alice, "旅行", purpose="travel")["id"]
    fund(client, alice, sub, 5_000)
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    ctx.ledger.set_balance_ceiling(alice.wallet_id, 2_000)
    r = client.post(f"/v1/wallets/{sub}/close", headers=alice.auth)
    assert r.status_code == 409 and r.json()["code"] == "wallet_close_refused", r.text
    assert r.json()["reason"] == "exceeds_ceiling"
    shown = client.get(f"/v1/wallets/{sub}", headers=alice.auth).json()
    assert shown["balance"] == {"amount": 5_000, "currency": "CNY"} and shown.get("closed_at") is None
    assert _events(client, "wallet.closed") == []


def test_a_checkout_tapped_twice_pays_once_and_answers_the_second_tap_with_a_conflict(
    client: TestClient,
    alice: SignedUp,
    bob: SignedUp,
    shop: dict[str, Any],
    server_key: dict[str, Any],  # noqa: F811 - the fixture
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    fund_main(client, alice, 10_000)
    intent = create_intent(client, server_key, shop["id"], 3_800).json()
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    stale = intents_module._load(ctx, intent["id"])  # the second tap's read, before the first committed
    first = confirm_intent(client, alice, intent["id"])
    assert first.status_code == 200, first.text
    real = intents_module._load
    reads: list[str] = []

    def load(ctx: Any, intent_id: str) -> Any:
        reads.append(intent_id)
        return stale if len(reads) == 1 else real(ctx, intent_id)

    monkeypatch.setattr(intents_module, "_load", load)
    second = confirm_intent(client, alice, intent["id"])
    assert second.status_code == 409 and second.json()["code"] == "intent_state_conflict", second.text
    assert balance(client, alice.wallet_id) == 10_000 - 3_800
    ledger_balances(client)
