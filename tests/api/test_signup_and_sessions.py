"""Sign-up by SMS code, sign-in, sessions, devices, the profile and security events."""

from __future__ import annotations

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from qianbao.identity.tables import sessions, verifications
from qianbao.store.database import Database
from tests.support.api import STRONG_PASSWORD, SignedUp, latest_code, new_phone, reset_limits, sign_up


def test_sign_up_and_sign_in_as_api_md_describes(client: TestClient) -> None:
    phone = "+86 138 0013 8000"
    assert client.post("/v1/verifications", json={"phone": phone}).status_code == 202
    messages = client.get("/v1/sandbox/messages", params={"to": "13800138000"}).json()["data"]
    assert messages[0]["to"] == "+8613800138000"
    code = messages[0]["code"]
    assert code and len(code) == 6 and code in messages[0]["text"]
    created = client.post(
        "/v1/users", json={"phone": phone, "code": code, "password": STRONG_PASSWORD, "name": "张三"}
    )
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"].startswith("usr_")
    assert body["phone_masked"] == "138****8000"
    assert body["kyc_tier"] == 4
    session = client.post("/v1/sessions", json={"phone": "+8613800138000", "password": STRONG_PASSWORD})
    assert session.status_code == 201
    token = session.json()["token"]
    assert session.json()["user_id"] == body["id"]
    me = client.get("/v1/me", headers={"Authorization": f"Bearer {token}"}).json()
    assert me["name_masked"] == "张*" and me["phone_masked"] == "138****8000"


def test_a_code_is_single_use_and_wrong_codes_fail(client: TestClient) -> None:
    phone = new_phone()
    client.post("/v1/verifications", json={"phone": phone})
    code = latest_code(client, phone)
    wrong = "000000" if code != "000000" else "111111"
    bad = client.post(
        "/v1/users", json={"phone": phone, "code": wrong, "password": STRONG_PASSWORD, "name": "A"}
    )
    assert bad.status_code == 422 and bad.json()["code"] == "verification_failed"
    ok = client.post(
        "/v1/users", json={"phone": phone, "code": code, "password": STRONG_PASSWORD, "name": "A"}
    )
    assert ok.status_code == 201
    again = client.post(
        "/v1/users", json={"phone": phone, "code": code, "password": STRONG_PASSWORD, "name": "A"}
    )
    # The code is spent; and a registered number is never told apart from a wrong code.
    assert again.status_code == 422 and again.json()["code"] == "verification_failed"


def test_weak_passwords_are_refused_with_reasons(client: TestClient) -> None:
    phone = new_phone()
    client.post("/v1/verifications", json={"phone": phone})
    code = latest_code(client, phone)
    for password in ("password", "12345678", "short"):
        r = client.post("/v1/users", json={"phone": phone, "code": code, "password": password, "name": "A"})
        assert r.status_code == 422 and r.json()["code"] == "weak_password", password
        assert r.json()["reasons"]
    # The code was not spent by the refusals.
    r = client.post(
        "/v1/users", json={"phone": phone, "code": code, "password": STRONG_PASSWORD, "name": "A"}
    )
    assert r.status_code == 201


def test_wrong_password_is_401_and_audited(client: TestClient, alice: SignedUp) -> None:
    r = client.post("/v1/sessions", json={"phone": alice.phone, "password": "Wrong-Password-99"})
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    events = client.get("/v1/me/security-events", headers=alice.auth).json()["data"]
    failures = [e for e in events if e["event"] == "session.sign_in" and e["outcome"] == "failure"]
    assert failures and failures[0]["details"]["phone"].count("*") == 4


def test_sessions_can_be_listed_and_revoked(client: TestClient, alice: SignedUp) -> None:
    other = client.post(
        "/v1/sessions", json={"phone": alice.phone, "password": STRONG_PASSWORD, "device_id": "x"}
    )
    other_token = other.json()["token"]
    listed = client.get("/v1/me/sessions", headers=alice.auth).json()["data"]
    assert len(listed) == 2
    assert sum(s["current"] for s in listed) == 1
    target = other.json()["session_id"]
    assert client.delete(f"/v1/me/sessions/{target}", headers=alice.auth).status_code == 204
    r = client.get("/v1/me", headers={"Authorization": f"Bearer {other_token}"})
    assert r.status_code == 401


