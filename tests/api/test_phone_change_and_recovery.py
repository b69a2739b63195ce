"""Changing the phone number, recovering an account whose number is lost, and resetting the password."""

from __future__ import annotations

import time
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import insert, select, update

from qianbao.identity import limits
from qianbao.identity.context import IdentityContext
from qianbao.identity.phones import national_digits
from qianbao.identity.tables import recovery_codes, users
from qianbao.identity.totp import hash_recovery_code, new_recovery_codes, new_totp_secret, totp_code
from qianbao.security.fields import context
from qianbao.security.masking import mask_phone
from qianbao.security.tables import audit_events
from tests.support.api import STRONG_PASSWORD, SignedUp, latest_code, new_phone, reset_limits

PIN = "582917"
NEW_PASSWORD = "Quiet-Orchard-Meadow-77"  # noqa: S105 - a test password


# --- helpers ----------------------------------------------------------------------------------------------


def identity(client: TestClient) -> IdentityContext:
    ctx: IdentityContext = client.app.state.container.identity  # type: ignore[attr-defined]
    return ctx


def resident_id(first17: str) -> str:
    """A resident ID number with a valid GB 11643 check character."""
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    total = sum(int(d) * w for d, w in zip(first17, weights, strict=True))
    return first17 + "10X98765432"[total % 11]


def set_pin(client: TestClient, user: SignedUp, pin: str = PIN) -> None:
    r = client.put("/v1/me/pin", json={"pin": pin}, headers=user.auth)
    assert r.status_code == 204, r.text


def enrol_totp(client: TestClient, user_id: str) -> str:
    """TOTP enrolment written directly (its endpoint is built elsewhere); returns the secret."""
    ctx = identity(client)
    secret = new_totp_secret()
    with ctx.db.write() as conn:
        conn.execute(
            update(users)
            .where(users.c.id == user_id)
            .values(
                totp_secret_cipher=ctx.keys.encrypt(secret, context=context("users", "totp_secret_cipher")),
                totp_enabled_at=ctx.now(),
            )
        )
    return secret


def add_recovery_codes(client: TestClient, user_id: str) -> list[str]:
    ctx = identity(client)
    codes = new_recovery_codes(3)
    with ctx.db.write() as conn:
        for code in codes:
            conn.execute(
                insert(recovery_codes).values(
                    code_hash=hash_recovery_code(code), user_id=user_id, created_at=ctx.now()
                )
            )
    return codes


def give_identity(client: TestClient, user: SignedUp, id_number: str, name: str = "王丽") -> None:
    """Tier-3 KYC through its endpoint: the ID number (and its blind index) on the user row."""
    r = client.post("/v1/me/kyc/identity", json={"name": name, "id_number": id_number}, headers=user.auth)
    assert r.status_code == 200, r.text
    assert r.json()["tier"] == 3


def totp_now(secret: str, *, ahead: int = 0) -> str:
    """The code of the current time step (or one step ahead, for a second code within 30 seconds)."""
    return totp_code(secret, time.time() + 30 * ahead)


def messages(client: TestClient, phone: str) -> list[dict[str, Any]]:
    data: list[dict[str, Any]] = client.get("/v1/sandbox/messages", params={"to": phone}).json()["data"]
    return data


def with_step_up(client: TestClient, user: SignedUp, path: str, body: dict[str, Any]) -> Any:
    """POST that needs a step-up: get the challenge, prove it with the PIN, repeat with `Step-Up`."""
    first = client.post(path, json=body, headers=user.auth)
    assert first.status_code == 401 and first.json()["code"] == "step_up_required", first.text
    challenge = first.json()["challenge_id"]
    assert "pin" in first.json()["methods"]
    proved = client.post(
        f"/v1/challenges/{challenge}/verify", json={"method": "pin", "pin": PIN}, headers=user.auth
    )
    assert proved.status_code == 200, proved.text
    return client.post(path, json=body, headers={**user.auth, "Step-Up": challenge})


