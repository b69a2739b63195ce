"""The whole story of issue 4, end to end through the API: a new user signs up, funds a wallet in the
sandbox, pays a merchant by static and dynamic QR and by payment code, sends money by phone number, is
refunded, and sees it all in history; the merchant's integration receives signed webhooks for it."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from qianbao.config import Settings
from qianbao.events.dispatcher import dispatch_once
from qianbao.events.signing import verify_signature
from qianbao.payments import payment_code_model
from tests.support.api import SignedUp, make_settings, sign_up, with_step_up
from tests.support.operators import identity_of
from tests.support.receiver import Received, running_receiver


@pytest.fixture
def settings(fresh_database_url: str, tmp_path: Path) -> Settings:
    """The sandbox with loopback receivers allowed (QIANBAO_WEBHOOKS_ALLOW_LOOPBACK=true): the receiver here
    is a real HTTP server on 127.0.0.1."""
    return make_settings(fresh_database_url, tmp_path / "var", webhooks_allow_loopback=True)


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def _cny(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY"}


def created(response: Any) -> dict[str, Any]:
    assert response.status_code in (200, 201), response.text
    return dict(response.json())


def test_a_new_user_pays_everyone_every_way_and_the_merchant_hears_of_it(client: TestClient) -> None:
    with running_receiver([200]) as (local, url):
        _story(client, local.received, url)


def _story(client: TestClient, received: list[Received], url: str) -> None:
    customer = sign_up(client, name="欧阳娜娜")
    friend = sign_up(client, name="李四")
    owner: SignedUp = sign_up(client, name="王老板")

    # The merchant: a shop, its webhook endpoint, a printed static code.
    shop = created(
        client.post(
            "/v1/merchants",
            json={"name": "老王面馆", "mcc": "5812", "city": "上海"},
            headers={**owner.auth, **_key()},
        )
    )
    hook = created(
        client.post(
            "/v1/webhook-endpoints",
            json={"url": url, "events": ["payment.*", "refund.*"]},
            headers={**owner.auth, **_key()},
        )
    )
    static = created(client.get(f"/v1/merchants/{shop['id']}/qr", headers=owner.auth))["payload"]

    # The customer funds the wallet in the sandbox.
    created(
        client.post(
            "/v1/sandbox/fund",
            json={"wallet_id": customer.wallet_id, "amount": _cny(100_000)},
            headers={**customer.auth, **_key()},
        )
    )

    # 1. Static QR: the customer enters the amount.
    by_static = created(
        client.post(
            "/v1/payments",
            json={
                "from_wallet_id": customer.wallet_id,
                "qr": static,
                "amount": _cny(2_800),
                "memo": "牛肉面",
            },
            headers={**customer.auth, **_key()},
        )
    )
    # 2. Dynamic QR: the till's code carries the amount and the order.
    code = created(
        client.post(
            f"/v1/merchants/{shop['id']}/qr-codes",
            json={"amount": _cny(4_500), "order_id": "T-0042"},
            headers={**owner.auth, **_key()},
        )
    )
    by_dynamic = created(
        client.post(
            "/v1/payments",
            json={"from_wallet_id": customer.wallet_id, "qr": code["payload"]},
            headers={**customer.auth, **_key()},
        )
    )
    # 3. Payment code: the till scans the 18 digits the customer's phone shows.
    device = created(
        with_step_up(
            client,
            customer,
            "POST",
            "/v1/payment-codes/devices",
            json={"wallet_id": customer.wallet_id},
            headers=_key(),
        )
    )
    shown = payment_code_model.payment_code(device["secret"], device["number"], time.time())
    by_code = created(
        client.post(
            f"/v1/merchants/{shop['id']}/charges",
            json={"payment_code": shown, "amount": _cny(1_200), "order_id": "POS-7"},
            headers={**owner.auth, **_key()},
        )
    )
    # 4. P2P by phone number, after checking who it pays.
    who = created(client.get("/v1/recipients", params={"phone": friend.phone}, headers=customer.auth))
    assert who["name_masked"] == "*四"
    sent = created(
        client.post(
            "/v1/transfers",
            json={"from_wallet_id": customer.wallet_id, "to": {"phone": friend.phone}, "amount": _cny(3_000)},
            headers={**customer.auth, **_key()},
        )
    )
    # 5. The merchant refunds part of the dynamic-QR order.
    refund = created(
        client.post(
            f"/v1/payments/{by_dynamic['id']}/refunds",
            json={"amount": _cny(1_500), "reason": "少了一个菜"},
            headers={**owner.auth, **_key()},
        )
    )

    # Everything is in the customer's history, newest first, with the right balances.
    history = created(client.get(f"/v1/wallets/{customer.wallet_id}/transactions", headers=customer.auth))[
        "data"
    ]
    assert [(t["type"], t["direction"], t["amount"]["amount"]) for t in history] == [
        ("refund", "credit", 1_500),
        ("p2p", "debit", 3_000),
        ("merchant_payment", "debit", 1_200),
        ("merchant_payment", "debit", 4_500),
        ("merchant_payment", "debit", 2_800),
        ("top_up", "credit", 100_000),
    ]
    assert history[0]["balance_after"] == _cny(100_000 - 2_800 - 4_500 - 1_200 - 3_000 + 1_500)
    assert {t["payment_id"] for t in history if t["payment_id"]} == {
        by_static["id"],
        by_dynamic["id"],
        by_code["id"],
    }
    assert history[1]["transfer_id"] == sent["id"]
    assert history[0]["refund_id"] == refund["id"]
    friend_wallet = created(client.get(f"/v1/wallets/{friend.wallet_id}", headers=friend.auth))
    assert friend_wallet["balance"] == _cny(3_000)

    # The merchant's server receives each payment and the refund, signed, once each.
    report = dispatch_once(identity_of(client))
    assert report.delivered == 4, report
    events = []
    for request in received:
        verify_signature(hook["secret"], request.headers["Qianbao-Signature"], request.body, tolerance=300)
        events.append(json.loads(request.body))
    assert sorted(e["type"] for e in events) == ["payment.succeeded"] * 3 + ["refund.succeeded"]
    assert {e["data"]["payment_id"] for e in events} == {by_static["id"], by_dynamic["id"], by_code["id"]}
    assert len({e["id"] for e in events}) == 4
