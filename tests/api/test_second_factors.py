"""Second factors through the API: TOTP with recovery codes, passkeys, and signing in with them.

TOTP codes are computed from the real clock. Each test uses at most two codes per user: one for the
current time step and one for the next (the server accepts one step either side), so a test never depends
on where in a 30-second step it runs.
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from qianbao.identity.tables import ceremonies, passkeys, recovery_codes, users
from qianbao.identity.totp import totp_code
from qianbao.security.tables import audit_events
from qianbao.store.database import Database
from tests.support.api import STRONG_PASSWORD, SignedUp, latest_code, reset_limits
from tests.support.authenticator import SoftwareAuthenticator, b64url

ORIGIN = "http://localhost:8000"


def database(client: TestClient) -> Database:
    db: Database = client.app.state.container.db  # type: ignore[attr-defined]
    return db


def current_code(secret: str) -> str:
    return totp_code(secret, time.time())


def next_code(secret: str) -> str:
    return totp_code(secret, time.time() + 30)


def enable_totp(client: TestClient, user: SignedUp) -> tuple[str, list[str]]:
    started = client.post("/v1/me/totp", headers=user.auth)
    assert started.status_code == 201, started.text
    secret = started.json()["secret"]
    confirmed = client.post("/v1/me/totp/confirm", json={"code": current_code(secret)}, headers=user.auth)
    assert confirmed.status_code == 200, confirmed.text
    return secret, confirmed.json()["recovery_codes"]


def password_sign_in(client: TestClient, user: SignedUp, step_up: str | None = None) -> Any:
    headers = {"Step-Up": step_up} if step_up else {}
    body = {"phone": user.phone, "password": STRONG_PASSWORD, "device_id": user.device}
    return client.post("/v1/sessions", json=body, headers=headers)


def sign_in_challenge(client: TestClient, user: SignedUp) -> dict[str, Any]:
    r = password_sign_in(client, user)
    assert r.status_code == 401 and r.json()["code"] == "step_up_required", r.text
    body: dict[str, Any] = r.json()
    return body


def verify(
    client: TestClient, challenge_id: str, proof: dict[str, Any], headers: dict[str, str] | None = None
) -> Any:
    return client.post(f"/v1/challenges/{challenge_id}/verify", json=proof, headers=headers or {})


def events(client: TestClient, user: SignedUp, name: str) -> list[dict[str, Any]]:
    listed = client.get("/v1/me/security-events", params={"limit": 100}, headers=user.auth).json()["data"]
    return [e for e in listed if e["event"] == name]


def texts(client: TestClient, user: SignedUp) -> list[str]:
    return [m["text"] for m in client.get("/v1/sandbox/messages", params={"to": user.phone}).json()["data"]]


def prove_by_sms(client: TestClient, user: SignedUp, challenge_id: str) -> None:
    reset_limits(client)  # one SMS a minute per number; the sign-up code was one
    assert client.post(f"/v1/challenges/{challenge_id}/sms", headers=user.auth).status_code == 202
    r = verify(client, challenge_id, {"method": "sms", "code": latest_code(client, user.phone)}, user.auth)
    assert r.status_code == 200 and r.json()["status"] == "verified", r.text


def register_passkey(
    client: TestClient, user: SignedUp, authenticator: SoftwareAuthenticator, name: str | None = None
) -> Any:
    options = client.post("/v1/me/passkeys/options", headers=user.auth)
    assert options.status_code == 200, options.text
    credential = authenticator.create(options.json())
    body: dict[str, Any] = {"credential": credential}
    if name is not None:
        body["name"] = name
    return client.post("/v1/me/passkeys", json=body, headers=user.auth)


def passkey_sign_in(
    client: TestClient, authenticator: SoftwareAuthenticator, device: str = "pk-device"
) -> Any:
    started = client.post("/v1/sessions/passkey/options", json={})
    assert started.status_code == 200, started.text
    assertion = authenticator.get(started.json()["options"])
    return client.post(
        "/v1/sessions/passkey",
        json={"ceremony_id": started.json()["ceremony_id"], "credential": assertion, "device_id": device},
    )


@pytest.fixture
def authenticator() -> SoftwareAuthenticator:
    return SoftwareAuthenticator(rp_id="localhost", origin=ORIGIN)


# --- TOTP ----------------------------------------------------------------------------------------------


def test_totp_enrolment_stores_a_pending_encrypted_secret(client: TestClient, alice: SignedUp) -> None:
    r = client.post("/v1/me/totp", headers=alice.auth)
    assert r.status_code == 201, r.text
    body = r.json()
    secret = body["secret"]
    assert body["otpauth_uri"].startswith("otpauth://totp/") and f"secret={secret}" in body["otpauth_uri"]
    assert alice.phone[-8:] not in body["otpauth_uri"]  # the label is the masked number
    assert body["qr_svg"].startswith("<svg")
    assert r.headers["cache-control"] == "no-store"
    with database(client).read() as conn:
        row = conn.execute(select(users).where(users.c.id == alice.user_id)).one()
    assert row.totp_secret_cipher is not None and secret not in row.totp_secret_cipher
    assert row.totp_enabled_at is None
    assert client.get("/v1/me", headers=alice.auth).json()["has_totp"] is False
    # Not in force yet: signing in needs no second factor.
    assert password_sign_in(client, alice).status_code == 201


def test_totp_confirm_enables_it_and_gives_recovery_codes(client: TestClient, alice: SignedUp) -> None:
    started = client.post("/v1/me/totp", headers=alice.auth).json()
    wrong = client.post("/v1/me/totp/confirm", json={"code": "12345"}, headers=alice.auth)
    assert wrong.status_code == 422 and wrong.json()["code"] == "second_factor_invalid"
    assert client.get("/v1/me", headers=alice.auth).json()["has_totp"] is False
    r = client.post("/v1/me/totp/confirm", json={"code": current_code(started["secret"])}, headers=alice.auth)
    assert r.status_code == 200, r.text
    codes = r.json()["recovery_codes"]
    assert len(codes) == len(set(codes)) == 10
    assert all(len(c) == 11 and c[5] == "-" for c in codes)
    assert client.get("/v1/me", headers=alice.auth).json()["has_totp"] is True
    with database(client).read() as conn:
        stored = conn.execute(
            select(recovery_codes.c.code_hash).where(recovery_codes.c.user_id == alice.user_id)
        )
        hashes = set(stored.scalars())
        row = conn.execute(select(users).where(users.c.id == alice.user_id)).one()
    assert len(hashes) == 10 and not hashes & {c.replace("-", "") for c in codes} and not hashes & set(codes)
    assert row.totp_enabled_at is not None and row.totp_last_step is not None
    assert events(client, alice, "totp.enabled")
    assert any("authenticator app is now on" in t for t in texts(client, alice))
    again = client.post(
        "/v1/me/totp/confirm", json={"code": next_code(started["secret"])}, headers=alice.auth
    )
    assert again.status_code == 409


def test_sign_in_with_totp_and_a_code_is_never_accepted_twice(client: TestClient, alice: SignedUp) -> None:
    secret, _codes = enable_totp(client, alice)
    used_at_confirm = current_code(secret)
    challenge = sign_in_challenge(client, alice)
    assert "totp" in challenge["methods"] and "recovery_code" in challenge["methods"]
    assert "sms" not in challenge["methods"] and "pin" not in challenge["methods"]
    assert challenge["reasons"] == ["second_factor"]
    # Without the second factor there is no session, and the Step-Up header alone does not help.
    early = password_sign_in(client, alice, challenge["challenge_id"])
    assert early.status_code == 422 and early.json()["code"] == "challenge_invalid"
    # The code that confirmed enrolment is spent.
    replay = verify(client, challenge["challenge_id"], {"method": "totp", "code": used_at_confirm})
    assert replay.status_code == 422 and replay.json()["code"] == "second_factor_invalid"
    code = next_code(secret)
    ok = verify(client, challenge["challenge_id"], {"method": "totp", "code": code})
    assert ok.status_code == 200 and ok.json()["status"] == "verified", ok.text
    session = password_sign_in(client, alice, challenge["challenge_id"])
    assert session.status_code == 201, session.text
    token = session.json()["token"]
    assert client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).status_code == 200
    # The same code at the next sign-in is refused.
    second = sign_in_challenge(client, alice)
    replayed = verify(client, second["challenge_id"], {"method": "totp", "code": code})
    assert replayed.status_code == 422 and replayed.json()["code"] == "second_factor_invalid"
    assert password_sign_in(client, alice, second["challenge_id"]).status_code == 422


def test_a_recovery_code_works_once(client: TestClient, alice: SignedUp) -> None:
    _secret, codes = enable_totp(client, alice)
    challenge = sign_in_challenge(client, alice)
    typed = codes[0].upper().replace("-", " ")  # what a person types: case and separators do not matter
    ok = verify(client, challenge["challenge_id"], {"method": "recovery_code", "code": typed})
    assert ok.status_code == 200, ok.text
    assert password_sign_in(client, alice, challenge["challenge_id"]).status_code == 201
    used = events(client, alice, "recovery_code.used")
    assert used and used[0]["details"] == {"remaining": 9}
    assert any("recovery code was used" in t for t in texts(client, alice))
    second = sign_in_challenge(client, alice)
    again = verify(client, second["challenge_id"], {"method": "recovery_code", "code": codes[0]})
    assert again.status_code == 422 and again.json()["code"] == "second_factor_invalid"
    for junk in ("", "not-a-code", "abcde-fghij-k"):
        bad = verify(client, second["challenge_id"], {"method": "recovery_code", "code": junk})
        assert bad.status_code == 422 and bad.json()["code"] == "second_factor_invalid"
    lone_surrogates = b'{"method": "recovery_code", "code": "' + b"\\ud800" * 10 + b'"}'
    bad = client.post(
        f"/v1/challenges/{second['challenge_id']}/verify",
        content=lone_surrogates,
        headers={"Content-Type": "application/json"},
    )
    assert bad.status_code == 422 and bad.json()["code"] == "second_factor_invalid"
    # Five wrong proofs ended that challenge; another code works on a new one.
    assert client.get(f"/v1/challenges/{second['challenge_id']}").json()["status"] == "failed"
    third = sign_in_challenge(client, alice)
    assert (
        verify(client, third["challenge_id"], {"method": "recovery_code", "code": codes[1]}).status_code
        == 200
    )
    with database(client).read() as conn:
        spent = conn.execute(
            select(func.count()).where(
                recovery_codes.c.user_id == alice.user_id, recovery_codes.c.used_at.is_not(None)
            )
        ).scalar_one()
    assert spent == 2


def test_recovery_codes_only_appear_as_a_method_while_unused_ones_remain(
    client: TestClient, alice: SignedUp
) -> None:
    _secret, codes = enable_totp(client, alice)
    with database(client).write() as conn:
        conn.execute(
            update(recovery_codes).where(recovery_codes.c.user_id == alice.user_id).values(used_at=1)
        )
    assert sign_in_challenge(client, alice)["methods"] == ["totp"]


def test_disabling_totp_needs_step_up_and_removes_recovery_codes(client: TestClient, alice: SignedUp) -> None:
    _secret, codes = enable_totp(client, alice)
    r = client.delete("/v1/me/totp", headers=alice.auth)
    assert r.status_code == 401 and r.json()["code"] == "step_up_required"
    assert r.json()["reasons"] == ["security_change"]
    challenge_id = r.json()["challenge_id"]
    assert client.get(f"/v1/challenges/{challenge_id}", headers=alice.auth).json()["operation"] == (
        "second_factor.change"
    )
    assert client.get("/v1/me", headers=alice.auth).json()["has_totp"] is True
    proof = verify(client, challenge_id, {"method": "recovery_code", "code": codes[0]}, alice.auth)
    assert proof.status_code == 200
    done = client.delete("/v1/me/totp", headers={**alice.auth, "Step-Up": challenge_id})
    assert done.status_code == 204, done.text
    assert client.get("/v1/me", headers=alice.auth).json()["has_totp"] is False
    with database(client).read() as conn:
        left = conn.execute(
            select(func.count()).where(recovery_codes.c.user_id == alice.user_id)
        ).scalar_one()
    assert left == 0
    assert events(client, alice, "totp.disabled")
    assert any("is now off" in t for t in texts(client, alice))
    assert password_sign_in(client, alice).status_code == 201
    assert client.delete("/v1/me/totp", headers=alice.auth).status_code == 404


def test_re_enrolling_totp_is_a_security_change(client: TestClient, alice: SignedUp) -> None:
    old_secret, _codes = enable_totp(client, alice)
    r = client.post("/v1/me/totp", headers=alice.auth)
    assert r.status_code == 401 and r.json()["code"] == "step_up_required"
    assert "sms" in r.json()["methods"]
    prove_by_sms(client, alice, r.json()["challenge_id"])
    again = client.post("/v1/me/totp", headers={**alice.auth, "Step-Up": r.json()["challenge_id"]})
    assert again.status_code == 201
    new_secret = again.json()["secret"]
    assert new_secret != old_secret
    # Off until the new secret is confirmed; the old codes went with it.
    assert client.get("/v1/me", headers=alice.auth).json()["has_totp"] is False
    assert [e["details"] for e in events(client, alice, "totp.disabled")] == [{"reason": "re_enrol"}]
    confirmed = client.post("/v1/me/totp/confirm", json={"code": next_code(new_secret)}, headers=alice.auth)
    assert confirmed.status_code == 200
    assert client.get("/v1/me", headers=alice.auth).json()["has_totp"] is True


def test_new_recovery_codes_replace_the_old_ones(client: TestClient, alice: SignedUp) -> None:
    assert client.post("/v1/me/recovery-codes", headers=alice.auth).status_code == 409  # no TOTP yet
    _secret, old = enable_totp(client, alice)
    r = client.post("/v1/me/recovery-codes", headers=alice.auth)
    assert r.status_code == 401 and r.json()["code"] == "step_up_required"
    challenge_id = r.json()["challenge_id"]
    assert (
        verify(client, challenge_id, {"method": "recovery_code", "code": old[0]}, alice.auth).status_code
        == 200
    )
    new = client.post("/v1/me/recovery-codes", headers={**alice.auth, "Step-Up": challenge_id})
    assert new.status_code == 201, new.text
    fresh = new.json()["recovery_codes"]
    assert len(fresh) == 10 and not set(fresh) & set(old)
    assert events(client, alice, "recovery_codes.regenerated")
    assert any("new recovery codes" in t for t in texts(client, alice))
    challenge = sign_in_challenge(client, alice)
    stale = verify(client, challenge["challenge_id"], {"method": "recovery_code", "code": old[1]})
    assert stale.status_code == 422
    assert (
        verify(client, challenge["challenge_id"], {"method": "recovery_code", "code": fresh[0]}).status_code
        == 200
    )


def test_totp_endpoints_need_a_signed_in_user(client: TestClient) -> None:
    assert client.post("/v1/me/totp").status_code == 401
    assert client.post("/v1/me/totp/confirm", json={"code": "123456"}).status_code == 401
    assert client.delete("/v1/me/totp").status_code == 401
    assert client.post("/v1/me/recovery-codes").status_code == 401


# --- passkeys ------------------------------------------------------------------------------------------


def test_register_a_passkey_and_sign_in_with_it(
    client: TestClient, alice: SignedUp, authenticator: SoftwareAuthenticator
) -> None:
    options = client.post("/v1/me/passkeys/options", headers=alice.auth)
    assert options.status_code == 200
    body = options.json()
    assert body["rp"]["id"] == "localhost"
    assert body["user"]["id"] == b64url(alice.user_id.encode())  # the user handle is the opaque user id
    assert alice.phone[-8:] not in str(body)  # no phone number in what the authenticator keeps
    credential = authenticator.create(body)
    added = client.post(
        "/v1/me/passkeys", json={"credential": credential, "name": "我的手机"}, headers=alice.auth
    )
    assert added.status_code == 201, added.text
    assert set(added.json()) == {"id", "name", "created_at", "last_used_at"}
    assert added.json()["name"] == "我的手机"
    listed = client.get("/v1/me/passkeys", headers=alice.auth).json()
    assert [p["id"] for p in listed["data"]] == [added.json()["id"]] and listed["next_cursor"] is None
    assert client.get("/v1/me", headers=alice.auth).json()["has_passkey"] is True
    assert events(client, alice, "passkey.added")
    assert any("passkey was added" in t for t in texts(client, alice))
    with database(client).read() as conn:
        ceremony = conn.execute(select(ceremonies).where(ceremonies.c.user_id == alice.user_id)).one()
    assert ceremony.kind == "passkey_register" and ceremony.consumed_at is not None
    assert ceremony.expires_at - ceremony.created_at == 300_000_000

    session = passkey_sign_in(client, authenticator)
    assert session.status_code == 201, session.text
    assert session.json()["user_id"] == alice.user_id
    token = session.json()["token"]
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"})
    assert me.status_code == 200 and me.json()["id"] == alice.user_id
    sign_ins = [
        e for e in events(client, alice, "session.sign_in") if e["details"].get("method") == "passkey"
    ]
    assert sign_ins and sign_ins[0]["outcome"] == "success"
    assert client.get("/v1/me/passkeys", headers=alice.auth).json()["data"][0]["last_used_at"] is not None


def test_the_same_registration_cannot_be_used_twice_and_duplicates_are_refused(
    client: TestClient,
    alice: SignedUp,
    bob: SignedUp,
    authenticator: SoftwareAuthenticator,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    options = client.post("/v1/me/passkeys/options", headers=alice.auth).json()
    credential = authenticator.create(options)
    assert (
        client.post("/v1/me/passkeys", json={"credential": credential}, headers=alice.auth).status_code == 201
    )
    again = client.post("/v1/me/passkeys", json={"credential": credential}, headers=alice.auth)
    assert again.status_code == 422 and again.json()["code"] == "passkey_invalid"
    # Another authenticator presenting the same credential id, for Bob: refused, whoever asks.
    (credential_id,) = authenticator.credentials
    copy = SoftwareAuthenticator(rp_id="localhost", origin=ORIGIN)
    bob_options = client.post("/v1/me/passkeys/options", headers=bob.auth).json()
    with monkeypatch.context() as patch:
        patch.setattr(secrets, "token_bytes", lambda _n=32: credential_id)
        duplicate = copy.create(bob_options)
    r = client.post("/v1/me/passkeys", json={"credential": duplicate}, headers=bob.auth)
    assert r.status_code == 409 and r.json()["code"] == "passkey_already_registered"
    assert client.get("/v1/me/passkeys", headers=bob.auth).json()["data"] == []


def test_bad_registrations_are_refused_without_a_500(
    client: TestClient, alice: SignedUp, authenticator: SoftwareAuthenticator
) -> None:
    options = client.post("/v1/me/passkeys/options", headers=alice.auth).json()
    credential = authenticator.create(options)
    for broken in (
        {},
        {"response": "x"},
        {**credential, "response": {**credential["response"], "clientDataJSON": "!!"}},
        {**credential, "response": {**credential["response"], "attestationObject": "AAAA"}},
        # Nested far deeper than any JSON parser recurses, yet within the 64 KiB a request body may have.
        {**credential, "response": {**credential["response"], "clientDataJSON": b64url(b"[" * 40_000)}},
    ):
        r = client.post("/v1/me/passkeys", json={"credential": broken}, headers=alice.auth)
        assert r.status_code == 422 and r.json()["code"] == "passkey_invalid", (broken, r.text)
    long_name = client.post(
        "/v1/me/passkeys", json={"credential": credential, "name": "x" * 65}, headers=alice.auth
    )
    assert long_name.status_code == 422 and long_name.json()["code"] == "validation_error"
    # A phishing page's registration (another origin) is refused.
    phish = SoftwareAuthenticator(rp_id="localhost", origin="https://qianbao.evil.example")
    r = client.post(
        "/v1/me/passkeys",
        json={"credential": phish.create(client.post("/v1/me/passkeys/options", headers=alice.auth).json())},
        headers=alice.auth,
    )
    assert r.status_code == 422 and r.json()["reason"] == "origin_mismatch"
    # An expired ceremony.
    with database(client).write() as conn:
        conn.execute(update(ceremonies).where(ceremonies.c.user_id == alice.user_id).values(expires_at=0))
    expired = client.post("/v1/me/passkeys", json={"credential": credential}, headers=alice.auth)
    assert expired.status_code == 422 and expired.json()["reason"] == "ceremony_expired"
    assert client.get("/v1/me/passkeys", headers=alice.auth).json()["data"] == []


def test_a_wrong_origin_assertion_is_refused_and_audited(
    client: TestClient, alice: SignedUp, authenticator: SoftwareAuthenticator
) -> None:
    assert register_passkey(client, alice, authenticator).status_code == 201
    phishing = SoftwareAuthenticator(rp_id="localhost", origin="https://qianbao.evil.example")
    phishing.credentials = authenticator.credentials  # the same passkey, used on another site's page
    r = passkey_sign_in(client, phishing)
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    assert "token" not in r.json()
    failures = [e for e in events(client, alice, "session.sign_in") if e["outcome"] == "failure"]
    assert failures and failures[0]["details"] == {"method": "passkey", "reason": "origin_mismatch"}


def test_passkey_sign_in_failures_are_all_401(
    client: TestClient, alice: SignedUp, authenticator: SoftwareAuthenticator
) -> None:
    assert register_passkey(client, alice, authenticator).status_code == 201
    started = client.post("/v1/sessions/passkey/options", json={}).json()
    assert started["options"]["allowCredentials"] == []
    assertion = authenticator.get(started["options"])
    unknown = SoftwareAuthenticator(rp_id="localhost", origin=ORIGIN)
    unknown.create(client.post("/v1/me/passkeys/options", headers=alice.auth).json())  # never registered
    for ceremony_id, credential in (
        ("cer_nonexistent", assertion),
        (started["ceremony_id"], {"rawId": "!!"}),
        (started["ceremony_id"], {}),
    ):
        r = client.post("/v1/sessions/passkey", json={"ceremony_id": ceremony_id, "credential": credential})
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated", r.text
    # A failed attempt spent the ceremony: even the right assertion needs a new one.
    spent = client.post(
        "/v1/sessions/passkey", json={"ceremony_id": started["ceremony_id"], "credential": assertion}
    )
    assert spent.status_code == 401
    second = client.post("/v1/sessions/passkey/options", json={}).json()
    r = client.post(
        "/v1/sessions/passkey",
        json={"ceremony_id": second["ceremony_id"], "credential": unknown.get(second["options"])},
    )
    assert r.status_code == 401
    ok = passkey_sign_in(client, authenticator)
    assert ok.status_code == 201
    with database(client).read() as conn:
        used = conn.execute(
            select(func.count()).where(
                ceremonies.c.kind == "passkey_signin", ceremonies.c.consumed_at.is_not(None)
            )
        ).scalar_one()
    assert used == 3
    bad_body = client.post("/v1/sessions/passkey", json={"ceremony_id": 1, "credential": {}})
    assert bad_body.status_code == 422 and bad_body.json()["code"] == "validation_error"


def test_a_cloned_authenticator_is_refused(
    client: TestClient, alice: SignedUp, authenticator: SoftwareAuthenticator
) -> None:
    assert register_passkey(client, alice, authenticator).status_code == 201
    assert passkey_sign_in(client, authenticator).status_code == 201
    (stored,) = authenticator.credentials.values()
    stored.sign_count = 0  # a copy whose counter is behind the original's
    assert passkey_sign_in(client, authenticator).status_code == 401


def test_passkey_as_a_step_up_method_at_sign_in(
    client: TestClient, alice: SignedUp, authenticator: SoftwareAuthenticator
) -> None:
    assert register_passkey(client, alice, authenticator).status_code == 201
    challenge = sign_in_challenge(client, alice)
    assert challenge["methods"] == ["passkey"]
    challenge_id = challenge["challenge_id"]
    options = client.get(f"/v1/challenges/{challenge_id}/passkey-options")
    assert options.status_code == 200
    assert len(options.json()["allowCredentials"]) == 1
    phishing = SoftwareAuthenticator(rp_id="localhost", origin="https://qianbao.evil.example")
    phishing.credentials = authenticator.credentials
    refused = verify(client, challenge_id, {"method": "passkey", "credential": phishing.get(options.json())})
    assert refused.status_code == 422 and refused.json()["code"] == "second_factor_invalid"
    ok = verify(client, challenge_id, {"method": "passkey", "credential": authenticator.get(options.json())})
    assert ok.status_code == 200 and ok.json()["status"] == "verified", ok.text
    session = password_sign_in(client, alice, challenge_id)
    assert session.status_code == 201, session.text


def test_a_second_passkey_needs_step_up_and_removing_one_too(
    client: TestClient, alice: SignedUp, bob: SignedUp, authenticator: SoftwareAuthenticator
) -> None:
    first = register_passkey(client, alice, authenticator, name="phone")
    assert first.status_code == 201
    laptop = SoftwareAuthenticator(rp_id="localhost", origin=ORIGIN)
    options = client.post("/v1/me/passkeys/options", headers=alice.auth).json()
    assert len(options["excludeCredentials"]) == 1
    credential = laptop.create(options)
    body = {"credential": credential, "name": "laptop"}
    r = client.post("/v1/me/passkeys", json=body, headers=alice.auth)
    assert r.status_code == 401 and r.json()["code"] == "step_up_required"
    challenge_id = r.json()["challenge_id"]
    assert "passkey" in r.json()["methods"]
    proof_options = client.get(f"/v1/challenges/{challenge_id}/passkey-options", headers=alice.auth).json()
    proof = {"method": "passkey", "credential": authenticator.get(proof_options)}
    assert verify(client, challenge_id, proof, alice.auth).status_code == 200
    added = client.post("/v1/me/passkeys", json=body, headers={**alice.auth, "Step-Up": challenge_id})
    assert added.status_code == 201, added.text
    assert [p["name"] for p in client.get("/v1/me/passkeys", headers=alice.auth).json()["data"]] == [
        "phone",
        "laptop",
    ]
    add_challenge = challenge_id

    target = first.json()["id"]
    assert client.delete(f"/v1/me/passkeys/{target}", headers=bob.auth).status_code == 404
    assert client.delete("/v1/me/passkeys/pky_nonexistent", headers=alice.auth).status_code == 404
    r = client.delete(f"/v1/me/passkeys/{target}", headers=alice.auth)
    assert r.status_code == 401 and r.json()["code"] == "step_up_required"
    challenge_id = r.json()["challenge_id"]
    # The proof for adding a passkey does not unlock removing one.
    old = client.delete(f"/v1/me/passkeys/{target}", headers={**alice.auth, "Step-Up": add_challenge})
    assert old.status_code == 422 and old.json()["code"] == "challenge_invalid"
    proof_options = client.get(f"/v1/challenges/{challenge_id}/passkey-options", headers=alice.auth).json()
    proof = {"method": "passkey", "credential": laptop.get(proof_options)}
    assert verify(client, challenge_id, proof, alice.auth).status_code == 200
    gone = client.delete(f"/v1/me/passkeys/{target}", headers={**alice.auth, "Step-Up": challenge_id})
    assert gone.status_code == 204
    assert [p["name"] for p in client.get("/v1/me/passkeys", headers=alice.auth).json()["data"]] == ["laptop"]
    assert events(client, alice, "passkey.removed")
    with database(client).read() as conn:
        assert conn.execute(select(func.count()).where(passkeys.c.user_id == alice.user_id)).scalar_one() == 1
    # The removed passkey no longer signs in.
    assert passkey_sign_in(client, authenticator).status_code == 401


def test_passkeys_of_one_user_are_invisible_to_another(
    client: TestClient, alice: SignedUp, bob: SignedUp, authenticator: SoftwareAuthenticator
) -> None:
    assert register_passkey(client, alice, authenticator).status_code == 201
    assert client.get("/v1/me/passkeys", headers=bob.auth).json()["data"] == []
    assert client.get("/v1/me/passkeys").status_code == 401
    # Bob cannot finish a registration Alice started.
    options = client.post("/v1/me/passkeys/options", headers=alice.auth).json()
    credential = SoftwareAuthenticator(rp_id="localhost", origin=ORIGIN).create(options)
    r = client.post("/v1/me/passkeys", json={"credential": credential}, headers=bob.auth)
    assert r.status_code == 422 and r.json()["code"] == "passkey_invalid"


def test_audit_details_hold_no_secrets(client: TestClient, alice: SignedUp) -> None:
    secret, codes = enable_totp(client, alice)
    with database(client).read() as conn:
        details = [str(d) for d in conn.execute(select(audit_events.c.details)).scalars()]
    for value in (secret, *codes, alice.phone):
        assert not any(value in d for d in details)


def test_enrolling_totp_next_to_a_passkey_needs_step_up(
    client: TestClient, alice: SignedUp, authenticator: SoftwareAuthenticator
) -> None:
    assert register_passkey(client, alice, authenticator).status_code == 201
    r = client.post("/v1/me/totp", headers=alice.auth)
    assert r.status_code == 401 and r.json()["code"] == "step_up_required"
    challenge_id = r.json()["challenge_id"]
    options = client.get(f"/v1/challenges/{challenge_id}/passkey-options", headers=alice.auth).json()
    proof = {"method": "passkey", "credential": authenticator.get(options)}
    assert verify(client, challenge_id, proof, alice.auth).status_code == 200
    assert client.post("/v1/me/totp", headers={**alice.auth, "Step-Up": challenge_id}).status_code == 201
