"""A secret is shown once, to the session that created it: replaying a create with the same
`Idempotency-Key` from another session of the same user (a new, untrusted device that never passed the
step-up) gets the object without its secret; the creating session's own retry still gets the secret."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from qianbao.security.request_signing import signing_headers
from qianbao.store.idempotency_tables import idempotency_keys
from tests.api.test_api_keys import PIN, set_pin
from tests.support.api import STRONG_PASSWORD, SignedUp, reset_limits
from tests.support.operators import identity_of

HOOK = "https://hooks.example.com/qianbao"


def other_session(client: TestClient, user: SignedUp, device: str = "a-new-phone") -> dict[str, str]:
    """The same user signed in again, from a device the account has never seen."""
    r = client.post(
        "/v1/sessions", json={"phone": user.phone, "password": STRONG_PASSWORD, "device_id": device}
    )
    assert r.status_code == 201, r.text
    return {"Authorization": f"Bearer {r.json()['token']}", "Device-Id": device}


def proved(client: TestClient, user: SignedUp, method: str, url: str, body: dict[str, Any]) -> str:
    """Ask, prove the challenge with the PIN, and return its id (for the `Step-Up` header)."""
    first = client.request(method, url, json=body, headers=user.auth)
    assert first.status_code == 401 and first.json()["code"] == "step_up_required", first.text
    challenge = str(first.json()["challenge_id"])
    reset_limits(client)
    verified = client.post(
        f"/v1/challenges/{challenge}/verify", json={"method": "pin", "pin": PIN}, headers=user.auth
    )
    assert verified.status_code == 200, verified.text
    return challenge


def create_key(
    client: TestClient, user: SignedUp, scopes: tuple[str, ...] = ("read",)
) -> tuple[str, dict[str, Any], dict[str, str]]:
    body = {"name": "till", "scopes": list(scopes)}
    step_up = proved(client, user, "POST", "/v1/api-keys", body)
    return "/v1/api-keys", body, {"Step-Up": step_up}


def rotate_key(client: TestClient, user: SignedUp) -> tuple[str, dict[str, Any], dict[str, str]]:
    create_url, body, step_up = create_key(client, user)
    key = client.post(create_url, json=body, headers={**user.auth, **step_up}).json()
    url = f"/v1/api-keys/{key['id']}/rotate"
    return url, {}, {"Step-Up": proved(client, user, "POST", url, {})}


def enable_payment_codes(client: TestClient, user: SignedUp) -> tuple[str, dict[str, Any], dict[str, str]]:
    body = {"wallet_id": user.wallet_id}
    step_up = proved(client, user, "POST", "/v1/payment-codes/devices", body)
    return "/v1/payment-codes/devices", body, {"Step-Up": step_up}


def create_webhook(client: TestClient, user: SignedUp) -> tuple[str, dict[str, Any], dict[str, str]]:
    del client, user
    return "/v1/webhook-endpoints", {"url": HOOK, "events": ["*"]}, {}


def rotate_webhook_secret(client: TestClient, user: SignedUp) -> tuple[str, dict[str, Any], dict[str, str]]:
    created = client.post("/v1/webhook-endpoints", json={"url": HOOK, "events": ["*"]}, headers=user.auth)
    assert created.status_code == 201, created.text
    return f"/v1/webhook-endpoints/{created.json()['id']}/rotate-secret", {}, {}


CREATES: dict[str, Callable[[TestClient, SignedUp], tuple[str, dict[str, Any], dict[str, str]]]] = {
    "api key": create_key,
    "api key rotation": rotate_key,
    "payment-code device": enable_payment_codes,
    "webhook endpoint": create_webhook,
    "webhook secret rotation": rotate_webhook_secret,
}


@pytest.mark.parametrize("what", list(CREATES))
def test_a_replay_from_another_session_gets_the_object_without_its_secret(
    client: TestClient, alice: SignedUp, what: str
) -> None:
    set_pin(client, alice)
    url, body, step_up = CREATES[what](client, alice)
    key = {"Idempotency-Key": f"create-{what}"}
    created = client.post(url, json=body, headers={**alice.auth, **step_up, **key})
    assert created.status_code == 201, created.text
    secret = created.json()["secret"]
    assert isinstance(secret, str) and secret

    # Another session of the same user, on a new device, without Step-Up: the object, never the secret.
    intruder = other_session(client, alice)
    replayed = client.post(url, json=body, headers={**intruder, **key})
    assert replayed.status_code == 201, replayed.text
    assert replayed.json() == {**created.json(), "secret": None}
    assert secret not in replayed.text

    # The session that met the step-up retries (its answer was lost): it gets the secret again.
    retried = client.post(url, json=body, headers={**alice.auth, **step_up, **key})
    assert retried.status_code == 201 and retried.json() == created.json()


def test_an_api_key_replaying_its_own_create_gets_the_secret(client: TestClient, alice: SignedUp) -> None:
    """For a signed request the caller is the key: its own retry gets the secret again."""
    set_pin(client, alice)
    url, body, step_up = create_key(client, alice, ("webhooks:manage",))
    manager = client.post(url, json=body, headers={**alice.auth, **step_up}).json()
    raw = json.dumps({"url": HOOK, "events": ["*"]}).encode()

    def create_by_key() -> Any:
        headers = signing_headers(manager["id"], manager["secret"], "POST", "/v1/webhook-endpoints", "", raw)
        headers |= {"Idempotency-Key": "hook-by-key", "Content-Type": "application/json"}
        return client.post("/v1/webhook-endpoints", content=raw, headers=headers)

    first = create_by_key()
    assert first.status_code == 201 and first.json()["secret"], first.text
    assert create_by_key().json() == first.json()


def test_answers_stored_before_the_rule_show_their_secret_to_no_one(
    client: TestClient, alice: SignedUp
) -> None:
    """A sealed answer without the caller it belongs to (stored by an older version) is replayed without
    the secret: the safe side."""
    set_pin(client, alice)
    url, body, step_up = create_key(client, alice)
    key = {"Idempotency-Key": "old-record"}
    created = client.post(url, json=body, headers={**alice.auth, **step_up, **key})
    assert created.status_code == 201
    ctx = identity_of(client)
    with ctx.db.write() as conn:
        stored = conn.execute(
            select(idempotency_keys.c.response).where(idempotency_keys.c.key == "old-record")
        ).scalar_one()
        assert set(stored) == {"sealed", "shown_to"}
        assert created.json()["secret"] not in json.dumps(stored)
        conn.execute(
            idempotency_keys.update()
            .where(idempotency_keys.c.key == "old-record")
            .values(response={"sealed": stored["sealed"]})
        )
    replayed = client.post(url, json=body, headers={**alice.auth, **step_up, **key})
    assert replayed.status_code == 201 and replayed.json()["secret"] is None
