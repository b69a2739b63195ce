"""The step-up protocol: 401 step_up_required → prove the challenge → repeat with `Step-Up`.

Changing the payment PIN is the operation under test (a security change once a PIN exists).
"""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from qianbao.identity.tables import challenges
from qianbao.identity.totp import totp_code
from qianbao.store.database import Database
from tests.support.api import STRONG_PASSWORD, SignedUp, latest_code, reset_limits

PIN = "739152"
NEW_PIN = "582047"


def database(client: TestClient) -> Database:
    db: Database = client.app.state.container.db  # type: ignore[attr-defined]
    return db


def set_first_pin(client: TestClient, user: SignedUp, pin: str = PIN) -> None:
    r = client.put("/v1/me/pin", json={"pin": pin}, headers=user.auth)
    assert r.status_code == 204, r.text


def change_pin(client: TestClient, user: SignedUp, pin: str = NEW_PIN, step_up: str | None = None) -> Any:
    headers = {**user.auth, "Step-Up": step_up} if step_up else user.auth
    return client.put("/v1/me/pin", json={"pin": pin}, headers=headers)


def challenge_for_pin_change(client: TestClient, user: SignedUp) -> dict[str, Any]:
    r = change_pin(client, user)
    assert r.status_code == 401, r.text
    body: dict[str, Any] = r.json()
    assert body["code"] == "step_up_required"
    return body


def verify(client: TestClient, user: SignedUp, challenge_id: str, proof: dict[str, Any]) -> Any:
    return client.post(f"/v1/challenges/{challenge_id}/verify", json=proof, headers=user.auth)


def pin_works(client: TestClient, user: SignedUp, pin: str) -> bool:
    """Whether `pin` proves a fresh challenge (the challenge is then left unused)."""
    challenge = challenge_for_pin_change(client, user)
    return verify(client, user, challenge["challenge_id"], {"method": "pin", "pin": pin}).status_code == 200


def test_changing_the_pin_asks_for_step_up_and_a_pin_proof_unlocks_it(
    client: TestClient, alice: SignedUp
) -> None:
    set_first_pin(client, alice)
    body = challenge_for_pin_change(client, alice)
    assert body["status"] == 401 and body["challenge_id"].startswith("chl_")
    assert body["methods"] == ["pin", "sms"]
    assert body["reasons"] == ["security_change"]
    challenge_id = body["challenge_id"]
    shown = client.get(f"/v1/challenges/{challenge_id}", headers=alice.auth).json()
    assert shown["status"] == "pending" and shown["operation"] == "pin.change"
    # Nothing changed yet.
    assert pin_works(client, alice, PIN)
    proved = verify(client, alice, challenge_id, {"method": "pin", "pin": PIN})
    assert proved.status_code == 200 and proved.json()["status"] == "verified"
    done = change_pin(client, alice, step_up=challenge_id)
    assert done.status_code == 204, done.text
    assert client.get(f"/v1/challenges/{challenge_id}", headers=alice.auth).json()["status"] == "consumed"
    reset_limits(client)
    assert pin_works(client, alice, NEW_PIN)
    assert not pin_works(client, alice, PIN)
    events = client.get("/v1/me/security-events", headers=alice.auth).json()["data"]
    assert any(e["event"] == "pin.changed" for e in events)
    assert any(e["event"] == "step_up.verify" and e["outcome"] == "success" for e in events)


def test_an_sms_proof_unlocks_it_too(client: TestClient, alice: SignedUp) -> None:
    set_first_pin(client, alice)
    challenge_id = challenge_for_pin_change(client, alice)["challenge_id"]
    # No code sent yet: an SMS proof is refused without counting.
    early = verify(client, alice, challenge_id, {"method": "sms", "code": "123456"})
    assert early.status_code == 422 and early.json()["code"] == "challenge_invalid"
    reset_limits(client)  # the sign-up code went to this number within the minute
    assert client.post(f"/v1/challenges/{challenge_id}/sms", headers=alice.auth).status_code == 202
    code = latest_code(client, alice.phone)
    proved = verify(client, alice, challenge_id, {"method": "sms", "code": code})
    assert proved.status_code == 200, proved.text
    assert change_pin(client, alice, step_up=challenge_id).status_code == 204


