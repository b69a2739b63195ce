"""SMS quotas are kept apart by purpose (identity/sms_quota.py).

A stranger may ask for sign-up, recovery and password-reset codes for anyone's number without signing in.
Those requests must never use up the number owner's step-up codes (or guesses at another purpose's
code); each purpose stays limited per number and per IP; and the answers never tell a registered number
from an unregistered one.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from qianbao.identity.sms_quota import SMS_RULES
from qianbao.security.ratelimit import DEFAULT_RULES
from tests.api.test_step_up import challenge_for_pin_change, change_pin, set_first_pin, verify
from tests.support.api import STRONG_PASSWORD, SignedUp, latest_code, new_phone, reset_limits

NEW_PASSWORD = "Quiet-Orchard-Meadow-77"  # noqa: S105 - a test password

# The code requests anyone can make for any number: path and body.
ANONYMOUS: dict[str, tuple[str, dict[str, str]]] = {
    "signup": ("/v1/verifications", {}),
    "password_reset": ("/v1/verifications", {"purpose": "password_reset"}),
    "recovery_new_phone": ("/v1/recovery/phone", {}),
}


def ask_code(client: TestClient, purpose: str, phone: str) -> Any:
    path, extra = ANONYMOUS[purpose]
    field = "new_phone" if path == "/v1/recovery/phone" else "phone"
    return client.post(path, json={field: phone, **extra})


def test_every_sms_purpose_has_rules_of_its_own() -> None:
    rules = [rule for pair in SMS_RULES.values() for rule in pair if rule is not None]
    assert len(rules) == len(set(rules))
    assert all(rule in DEFAULT_RULES for rule in rules)
    assert all(ip_rule is not None for purpose, (_, ip_rule) in SMS_RULES.items() if purpose != "step_up")


@pytest.mark.parametrize("purpose", sorted(ANONYMOUS))
def test_anonymous_code_requests_for_a_number_leave_its_owners_step_up_sms_working(
    client: TestClient, alice: SignedUp, purpose: str
) -> None:
    set_first_pin(client, alice)
    reset_limits(client)
    answers = [ask_code(client, purpose, alice.phone) for _ in range(12)]
    # That purpose's quota for the number is spent: the first request is served, the others refused.
    assert [a.status_code for a in answers] == [202] + [429] * 11
    assert {a.json()["code"] for a in answers[1:]} == {"rate_limited"}

    challenge = challenge_for_pin_change(client, alice)["challenge_id"]
    sent = client.post(f"/v1/challenges/{challenge}/sms", headers=alice.auth)
    assert sent.status_code == 202, sent.text
    proved = verify(client, alice, challenge, {"method": "sms", "code": latest_code(client, alice.phone)})
    assert proved.status_code == 200, proved.text
    assert change_pin(client, alice, step_up=challenge).status_code == 204


def test_step_up_codes_stay_limited_per_number(client: TestClient, alice: SignedUp) -> None:
    set_first_pin(client, alice)
    reset_limits(client)
    challenge = challenge_for_pin_change(client, alice)["challenge_id"]
    assert client.post(f"/v1/challenges/{challenge}/sms", headers=alice.auth).status_code == 202
    again = client.post(f"/v1/challenges/{challenge}/sms", headers=alice.auth)
    assert again.status_code == 429 and again.json()["code"] == "rate_limited"
    # …and spending them leaves a stranger's sign-up request for the number as it was: one answer for all.
    assert ask_code(client, "signup", alice.phone).status_code == 202


@pytest.mark.parametrize("purpose", sorted(ANONYMOUS))
def test_each_purpose_is_limited_per_ip_on_its_own(client: TestClient, purpose: str) -> None:
    reset_limits(client)
    answers = [ask_code(client, purpose, new_phone()).status_code for _ in range(21)]
    assert answers == [202] * 20 + [429]  # 20 an hour from one address
    for other in sorted(set(ANONYMOUS) - {purpose}):
        assert ask_code(client, other, new_phone()).status_code == 202


@pytest.mark.parametrize("purpose", sorted(ANONYMOUS))
def test_registered_and_unregistered_numbers_get_the_same_answers(
    client: TestClient, alice: SignedUp, purpose: str
) -> None:
    reset_limits(client)
    seen = []
    for phone in (alice.phone, new_phone()):
        answers = [ask_code(client, purpose, phone) for _ in range(3)]
        seen.append([(a.status_code, a.json().get("code")) for a in answers])
        assert answers[0].json() == {"status": "sent", "expires_in_s": 300}
    assert seen[0] == seen[1] == [(202, None), (429, "rate_limited"), (429, "rate_limited")]


def test_wrong_sign_up_codes_for_a_number_leave_its_password_reset_working(
    client: TestClient, alice: SignedUp
) -> None:
    reset_limits(client)
    body = {"phone": alice.phone, "password": STRONG_PASSWORD, "name": "Mallory"}
    guesses = [client.post("/v1/users", json={**body, "code": f"{n:06d}"}).json()["code"] for n in range(11)]
    assert guesses == ["verification_failed"] * 10 + ["rate_limited"]

    assert ask_code(client, "password_reset", alice.phone).status_code == 202
    reset = client.post(
        "/v1/recovery/password",
        json={"phone": alice.phone, "code": latest_code(client, alice.phone), "new_password": NEW_PASSWORD},
    )
    assert reset.status_code == 200, reset.text
