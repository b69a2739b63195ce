"""Online checkout: payment intents created with a merchant's API key, confirmed from a wallet, and the
state machine around them (cancel, expiry, one payment per intent)."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from qianbao.payments.code_tables import payment_intents
from qianbao.payments.intents import TRANSITIONS, can_move
from qianbao.security.request_signing import signing_headers
from tests.api.test_api_keys import new_key, set_pin, signed
from tests.api.test_merchant_payments import balance, fund, ledger_balances, open_merchant
from tests.support.api import SignedUp, sign_up, with_step_up


def _cny(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY"}


@pytest.fixture
def shop(client: TestClient, bob: SignedUp) -> dict[str, Any]:
    return open_merchant(client, bob, name="Tea House", mcc="5814", city="Hangzhou")


@pytest.fixture
def server_key(client: TestClient, bob: SignedUp) -> dict[str, Any]:
    set_pin(client, bob)
    return new_key(client, bob, ["read", "payments:write"])


def create(client: TestClient, key: dict[str, Any], merchant_id: str, amount: int, **extra: Any) -> Any:
    """What a merchant's server sends: a JSON body, signed with its API key."""
    path = "/v1/payment-intents"
    body = json.dumps({"merchant_id": merchant_id, "amount": _cny(amount), **extra}).encode()
    headers = signing_headers(key["id"], key["secret"], "POST", path, "", body)
    return signed(
        client, key, path, method="POST", body=body, headers={**headers, "Content-Type": "application/json"}
    )


def confirm(client: TestClient, user: SignedUp, intent_id: str, wallet_id: str | None = None) -> Any:
    return client.post(
        f"/v1/payment-intents/{intent_id}/confirm",
        json={"from_wallet_id": wallet_id or user.wallet_id},
        headers={**user.auth, "Idempotency-Key": str(uuid.uuid4())},
    )


def test_the_state_machine_has_no_way_back() -> None:
    assert can_move("requires_confirmation", "processing") and can_move("processing", "succeeded")
    assert not can_move("succeeded", "processing") and not can_move("expired", "requires_confirmation")
    assert all(not TRANSITIONS[s] for s in ("succeeded", "failed", "canceled", "expired"))


def test_a_merchant_server_creates_an_intent_and_a_customer_pays_it(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], server_key: dict[str, Any]
) -> None:
    r = create(
        client,
        server_key,
        shop["id"],
        3_800,
        order_id="WEB-77",
        description="龙井 250g",
        return_url="https://tea.example/done",
    )
    assert r.status_code == 201, r.text
    intent = r.json()
    assert intent["status"] == "requires_confirmation" and intent["merchant"]["name"] == "Tea House"
    seen = client.get(f"/v1/payment-intents/{intent['id']}", headers=alice.auth).json()
    assert seen["amount"] == _cny(3_800) and seen["description"] == "龙井 250g"
    fund(client, alice, 10_000)
    paid = confirm(client, alice, intent["id"])
    assert paid.status_code == 200, paid.text
    body = paid.json()
    assert body["payment_intent"]["status"] == "succeeded"
    assert body["payment"]["method"] == "checkout" and body["payment"]["order_id"] == "WEB-77"
    assert body["payment_intent"]["payment_id"] == body["payment"]["id"]
    assert balance(client, alice.wallet_id) == 6_200
    again = confirm(client, alice, intent["id"])
    assert again.status_code == 409 and again.json()["code"] == "intent_state_conflict"
    assert balance(client, alice.wallet_id) == 6_200
    merchant_view = signed(client, server_key, f"/v1/payment-intents/{intent['id']}").json()
    assert merchant_view["status"] == "succeeded"
    ledger_balances(client)


def test_a_refusal_before_paying_leaves_the_intent_payable(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], server_key: dict[str, Any]
) -> None:
    intent = create(client, server_key, shop["id"], 5_000).json()
    r = confirm(client, alice, intent["id"])
    assert r.status_code == 422 and r.json()["code"] == "insufficient_funds"
    assert client.get(f"/v1/payment-intents/{intent['id']}", headers=alice.auth).json()["status"] == (
        "requires_confirmation"
    )
    fund(client, alice, 5_000)
    assert confirm(client, alice, intent["id"]).status_code == 200


def test_large_intents_ask_for_step_up(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], server_key: dict[str, Any]
) -> None:
    client.app.state.container.identity.settings.step_up_amount = 100_000  # type: ignore[attr-defined]
    intent = create(client, server_key, shop["id"], 150_000).json()
    fund(client, alice, 150_000)
    r = confirm(client, alice, intent["id"])
    assert r.status_code == 401 and r.json()["code"] == "step_up_required"
    body = {"from_wallet_id": alice.wallet_id}
    done = with_step_up(client, alice, "POST", f"/v1/payment-intents/{intent['id']}/confirm", json=body)
    assert done.status_code == 200 and done.json()["payment_intent"]["status"] == "succeeded", done.text