def test_a_challenge_unlocks_one_request_once(client: TestClient, alice: SignedUp) -> None:
    set_first_pin(client, alice)
    challenge_id = challenge_for_pin_change(client, alice)["challenge_id"]
    # Unproved: the header alone is not enough.
    unproved = change_pin(client, alice, step_up=challenge_id)
    assert unproved.status_code == 422 and unproved.json()["code"] == "challenge_invalid"
    assert verify(client, alice, challenge_id, {"method": "pin", "pin": PIN}).status_code == 200
    assert change_pin(client, alice, step_up=challenge_id).status_code == 204
    again = change_pin(client, alice, pin="604918", step_up=challenge_id)
    assert again.status_code == 422 and again.json()["code"] == "challenge_invalid"
    # A consumed challenge cannot be proved again either.
    reverify = verify(client, alice, challenge_id, {"method": "pin", "pin": NEW_PIN})
    assert reverify.status_code == 422 and reverify.json()["code"] == "challenge_invalid"
    assert pin_works(client, alice, NEW_PIN)


def test_a_challenge_is_bound_to_its_operation(client: TestClient, alice: SignedUp) -> None:
    set_first_pin(client, alice)
    started = client.post("/v1/me/totp", headers=alice.auth).json()
    confirmed = client.post(
        "/v1/me/totp/confirm", json={"code": totp_code(started["secret"], time.time())}, headers=alice.auth
    )
    assert confirmed.status_code == 200
    challenge_id = challenge_for_pin_change(client, alice)["challenge_id"]
    assert verify(client, alice, challenge_id, {"method": "pin", "pin": PIN}).status_code == 200
    # Proved for the PIN change, it does not unlock switching TOTP off, and that attempt does not spend it.
    other = client.delete("/v1/me/totp", headers={**alice.auth, "Step-Up": challenge_id})
    assert other.status_code == 422 and other.json()["code"] == "challenge_invalid"
    assert client.get("/v1/me", headers=alice.auth).json()["has_totp"] is True
    assert change_pin(client, alice, step_up=challenge_id).status_code == 204


def test_expired_challenges_are_refused(client: TestClient, alice: SignedUp) -> None:
    set_first_pin(client, alice)
    db = database(client)
    # Expired before it was proved.
    first = challenge_for_pin_change(client, alice)["challenge_id"]
    with db.write() as conn:
        conn.execute(update(challenges).where(challenges.c.id == first).values(expires_at=1))
    assert client.get(f"/v1/challenges/{first}", headers=alice.auth).json()["status"] == "expired"
    late = verify(client, alice, first, {"method": "pin", "pin": PIN})
    assert late.status_code == 422 and late.json()["code"] == "challenge_invalid"
    # Expired between the proof and the repeated request.
    second = challenge_for_pin_change(client, alice)["challenge_id"]
    assert verify(client, alice, second, {"method": "pin", "pin": PIN}).status_code == 200
    with db.write() as conn:
        conn.execute(update(challenges).where(challenges.c.id == second).values(expires_at=1))
    r = change_pin(client, alice, step_up=second)
    assert r.status_code == 422 and r.json()["code"] == "challenge_invalid"
    assert pin_works(client, alice, PIN)


def test_challenges_live_as_long_as_the_setting_says(client: TestClient, alice: SignedUp) -> None:
    set_first_pin(client, alice)
    challenge_id = challenge_for_pin_change(client, alice)["challenge_id"]
    with database(client).read() as conn:
        row = conn.execute(select(challenges).where(challenges.c.id == challenge_id)).one()
    ttl = client.app.state.container.identity.settings.challenge_ttl_s  # type: ignore[attr-defined]
    assert row.expires_at - row.created_at == ttl * 1_000_000


