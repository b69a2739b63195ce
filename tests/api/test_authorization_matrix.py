"""The authorization matrix: over every endpoint of the OpenAPI document, user A can never read or change
user B's objects (404, as if they did not exist), users never reach operator endpoints (403), and nobody
reaches anything without credentials (401), except the few public endpoints listed here.

The endpoints come from `/openapi.json`: a new endpoint with a path parameter fails this test until B's
object for that parameter is added to `bobs_objects`.
"""

from __future__ import annotations

import re
from typing import Any

import httpx2 as httpx
from fastapi.testclient import TestClient

from qianbao.events.dispatcher import dispatch_once
from tests.support.api import SignedUp, latest_code, reset_limits, sign_up
from tests.support.authenticator import SoftwareAuthenticator
from tests.support.operators import identity_of
from tests.support.receiver import public_resolver

PIN = "384729"
PUBLIC = {
    ("POST", "/v1/verifications"),
    ("POST", "/v1/users"),
    ("POST", "/v1/sessions"),
    ("POST", "/v1/sessions/passkey"),
    ("POST", "/v1/sessions/passkey/options"),
    ("POST", "/v1/operator/sessions"),
    ("GET", "/v1/sandbox/messages"),
    ("POST", "/v1/recovery/phone"),
    ("POST", "/v1/recovery/phone/confirm"),
    ("POST", "/v1/recovery/password"),
    ("GET", "/healthz"),
}
# Challenges of sign-in can be proved before there is a session; others need the owner's session.
PRE_SESSION = re.compile(r"^/v1/challenges/")

# A body that would be valid if the object were the caller's, so the answer is about ownership.
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("POST", "/v1/challenges/{challenge_id}/verify"): {"method": "pin", "pin": PIN},
    ("POST", "/v1/me/passkeys"): {},
    ("POST", "/v1/merchants/{merchant_id}/qr-codes"): {"amount": {"amount": 100, "currency": "CNY"}},
    ("POST", "/v1/merchants/{merchant_id}/charges"): {
        "payment_code": "281234567012345678",
        "amount": {"amount": 100, "currency": "CNY"},
    },
}
# Objects meant to be shared by their id: a checkout intent is the merchant's link for any customer to
# look at and pay (its id is the secret of that link). Cancelling one stays the merchant's alone.
SHARED = {
    ("GET", "/v1/payment-intents/{intent_id}"),
    ("POST", "/v1/payment-intents/{intent_id}/confirm"),
}


def operations(client: TestClient) -> list[tuple[str, str]]:
    document = client.get("/openapi.json").json()
    return [(m.upper(), p) for p, methods in document["paths"].items() for m in methods]


def stepped_up(client: TestClient, user: SignedUp, method: str, url: str, **kw: Any) -> Any:
    """Do a request that needs step-up, proving it with the PIN."""
    first = client.request(method, url, headers=user.auth, **kw)
    if first.status_code != 401 or first.json().get("code") != "step_up_required":
        return first
    challenge = first.json()["challenge_id"]
    proved = client.post(
        f"/v1/challenges/{challenge}/verify", json={"method": "pin", "pin": PIN}, headers=user.auth
    )
    assert proved.status_code == 200, proved.text
    return client.request(method, url, headers={**user.auth, "Step-Up": challenge}, **kw)


def bobs_objects(client: TestClient, bob: SignedUp) -> dict[str, str]:
    assert client.put("/v1/me/pin", json={"pin": PIN}, headers=bob.auth).status_code == 204
    carol = sign_up(client, name="赵六")
    reset_limits(client)
    funded = client.post(
        "/v1/sandbox/fund",
        json={"wallet_id": bob.wallet_id, "amount": {"amount": 50_000, "currency": "CNY"}},
        headers=bob.auth,
    )
    assert funded.status_code in (200, 201), funded.text
    transfer = client.post(
        "/v1/transfers",
        json={
            "from_wallet_id": bob.wallet_id,
            "to": {"wallet_id": carol.wallet_id},
            "amount": {"amount": 1_000, "currency": "CNY"},
        },
        headers=bob.auth,
    )
    assert transfer.status_code == 201, transfer.text
    challenge = client.put("/v1/me/pin", json={"pin": "615283"}, headers=bob.auth)
    assert challenge.status_code == 401, challenge.text
    session_id = next(s["id"] for s in client.get("/v1/me/sessions", headers=bob.auth).json()["data"])
    authenticator = SoftwareAuthenticator(rp_id="localhost", origin="http://localhost:8000")
    options = client.post("/v1/me/passkeys/options", headers=bob.auth).json()
    passkey = stepped_up(
        client, bob, "POST", "/v1/me/passkeys", json={"credential": authenticator.create(options)}
    )
    assert passkey.status_code == 201, passkey.text
    key = stepped_up(client, bob, "POST", "/v1/api-keys", json={"name": "shop", "scopes": ["read"]})
    assert key.status_code == 201, key.text
    endpoint = client.post(
        "/v1/webhook-endpoints",
        json={"url": "https://hooks.example.com/b", "events": ["*"]},
        headers=bob.auth,
    )
    assert endpoint.status_code == 201, endpoint.text
    request = client.post(
        "/v1/money-requests",
        json={"from": {"wallet_id": carol.wallet_id}, "to_wallet_id": bob.wallet_id, "amount": money(100)},
        headers=bob.auth,
    )
    assert request.status_code == 201, request.text
    merchant, code, payment, intent = merchant_objects(client, bob, carol)
    device = stepped_up(client, bob, "POST", "/v1/payment-codes/devices", json={"wallet_id": bob.wallet_id})
    assert device.status_code == 201, device.text
    dispatch_once(
        identity_of(client),
        transport=httpx.MockTransport(lambda _: httpx.Response(500)),
        resolver=public_resolver,
    )
    endpoint_id = endpoint.json()["id"]
    event_id = client.get("/v1/events", headers=bob.auth).json()["data"][0]["id"]
    deliveries = client.get(f"/v1/webhook-endpoints/{endpoint_id}/deliveries", headers=bob.auth).json()
    return {
        "endpoint_id": endpoint_id,
        "delivery_id": deliveries["data"][0]["id"],
        "event_id": event_id,
        "request_id": request.json()["id"],
        "merchant_id": merchant,
        "code_id": code,
        "payment_id": payment,
        "intent_id": intent,
        "device_reg_id": device.json()["id"],
        "wallet_id": bob.wallet_id,
        "transfer_id": transfer.json()["id"],
        "challenge_id": challenge.json()["challenge_id"],
        "session_id": session_id,
        "passkey_id": passkey.json()["id"],
        "key_id": key.json()["id"],
    }


