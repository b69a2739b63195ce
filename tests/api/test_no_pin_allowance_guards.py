"""Guards for the stored no-PIN (免密) allowance of payment codes (issue 11): what a user sets is read back
exactly and is what charges are decided on, per payment and per day, never the one in place of the other.

The values are chosen so that the two columns matter in both directions: with per-payment ¥50 and daily
¥120, a ¥50.01 charge is held (it would pass if the daily value were taken per payment), and a second ¥50
charge passes (it would be held if the per-payment value were taken as the daily one).
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.test_merchant_payments import fund, open_merchant
from tests.api.test_money_rule_guards import cny, code_charge, set_allowance
from tests.api.test_payment_codes import enable
from tests.support.api import SignedUp

PER_PAYMENT = 5_000
DAILY = 12_000


@pytest.fixture
def shop(client: TestClient, bob: SignedUp) -> dict[str, Any]:
    return open_merchant(client, bob, name="早餐铺", mcc="5814", city="杭州")


def allowance(client: TestClient, user: SignedUp) -> dict[str, Any]:
    response = client.get("/v1/payment-codes/settings", headers=user.auth)
    assert response.status_code == 200, response.text
    shown: dict[str, Any] = response.json()
    return shown


def paid(response: Any) -> None:
    assert response.status_code == 201 and response.json()["status"] == "succeeded", response.text


def held(response: Any) -> None:
    assert response.status_code == 202 and response.json()["status"] == "pending", response.text


def test_a_stored_allowance_is_read_back_as_stored(client: TestClient, alice: SignedUp) -> None:
    first = set_allowance(client, alice, 50_000, 90_000)  # a new row
    assert (first["no_pin_per_payment"], first["no_pin_daily"]) == (cny(50_000), cny(90_000))
    again = set_allowance(client, alice, PER_PAYMENT, DAILY)  # the same row, changed
    expected = {"no_pin_per_payment": cny(PER_PAYMENT), "no_pin_daily": cny(DAILY), "used_today": cny(0)}
    assert again == expected
    assert allowance(client, alice) == expected


def test_charges_are_decided_on_the_stored_per_payment_and_daily_values(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 100_000)
    enable(client, alice)
    set_allowance(client, alice, PER_PAYMENT, DAILY)

    paid(code_charge(client, alice, bob, shop, PER_PAYMENT))  # exactly the per-payment value: no PIN
    held(code_charge(client, alice, bob, shop, PER_PAYMENT + 1))  # above it, though within the day
    paid(code_charge(client, alice, bob, shop, PER_PAYMENT))  # ¥100 of ¥120 used: still within the day
    assert allowance(client, alice)["used_today"] == cny(2 * PER_PAYMENT)
    remaining = DAILY - 2 * PER_PAYMENT
    held(code_charge(client, alice, bob, shop, remaining + 1))  # small, but over the day's allowance
    paid(code_charge(client, alice, bob, shop, remaining))  # exactly what remains of the day
    assert allowance(client, alice)["used_today"] == cny(DAILY)
    held(code_charge(client, alice, bob, shop, 1))  # the day's allowance is used up