def phone_of(client: TestClient, user_id: str) -> str:
    ctx = identity(client)
    with ctx.db.read() as conn:
        cipher = conn.execute(select(users.c.phone_cipher).where(users.c.id == user_id)).scalar_one()
    return ctx.keys.decrypt(cipher, context=context("users", "phone_cipher"))


def audit_rows(client: TestClient, event: str) -> list[Any]:
    with identity(client).db.read() as conn:
        return list(
            conn.execute(
                select(audit_events).where(audit_events.c.event == event).order_by(audit_events.c.seq)
            )
        )


def sign_in(client: TestClient, phone: str, password: str = STRONG_PASSWORD, device: str = "d") -> Any:
    return client.post("/v1/sessions", json={"phone": phone, "password": password, "device_id": device})


# --- change of number (signed in) ---------------------------------------------------------------------


def test_phone_change_needs_step_up_and_both_codes_then_cools_off(
    client: TestClient, alice: SignedUp
) -> None:
    set_pin(client, alice)
    other = sign_in(client, alice.phone, device=alice.device)
    assert other.status_code == 201
    other_auth = {"Authorization": f"Bearer {other.json()['token']}"}
    target = new_phone()

    sent = with_step_up(client, alice, "/v1/me/phone-change", {"new_phone": target})
    assert sent.status_code == 202, sent.text
    old_code, new_code = latest_code(client, alice.phone), latest_code(client, target)
    assert "changing your qianbao phone number" in messages(client, alice.phone)[0]["text"]

    # A wrong old-number code is refused, names its field, and changes nothing.
    wrong = "000000" if old_code != "000000" else "111111"
    bad = client.post(
        "/v1/me/phone-change/confirm",
        json={"new_phone": target, "old_code": wrong, "new_code": new_code},
        headers=alice.auth,
    )
    assert bad.status_code == 422 and bad.json()["code"] == "verification_failed"
    assert bad.json()["field"] == "old_code"
    assert phone_of(client, alice.user_id) == alice.phone

    done = client.post(
        "/v1/me/phone-change/confirm",
        json={"new_phone": target, "old_code": old_code, "new_code": new_code},
        headers=alice.auth,
    )
    assert done.status_code == 200, done.text
    body = done.json()
    assert body["phone_masked"] == mask_phone(target)
    assert body["sessions_revoked"] == 1
    assert phone_of(client, alice.user_id) == target

    # The other session ended; this one goes on and shows the new number and the cooling-off.
    assert client.get("/v1/me", headers=other_auth).status_code == 401
    me = client.get("/v1/me", headers=alice.auth).json()
    assert me["phone_masked"] == mask_phone(target)
    assert me["cooling_off_until"] == body["cooling_off_until"]

    # Sign-in follows the number.
    assert sign_in(client, alice.phone).status_code == 401
    assert sign_in(client, target).status_code == 201

    # Both numbers were told; the codes are spent.
    assert mask_phone(target) in messages(client, alice.phone)[0]["text"]
    assert any("now linked to your qianbao account" in m["text"] for m in messages(client, target))
    again = client.post(
        "/v1/me/phone-change/confirm",
        json={"new_phone": target, "old_code": old_code, "new_code": new_code},
        headers=alice.auth,
    )
    assert again.status_code == 422

    # Audited with masked numbers only.
    (event,) = audit_rows(client, "phone.changed")
    assert event.subject_user_id == alice.user_id and event.outcome == "success"
    assert event.details["new_phone"] == mask_phone(target)
    assert event.details["old_phone"] == mask_phone(alice.phone)
    for number in (alice.phone, target):
        assert national_digits(number) not in str(event.details)

    # Cooling-off: limits divided by the divisor while it lasts.
    ctx = identity(client)
    with ctx.db.read() as conn:
        status = limits.limit_status(conn, ctx.settings, alice.user_id, "CNY", ctx.now())
        later = limits.limit_status(
            conn, ctx.settings, alice.user_id, "CNY", ctx.now() + (ctx.settings.cooling_off_s + 1) * 1_000_000
        )
    tier4 = ctx.settings.kyc_tiers[4]
    divisor = ctx.settings.cooling_off_limit_divisor
    assert status.cooling_off is True
    assert tier4.single_payment is not None and tier4.daily_outflow is not None
    assert status.limits.single_payment == tier4.single_payment // divisor
    assert status.limits.daily_outflow == tier4.daily_outflow // divisor
    assert later.cooling_off is False and later.limits.single_payment == tier4.single_payment


