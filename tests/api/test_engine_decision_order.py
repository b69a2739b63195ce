"""Answers the decision core's one order gives where a request breaks several rules, through the API."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import update

from qianbao.identity.tables import users
from qianbao.ledger.model import AccountStatus
from tests.api.test_merchant_payments import fund, open_merchant
from tests.api.test_payment_codes import charge, code_now, enable
from tests.api.test_receive_qr import payload_of
from tests.api.test_wallets_and_transfers import container, db_of, funded, pay
from tests.support.api import SignedUp, with_step_up


def test_a_frozen_payer_hears_account_frozen_before_anything_about_a_receive_code(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    funded(client, alice, 10_000)
    fixed = payload_of(client, bob, amount=500)  # a code that asks for ¥5
    assert pay(client, alice, 100, to={"qr": fixed}).json()["code"] == "amount_mismatch"
    with db_of(client).write() as conn:
        conn.execute(update(users).where(users.c.id == alice.user_id).values(status="frozen"))
    for code in (fixed, "not a qr code"):
        answer = pay(client, alice, 100, to={"qr": code})
        assert (answer.status_code, answer.json()["code"]) == (423, "account_frozen"), answer.json()


def test_confirming_a_hold_to_a_merchant_whose_wallet_was_frozen_meanwhile(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    """Decided before the PIN is asked: the merchant cannot take payments, and the hold is released."""
    shop = open_merchant(client, bob, name="便利店", mcc="5411", city="北京")
    fund(client, alice, 200_000)
    device = enable(client, alice)
    held = charge(client, bob, shop["id"], code_now(device), 150_000).json()
    assert held["status"] == "pending"
    container(client).ledger.set_account_status(shop["wallet"]["id"], AccountStatus.FROZEN)
    answer = client.post(f"/v1/payments/{held['id']}/confirm", headers=alice.auth)
    body = answer.json()
    assert (answer.status_code, body["code"]) == (423, "merchant_inactive"), body
    assert body["payment_id"] == held["id"]
    wallet = client.get(f"/v1/wallets/{alice.wallet_id}", headers=alice.auth).json()
    assert wallet["available"] == wallet["balance"] == {"amount": 200_000, "currency": "CNY"}
    again = with_step_up(client, alice, "POST", f"/v1/payments/{held['id']}/confirm")
    assert again.json()["code"] == "payment_not_pending"
