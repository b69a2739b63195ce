"""Guards for the payer's daily outflow limit across every way of paying (issue 11): a merchant payment by
static or dynamic QR code, by payment code (password-free, or held and then confirmed) and by checkout
counts toward the same `used_today` as a P2P transfer, and the limit is decided on that one total.

Tier 4 (a new user): single payment ¥2,000, daily outflow ¥5,000; step-up from ¥2,000. The helpers here
drive one payment of each kind through the public API; the boundary and no-PIN guards use them too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.test_kyc import kyc
from tests.api.test_merchant_payments import fund, open_merchant, static_payload
from tests.api.test_payment_codes import enable
from tests.support.api import SignedUp, with_step_up

SINGLE = 200_000  # tier 4's single-payment limit, also the step-up threshold
DAILY = 500_000  # tier 4's daily outflow limit

# A payment ready to send: (url, JSON body). Sending it twice sends the same payment (same code, intent).
Payment = tuple[str, dict[str, Any]]
# Prepares a payment of `amount` fen by one way of paying.
PaymentOf = Callable[[int], Payment]


def cny(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY"}


def send(client: TestClient, payer: SignedUp, payment: Payment, *, step_up: bool = False) -> Any:
    """POST the payment (a fresh Idempotency-Key); with `step_up`, prove the challenge it asks for."""
    url, body = payment
    key = {"Idempotency-Key": str(uuid.uuid4())}
    if step_up:
        return with_step_up(client, payer, "POST", url, json=body, headers=key)
    return client.post(url, json=body, headers={**payer.auth, **key})


def succeeded(response: Any) -> None:
    assert response.status_code in (200, 201), response.text
    body = response.json()
    status = body["payment"]["status"] if "payment" in body else body["status"]
    assert status == "succeeded", response.text


def refused(response: Any, code: str) -> dict[str, Any]:
    """A decline before step-up: 422 with `code` and no challenge."""
    assert response.status_code == 422 and response.json()["code"] == code, response.text
    body: dict[str, Any] = response.json()
    assert "challenge_id" not in body
    return body


def used_today(client: TestClient, user: SignedUp) -> int:
    return int(kyc(client, user)["used_today"]["amount"])


def wallet_amounts(client: TestClient, user: SignedUp) -> tuple[int, int]:
    """(balance, available) of the user's main wallet."""
    shown = client.get(f"/v1/wallets/{user.wallet_id}", headers=user.auth).json()
    return int(shown["balance"]["amount"]), int(shown["available"]["amount"])


# -- one payment of each kind ------------------------------------------------------------------------


def p2p(payer: SignedUp, payee: SignedUp) -> PaymentOf:
    def of(amount: int) -> Payment:
        to = {"wallet_id": payee.wallet_id}
        return "/v1/transfers", {"from_wallet_id": payer.wallet_id, "to": to, "amount": cny(amount)}

    return of


def static_qr(client: TestClient, payer: SignedUp, owner: SignedUp, shop: dict[str, Any]) -> PaymentOf:
    qr = static_payload(client, owner, shop["id"])

    def of(amount: int) -> Payment:
        return "/v1/payments", {"from_wallet_id": payer.wallet_id, "qr": qr, "amount": cny(amount)}

    return of


