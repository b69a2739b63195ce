"""Changing the password while signed in (step-up, other sessions end), and password reset for users
whose second factor is a passkey."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.api import STRONG_PASSWORD, SignedUp, latest_code, reset_limits, with_step_up
from tests.support.authenticator import SoftwareAuthenticator

NEW_PASSWORD = "Harbour-Lantern-2027"  # noqa: S105 - a test password


def test_changing_the_password_needs_step_up_and_ends_other_sessions(
    client: TestClient, alice: SignedUp
) -> None:
    other = client.post(
        "/v1/sessions", json={"phone": alice.phone, "password": STRONG_PASSWORD, "device_id": "x"}
    )
    other_auth = {"Authorization": f"Bearer {other.json()['token']}"}
    weak = client.put("/v1/me/password", json={"new_password": "password1"}, headers=alice.auth)
    assert weak.status_code == 422 and weak.json()["code"] == "weak_password"  # refused before any challenge
    asked = client.put("/v1/me/password", json={"new_password": NEW_PASSWORD}, headers=alice.auth)
    assert asked.status_code == 401 and asked.json()["code"] == "step_up_required"
    done = with_step_up(client, alice, "PUT", "/v1/me/password", json={"new_password": NEW_PASSWORD})
    assert done.status_code == 200 and done.json()["sessions_revoked"] == 1
    assert client.get("/v1/me", headers=other_auth).status_code == 401
    assert client.get("/v1/me", headers=alice.auth).status_code == 200
    old = client.post("/v1/sessions", json={"phone": alice.phone, "password": STRONG_PASSWORD})
    assert old.status_code == 401
    new = client.post("/v1/sessions", json={"phone": alice.phone, "password": NEW_PASSWORD})
    assert new.status_code == 201
    events = [e["event"] for e in client.get("/v1/me/security-events", headers=alice.auth).json()["data"]]
    assert "password.changed" in events


def test_an_sms_code_alone_cannot_reset_the_password_of_a_passkey_user(
    client: TestClient, alice: SignedUp
) -> None:
    authenticator = SoftwareAuthenticator(rp_id="localhost", origin="http://localhost:8000")
    options = client.post("/v1/me/passkeys/options", headers=alice.auth).json()
    added = client.post(
        "/v1/me/passkeys", json={"credential": authenticator.create(options)}, headers=alice.auth
    )
    assert added.status_code == 201, added.text
    reset_limits(client)
    client.post("/v1/verifications", json={"phone": alice.phone, "purpose": "password_reset"})
    reset = client.post(
        "/v1/recovery/password",
        json={"phone": alice.phone, "code": latest_code(client, alice.phone), "new_password": NEW_PASSWORD},
    )
    assert reset.status_code == 422 and reset.json()["code"] == "second_factor_required"
    assert reset.json()["methods"] == ["passkey"]
    assert (
        client.post("/v1/sessions", json={"phone": alice.phone, "password": NEW_PASSWORD}).status_code == 401
    )
