"""Payment codes (付款码): enabling a device, the code's window, single use, device binding, the no-PIN
allowance, the held charge the customer confirms or lets expire, and the limits on guessing codes (per
merchant, and per device from many merchants together)."""

from __future__ import annotations

import time
import uuid
from typing import Any

import pyotp
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from qianbao.payments import payment_code_model
from qianbao.payments.code_tables import payment_code_failures
from qianbao.payments.merchant_tables import merchant_payments
from tests.api.test_merchant_payments import balance, fund, ledger_balances, open_merchant
from tests.api.test_webhook_endpoints import dispatch
from tests.support.api import SignedUp, reset_limits, sign_up, with_step_up
from tests.support.operators import create_operator


def _key() -> dict[str, str]:
    return {"Idempotency-Key": str(uuid.uuid4())}


def _cny(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY"}


def enable(client: TestClient, user: SignedUp, wallet_id: str | None = None) -> dict[str, Any]:
    body = {"wallet_id": wallet_id or user.wallet_id}
    r = with_step_up(client, user, "POST", "/v1/payment-codes/devices", json=body, headers=_key())
    assert r.status_code == 201, r.text
    return dict(r.json())


def code_now(device: dict[str, Any], seq: int = 0, offset_s: float = 0) -> str:
    return payment_code_model.payment_code(device["secret"], device["number"], time.time() + offset_s, seq)


def charge(
    client: TestClient, owner: SignedUp, merchant_id: str, code: str, amount: int, **extra: Any
) -> Any:
    body = {"payment_code": code, "amount": _cny(amount), **extra}
    return client.post(f"/v1/merchants/{merchant_id}/charges", json=body, headers={**owner.auth, **_key()})


@pytest.fixture
def shop(client: TestClient, bob: SignedUp) -> dict[str, Any]:
    return open_merchant(client, bob, name="便利店", mcc="5411", city="北京")


def test_enabling_a_device_needs_step_up_and_shows_the_secret_once(
    client: TestClient, alice: SignedUp
) -> None:
    first = client.post("/v1/payment-codes/devices", json={"wallet_id": alice.wallet_id}, headers=alice.auth)
    assert first.status_code == 401 and first.json()["code"] == "step_up_required"
    device = enable(client, alice)
    assert len(device["number"]) == 7 and pyotp.TOTP(device["secret"]).secret == device["secret"]
    listed = client.get("/v1/payment-codes/devices", headers=alice.auth).json()["data"]
    assert [d["id"] for d in listed] == [device["id"]] and "secret" not in listed[0]
    current = client.get("/v1/payment-codes/current", headers=alice.auth)
    assert current.status_code == 200 and current.headers["cache-control"] == "no-store"
    shown = current.json()
    assert len(shown["code"]) == 18 and shown["code"].startswith("28" + device["number"])
    assert shown["qr_svg"].lstrip().startswith("<") and "<svg" in shown["barcode_svg"]


def test_a_small_charge_needs_no_pin(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 50_000)
    device = enable(client, alice)
    r = charge(client, bob, shop["id"], code_now(device), 2_500, order_id="POS-1")
    assert r.status_code == 201, r.text
    paid = r.json()
    assert paid["status"] == "succeeded" and paid["method"] == "payment_code" and paid["order_id"] == "POS-1"
    assert paid["fee"] == _cny(10)  # 25.00 × 0.38 % = 0.095 → 0.10
    assert balance(client, alice.wallet_id) == 47_500
    allowance = client.get("/v1/payment-codes/settings", headers=alice.auth).json()
    assert allowance["used_today"] == _cny(2_500)


def test_a_code_pays_once(client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]) -> None:
    fund(client, alice, 10_000)
    device = enable(client, alice)
    code = code_now(device)
    assert charge(client, bob, shop["id"], code, 100).status_code == 201
    again = charge(client, bob, shop["id"], code, 100)
    assert again.status_code == 422 and again.json()["code"] == "payment_code_invalid"
    # The next sequence digit of the same minute is a different, valid code.
    assert charge(client, bob, shop["id"], code_now(device, seq=1), 100).status_code == 201
    assert balance(client, alice.wallet_id) == 9_800


def test_the_window_accepts_last_minutes_code_but_not_older(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 10_000)
    device = enable(client, alice)
    assert charge(client, bob, shop["id"], code_now(device, offset_s=-60), 100).status_code == 201
    stale = charge(client, bob, shop["id"], code_now(device, offset_s=-180), 100)
    assert stale.status_code == 422 and stale.json()["code"] == "payment_code_invalid"
    future = charge(client, bob, shop["id"], code_now(device, offset_s=180), 100)
    assert future.status_code == 422