def test_another_users_challenge_is_not_found(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    set_first_pin(client, alice)
    set_first_pin(client, bob, pin="604918")
    challenge_id = challenge_for_pin_change(client, alice)["challenge_id"]
    assert client.get(f"/v1/challenges/{challenge_id}", headers=bob.auth).status_code == 404
    assert verify(client, bob, challenge_id, {"method": "pin", "pin": "604918"}).status_code == 404
    assert verify(client, bob, challenge_id, {"method": "pin", "pin": PIN}).status_code == 404
    assert client.post(f"/v1/challenges/{challenge_id}/sms", headers=bob.auth).status_code == 404
    assert client.get(f"/v1/challenges/{challenge_id}/passkey-options", headers=bob.auth).status_code == 404
    # Without a session only sign-in challenges are reachable.
    assert client.get(f"/v1/challenges/{challenge_id}").status_code == 404
    assert (
        client.post(f"/v1/challenges/{challenge_id}/verify", json={"method": "pin", "pin": PIN}).status_code
        == 404
    )
    # Nor can Bob spend it on his own request.
    r = change_pin(client, bob, step_up=challenge_id)
    assert r.status_code == 422 and r.json()["code"] == "challenge_invalid"
    # Untouched for Alice.
    assert client.get(f"/v1/challenges/{challenge_id}", headers=alice.auth).json()["status"] == "pending"
    assert verify(client, alice, challenge_id, {"method": "pin", "pin": PIN}).status_code == 200
    assert change_pin(client, alice, step_up=challenge_id).status_code == 204


def test_five_wrong_proofs_end_the_challenge(client: TestClient, alice: SignedUp) -> None:
    set_first_pin(client, alice)
    challenge_id = challenge_for_pin_change(client, alice)["challenge_id"]
    reset_limits(client)
    assert client.post(f"/v1/challenges/{challenge_id}/sms", headers=alice.auth).status_code == 202
    code = latest_code(client, alice.phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        r = verify(client, alice, challenge_id, {"method": "sms", "code": wrong})
        assert r.status_code == 422 and r.json()["code"] == "second_factor_invalid"
    assert client.get(f"/v1/challenges/{challenge_id}", headers=alice.auth).json()["status"] == "failed"
    right = verify(client, alice, challenge_id, {"method": "sms", "code": code})
    assert right.status_code == 422 and right.json()["code"] == "challenge_invalid"
    assert change_pin(client, alice, step_up=challenge_id).status_code == 422
    failures = [
        e
        for e in client.get("/v1/me/security-events", headers=alice.auth).json()["data"]
        if e["event"] == "step_up.verify" and e["outcome"] == "failure"
    ]
    assert len(failures) == 5


def test_bad_proofs_are_problems_not_errors(client: TestClient, alice: SignedUp) -> None:
    set_first_pin(client, alice)
    challenge_id = challenge_for_pin_change(client, alice)["challenge_id"]
    for proof in (
        {"method": "totp", "code": "123456"},  # not one of this challenge's methods
        {"method": "carrier-pigeon"},
        {"method": "pin"},
        {"method": "pin", "pin": 123456},
        {"method": "pin", "pin": PIN, "extra": 1},
    ):
        r = verify(client, alice, challenge_id, proof)
        assert r.status_code == 422 and r.json()["code"] == "validation_error", (proof, r.text)
    reset_limits(client)
    assert client.post(f"/v1/challenges/{challenge_id}/sms", headers=alice.auth).status_code == 202
    surrogate = client.post(
        f"/v1/challenges/{challenge_id}/verify",
        content=b'{"method": "sms", "code": "\\ud800\\ud800\\ud800\\ud800\\ud800\\ud800"}',
        headers={**alice.auth, "Content-Type": "application/json"},
    )
    assert surrogate.status_code == 422 and surrogate.json()["code"] == "second_factor_invalid"
    # None of that spent the challenge's chances but the last.
    assert verify(client, alice, challenge_id, {"method": "pin", "pin": PIN}).status_code == 200


def test_proving_a_challenge_on_a_new_device_makes_it_trusted(client: TestClient, alice: SignedUp) -> None:
    set_first_pin(client, alice)
    signed_in = client.post(
        "/v1/sessions", json={"phone": alice.phone, "password": STRONG_PASSWORD, "device_id": "new-tablet"}
    )
    assert signed_in.status_code == 201 and signed_in.json()["new_device"] is True
    tablet = {"Authorization": f"Bearer {signed_in.json()['token']}"}
    assert client.get("/v1/me", headers=tablet).json()["device_trusted"] is False
    r = client.put("/v1/me/pin", json={"pin": NEW_PIN}, headers=tablet)
    assert r.status_code == 401
    assert r.json()["reasons"] == ["security_change", "new_device"]
    challenge_id = r.json()["challenge_id"]
    wrong = client.post(
        f"/v1/challenges/{challenge_id}/verify", json={"method": "pin", "pin": NEW_PIN}, headers=tablet
    )
    assert wrong.status_code == 422
    assert client.get("/v1/me", headers=tablet).json()["device_trusted"] is False
    proved = client.post(
        f"/v1/challenges/{challenge_id}/verify", json={"method": "pin", "pin": PIN}, headers=tablet
    )
    assert proved.status_code == 200
    assert client.get("/v1/me", headers=tablet).json()["device_trusted"] is True
    again = client.post(
        "/v1/sessions", json={"phone": alice.phone, "password": STRONG_PASSWORD, "device_id": "new-tablet"}
    )
    assert again.json()["new_device"] is False
