"""Boundary guards for every way of paying (issue 11): a payment of exactly the single-payment limit,
exactly what remains of the daily limit, and exactly the whole available balance succeeds; one fen more
is refused with `limit_exceeded_single`, `limit_exceeded_daily` and `insufficient_funds`.

At tier 4 the single-payment limit (¥2,000) is also the step-up threshold: exactly ¥2,000 first asks for
step-up (`amount_threshold`), then succeeds.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.api.test_kyc import kyc
from tests.api.test_merchant_payments import fund, open_merchant
from tests.api.test_money_rule_guards import (
    DAILY,
    SINGLE,
    PaymentOf,
    checkout,
    cny,
    code_charge,
    confirm_held,
    dynamic_qr,
    p2p,
    refused,
    send,
    static_qr,
    succeeded,
    used_today,
    wallet_amounts,
)
from tests.api.test_payment_codes import enable
from tests.support.api import SignedUp

WHOLE = 150_000  # the whole balance left after the single-limit payment, paid in one go
MakeKind = Callable[[TestClient, SignedUp, SignedUp, dict[str, Any]], PaymentOf]


@pytest.fixture
def shop(client: TestClient, bob: SignedUp) -> dict[str, Any]:
    return open_merchant(client, bob, name="水果摊", mcc="5411", city="成都")


def p2p_kind(_client: TestClient, payer: SignedUp, owner: SignedUp, _shop: dict[str, Any]) -> PaymentOf:
    return p2p(payer, owner)


@pytest.mark.parametrize(
    "make", [p2p_kind, static_qr, dynamic_qr, checkout], ids=["p2p", "static_qr", "dynamic_qr", "checkout"]
)
def test_exactly_the_single_limit_the_whole_balance_and_the_rest_of_the_day_succeed(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], make: MakeKind
) -> None:
    payment_of = make(client, alice, bob, shop)
    fund(client, alice, SINGLE + WHOLE)

    over = refused(send(client, alice, payment_of(SINGLE + 1)), "limit_exceeded_single")
    assert over["limit"] == cny(SINGLE)
    exactly = payment_of(SINGLE)
    asked = send(client, alice, exactly)
    assert asked.status_code == 401 and asked.json()["code"] == "step_up_required", asked.text
    assert "amount_threshold" in asked.json()["reasons"]
    succeeded(send(client, alice, exactly, step_up=True))

    refused(send(client, alice, payment_of(WHOLE + 1)), "insufficient_funds")
    succeeded(send(client, alice, payment_of(WHOLE)))  # available == amount
    assert wallet_amounts(client, alice) == (0, 0)

    rest = DAILY - SINGLE - WHOLE
    fund(client, alice, rest + 50_000)  # the balance is not what stops the next one
    over = refused(send(client, alice, payment_of(rest + 1)), "limit_exceeded_daily")
    assert over["remaining"] == cny(rest)
    succeeded(send(client, alice, payment_of(rest)))
    assert kyc(client, alice)["remaining_today"] == cny(0) and used_today(client, alice) == DAILY
    assert wallet_amounts(client, alice) == (50_000, 50_000)


def test_payment_code_charges_at_the_single_limit_and_the_whole_balance(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    """Default no-PIN allowance: ¥1,000 a payment, ¥2,000 a day; above it a charge is held and the payer
    confirms it with step-up."""
    enable(client, alice)
    fund(client, alice, SINGLE + 60_000)

    def charge(amount: int) -> Any:
        return code_charge(client, alice, bob, shop, amount)

    # The single limit: refused at the charge; exactly the limit is held, then confirmed.
    assert refused(charge(SINGLE + 1), "limit_exceeded_single")["limit"] == cny(SINGLE)
    succeeded(confirm_held(client, alice, charge(SINGLE)))

    # The whole balance, password-free.
    refused(charge(60_001), "insufficient_funds")
    paid = charge(60_000)
    assert paid.status_code == 201 and paid.json()["status"] == "succeeded", paid.text
    assert wallet_amounts(client, alice) == (0, 0)

    # The whole balance, held: the hold takes all of it, and confirming posts it.
    fund(client, alice, 120_000)
    refused(charge(120_001), "insufficient_funds")
    whole = charge(120_000)
    assert wallet_amounts(client, alice) == (120_000, 0)
    succeeded(confirm_held(client, alice, whole))
    assert wallet_amounts(client, alice) == (0, 0)
    assert used_today(client, alice) == SINGLE + 60_000 + 120_000


def test_payment_code_charges_and_confirmations_at_the_rest_of_the_day(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    """The daily limit is checked when a held charge is made and again when it is confirmed (the hold
    itself counts toward the day only once confirmed)."""
    enable(client, alice)
    fund(client, alice, 700_000)
    qr = static_qr(client, alice, bob, shop)
    succeeded(send(client, alice, qr(SINGLE), step_up=True))
    succeeded(send(client, alice, qr(180_000)))
    rest = DAILY - SINGLE - 180_000  # ¥1,200 of the day: above the no-PIN ¥1,000, so held

    def charge(amount: int) -> Any:
        return code_charge(client, alice, bob, shop, amount)

    refused(charge(rest + 1), "limit_exceeded_daily")
    late = charge(rest)
    assert late.status_code == 202, late.text
    small = charge(1)  # password-free, after the hold: now the hold is one fen over the day
    assert small.status_code == 201, small.text
    refused(confirm_held(client, alice, late), "limit_exceeded_daily")
    assert client.get(f"/v1/payments/{late.json()['id']}", headers=alice.auth).json()["status"] == "failed"
    succeeded(confirm_held(client, alice, charge(rest - 1)))  # exactly what remains: confirmed
    assert used_today(client, alice) == DAILY
    assert wallet_amounts(client, alice) == (700_000 - DAILY, 700_000 - DAILY)
