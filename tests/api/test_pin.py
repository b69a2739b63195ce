"""The payment PIN: the weak-PIN policy, lockout after wrong PINs (escalating), and password brute force."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select, update

from qianbao.identity.tables import users
from qianbao.store.database import Database
from tests.support.api import STRONG_PASSWORD, SignedUp, reset_limits

PIN = "739152"
WRONG = "604918"


def database(client: TestClient) -> Database:
    db: Database = client.app.state.container.db  # type: ignore[attr-defined]
    return db


def pin_lock_s(client: TestClient) -> int:
    seconds: int = client.app.state.container.identity.settings.pin_lock_s  # type: ignore[attr-defined]
    return seconds


def pin_row(client: TestClient, user: SignedUp) -> Any:
    with database(client).read() as conn:
        return conn.execute(select(users).where(users.c.id == user.user_id)).one()


def set_first_pin(client: TestClient, user: SignedUp) -> None:
    assert client.put("/v1/me/pin", json={"pin": PIN}, headers=user.auth).status_code == 204


def new_challenge(client: TestClient, user: SignedUp) -> str:
    r = client.put("/v1/me/pin", json={"pin": "582047"}, headers=user.auth)
    assert r.status_code == 401 and "pin" in r.json()["methods"], r.text
    return str(r.json()["challenge_id"])


def try_pin(client: TestClient, user: SignedUp, challenge_id: str, pin: str) -> Any:
    return client.post(
        f"/v1/challenges/{challenge_id}/verify", json={"method": "pin", "pin": pin}, headers=user.auth
    )


def five_wrong_pins(client: TestClient, user: SignedUp) -> None:
    challenge_id = new_challenge(client, user)
    for attempt in range(1, 6):
        r = try_pin(client, user, challenge_id, WRONG)
        assert r.status_code == 422 and r.json()["code"] == "second_factor_invalid", (attempt, r.text)


def test_weak_pins_are_refused_with_reasons(client: TestClient, alice: SignedUp) -> None:
    from_phone = alice.phone[-6:]
    for pin, reason in (
        ("123456", "sequential"),
        ("000000", "repeated"),
        (from_phone, "from_phone"),
        ("900101", "date_like"),
        ("12345", "not_six_digits"),
        ("12a456", "not_six_digits"),
    ):
        r = client.put("/v1/me/pin", json={"pin": pin}, headers=alice.auth)
        assert r.status_code == 422, (pin, r.text)
        assert r.json()["code"] == "weak_pin" and reason in r.json()["reasons"], (pin, r.json())
    assert client.get("/v1/me", headers=alice.auth).json()["has_pin"] is False
    set_first_pin(client, alice)
    assert client.get("/v1/me", headers=alice.auth).json()["has_pin"] is True


def test_a_weak_new_pin_is_refused_before_any_challenge(client: TestClient, alice: SignedUp) -> None:
    set_first_pin(client, alice)
    r = client.put("/v1/me/pin", json={"pin": "111111"}, headers=alice.auth)
    assert r.status_code == 422 and r.json()["code"] == "weak_pin"
    events = client.get("/v1/me/security-events", headers=alice.auth).json()["data"]
    assert not [e for e in events if e["event"] == "step_up.challenged"]


def test_five_wrong_pins_lock_the_pin_then_it_unlocks_and_the_next_lock_is_longer(
    client: TestClient, alice: SignedUp
) -> None:
    set_first_pin(client, alice)
    five_wrong_pins(client, alice)
    row = pin_row(client, alice)
    assert row.pin_locked_until is not None and row.pin_lockouts == 1
    first_lock_s = (row.pin_locked_until - time.time_ns() // 1000) / 1e6
    assert abs(first_lock_s - pin_lock_s(client)) < 60

    # The sixth attempt, even with the right PIN, is refused while locked.
    challenge_id = new_challenge(client, alice)
    locked = try_pin(client, alice, challenge_id, PIN)
    assert locked.status_code == 423 and locked.json()["code"] == "pin_locked"
    retry_after = int(locked.headers["Retry-After"])
    assert 0 < retry_after <= pin_lock_s(client)
    assert client.get(f"/v1/challenges/{challenge_id}", headers=alice.auth).json()["status"] == "pending"

    events = client.get("/v1/me/security-events", headers=alice.auth).json()["data"]
    lock_events = [e for e in events if e["event"] == "pin.locked"]
    assert len(lock_events) == 1 and lock_events[0]["details"]["lock_seconds"] == pin_lock_s(client)
    assert len([e for e in events if e["event"] == "pin.verify" and e["outcome"] == "failure"]) == 4
    texts = [m["text"] for m in client.get("/v1/sandbox/messages", params={"to": alice.phone}).json()["data"]]
    assert any("PIN is locked" in t for t in texts)

    # Once the lock has passed, the right PIN works again.
    with database(client).write() as conn:
        conn.execute(update(users).where(users.c.id == alice.user_id).values(pin_locked_until=1))
    ok = try_pin(client, alice, challenge_id, PIN)
    assert ok.status_code == 200, ok.text

    # The next lock lasts twice as long.
    reset_limits(client)  # challenge verification is also rate limited per user (10 in 10 minutes)
    five_wrong_pins(client, alice)
    row = pin_row(client, alice)
    assert row.pin_lockouts == 2
    second_lock_s = (row.pin_locked_until - time.time_ns() // 1000) / 1e6
    assert abs(second_lock_s - 2 * pin_lock_s(client)) < 60
    again = try_pin(client, alice, new_challenge(client, alice), PIN)
    assert again.status_code == 423 and int(again.headers["Retry-After"]) > pin_lock_s(client)


def test_a_right_pin_resets_the_count_of_wrong_ones(client: TestClient, alice: SignedUp) -> None:
    set_first_pin(client, alice)
    challenge_id = new_challenge(client, alice)
    for _ in range(4):
        assert try_pin(client, alice, challenge_id, WRONG).status_code == 422
    assert pin_row(client, alice).pin_failures == 4
    assert try_pin(client, alice, challenge_id, PIN).status_code == 200
    assert pin_row(client, alice).pin_failures == 0
    reset_limits(client)
    challenge_id = new_challenge(client, alice)
    for _ in range(4):
        assert try_pin(client, alice, challenge_id, WRONG).status_code == 422
    row = pin_row(client, alice)
    assert row.pin_locked_until is None and row.pin_lockouts == 0


def test_setting_a_new_pin_with_step_up_clears_a_lock(client: TestClient, alice: SignedUp) -> None:
    set_first_pin(client, alice)
    five_wrong_pins(client, alice)
    challenge_id = new_challenge(client, alice)
    reset_limits(client)
    assert client.post(f"/v1/challenges/{challenge_id}/sms", headers=alice.auth).status_code == 202
    messages = client.get("/v1/sandbox/messages", params={"to": alice.phone}).json()["data"]
    code = next(m["code"] for m in messages if m["code"])
    assert try_pin(client, alice, challenge_id, PIN).status_code == 423  # the PIN itself cannot prove it
    proved = client.post(
        f"/v1/challenges/{challenge_id}/verify", json={"method": "sms", "code": code}, headers=alice.auth
    )
    assert proved.status_code == 200
    changed = client.put(
        "/v1/me/pin", json={"pin": "582047"}, headers={**alice.auth, "Step-Up": challenge_id}
    )
    assert changed.status_code == 204
    assert pin_row(client, alice).pin_locked_until is None


def test_password_guessing_is_rate_limited_per_account(client: TestClient, alice: SignedUp) -> None:
    wrong = {"phone": alice.phone, "password": "Wrong-Password-99"}
    right = {"phone": alice.phone, "password": STRONG_PASSWORD}
    for attempt in range(1, 11):
        r = client.post("/v1/sessions", json=wrong)
        assert r.status_code == 401 and r.json()["code"] == "unauthenticated", (attempt, r.text)
    limited = client.post("/v1/sessions", json=wrong)
    assert limited.status_code == 429 and limited.json()["code"] == "rate_limited"
    assert 0 < int(limited.headers["Retry-After"]) <= 15 * 60
    # Even the right password is refused until the window has passed.
    blocked = client.post("/v1/sessions", json=right)
    assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
    reset_limits(client)  # as if the 15 minutes had passed
    assert client.post("/v1/sessions", json=right).status_code == 201
