"""KYC tiers through the API: 4 → 3 (name + ID number), → 2 (bank account), → 1 (operator review), and
the limits and wallet ceilings that follow each tier."""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select
from stdnum import luhn
from stdnum.cn import ric

from qianbao.config import DEFAULT_TIERS
from qianbao.identity.tables import kyc_applications, users
from qianbao.store.database import Database
from tests.support.api import SignedUp, sign_up, with_step_up
from tests.support.operators import create_operator

_serials = itertools.count(100 + secrets.randbelow(800))


def valid_id_number(birth: str = "19900307", place: str = "110101") -> str:
    """A real-format resident ID number (valid place code, birth date and check digit), unique per call."""
    base = f"{place}{birth}{next(_serials) % 1000:03d}"
    number = base + ric.calc_check_digit(base + "0")
    assert ric.is_valid(number)
    return number


def valid_account_number() -> str:
    body = "62220210" + f"{secrets.randbelow(10**7):07d}"
    return body + luhn.calc_check_digit(body)


def db_of(client: TestClient) -> Database:
    database: Database = client.app.state.container.db  # type: ignore[attr-defined]
    return database


def kyc(client: TestClient, user: SignedUp) -> dict[str, Any]:
    response = client.get("/v1/me/kyc", headers=user.auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def verify_identity(client: TestClient, user: SignedUp, name: str = "王丽", number: str | None = None) -> Any:
    return client.post(
        "/v1/me/kyc/identity",
        json={"name": name, "id_number": number or valid_id_number()},
        headers=user.auth,
    )


def money(amount: int | None) -> dict[str, Any] | None:
    return None if amount is None else {"amount": amount, "currency": "CNY"}


def tier_limits(tier: int) -> dict[str, Any]:
    limits = DEFAULT_TIERS[tier]
    return {
        "balance_cap": money(limits.balance_cap),
        "single_payment": money(limits.single_payment),
        "daily_outflow": money(limits.daily_outflow),
    }


def wallet_cap(client: TestClient, user: SignedUp) -> Any:
    return client.get(f"/v1/wallets/{user.wallet_id}", headers=user.auth).json()["balance_cap"]


def pay(client: TestClient, payer: SignedUp, payee: SignedUp, amount: int) -> Any:
    body = {"from_wallet_id": payer.wallet_id, "to": {"wallet_id": payee.wallet_id}, "amount": money(amount)}
    return client.post("/v1/transfers", json=body, headers=payer.auth)


def operator_auth(
    client: TestClient, roles: tuple[str, ...] = ("risk_analyst",)
) -> tuple[str, dict[str, str]]:
    """A signed-in operator (password + TOTP) holding `roles`."""
    staff = create_operator(client, roles=roles)
    return staff.operator_id, staff.auth


def test_a_new_user_is_tier_4_with_its_limits(client: TestClient, alice: SignedUp) -> None:
    status = kyc(client, alice)
    assert status["tier"] == 4
    assert status["limits"] == tier_limits(4)
    assert status["used_today"] == money(0)
    assert status["remaining_today"] == money(500_000)
    assert status["cooling_off"] is False
    assert status["applications"] == []
    assert client.get("/v1/me/kyc").status_code == 401


def test_identity_verification_raises_the_user_to_tier_3(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    funded = client.post(
        "/v1/sandbox/fund", json={"wallet_id": alice.wallet_id, "amount": money(500_000)}, headers=alice.auth
    )
    assert funded.status_code == 201, funded.text
    # Before: ¥3,000 is over tier 4's single-payment limit of ¥2,000.
    assert pay(client, alice, bob, 300_000).json()["code"] == "limit_exceeded_single"
    number = valid_id_number()

    response = verify_identity(client, alice, name="王丽华", number=number[:6] + " " + number[6:].lower())

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tier"] == 3
    assert body["limits"] == tier_limits(3)
    [application] = body["applications"]
    assert application["target_tier"] == 3 and application["status"] == "approved"
    assert application["id_number_masked"] == number[:4] + "*" * 10 + number[-4:]
    assert application["name_masked"] == "王**"
    assert number not in response.text
    assert kyc(client, alice)["tier"] == 3
    # The verified name replaces the sign-up name; the wallet's ceiling is tier 3's balance cap.
    assert client.get("/v1/me", headers=alice.auth).json()["name_masked"] == "王**"
    assert wallet_cap(client, alice) == money(2_000_000)
    events = client.get("/v1/me/security-events", headers=alice.auth).json()["data"]
    changed = [e for e in events if e["event"] == "kyc.tier_changed"]
    assert changed and changed[0]["details"]["from_tier"] == 4 and changed[0]["details"]["to_tier"] == 3
    assert number not in str(events)
    # Stored encrypted, found by its blind index.
    with db_of(client).read() as conn:
        row = conn.execute(select(users).where(users.c.id == alice.user_id)).one()
    assert row.kyc_tier == 3 and row.id_number_index is not None
    assert number not in str(tuple(row))
    # After: ¥3,000 passes the single limit (it now asks for step-up instead, being over ¥2,000).
    after = pay(client, alice, bob, 300_000)
    assert after.status_code == 401 and after.json()["code"] == "step_up_required", after.text
    # Verifying again is a conflict.
    assert verify_identity(client, alice, number=valid_id_number()).status_code == 409


def test_an_invalid_id_number_is_a_validation_error(client: TestClient, alice: SignedUp) -> None:
    good = valid_id_number()
    wrong_check = good[:-1] + ("0" if good[-1] != "0" else "1")
    too_young_base = "110101" + "20150307" + "123"
    too_young = too_young_base + ric.calc_check_digit(too_young_base + "0")
    future_base = "110101" + "20990101" + "123"
    future = future_base + ric.calc_check_digit(future_base + "0")
    bad_place_base = "000000" + "19900307" + "123"
    bad_place = bad_place_base + ric.calc_check_digit(bad_place_base + "0")
    for number in (
        wrong_check,
        too_young,
        future,
        bad_place,
        "12345",
        "１１０１０１１９９００３０７１２３３",
        "x" * 18,
    ):
        response = verify_identity(client, alice, number=number)
        assert response.status_code == 422, number
        body = response.json()
        assert body["code"] == "validation_error" and body["field"] == "id_number"
        assert number not in body["detail"]
    assert kyc(client, alice)["tier"] == 4
    assert kyc(client, alice)["applications"] == []


def test_a_name_that_does_not_match_the_id_number_is_rejected(client: TestClient, alice: SignedUp) -> None:
    response = verify_identity(client, alice, name="王丽 mismatch")
    assert response.status_code == 422
    assert response.json()["code"] == "kyc_rejected"
    assert verify_identity(client, alice, name="信息不符").json()["code"] == "kyc_rejected"
    status = kyc(client, alice)
    assert status["tier"] == 4
    assert [a["status"] for a in status["applications"]] == ["rejected", "rejected"]
    assert wallet_cap(client, alice) == money(1_000_000)
    events = client.get("/v1/me/security-events", headers=alice.auth).json()["data"]
    assert any(e["event"] == "kyc.rejected" and e["outcome"] == "failure" for e in events)


def test_an_id_number_verified_by_someone_else_is_refused(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    number = valid_id_number()
    assert verify_identity(client, alice, number=number).status_code == 200

    response = verify_identity(client, bob, name="李四", number=number.lower())

    assert response.status_code == 409
    assert response.json()["code"] == "id_number_in_use"
    assert kyc(client, bob)["tier"] == 4


def test_a_bank_account_raises_a_verified_user_to_tier_2(client: TestClient, alice: SignedUp) -> None:
    account = valid_account_number()
    request = {"account_number": account, "account_name": "王丽"}
    # Tier 3 first.
    early = client.post("/v1/me/kyc/bank-account", json=request, headers=alice.auth)
    assert early.status_code == 409 and early.json()["code"] == "conflict"
    assert verify_identity(client, alice, name="王丽").status_code == 200
    # A wrong check digit, too few digits, letters: validation errors.
    bad_luhn = account[:-1] + str((int(account[-1]) + 1) % 10)
    for number in (bad_luhn, "12345678901", "62220210000000000000", "6222abcd00000005"):
        response = client.post(
            "/v1/me/kyc/bank-account", json={**request, "account_number": number}, headers=alice.auth
        )
        assert response.status_code == 422 and response.json()["code"] == "validation_error", number
    # The account must be held in the verified name.
    other = client.post(
        "/v1/me/kyc/bank-account", json={**request, "account_name": "李四"}, headers=alice.auth
    )
    assert other.status_code == 422 and other.json()["code"] == "kyc_rejected"
    assert kyc(client, alice)["tier"] == 3

    spaced = " ".join(account[i : i + 4] for i in range(0, len(account), 4))
    # Adding a bank account needs step-up.
    asked = client.post(
        "/v1/me/kyc/bank-account", json={**request, "account_number": spaced}, headers=alice.auth
    )
    assert asked.status_code == 401 and asked.json()["code"] == "step_up_required"
    assert asked.json()["reasons"] == ["bank_account"]
    response = with_step_up(
        client, alice, "POST", "/v1/me/kyc/bank-account", json={**request, "account_number": spaced}
    )

    assert response.status_code == 200, response.text
    body = response.json()
    assert body["tier"] == 2 and body["limits"] == tier_limits(2)
    assert body["applications"][0]["account_number_masked"] == "**** " + account[-4:]
    assert account not in response.text
    assert wallet_cap(client, alice) == money(50_000_000)


def _to_tier_2(client: TestClient, user: SignedUp, name: str) -> None:
    assert verify_identity(client, user, name=name).status_code == 200
    response = with_step_up(
        client,
        user,
        "POST",
        "/v1/me/kyc/bank-account",
        json={"account_number": valid_account_number(), "account_name": name},
    )
    assert response.status_code == 200, response.text


def test_enhanced_verification_is_approved_by_two_operators(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    assert client.post("/v1/me/kyc/enhanced", json={}, headers=alice.auth).status_code == 409
    _to_tier_2(client, alice, "王丽")
    _to_tier_2(client, bob, "李四")
    applied = client.post("/v1/me/kyc/enhanced", json={}, headers=alice.auth)
    assert applied.status_code == 202, applied.text
    application = applied.json()
    assert application["status"] == "pending" and application["target_tier"] == 1
    assert client.post("/v1/me/kyc/enhanced", json={}, headers=alice.auth).status_code == 409
    bob_application = client.post("/v1/me/kyc/enhanced", json={}, headers=bob.auth).json()
    # Users are not operators.
    assert client.get("/v1/operator/kyc-applications", headers=alice.auth).status_code == 403
    decision_url = f"/v1/operator/kyc-applications/{application['id']}/decision"
    assert client.post(decision_url, json={"approve": True}, headers=alice.auth).status_code == 403
    # Support staff may not decide KYC; risk analysts and admins may.
    _, support = operator_auth(client, ("support",))
    assert client.get("/v1/operator/kyc-applications", headers=support).status_code == 403
    operator_id, auth = operator_auth(client)

    queue = client.get("/v1/operator/kyc-applications", params={"status": "pending"}, headers=auth)

    assert queue.status_code == 200, queue.text
    assert [a["id"] for a in queue.json()["data"]] == [application["id"], bob_application["id"]]
    first_page = client.get("/v1/operator/kyc-applications", params={"limit": 1}, headers=auth).json()
    assert len(first_page["data"]) == 1 and first_page["next_cursor"] == application["id"]
    second_page = client.get(
        "/v1/operator/kyc-applications",
        params={"limit": 1, "cursor": first_page["next_cursor"]},
        headers=auth,
    ).json()
    assert [a["id"] for a in second_page["data"]] == [bob_application["id"]]
    assert (
        client.get("/v1/operator/kyc-applications", params={"status": "bogus"}, headers=auth).status_code
        == 422
    )

    filed = client.post(decision_url, json={"approve": True, "note": "documents checked"}, headers=auth)

    # One reviewer cannot lift every limit: the approval is only requested, the application stays pending.
    assert filed.status_code == 202, filed.text
    body = filed.json()
    assert body["application"]["id"] == application["id"] and body["application"]["status"] == "pending"
    assert body["approval"]["id"] == body["approval_id"] and body["approval"]["status"] == "pending"
    assert body["approval"]["action"] == "kyc_enhanced" and body["approval"]["requested_by"] == operator_id
    assert body["approval"]["params"]["application_id"] == application["id"]
    assert body["approval"]["reason"] == "documents checked"
    assert kyc(client, alice)["tier"] == 2 and wallet_cap(client, alice) == money(50_000_000)
    approve_url = f"/v1/operator/approvals/{body['approval_id']}/approve"
    own = client.post(approve_url, json={}, headers=auth)
    assert own.status_code == 403 and own.json()["code"] == "forbidden"
    assert client.post(approve_url, json={}, headers=support).status_code == 403
    assert kyc(client, alice)["tier"] == 2

    checker_id, checker = operator_auth(client)
    approved = client.post(approve_url, json={"note": "second look"}, headers=checker)

    assert approved.status_code == 200, approved.text
    assert approved.json()["status"] == "executed" and approved.json()["decided_by"] == checker_id
    status = kyc(client, alice)
    assert status["tier"] == 1
    assert status["limits"] == {"balance_cap": None, "single_payment": None, "daily_outflow": None}
    assert status["remaining_today"] is None
    assert status["applications"][0]["status"] == "approved"
    assert wallet_cap(client, alice) is None
    events = client.get("/v1/operator/audit-events", params={"user_id": alice.user_id}, headers=auth).json()[
        "data"
    ]
    decided = [e for e in events if e["event"] == "kyc.application_decided"]
    assert decided and decided[0]["actor"] == {"kind": "operator", "id": checker_id}
    assert decided[0]["details"]["requested_by"] == operator_id
    assert decided[0]["details"]["approval_id"] == body["approval_id"]
    assert any(e["event"] == "kyc.tier_changed" and e["details"]["to_tier"] == 1 for e in events)
    queue = client.get("/v1/operator/kyc-applications", params={"status": "approved"}, headers=auth).json()
    tier_1 = [(a["id"], a["decided_by"]) for a in queue["data"] if a["target_tier"] == 1]
    assert tier_1 == [(application["id"], checker_id)]
    # Decided once only; a rejection leaves the user at tier 2.
    assert client.post(decision_url, json={"approve": False}, headers=auth).status_code == 409
    assert client.post(decision_url, json={"approve": True}, headers=checker).status_code == 409
    rejected = client.post(
        f"/v1/operator/kyc-applications/{bob_application['id']}/decision",
        json={"approve": False},
        headers=auth,
    )
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"
    assert kyc(client, bob)["tier"] == 2
    assert wallet_cap(client, bob) == money(50_000_000)
    missing = client.post(
        "/v1/operator/kyc-applications/kyc_nope/decision", json={"approve": True}, headers=auth
    )
    assert missing.status_code == 404
    with db_of(client).read() as conn:
        stored = conn.execute(
            select(kyc_applications.c.status).where(kyc_applications.c.target_tier == 1)
        ).all()
    assert sorted(s for (s,) in stored) == ["approved", "rejected"]


def test_a_tier_1_request_is_filed_once_and_fails_if_the_application_was_rejected_meanwhile(
    client: TestClient, alice: SignedUp
) -> None:
    _to_tier_2(client, alice, "王丽")
    application = client.post("/v1/me/kyc/enhanced", json={}, headers=alice.auth).json()
    maker_id, maker = operator_auth(client)
    _, checker = operator_auth(client, ("admin",))
    decision_url = f"/v1/operator/kyc-applications/{application['id']}/decision"
    filed = client.post(decision_url, json={"approve": True}, headers=maker)
    assert filed.status_code == 202, filed.text
    approval_id = filed.json()["approval_id"]
    assert filed.json()["approval"]["reason"]  # a default reason when the reviewer gave no note
    # Filing again, by anyone, while the request is pending: a conflict, and no second request.
    for auth in (maker, checker):
        again = client.post(decision_url, json={"approve": True, "note": "again"}, headers=auth)
        assert again.status_code == 409 and again.json()["code"] == "conflict", again.text
    pending = client.get("/v1/operator/approvals", params={"status": "pending"}, headers=maker).json()
    assert [a["id"] for a in pending["data"]] == [approval_id]

    # Someone rejects the application meanwhile (one operator may: it lowers nothing) ...
    rejected = client.post(decision_url, json={"approve": False, "note": "document expired"}, headers=maker)
    assert rejected.status_code == 200 and rejected.json()["status"] == "rejected"

    # ... so the approval runs, fails, and says why; the user stays at tier 2.
    done = client.post(f"/v1/operator/approvals/{approval_id}/approve", headers=checker)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "failed" and done.json()["requested_by"] == maker_id
    assert done.json()["result"]["code"] == "conflict"
    assert "rejected" in done.json()["result"]["detail"]
    assert done.json()["result"]["application_id"] == application["id"]
    status = kyc(client, alice)
    assert status["tier"] == 2 and status["limits"] == tier_limits(2)
    assert wallet_cap(client, alice) == money(50_000_000)


def test_a_withdrawn_tier_1_request_can_be_filed_again(client: TestClient, alice: SignedUp) -> None:
    _to_tier_2(client, alice, "王丽")
    application = client.post("/v1/me/kyc/enhanced", json={}, headers=alice.auth).json()
    _, maker = operator_auth(client)
    _, checker = operator_auth(client)
    decision_url = f"/v1/operator/kyc-applications/{application['id']}/decision"
    first = client.post(decision_url, json={"approve": True, "note": "ok"}, headers=maker).json()
    assert "ok" in first["approval"]["reason"]
    withdrawn = client.post(f"/v1/operator/approvals/{first['approval_id']}/withdraw", headers=maker)
    assert withdrawn.status_code == 200 and withdrawn.json()["status"] == "withdrawn"
    assert kyc(client, alice)["tier"] == 2
    second = client.post(decision_url, json={"approve": True, "note": "resubmitted"}, headers=maker)
    assert second.status_code == 202, second.text
    done = client.post(f"/v1/operator/approvals/{second.json()['approval_id']}/approve", headers=checker)
    assert done.json()["status"] == "executed", done.text
    assert kyc(client, alice)["tier"] == 1 and wallet_cap(client, alice) is None


def test_a_sub_wallet_opened_later_gets_the_tier_cap(client: TestClient) -> None:
    carol = sign_up(client, name="张三")
    assert verify_identity(client, carol, name="张三").status_code == 200
    sub = client.post("/v1/wallets", json={"name": "旅行", "purpose": "travel"}, headers=carol.auth)
    assert sub.status_code == 201, sub.text
    assert sub.json()["balance_cap"] == money(2_000_000)