def test_codes_are_bound_to_their_device(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 10_000)
    device = enable(client, alice)
    other_secret = pyotp.random_base32()
    forged = payment_code_model.payment_code(other_secret, device["number"], time.time())
    r = charge(client, bob, shop["id"], forged, 100)
    assert r.status_code == 422 and r.json()["code"] == "payment_code_invalid"
    for bad in ("12345", "2" * 18, "28" + "x" * 16, "99" + code_now(device)[2:]):
        assert charge(client, bob, shop["id"], bad, 100).json()["code"] == "payment_code_invalid", bad
    # Revoking the device (a lost phone) stops its codes at once.
    assert client.delete(f"/v1/payment-codes/devices/{device['id']}", headers=alice.auth).status_code == 204
    r = charge(client, bob, shop["id"], code_now(device, seq=3), 100)
    assert r.status_code == 422 and r.json()["code"] == "payment_code_invalid"
    assert balance(client, alice.wallet_id) == 10_000


def test_enabling_again_replaces_the_secret(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 10_000)
    old = enable(client, alice)
    new = enable(client, alice)
    assert new["secret"] != old["secret"]
    assert charge(client, bob, shop["id"], code_now(old), 100).json()["code"] == "payment_code_invalid"
    assert charge(client, bob, shop["id"], code_now(new), 100).status_code == 201


def test_only_the_merchant_charges(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 10_000)
    device = enable(client, alice)
    r = charge(client, alice, shop["id"], code_now(device), 100)
    assert r.status_code == 404
    assert balance(client, alice.wallet_id) == 10_000


def _held(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any], amount: int
) -> dict[str, Any]:
    device = enable(client, alice)
    r = charge(client, bob, shop["id"], code_now(device), amount)
    assert r.status_code == 202, r.text
    return dict(r.json())


def test_above_the_allowance_the_money_is_held_until_the_customer_confirms(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 200_000)
    held = _held(client, alice, bob, shop, 150_000)
    assert held["status"] == "pending" and "expires_at" in held
    wallet = client.get(f"/v1/wallets/{alice.wallet_id}", headers=alice.auth).json()
    assert wallet["available"] == _cny(50_000) and wallet["balance"] == _cny(200_000)
    pending = client.get("/v1/payments/pending", headers=alice.auth).json()["data"]
    assert [p["id"] for p in pending] == [held["id"]]
    unproved = client.post(f"/v1/payments/{held['id']}/confirm", headers=alice.auth)
    assert unproved.status_code == 401 and unproved.json()["code"] == "step_up_required"
    done = with_step_up(client, alice, "POST", f"/v1/payments/{held['id']}/confirm")
    assert done.status_code == 200 and done.json()["status"] == "succeeded", done.text
    assert balance(client, alice.wallet_id) == 50_000
    assert balance(client, shop["wallet"]["id"]) == 150_000 - 570
    merchant_view = client.get(f"/v1/payments/{held['id']}", headers=bob.auth).json()
    assert merchant_view["status"] == "succeeded"
    ledger_balances(client)


def test_a_held_payment_can_be_called_off(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 200_000)
    held = _held(client, alice, bob, shop, 150_000)
    r = client.post(f"/v1/payments/{held['id']}/cancel", headers=alice.auth)
    assert r.status_code == 200 and r.json()["status"] == "canceled"
    wallet = client.get(f"/v1/wallets/{alice.wallet_id}", headers=alice.auth).json()
    assert wallet["available"] == _cny(200_000)
    late = client.post(f"/v1/payments/{held['id']}/confirm", headers=alice.auth)
    assert late.status_code == 409 and late.json()["code"] == "payment_not_pending"


def test_a_confirmation_that_cannot_succeed_asks_no_proof_and_releases_the_hold(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 200_000)
    held = _held(client, alice, bob, shop, 150_000)
    support = create_operator(client, roles=("support",))
    suspended = client.post(
        f"/v1/operator/merchants/{shop['id']}/suspend", json={"reason": "complaint 7"}, headers=support.auth
    )
    assert suspended.status_code == 200, suspended.text
    r = client.post(f"/v1/payments/{held['id']}/confirm", headers=alice.auth)  # no Step-Up header
    assert r.status_code == 423 and r.json()["code"] == "merchant_inactive", r.text
    assert r.json()["payment_id"] == held["id"]
    shown = client.get(f"/v1/payments/{held['id']}", headers=alice.auth).json()
    assert shown["status"] == "failed" and shown["failure_code"] == "merchant_inactive"
    wallet = client.get(f"/v1/wallets/{alice.wallet_id}", headers=alice.auth).json()
    assert wallet["available"] == _cny(200_000) and wallet["balance"] == _cny(200_000)
    again = client.post(f"/v1/payments/{held['id']}/confirm", headers=alice.auth)
    assert again.status_code == 409 and again.json()["code"] == "payment_not_pending"
    assert client.get("/v1/payments/pending", headers=alice.auth).json()["data"] == []
    ledger_balances(client)