def dynamic_qr(client: TestClient, payer: SignedUp, owner: SignedUp, shop: dict[str, Any]) -> PaymentOf:
    def of(amount: int) -> Payment:
        code = client.post(
            f"/v1/merchants/{shop['id']}/qr-codes",
            json={"amount": cny(amount)},
            headers={**owner.auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert code.status_code == 201, code.text
        return "/v1/payments", {"from_wallet_id": payer.wallet_id, "qr": code.json()["payload"]}

    return of


def checkout(client: TestClient, payer: SignedUp, owner: SignedUp, shop: dict[str, Any]) -> PaymentOf:
    """Confirming an intent the merchant's owner created (a session may create intents like a key)."""

    def of(amount: int) -> Payment:
        intent = client.post(
            "/v1/payment-intents",
            json={"merchant_id": shop["id"], "amount": cny(amount)},
            headers={**owner.auth, "Idempotency-Key": str(uuid.uuid4())},
        )
        assert intent.status_code == 201, intent.text
        return f"/v1/payment-intents/{intent.json()['id']}/confirm", {"from_wallet_id": payer.wallet_id}

    return of


def current_code(client: TestClient, payer: SignedUp) -> str:
    """The next unused code of the payer's device (the server picks the sequence, so no clash)."""
    shown = client.get("/v1/payment-codes/current", headers=payer.auth)
    assert shown.status_code == 200, shown.text
    return str(shown.json()["code"])


def code_charge(
    client: TestClient, payer: SignedUp, owner: SignedUp, shop: dict[str, Any], amount: int
) -> Any:
    """The merchant charges the payer's current payment code: 201 paid, 202 held, or a decline."""
    body = {"payment_code": current_code(client, payer), "amount": cny(amount)}
    return client.post(
        f"/v1/merchants/{shop['id']}/charges",
        json=body,
        headers={**owner.auth, "Idempotency-Key": str(uuid.uuid4())},
    )


def confirm_held(client: TestClient, payer: SignedUp, held: Any) -> Any:
    """The payer confirms a held charge (always with step-up)."""
    assert held.status_code == 202 and held.json()["status"] == "pending", held.text
    return with_step_up(client, payer, "POST", f"/v1/payments/{held.json()['id']}/confirm")


def set_allowance(client: TestClient, user: SignedUp, per_payment: int, daily: int) -> dict[str, Any]:
    """Lower the no-PIN allowance (lowering needs no step-up)."""
    body = {"no_pin_per_payment": cny(per_payment), "no_pin_daily": cny(daily)}
    response = client.put("/v1/payment-codes/settings", json=body, headers=user.auth)
    assert response.status_code == 200, response.text
    shown: dict[str, Any] = response.json()
    return shown


@pytest.fixture
def shop(client: TestClient, bob: SignedUp) -> dict[str, Any]:
    return open_merchant(client, bob, name="街角小店", mcc="5411", city="上海")


# -- every merchant payment counts toward used_today -------------------------------------------------


def test_every_way_of_paying_a_merchant_counts_toward_the_payers_daily_use(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 100_000)
    enable(client, alice)
    expected = 0

    def counted(amount: int) -> None:
        nonlocal expected
        expected += amount
        assert used_today(client, alice) == expected
        assert kyc(client, alice)["remaining_today"] == cny(DAILY - expected)

    succeeded(send(client, alice, static_qr(client, alice, bob, shop)(1_000)))
    counted(1_000)
    succeeded(send(client, alice, dynamic_qr(client, alice, bob, shop)(2_000)))
    counted(2_000)
    free = code_charge(client, alice, bob, shop, 3_000)
    assert free.status_code == 201, free.text  # within the no-PIN allowance: paid at once
    counted(3_000)
    set_allowance(client, alice, 0, 0)  # every code payment is now held for confirmation
    held = code_charge(client, alice, bob, shop, 4_000)
    succeeded(confirm_held(client, alice, held))
    counted(4_000)
    succeeded(send(client, alice, checkout(client, alice, bob, shop)(5_000)))
    counted(5_000)
    succeeded(send(client, alice, p2p(alice, bob)(6_000)))  # P2P adds to the same total
    counted(6_000)
    assert wallet_amounts(client, alice) == (100_000 - 21_000, 100_000 - 21_000)


def test_a_third_2000_merchant_payment_in_a_day_is_refused_at_tier_4(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    status = kyc(client, alice)
    assert status["tier"] == 4
    assert status["limits"]["single_payment"] == cny(SINGLE)
    assert status["limits"]["daily_outflow"] == cny(DAILY)
    fund(client, alice, 600_000)
    enable(client, alice)
    # Two merchant payments of ¥2,000 (each asks for step-up): a QR payment and a held payment code.
    succeeded(send(client, alice, static_qr(client, alice, bob, shop)(SINGLE), step_up=True))
    held = code_charge(client, alice, bob, shop, SINGLE)  # above the ¥1,000 no-PIN allowance: held
    succeeded(confirm_held(client, alice, held))
    assert used_today(client, alice) == 2 * SINGLE

    # A third ¥2,000, whichever way, is over the day's ¥5,000: refused before any step-up.
    thirds = [
        send(client, alice, static_qr(client, alice, bob, shop)(SINGLE)),
        send(client, alice, dynamic_qr(client, alice, bob, shop)(SINGLE)),
        send(client, alice, checkout(client, alice, bob, shop)(SINGLE)),
        code_charge(client, alice, bob, shop, SINGLE),
        send(client, alice, p2p(alice, bob)(SINGLE)),
    ]
    for third in thirds:
        body = refused(third, "limit_exceeded_daily")
        assert body["remaining"] == cny(DAILY - 2 * SINGLE) and body["limit"] == cny(DAILY)
    assert used_today(client, alice) == 2 * SINGLE
    assert wallet_amounts(client, alice) == (600_000 - 2 * SINGLE, 600_000 - 2 * SINGLE)


def test_p2p_and_merchant_payments_share_one_daily_limit(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 600_000)
    succeeded(send(client, alice, p2p(alice, bob)(SINGLE), step_up=True))
    succeeded(send(client, alice, checkout(client, alice, bob, shop)(SINGLE), step_up=True))
    # ¥1,000 remains of the day: the merchant payment counts against a transfer, and the other way round.
    over = refused(send(client, alice, p2p(alice, bob)(100_001)), "limit_exceeded_daily")
    assert over["remaining"] == cny(100_000)
    succeeded(send(client, alice, p2p(alice, bob)(60_000)))
    over = refused(send(client, alice, static_qr(client, alice, bob, shop)(40_001)), "limit_exceeded_daily")
    assert over["remaining"] == cny(40_000)
    assert used_today(client, alice) == DAILY - 40_000