def test_a_new_device_is_notified(client: TestClient, alice: SignedUp) -> None:
    r = client.post(
        "/v1/sessions", json={"phone": alice.phone, "password": STRONG_PASSWORD, "device_id": "new-1"}
    )
    assert r.json()["new_device"] is True
    texts = [m["text"] for m in client.get("/v1/sandbox/messages", params={"to": alice.phone}).json()["data"]]
    assert any("new device" in t for t in texts)
    # The sign-up device is known.
    r = client.post(
        "/v1/sessions", json={"phone": alice.phone, "password": STRONG_PASSWORD, "device_id": alice.device}
    )
    assert r.json()["new_device"] is False


def test_sign_up_for_a_registered_number_sends_a_notice_not_a_code(client: TestClient, bob: SignedUp) -> None:
    assert client.post("/v1/verifications", json={"phone": bob.phone}).status_code == 429  # 1 a minute
    reset_limits(client)
    assert client.post("/v1/verifications", json={"phone": bob.phone}).status_code == 202
    newest = client.get("/v1/sandbox/messages", params={"to": bob.phone}).json()["data"][0]
    assert newest["code"] is None and "already" in newest["text"]


def test_users_idempotency_replays_the_first_answer(client: TestClient) -> None:
    phone = new_phone()
    client.post("/v1/verifications", json={"phone": phone})
    body = {"phone": phone, "code": latest_code(client, phone), "password": STRONG_PASSWORD, "name": "A"}
    first = client.post("/v1/users", json=body, headers={"Idempotency-Key": "k1"})
    second = client.post("/v1/users", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    other = client.post("/v1/users", json={**body, "name": "B"}, headers={"Idempotency-Key": "k1"})
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"


def test_sign_up_helper(client: TestClient) -> None:
    user = sign_up(client)
    assert client.get("/v1/me", headers=user.auth).status_code == 200


def _db(client: TestClient) -> Database:
    db: Database = client.app.state.container.db  # type: ignore[attr-defined]
    return db


def test_codes_expire(client: TestClient) -> None:
    phone = new_phone()
    client.post("/v1/verifications", json={"phone": phone})
    code = latest_code(client, phone)
    with _db(client).write() as conn:
        conn.execute(update(verifications).values(expires_at=1))
    r = client.post(
        "/v1/users", json={"phone": phone, "code": code, "password": STRONG_PASSWORD, "name": "A"}
    )
    assert r.status_code == 422 and r.json()["code"] == "verification_failed"


def test_five_wrong_guesses_burn_the_code(client: TestClient) -> None:
    phone = new_phone()
    client.post("/v1/verifications", json={"phone": phone})
    code = latest_code(client, phone)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    body = {"phone": phone, "password": STRONG_PASSWORD, "name": "A"}
    for _ in range(5):
        assert client.post("/v1/users", json={**body, "code": wrong}).json()["code"] == "verification_failed"
    r = client.post("/v1/users", json={**body, "code": code})
    assert r.status_code == 422 and "too many" in r.json()["detail"]


def test_sending_codes_is_limited_per_number_and_per_ip(client: TestClient) -> None:
    phone = new_phone()
    assert client.post("/v1/verifications", json={"phone": phone}).status_code == 202
    again = client.post("/v1/verifications", json={"phone": phone})
    assert again.status_code == 429 and int(again.headers["Retry-After"]) >= 1
    # Per IP: 20 an hour, whatever the numbers.
    statuses = [client.post("/v1/verifications", json={"phone": new_phone()}).status_code for _ in range(20)]
    assert statuses.count(202) == 19 and statuses[-1] == 429


def test_sessions_end_when_idle_and_when_expired(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    with _db(client).write() as conn:
        conn.execute(
            update(sessions)
            .where(sessions.c.principal_id == alice.user_id)
            .values(last_seen_at=1, expires_at=2**62)
        )
        conn.execute(update(sessions).where(sessions.c.principal_id == bob.user_id).values(expires_at=1))
    idle = client.get("/v1/me", headers=alice.auth)
    assert idle.status_code == 401 and "timed out" in idle.json()["detail"]
    assert client.get("/v1/me", headers=bob.auth).status_code == 401
    # Tokens are stored hashed: the table never holds the token itself.
    with _db(client).read() as conn:
        hashes = set(conn.execute(select(sessions.c.token_hash)).scalars())
    assert alice.token not in hashes and bob.token not in hashes
