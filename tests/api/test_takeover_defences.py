"""Someone holding only the password, signed in on a new device, cannot turn that into the account.

They cannot set the first PIN, enrol TOTP or add a passkey without a step-up (which needs the owner's
phone), cannot spend a challenge the owner proved in another session, and the owner hears about the
sign-in even when no device id was sent.
"""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.support.api import STRONG_PASSWORD, SignedUp, reset_limits
from tests.support.authenticator import SoftwareAuthenticator


def intruder_session(
    client: TestClient, user: SignedUp, device: str | None = "intruder-phone"
) -> dict[str, str]:
    body = {"phone": user.phone, "password": STRONG_PASSWORD}
    if device is not None:
        body["device_id"] = device
    r = client.post("/v1/sessions", json=body)
    assert r.status_code == 201 and r.json()["new_device"] is True
    return {"Authorization": f"Bearer {r.json()['token']}"}


def asks_for_step_up(response: object, reason: str) -> None:
    body = response.json()  # type: ignore[attr-defined]
    assert response.status_code == 401, body  # type: ignore[attr-defined]
    assert body["code"] == "step_up_required" and reason in body["reasons"]


def test_a_new_device_cannot_add_the_first_pin_or_second_factor(client: TestClient, alice: SignedUp) -> None:
    intruder = intruder_session(client, alice)
    asks_for_step_up(client.put("/v1/me/pin", json={"pin": "384729"}, headers=intruder), "new_device")
    asks_for_step_up(client.post("/v1/me/totp", headers=intruder), "new_device")
    authenticator = SoftwareAuthenticator(rp_id="localhost", origin="http://localhost:8000")
    options = client.post("/v1/me/passkeys/options", headers=intruder).json()
    added = client.post(
        "/v1/me/passkeys", json={"credential": authenticator.create(options)}, headers=intruder
    )
    asks_for_step_up(added, "new_device")
    me = client.get("/v1/me", headers=alice.auth).json()
    assert (me["has_pin"], me["has_totp"], me["has_passkey"]) == (False, False, False)
    # From the owner's known device the first PIN needs no step-up.
    assert client.put("/v1/me/pin", json={"pin": "384729"}, headers=alice.auth).status_code == 204


def test_a_challenge_belongs_to_the_session_that_met_it(client: TestClient, alice: SignedUp) -> None:
    assert client.put("/v1/me/pin", json={"pin": "384729"}, headers=alice.auth).status_code == 204
    asked = client.put("/v1/me/pin", json={"pin": "615283"}, headers=alice.auth)
    challenge = asked.json()["challenge_id"]
    proved = client.post(
        f"/v1/challenges/{challenge}/verify", json={"method": "pin", "pin": "384729"}, headers=alice.auth
    )
    assert proved.status_code == 200
    intruder = intruder_session(client, alice)
    # Another session of the same user can neither see nor spend it.
    assert client.get(f"/v1/challenges/{challenge}", headers=intruder).status_code == 404
    stolen = client.put("/v1/me/pin", json={"pin": "615283"}, headers={**intruder, "Step-Up": challenge})
    assert stolen.status_code == 422 and stolen.json()["code"] == "challenge_invalid"
    # The proof is bound to the new PIN too: it cannot install a different one.
    other = client.put("/v1/me/pin", json={"pin": "729451"}, headers={**alice.auth, "Step-Up": challenge})
    assert other.status_code == 422 and other.json()["code"] == "challenge_invalid"
    done = client.put("/v1/me/pin", json={"pin": "615283"}, headers={**alice.auth, "Step-Up": challenge})
    assert done.status_code == 204


def test_signing_in_without_a_device_id_still_alerts_the_owner(client: TestClient, alice: SignedUp) -> None:
    before = len(client.get("/v1/sandbox/messages", params={"to": alice.phone}).json()["data"])
    reset_limits(client)
    intruder_session(client, alice, device=None)
    after = client.get("/v1/sandbox/messages", params={"to": alice.phone}).json()["data"]
    assert len(after) == before + 1 and "new device" in after[0]["text"]
