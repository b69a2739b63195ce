"""Someone holding only the password, signed in on a new device, cannot turn that into the account.

They cannot set the first PIN, enrol TOTP or add a passkey without a step-up (which needs the owner's
phone), cannot spend a challenge the owner proved in another session, and the owner hears about the
sign-in even when no device id was sent.
"""

from __future__ import annotations

import hashlib
import json
import threading

from fastapi.testclient import TestClient
from sqlalchemy import select

from qianbao.errors import RateLimited, Unauthenticated
from qianbao.identity.model import RequestInfo
from qianbao.identity.sessions import sign_in_with_password
from qianbao.store.idempotency_tables import idempotency_keys
from tests.support.api import STRONG_PASSWORD, SignedUp, latest_code, reset_limits
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


def test_a_burst_of_concurrent_password_guesses_cannot_pass_the_account_limit(
    client: TestClient, alice: SignedUp
) -> None:
    """Every attempt is counted before the password is checked, so 30 guesses at once reach the check at
    most 10 times (the rule's limit) and the rest are refused as rate-limited."""
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    outcomes: list[str] = []
    lock = threading.Lock()

    def guess(n: int) -> None:
        try:
            sign_in_with_password(
                ctx, phone_text=alice.phone, password=f"Wrong-Guess-{n}", device_key=None, info=RequestInfo()
            )
            result = "signed_in"
        except RateLimited:
            result = "limited"
        except Unauthenticated:
            result = "checked"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=guess, args=(n,)) for n in range(30)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("checked") <= 10 and outcomes.count("signed_in") == 0
    assert outcomes.count("limited") >= 20


def test_opening_step_up_challenges_is_rate_limited(client: TestClient, alice: SignedUp) -> None:
    assert client.put("/v1/me/pin", json={"pin": "384729"}, headers=alice.auth).status_code == 204
    statuses = [
        client.put("/v1/me/pin", json={"pin": "615283"}, headers=alice.auth).status_code for _ in range(31)
    ]
    assert statuses[:30] == [401] * 30 and statuses[30] == 429


def test_idempotency_fingerprints_are_keyed(client: TestClient) -> None:
    """A plain hash of a body with a phone number could be reversed by trying every number."""
    phone = "+8613912340000"
    client.post("/v1/verifications", json={"phone": phone})
    body = {"phone": phone, "code": latest_code(client, phone), "password": STRONG_PASSWORD, "name": "A"}
    assert client.post("/v1/users", json=body, headers={"Idempotency-Key": "fp-1"}).status_code == 201
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
    plain = hashlib.sha256(f"POST /v1/users\n{canonical}".encode()).hexdigest()
    db = client.app.state.container.db  # type: ignore[attr-defined]
    with db.read() as conn:
        stored = set(conn.execute(select(idempotency_keys.c.request_hash)).scalars())
    assert stored and plain not in stored