def money(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY"}


def merchant_objects(client: TestClient, bob: SignedUp, carol: SignedUp) -> tuple[str, str, str, str]:
    """B's shop with a dynamic QR code and a checkout intent, and a payment B made to C's shop."""
    shop = client.post(
        "/v1/merchants", json={"name": "B Shop", "mcc": "5411", "city": "Shanghai"}, headers=bob.auth
    )
    assert shop.status_code == 201, shop.text
    merchant_id = shop.json()["id"]
    code = client.post(f"/v1/merchants/{merchant_id}/qr-codes", json={"amount": money(100)}, headers=bob.auth)
    assert code.status_code == 201, code.text
    intent = client.post(
        "/v1/payment-intents", json={"merchant_id": merchant_id, "amount": money(100)}, headers=bob.auth
    )
    assert intent.status_code == 201, intent.text
    carols = client.post(
        "/v1/merchants", json={"name": "C Shop", "mcc": "5411", "city": "Beijing"}, headers=carol.auth
    )
    static = client.get(f"/v1/merchants/{carols.json()['id']}/qr", headers=carol.auth).json()["payload"]
    paid = client.post(
        "/v1/payments",
        json={"from_wallet_id": bob.wallet_id, "qr": static, "amount": money(500)},
        headers=bob.auth,
    )
    assert paid.status_code == 201, paid.text
    return merchant_id, code.json()["id"], paid.json()["id"], intent.json()["id"]


def fill(path: str, objects: dict[str, str]) -> str:
    def substitute(match: re.Match[str]) -> str:
        name = match.group(1)
        assert name in objects, f"{path}: add one of B's objects for {{{name}}} to bobs_objects"
        return objects[name]

    return re.sub(r"\{([^}]+)\}", substitute, path)


def test_user_a_never_reaches_user_b_objects(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    objects = bobs_objects(client, bob)
    checked = 0
    for method, path in operations(client):
        if "{" not in path or path.startswith("/v1/operator/") or (method, path) in SHARED:
            continue
        url = fill(path, objects)
        response = client.request(method, url, headers=alice.auth, json=BODIES.get((method, path), {}))
        assert response.status_code == 404, f"{method} {path} as A on B's object: {response.text[:300]}"
        assert response.json()["code"] == "not_found"
        checked += 1
    assert checked >= 10
    # Objects named in bodies rather than paths.
    money = {"amount": 100, "currency": "CNY"}
    pay = client.post(
        "/v1/transfers",
        json={"from_wallet_id": bob.wallet_id, "to": {"wallet_id": alice.wallet_id}, "amount": money},
        headers=alice.auth,
    )
    assert pay.status_code == 404
    fund = client.post(
        "/v1/sandbox/fund", json={"wallet_id": bob.wallet_id, "amount": money}, headers=alice.auth
    )
    assert fund.status_code == 404
    # And B still sees all of it.
    assert client.get(f"/v1/wallets/{bob.wallet_id}", headers=bob.auth).status_code == 200
    assert client.get(f"/v1/transfers/{objects['transfer_id']}", headers=bob.auth).status_code == 200


def test_users_never_reach_operator_endpoints(client: TestClient, alice: SignedUp) -> None:
    checked = 0
    for method, path in operations(client):
        if not path.startswith("/v1/operator/") or (method, path) in PUBLIC:
            continue
        url = re.sub(r"\{[^}]+\}", "zz_any", path)
        response = client.request(method, url, headers=alice.auth, json={})
        assert response.status_code == 403, f"{method} {path} as a user: {response.text[:300]}"
        checked += 1
    assert checked >= 5


def test_nothing_but_the_public_endpoints_answers_without_credentials(client: TestClient) -> None:
    for method, path in operations(client):
        if (method, path) in PUBLIC or path in ("/openapi.json", "/docs", "/redoc"):
            continue
        url = re.sub(r"\{[^}]+\}", "zz_any", path)
        response = client.request(method, url, json={})
        # Body validation may answer first (422); either way nothing is reached.
        allowed = (401, 404, 422) if PRE_SESSION.match(path) else (401, 422)
        assert response.status_code in allowed, f"{method} {path} without credentials: {response.text[:300]}"


def test_a_sign_in_challenge_is_no_door_to_other_challenges(client: TestClient, bob: SignedUp) -> None:
    """Challenges can be proved before sign-in only when they are sign-in challenges."""
    assert client.put("/v1/me/pin", json={"pin": PIN}, headers=bob.auth).status_code == 204
    pin_change = client.put("/v1/me/pin", json={"pin": "615283"}, headers=bob.auth).json()["challenge_id"]
    anonymous = client.post(f"/v1/challenges/{pin_change}/verify", json={"method": "pin", "pin": PIN})
    assert anonymous.status_code == 404
    assert latest_code  # the module's helpers stay importable for the other API tests