def test_an_unconfirmed_hold_expires(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 200_000)
    held = _held(client, alice, bob, shop, 150_000)
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    with ctx.db.write() as conn:  # as if the minute had passed
        conn.execute(
            update(merchant_payments)
            .where(merchant_payments.c.id == held["id"])
            .values(expires_at=ctx.now() - 1)
        )
    r = client.post(f"/v1/payments/{held['id']}/confirm", headers=alice.auth)
    assert r.status_code == 422 and r.json()["code"] == "payment_confirmation_expired"
    shown = client.get(f"/v1/payments/{held['id']}", headers=alice.auth).json()
    assert shown["status"] == "failed" and shown["failure_code"] == "payment_confirmation_expired"
    wallet = client.get(f"/v1/wallets/{alice.wallet_id}", headers=alice.auth).json()
    assert wallet["available"] == _cny(200_000)
    ledger_balances(client)


def test_the_allowance_can_be_lowered_to_zero_and_raised_only_with_step_up(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 10_000)
    zero = {"no_pin_per_payment": _cny(0), "no_pin_daily": _cny(0)}
    r = client.put("/v1/payment-codes/settings", json=zero, headers=alice.auth)
    assert r.status_code == 200 and r.json()["no_pin_per_payment"] == _cny(0)
    assert _held(client, alice, bob, shop, 100)["status"] == "pending"
    back = {"no_pin_per_payment": _cny(100_000), "no_pin_daily": _cny(200_000)}
    r = client.put("/v1/payment-codes/settings", json=back, headers=alice.auth)
    assert r.status_code == 401 and r.json()["code"] == "step_up_required"
    assert with_step_up(client, alice, "PUT", "/v1/payment-codes/settings", json=back).status_code == 200
    too_high = {"no_pin_per_payment": _cny(100_001), "no_pin_daily": _cny(200_000)}
    r = client.put("/v1/payment-codes/settings", json=too_high, headers=alice.auth)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"


def test_the_daily_allowance_counts_every_small_payment(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 300_000)
    device = enable(client, alice)
    assert charge(client, bob, shop["id"], code_now(device, seq=0), 100_000).status_code == 201
    assert charge(client, bob, shop["id"], code_now(device, seq=1), 100_000).status_code == 201
    third = charge(client, bob, shop["id"], code_now(device, seq=2), 100)
    assert third.status_code == 202 and third.json()["status"] == "pending"  # ¥2,000 a day used up


# -- guessing: per merchant, and per device from many merchants ----------------------------------


def wrong_code(device: dict[str, Any], seq: int = 0, number: str | None = None) -> str:
    """A code for this device number whose one-time part is not the device's (a guess)."""
    right = code_now(device, seq)
    otp = f"{(int(right[10:]) + 1) % 10**8:08d}"
    return f"28{number or device['number']}{seq}{otp}"


def other_number(device: dict[str, Any]) -> str:
    return f"{(int(device['number']) + 1) % 10**7:07d}"