def test_a_canceled_intent_cannot_be_paid(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], server_key: dict[str, Any]
) -> None:
    intent = create(client, server_key, shop["id"], 100).json()
    path = f"/v1/payment-intents/{intent['id']}/cancel"
    assert client.post(path, headers=alice.auth).status_code == 404  # only the merchant cancels
    r = signed(client, server_key, path, method="POST")
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    fund(client, alice, 1_000)
    r = confirm(client, alice, intent["id"])
    assert r.status_code == 409 and r.json()["code"] == "intent_state_conflict"
    assert signed(client, server_key, path, method="POST").json()["code"] == "intent_state_conflict"


def test_an_expired_intent_cannot_be_paid(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], server_key: dict[str, Any]
) -> None:
    intent = create(client, server_key, shop["id"], 100, expires_in=60).json()
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    with ctx.db.write() as conn:
        conn.execute(
            update(payment_intents)
            .where(payment_intents.c.id == intent["id"])
            .values(expires_at=ctx.now() - 1)
        )
    fund(client, alice, 1_000)
    r = confirm(client, alice, intent["id"])
    assert r.status_code == 422 and r.json()["code"] == "intent_expired"
    assert client.get(f"/v1/payment-intents/{intent['id']}", headers=alice.auth).json()["status"] == "expired"
    assert balance(client, alice.wallet_id) == 1_000


@pytest.mark.parametrize(
    "extra",
    [
        {"return_url": "javascript:alert(1)"},
        {"return_url": "https://user:pw@shop.example/"},
        {"description": ""},
        {"expires_in": 10},
        {"order_id": "with space"},
    ],
)
def test_bad_intents_are_refused(
    client: TestClient, shop: dict[str, Any], server_key: dict[str, Any], extra: dict[str, Any]
) -> None:
    r = create(client, server_key, shop["id"], 100, **extra)
    assert r.status_code == 422 and r.json()["code"] == "validation_error", r.text


def test_a_key_without_payments_write_cannot_create_intents(
    client: TestClient, bob: SignedUp, shop: dict[str, Any]
) -> None:
    set_pin(client, bob)
    read_only = new_key(client, bob, ["read"], name="reports")
    r = create(client, read_only, shop["id"], 100)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"


def test_someone_elses_merchant_cannot_take_intents(
    client: TestClient, alice: SignedUp, shop: dict[str, Any]
) -> None:
    r = client.post(
        "/v1/payment-intents", json={"merchant_id": shop["id"], "amount": _cny(100)}, headers=alice.auth
    )
    assert r.status_code == 404


def test_a_stranger_with_the_link_sees_the_intent_but_not_who_paid(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], server_key: dict[str, Any]
) -> None:
    intent = create(client, server_key, shop["id"], 100).json()
    fund(client, alice, 1_000)
    assert confirm(client, alice, intent["id"]).status_code == 200
    stranger = sign_up(client, name="张三")
    seen = client.get(f"/v1/payment-intents/{intent['id']}", headers=stranger.auth).json()
    assert seen["status"] == "succeeded" and seen["payment_id"] is None
    assert client.get(f"/v1/payment-intents/{intent['id']}", headers=alice.auth).json()["payment_id"]


def _stuck_in_processing(client: TestClient, intent_id: str, payer_id: str, *, seconds_ago: int) -> None:
    """As if a confirmation had died after moving the intent to `processing` (a crash)."""
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    with ctx.db.write() as conn:
        conn.execute(
            update(payment_intents)
            .where(payment_intents.c.id == intent_id)
            .values(
                status="processing", payer_user_id=payer_id, updated_at=ctx.now() - seconds_ago * 1_000_000
            )
        )


def test_a_confirmation_that_died_is_resumed_by_its_payer_only(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], server_key: dict[str, Any]
) -> None:
    intent = create(client, server_key, shop["id"], 700).json()
    fund(client, alice, 1_000)
    _stuck_in_processing(client, intent["id"], alice.user_id, seconds_ago=5)
    busy = confirm(client, alice, intent["id"])  # still under way, as far as anyone can tell
    assert busy.status_code == 409 and busy.json()["code"] == "intent_state_conflict"
    _stuck_in_processing(client, intent["id"], alice.user_id, seconds_ago=120)
    stranger = sign_up(client, name="张三")
    fund(client, stranger, 1_000)
    assert confirm(client, stranger, intent["id"]).json()["code"] == "intent_state_conflict"
    resumed = confirm(client, alice, intent["id"])
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["payment_intent"]["status"] == "succeeded"
    assert balance(client, alice.wallet_id) == 300 and balance(client, stranger.wallet_id) == 1_000


def test_a_payment_that_committed_before_the_crash_is_not_paid_twice(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], server_key: dict[str, Any]
) -> None:
    intent = create(client, server_key, shop["id"], 700).json()
    fund(client, alice, 1_000)
    first = confirm(client, alice, intent["id"]).json()["payment"]
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    with ctx.db.write() as conn:  # the intent's last step lost: back to processing, no payment recorded
        conn.execute(
            update(payment_intents)
            .where(payment_intents.c.id == intent["id"])
            .values(status="processing", payment_id=None, updated_at=ctx.now() - 120_000_000)
        )
    resumed = confirm(client, alice, intent["id"])
    assert resumed.status_code == 200, resumed.text
    assert resumed.json()["payment"]["id"] == first["id"]
    assert resumed.json()["payment_intent"]["status"] == "succeeded"
    assert balance(client, alice.wallet_id) == 300