def test_phone_change_refusals_change_nothing(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    set_pin(client, alice)
    path = "/v1/me/phone-change"
    assert client.post(path, json={"new_phone": new_phone()}).status_code == 401  # signed out
    r = client.post(path, json={"new_phone": "12345"}, headers=alice.auth)
    assert r.status_code == 422 and r.json()["field"] == "new_phone"
    r = client.post(path, json={"new_phone": alice.phone}, headers=alice.auth)
    assert r.status_code == 422 and r.json()["reason"] == "same_phone"
    r = client.post(path, json={"new_phone": new_phone(), "extra": 1}, headers=alice.auth)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"

    # A registered number is only revealed after the step-up.
    taken = with_step_up(client, alice, path, {"new_phone": bob.phone})
    assert taken.status_code == 409 and taken.json()["code"] == "phone_taken"

    # A step-up proved for one number does not unlock another.
    first_target, second_target = new_phone(), new_phone()
    first = client.post(path, json={"new_phone": first_target}, headers=alice.auth)
    challenge = first.json()["challenge_id"]
    client.post(f"/v1/challenges/{challenge}/verify", json={"method": "pin", "pin": PIN}, headers=alice.auth)
    r = client.post(path, json={"new_phone": second_target}, headers={**alice.auth, "Step-Up": challenge})
    assert r.status_code == 422 and r.json()["code"] == "challenge_invalid"
    assert messages(client, second_target) == []

    # Confirming without codes ever sent fails.
    r = client.post(
        "/v1/me/phone-change/confirm",
        json={"new_phone": second_target, "old_code": "123456", "new_code": "123456"},
        headers=alice.auth,
    )
    assert r.status_code == 422 and r.json()["code"] == "verification_failed"
    assert phone_of(client, alice.user_id) == alice.phone
    assert audit_rows(client, "phone.changed") == []

    # A frozen account cannot move to another number.
    with identity(client).db.write() as conn:
        conn.execute(update(users).where(users.c.id == alice.user_id).values(status="frozen"))
    r = client.post(path, json={"new_phone": new_phone()}, headers=alice.auth)
    assert r.status_code == 423 and r.json()["code"] == "account_frozen"


def test_codes_sent_for_another_users_change_do_not_confirm_mine(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    """Bob asks to move to number N after Alice did: N's newest code is Bob's and cannot confirm Alice's."""
    set_pin(client, alice)
    set_pin(client, bob)
    target = new_phone()
    assert with_step_up(client, alice, "/v1/me/phone-change", {"new_phone": target}).status_code == 202
    alice_old = latest_code(client, alice.phone)
    reset_limits(client)
    assert with_step_up(client, bob, "/v1/me/phone-change", {"new_phone": target}).status_code == 202
    newest_for_target = latest_code(client, target)
    r = client.post(
        "/v1/me/phone-change/confirm",
        json={"new_phone": target, "old_code": alice_old, "new_code": newest_for_target},
        headers=alice.auth,
    )
    assert r.status_code == 422 and r.json()["code"] == "verification_failed"
    assert phone_of(client, alice.user_id) == alice.phone


# --- lost old number (signed out) ---------------------------------------------------------------------


def recovery_body(
    id_number: str, new_number: str, code: str, pin: str, method: str, factor: str
) -> dict[str, Any]:
    return {
        "id_number": id_number,
        "new_phone": new_number,
        "new_code": code,
        "pin": pin,
        "second_factor": {"method": method, "code": factor},
    }


def test_recovery_with_id_number_pin_and_totp(client: TestClient, alice: SignedUp) -> None:
    set_pin(client, alice)
    secret = enrol_totp(client, alice.user_id)
    id_number = resident_id("11010519900307451")
    give_identity(client, alice, id_number)
    target = new_phone()

    assert client.post("/v1/recovery/phone", json={"new_phone": target}).status_code == 202
    code = latest_code(client, target)
    body = recovery_body(id_number.lower(), target, code, PIN, "totp", totp_now(secret))
    r = client.post("/v1/recovery/phone/confirm", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "recovered" and r.json()["phone_masked"] == mask_phone(target)
    assert r.json()["cooling_off_until"]
    assert phone_of(client, alice.user_id) == target

    # Every session ended; the old number was told too (it may be stolen); the new one was welcomed.
    assert client.get("/v1/me", headers=alice.auth).status_code == 401
    assert "after an identity check" in messages(client, alice.phone)[0]["text"]
    assert "now linked" in messages(client, target)[0]["text"]

    # Signing in now goes through the new number, and the old device is no longer trusted.
    assert sign_in(client, alice.phone, device=alice.device).status_code == 401
    first = sign_in(client, target, device=alice.device)
    assert first.status_code == 401 and first.json()["code"] == "step_up_required"
    challenge = first.json()["challenge_id"]
    proved = client.post(
        f"/v1/challenges/{challenge}/verify", json={"method": "totp", "code": totp_now(secret, ahead=1)}
    )
    assert proved.status_code == 200, proved.text
    session = client.post(
        "/v1/sessions",
        json={"phone": target, "password": STRONG_PASSWORD, "device_id": alice.device},
        headers={"Step-Up": challenge},
    )
    assert session.status_code == 201, session.text
    assert session.json()["new_device"] is True

    (event,) = [e for e in audit_rows(client, "phone.recovered") if e.outcome == "success"]
    assert event.subject_user_id == alice.user_id
    assert event.details["new_phone"] == mask_phone(target) and event.details["second_factor"] == "totp"
    assert id_number not in str(event.details) and national_digits(target) not in str(event.details)
    # The same code cannot be used twice.
    assert client.post("/v1/recovery/phone/confirm", json=body).status_code == 422


def test_recovery_with_a_recovery_code_spends_it_only_on_success(client: TestClient, alice: SignedUp) -> None:
    set_pin(client, alice)
    enrol_totp(client, alice.user_id)
    codes = add_recovery_codes(client, alice.user_id)
    id_number = resident_id("44030419851122003")
    give_identity(client, alice, id_number)
    target = new_phone()
    client.post("/v1/recovery/phone", json={"new_phone": target})
    code = latest_code(client, target)

    wrong_pin = client.post(
        "/v1/recovery/phone/confirm",
        json=recovery_body(id_number, target, code, "396041", "recovery_code", codes[0]),
    )
    assert wrong_pin.status_code == 422 and wrong_pin.json()["code"] == "recovery_not_possible"
    with identity(client).db.read() as conn:
        assert conn.execute(
            select(recovery_codes.c.used_at).where(recovery_codes.c.user_id == alice.user_id)
        ).all() == [
            (None,),
            (None,),
            (None,),
        ]

    typed = codes[0].upper().replace("-", " ")  # how people type it
    ok = client.post(
        "/v1/recovery/phone/confirm", json=recovery_body(id_number, target, code, PIN, "recovery_code", typed)
    )
    assert ok.status_code == 200, ok.text
    with identity(client).db.read() as conn:
        used = conn.execute(
            select(recovery_codes.c.used_at).where(
                recovery_codes.c.user_id == alice.user_id,
                recovery_codes.c.code_hash == hash_recovery_code(codes[0]),
            )
        ).scalar_one()
    assert used is not None

    # Spent: moving again with the same recovery code fails.
    reset_limits(client)
    again = new_phone()
    client.post("/v1/recovery/phone", json={"new_phone": again})
    r = client.post(
        "/v1/recovery/phone/confirm",
        json=recovery_body(id_number, again, latest_code(client, again), PIN, "recovery_code", codes[0]),
    )
    assert r.status_code == 422 and r.json()["code"] == "recovery_not_possible"
    assert phone_of(client, alice.user_id) == target


def test_recovery_failures_all_look_the_same_and_are_audited(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    set_pin(client, alice)
    secret = enrol_totp(client, alice.user_id)
    id_number = resident_id("31010119750615002")
    give_identity(client, alice, id_number)
    set_pin(client, bob)
    bob_id = resident_id("31010119820101003")
    give_identity(client, bob, bob_id, "李四")  # identity on file but no second factor
    target = new_phone()
    client.post("/v1/recovery/phone", json={"new_phone": target})
    code = latest_code(client, target)
    wrong_code = "000000" if code != "000000" else "111111"

    attempts = {
        "unknown_id": recovery_body(resident_id("11010119700101001"), target, code, PIN, "totp", "123456"),
        "wrong_sms_code": recovery_body(id_number, target, wrong_code, PIN, "totp", totp_now(secret)),
        "wrong_totp": recovery_body(id_number, target, code, PIN, "totp", "000000"),
        "no_second_factor": recovery_body(bob_id, target, code, PIN, "recovery_code", "aaaaa-bbbbb"),
        "wrong_pin": recovery_body(id_number, target, code, "396041", "totp", totp_now(secret)),
    }
    answers = []
    for name, body in attempts.items():
        r = client.post("/v1/recovery/phone/confirm", json=body, headers={"Accept-Language": "zh-CN"})
        assert r.status_code == 422, (name, r.text)
        answers.append({k: r.json()[k] for k in ("code", "detail", "user_message", "title", "status")})
        if name == "wrong_totp":
            # The PIN is never tried without a valid second factor: strangers cannot lock it.
            with identity(client).db.read() as conn:
                failures = conn.execute(
                    select(users.c.pin_failures).where(users.c.id == alice.user_id)
                ).scalar_one()
            assert failures == 0
    assert all(a == answers[0] for a in answers), answers
    assert answers[0]["code"] == "recovery_not_possible"
    with identity(client).db.read() as conn:
        failures = conn.execute(select(users.c.pin_failures).where(users.c.id == alice.user_id)).scalar_one()
    assert failures == 1  # the wrong PIN (after a right TOTP) counted towards the lockout

    reasons = [e.details["reason"] for e in audit_rows(client, "phone.recovered") if e.outcome == "failure"]
    assert reasons == ["identity_unknown", "new_phone_code", "second_factor", "no_second_factor", "pin"]
    assert phone_of(client, alice.user_id) == alice.phone and phone_of(client, bob.user_id) == bob.phone

    # A user without a tier-3 identity on file cannot recover this way either; malformed input is a 422.
    r = client.post("/v1/recovery/phone/confirm", json={**attempts["unknown_id"], "id_number": "not an id!"})
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = client.post(
        "/v1/recovery/phone/confirm",
        json={**attempts["wrong_pin"], "second_factor": {"method": "sms", "code": "123456"}},
    )
    assert r.status_code == 422 and r.json()["code"] == "validation_error"


def test_recovery_attempts_are_limited_per_id_number(client: TestClient, alice: SignedUp) -> None:
    id_number = resident_id("44030419880808004")
    give_identity(client, alice, id_number)
    codes = []
    for _ in range(5):  # rule recovery_id: 5 an hour per ID number
        r = client.post(
            "/v1/recovery/phone/confirm",
            json=recovery_body(id_number, new_phone(), "123456", PIN, "totp", "123456"),
        )
        codes.append(r.json()["code"])
    assert codes == ["recovery_not_possible"] * 5
    limited = client.post(
        "/v1/recovery/phone/confirm",
        json=recovery_body(id_number, new_phone(), "123456", PIN, "totp", "123456"),
    )
    assert limited.status_code == 429 and "Retry-After" in limited.headers
    # Another ID number from the same address is still heard.
    other = client.post(
        "/v1/recovery/phone/confirm",
        json=recovery_body(resident_id("44030419880808005"), new_phone(), "123456", PIN, "totp", "123456"),
    )
    assert other.status_code == 422


def test_a_registered_number_gets_a_notice_not_a_recovery_code(client: TestClient, bob: SignedUp) -> None:
    reset_limits(client)
    assert client.post("/v1/recovery/phone", json={"new_phone": bob.phone}).status_code == 202
    newest = messages(client, bob.phone)[0]
    assert newest["code"] is None and "cannot be used to recover" in newest["text"]
    r = client.post("/v1/recovery/phone", json={"new_phone": "not a number"})
    assert r.status_code == 422


# --- password reset -------------------------------------------------------------------------------------


def request_reset_code(client: TestClient, phone: str) -> str:
    reset_limits(client)
    r = client.post("/v1/verifications", json={"phone": phone, "purpose": "password_reset"})
    assert r.status_code == 202
    return latest_code(client, phone)


def test_password_reset_by_code(client: TestClient, alice: SignedUp) -> None:
    code = request_reset_code(client, alice.phone)
    path = "/v1/recovery/password"
    weak = client.post(path, json={"phone": alice.phone, "code": code, "new_password": "password1"})
    assert weak.status_code == 422 and weak.json()["code"] == "weak_password"
    wrong = "000000" if code != "000000" else "111111"
    r = client.post(path, json={"phone": alice.phone, "code": wrong, "new_password": NEW_PASSWORD})
    assert r.status_code == 422 and r.json()["code"] == "verification_failed"
    assert sign_in(client, alice.phone).status_code == 201  # nothing changed yet

    r = client.post(path, json={"phone": alice.phone, "code": code, "new_password": NEW_PASSWORD})
    assert r.status_code == 200, r.text
    assert r.json() == {"status": "password_reset", "sessions_revoked": 2}
    assert client.get("/v1/me", headers=alice.auth).status_code == 401
    assert sign_in(client, alice.phone).status_code == 401
    assert sign_in(client, alice.phone, NEW_PASSWORD).status_code == 201
    assert any("password was reset" in m["text"] for m in messages(client, alice.phone))
    (event,) = [e for e in audit_rows(client, "password.reset") if e.outcome == "success"]
    assert event.subject_user_id == alice.user_id and event.details["second_factor"] is None
    # The code is spent.
    r = client.post(
        path, json={"phone": alice.phone, "code": code, "new_password": "Another-Long-Passphrase-5"}
    )
    assert r.status_code == 422


def test_password_reset_needs_the_second_factor_when_totp_is_enrolled(
    client: TestClient, alice: SignedUp
) -> None:
    secret = enrol_totp(client, alice.user_id)
    codes = add_recovery_codes(client, alice.user_id)
    code = request_reset_code(client, alice.phone)
    path = "/v1/recovery/password"
    body: dict[str, Any] = {"phone": alice.phone, "code": code, "new_password": NEW_PASSWORD}

    missing = client.post(path, json=body)
    assert missing.status_code == 422 and missing.json()["code"] == "second_factor_required"
    assert missing.json()["methods"] == ["totp", "recovery_code"]
    wrong = client.post(path, json={**body, "second_factor": {"method": "totp", "code": "000000"}})
    assert wrong.status_code == 422 and wrong.json()["code"] == "second_factor_invalid"
    assert [e.details["reason"] for e in audit_rows(client, "password.reset")] == ["second_factor"]

    ok = client.post(path, json={**body, "second_factor": {"method": "recovery_code", "code": codes[1]}})
    assert ok.status_code == 200, ok.text
    assert client.get("/v1/me", headers=alice.auth).status_code == 401

    # The recovery code was spent with the reset.
    code = request_reset_code(client, alice.phone)
    again = client.post(
        path,
        json={
            "phone": alice.phone,
            "code": code,
            "new_password": "Another-Long-Passphrase-5",
            "second_factor": {"method": "recovery_code", "code": codes[1]},
        },
    )
    assert again.status_code == 422 and again.json()["code"] == "second_factor_invalid"
    ok = client.post(
        path,
        json={
            "phone": alice.phone,
            "code": code,
            "new_password": "Another-Long-Passphrase-5",
            "second_factor": {"method": "totp", "code": totp_now(secret)},
        },
    )
    assert ok.status_code == 200, ok.text


def test_password_reset_for_an_unknown_number_fails_like_a_wrong_code(client: TestClient) -> None:
    r = client.post(
        "/v1/recovery/password", json={"phone": new_phone(), "code": "123456", "new_password": NEW_PASSWORD}
    )
    assert r.status_code == 422 and r.json()["code"] == "verification_failed"