def test_a_merchant_over_its_limit_is_refused_before_a_right_code_is_tried(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    fund(client, alice, 10_000)
    device = enable(client, alice)
    nobody = other_number(device)  # wrong codes for a number no device has: the merchant limit only
    for i in range(20):
        r = charge(client, bob, shop["id"], wrong_code(device, i % 10, nobody), 100)
        assert r.status_code == 422 and r.json()["code"] == "payment_code_invalid", (i, r.text)
    right = charge(client, bob, shop["id"], code_now(device), 100)
    assert right.status_code == 429 and right.json()["code"] == "rate_limited", right.text
    assert int(right.headers["Retry-After"]) > 0
    assert balance(client, alice.wallet_id) == 10_000
    assert client.get(f"/v1/merchants/{shop['id']}/payments", headers=bob.auth).json()["data"] == []
    # A malformed code is refused the same way: nothing is tried before the limit is checked.
    malformed = charge(client, bob, shop["id"], "not a code", 100)
    assert malformed.status_code == 429 and malformed.json()["code"] == "rate_limited", malformed.text
    # The refused code was not spent: once the wrong codes leave the 10-minute window, it pays.
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    with ctx.db.write() as conn:  # as if ten minutes had passed
        conn.execute(
            update(payment_code_failures)
            .where(payment_code_failures.c.merchant_id == shop["id"])
            .values(failed_at=payment_code_failures.c.failed_at - 600 * 1_000_000)
        )
    assert charge(client, bob, shop["id"], code_now(device), 100).status_code == 201


def test_every_failure_counts_against_the_merchant_but_only_guesses_against_a_device(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    """Malformed and used codes say nothing about a device: the merchant's limit only."""
    fund(client, alice, 10_000)
    device = enable(client, alice)
    code = code_now(device)
    assert charge(client, bob, shop["id"], code, 100).status_code == 201
    failures = ["2812", "28" + "9" * 16, code] * 5 + [wrong_code(device, seq) for seq in range(5)]
    for presented in failures:
        r = charge(client, bob, shop["id"], presented, 100)
        assert r.status_code == 422 and r.json()["code"] == "payment_code_invalid", (presented, r.text)
    # Twenty failures: the merchant's limit. Only the five wrong codes count against the device (had
    # its used code counted too, five more would have blocked it): at another merchant it pays.
    r = charge(client, bob, shop["id"], code_now(device, seq=1), 100)
    assert r.status_code == 429 and r.json()["code"] == "rate_limited", r.text
    other = open_merchant(client, bob, name="另一家店")
    assert charge(client, bob, other["id"], code_now(device, seq=1), 100).status_code == 201


def test_wrong_codes_from_many_merchants_block_the_device_and_tell_its_owner(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    fund(client, alice, 10_000)
    device = enable(client, alice)
    shops = [open_merchant(client, bob, name=f"店{i}") for i in range(5)]
    carol = sign_up(client, name="赵六")
    elsewhere = open_merchant(client, carol, name="书店")
    limit = payment_code_model.DEVICE_FAILURE_LIMIT
    # Five merchants, each far below its own limit, together present the limit's worth of guesses.
    refusals = []
    for i in range(limit):
        r = charge(client, bob, shops[i % 5]["id"], wrong_code(device, i % 10), 100)
        refusals.append(r.json())
        assert r.status_code == 422 and r.json()["code"] == "payment_code_invalid", (i, r.text)
    # A wrong code for a number nobody has answers exactly like one for a real device.
    unknown = charge(client, carol, elsewhere["id"], wrong_code(device, 0, other_number(device)), 100).json()
    assert _comparable(unknown) == _comparable(refusals[0])

    # Blocked: no code naming the device is tried any more, so even the right one pays nothing, at a
    # merchant that never failed, and answers exactly like a wrong one.
    right = charge(client, carol, elsewhere["id"], code_now(device, seq=9), 100)
    assert _comparable(right.json()) == _comparable(refusals[0])
    assert balance(client, alice.wallet_id) == 10_000
    [listed] = client.get("/v1/payment-codes/devices", headers=alice.auth).json()["data"]
    assert listed["id"] == device["id"] and listed["blocked_at"] is not None
    shown = client.get("/v1/payment-codes/current", headers=alice.auth)
    assert shown.status_code == 423 and shown.json()["code"] == "payment_code_blocked"

    # Its owner is told: in the app, and in their security events (once).
    dispatch(client)
    notes = client.get("/v1/notifications", headers={**alice.auth, "Accept-Language": "en"}).json()["data"]
    assert [n["type"] for n in notes] == ["payment_code_blocked"]
    assert notes[0]["title"] == "Payment codes paused"
    events = client.get("/v1/me/security-events", headers=alice.auth).json()["data"]
    blocked = [e for e in events if e["event"] == "payment_code.device_blocked"]
    assert len(blocked) == 1 and blocked[0]["details"]["wrong_codes"] == limit
    assert len(blocked[0]["details"]["merchant_ids"]) == 5

    # Enabling again (step-up) gives a new secret and number; the new codes pay.
    fresh = enable(client, alice)
    assert fresh["number"] != device["number"] and fresh["blocked_at"] is None
    reset_limits(client)
    assert charge(client, carol, elsewhere["id"], code_now(fresh), 100).status_code == 201


def test_a_used_code_presented_again_is_not_a_guess(
    client: TestClient, alice: SignedUp, bob: SignedUp, shop: dict[str, Any]
) -> None:
    """A till that scans a code twice presents a right code that was already spent: refused, counted
    against the merchant, but not against the customer's device."""
    fund(client, alice, 10_000)
    device = enable(client, alice)
    code = code_now(device)
    assert charge(client, bob, shop["id"], code, 100).status_code == 201
    for _ in range(payment_code_model.DEVICE_FAILURE_LIMIT):
        assert charge(client, bob, shop["id"], code, 100).json()["code"] == "payment_code_invalid"
    assert charge(client, bob, shop["id"], code_now(device, seq=1), 100).status_code == 201


def _comparable(problem: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in problem.items() if k not in ("instance", "support_reference")}
