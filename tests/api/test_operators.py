"""Operators: sign-in with mandatory TOTP, the role matrix, revealing personal data, freezing a customer,
and maker-checker approvals (limit overrides, hold releases, tier-1 KYC) enforced by code and by the
database."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select, text
from sqlalchemy.exc import IntegrityError

from qianbao.identity.limits import limits_for
from qianbao.identity.tables import approvals, users
from qianbao.identity.totp import totp_code
from qianbao.ledger.model import (
    AccountSpec,
    AccountStatus,
    NormalBalance,
    PendingStatus,
    ResultCode,
    TransferSpec,
)
from qianbao.ledger.queries import LedgerReader
from tests.api.test_kyc import _to_tier_2
from tests.conftest import unique
from tests.support.api import SignedUp
from tests.support.operators import (
    OPERATOR_PASSWORD,
    StaffLogin,
    create_operator,
    fresh_totp,
    identity_of,
)


def fund(client: TestClient, wallet_id: str, amount: int) -> str:
    """Money into a wallet from a test funding account; returns the funding account id."""
    ledger = identity_of(client).ledger
    funding = unique("funding")
    ledger.create_accounts([AccountSpec(funding, "CNY", "test.funding", normal_balance=NormalBalance.DEBIT)])
    (result,) = ledger.create_transfers(
        [TransferSpec.posted(unique("trf"), funding, wallet_id, amount, "CNY")]
    )
    assert result.code is ResultCode.OK
    return funding


def test_sign_in_needs_the_totp_code_and_refuses_replays(client: TestClient) -> None:
    staff = create_operator(client, roles=("support",), sign_in=False)
    body = {"username": staff.username, "password": staff.password}
    missing = client.post("/v1/operator/sessions", json=body)
    assert missing.status_code == 422 and missing.json()["code"] == "validation_error"

    code = fresh_totp(client, staff.operator_id, staff.totp_secret)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    r = client.post("/v1/operator/sessions", json={**body, "totp_code": wrong})
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    r = client.post("/v1/operator/sessions", json={**body, "password": "Wrong-Password-1", "totp_code": code})
    assert r.status_code == 401

    ok = client.post("/v1/operator/sessions", json={**body, "totp_code": code})
    assert ok.status_code == 201, ok.text
    session = ok.json()
    assert session["operator_id"] == staff.operator_id and session["roles"] == ["support"]
    replay = client.post("/v1/operator/sessions", json={**body, "totp_code": code})
    assert replay.status_code == 401  # the code's time step was used

    auth = {"Authorization": f"Bearer {session['token']}"}
    assert client.get("/v1/operator/me", headers=auth).json()["username"] == staff.username
    failures = client.get(
        "/v1/operator/audit-events", params={"event": "operator.sign_in"}, headers=auth
    ).json()["data"]
    reasons = [e["details"]["reason"] for e in failures if e["outcome"] == "failure"]
    assert "bad_totp" in reasons and "bad_credentials" in reasons
    assert all(OPERATOR_PASSWORD not in str(e["details"]) for e in failures)
    assert client.delete("/v1/operator/sessions/current", headers=auth).status_code == 204
    assert client.get("/v1/operator/me", headers=auth).status_code == 401


def test_users_and_operators_are_kept_apart(client: TestClient, alice: SignedUp) -> None:
    staff = create_operator(client, roles=("admin",))
    r = client.get(f"/v1/operator/users/{alice.user_id}", headers=alice.auth)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert client.get("/v1/me", headers=staff.auth).status_code == 403
    assert client.get(f"/v1/operator/users/{alice.user_id}").status_code == 401


def test_role_matrix_support_sees_masked_data_only_risk_reveals_with_audit(
    client: TestClient, alice: SignedUp
) -> None:
    support = create_operator(client, roles=("support",))
    risk = create_operator(client, roles=("risk_analyst",))
    finance = create_operator(client, roles=("finance",))

    masked = client.get(f"/v1/operator/users/{alice.user_id}", headers=support.auth)
    assert masked.status_code == 200, masked.text
    view = masked.json()
    assert view["phone_masked"] == f"{alice.phone[3:6]}****{alice.phone[-4:]}"
    assert view["name_masked"] == "王*" and view["tier"] == 4 and view["status"] == "active"
    assert alice.phone[3:] not in masked.text and "王丽" not in masked.text

    for staff in (support, finance):
        r = client.post(
            f"/v1/operator/users/{alice.user_id}/reveal", json={"reason": "ticket 42"}, headers=staff.auth
        )
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
    no_reason = client.post(f"/v1/operator/users/{alice.user_id}/reveal", json={}, headers=risk.auth)
    assert no_reason.status_code == 422

    shown = client.post(
        f"/v1/operator/users/{alice.user_id}/reveal",
        json={"reason": "fraud case 7781: confirm identity"},
        headers=risk.auth,
    )
    assert shown.status_code == 200, shown.text
    assert shown.json() == {"id": alice.user_id, "phone": alice.phone, "name": "王丽", "id_number": None}
    assert shown.headers["cache-control"] == "no-store"

    events = client.get(
        "/v1/operator/audit-events",
        params={"event": "pii.revealed", "user_id": alice.user_id},
        headers=support.auth,
    ).json()["data"]
    assert len(events) == 1
    assert events[0]["actor"] == {"kind": "operator", "id": risk.operator_id}
    assert events[0]["details"]["reason"] == "fraud case 7781: confirm identity"
    assert alice.phone not in str(events[0])

    # Requests for actions outside one's roles are refused too.
    override = {
        "action": "limit_override",
        "params": {"user_id": alice.user_id, "daily_outflow": 1},
        "reason": "x" * 5,
    }
    for staff in (support, finance):
        assert client.post("/v1/operator/approvals", json=override, headers=staff.auth).status_code == 403
    assert client.get("/v1/operator/operators", headers=risk.auth).status_code == 403


def test_freeze_stops_payments_and_unfreeze_restores_them(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    support = create_operator(client, roles=("support",))
    fund(client, alice.wallet_id, 50_000)
    ctx = identity_of(client)
    reader = LedgerReader(ctx.db)

    r = client.post(
        f"/v1/operator/users/{alice.user_id}/freeze",
        json={"reason": "suspected account takeover"},
        headers=support.auth,
    )
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "frozen" and r.json()["reason"] == "suspected account takeover"
    account = reader.get_account(alice.wallet_id)
    assert account is not None and account.status is AccountStatus.FROZEN
    (paid,) = ctx.ledger.create_transfers(
        [TransferSpec.posted(unique("trf"), alice.wallet_id, bob.wallet_id, 1_000, "CNY")]
    )
    assert paid.code is ResultCode.ACCOUNT_FROZEN
    assert client.get("/v1/me", headers=alice.auth).json()["status"] == "frozen"
    sms = client.get("/v1/sandbox/messages", params={"to": alice.phone}).json()["data"]
    assert "frozen" in sms[0]["text"]

    r = client.post(
        f"/v1/operator/users/{alice.user_id}/unfreeze",
        json={"reason": "customer verified"},
        headers=support.auth,
    )
    assert r.status_code == 200 and r.json()["status"] == "active"
    account = reader.get_account(alice.wallet_id)
    assert account is not None and account.status is AccountStatus.OPEN
    (paid,) = ctx.ledger.create_transfers(
        [TransferSpec.posted(unique("trf"), alice.wallet_id, bob.wallet_id, 1_000, "CNY")]
    )
    assert paid.code is ResultCode.OK
    again = client.post(
        f"/v1/operator/users/{alice.user_id}/unfreeze", json={"reason": "twice"}, headers=support.auth
    )
    assert again.status_code == 409
    events = client.get("/v1/operator/audit-events", params={"user_id": alice.user_id}, headers=support.auth)
    names = [e["event"] for e in events.json()["data"]]
    assert "user.frozen" in names and "user.unfrozen" in names


def test_limit_override_needs_a_second_operator(client: TestClient, alice: SignedUp) -> None:
    maker = create_operator(client, roles=("risk_analyst",))
    checker = create_operator(client, roles=("admin",))
    expires = (datetime.now(UTC) + timedelta(days=7)).isoformat().replace("+00:00", "Z")
    request = {
        "action": "limit_override",
        "params": {
            "user_id": alice.user_id,
            "single_payment": 300_000,
            "daily_outflow": 800_000,
            "expires_at": expires,
        },
        "reason": "merchant onboarding, approved by branch",
    }
    r = client.post("/v1/operator/approvals", json=request, headers={**maker.auth, "Idempotency-Key": "ov-1"})
    assert r.status_code == 202, r.text
    approval = r.json()
    assert approval["status"] == "pending" and approval["requested_by"] == maker.operator_id
    pending = client.get("/v1/operator/approvals", params={"status": "pending"}, headers=checker.auth).json()
    assert [a["id"] for a in pending["data"]] == [approval["id"]]

    own = client.post(f"/v1/operator/approvals/{approval['id']}/approve", json={}, headers=maker.auth)
    assert own.status_code == 403 and own.json()["code"] == "forbidden"
    assert "second operator" in own.json()["detail"]

    ctx = identity_of(client)
    with ctx.db.read() as conn:
        _, before, _ = limits_for(conn, ctx.settings, alice.user_id, ctx.now())
    assert before.single_payment == 200_000  # tier 4, untouched by the refusal

    # The database refuses it as well, whatever code runs.
    with pytest.raises(IntegrityError), ctx.db.write() as conn:
        conn.execute(
            text("UPDATE approvals SET status = 'executed', decided_by = requested_by WHERE id = :id"),
            {"id": approval["id"]},
        )

    done = client.post(
        f"/v1/operator/approvals/{approval['id']}/approve", json={"note": "checked"}, headers=checker.auth
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "executed" and done.json()["decided_by"] == checker.operator_id
    with ctx.db.read() as conn:
        _, limits, _ = limits_for(conn, ctx.settings, alice.user_id, ctx.now())
        row = conn.execute(select(approvals).where(approvals.c.id == approval["id"])).one()
    assert limits.single_payment == 300_000 and limits.daily_outflow == 800_000
    assert limits.balance_cap == 1_000_000
    assert row.decided_by != row.requested_by

    twice = client.post(f"/v1/operator/approvals/{approval['id']}/approve", json={}, headers=checker.auth)
    assert twice.status_code == 409
    events = client.get(
        "/v1/operator/audit-events", params={"user_id": alice.user_id}, headers=checker.auth
    ).json()["data"]
    names = {e["event"] for e in events}
    assert {"approval.requested", "approval.approved", "approval.executed"} <= names


def test_balance_cap_override_raises_the_wallet_ceiling(client: TestClient, alice: SignedUp) -> None:
    maker = create_operator(client, roles=("admin",))
    checker = create_operator(client, roles=("risk_analyst",))
    request = {
        "action": "limit_override",
        "params": {"user_id": alice.user_id, "balance_cap": 3_000_000},
        "reason": "corporate account",
    }
    approval = client.post("/v1/operator/approvals", json=request, headers=maker.auth).json()
    done = client.post(f"/v1/operator/approvals/{approval['id']}/approve", headers=checker.auth)
    assert done.json()["status"] == "executed", done.text
    account = LedgerReader(identity_of(client).db).get_account(alice.wallet_id)
    assert account is not None and account.balance_ceiling == 3_000_000
    fund(client, alice.wallet_id, 2_500_000)  # over the tier's ¥10,000 cap, under the override


def test_bad_approval_requests_are_refused(client: TestClient, alice: SignedUp) -> None:
    risk = create_operator(client, roles=("risk_analyst",))
    cases = [
        {"action": "limit_override", "params": {"user_id": alice.user_id}, "reason": "nothing to change"},
        {
            "action": "limit_override",
            "params": {"user_id": alice.user_id, "daily_outflow": -1},
            "reason": "neg",
        },
        {
            "action": "limit_override",
            "params": {"user_id": alice.user_id, "daily_outflow": 1.5},
            "reason": "float",
        },
        {
            "action": "limit_override",
            "params": {"user_id": alice.user_id, "daily_outflow": 1, "x": 1},
            "reason": "x",
        },
        {
            "action": "limit_override",
            "params": {"user_id": alice.user_id, "daily_outflow": 1, "expires_at": "2001-01-01T00:00:00Z"},
            "reason": "past",
        },
        {"action": "limit_override", "params": {"user_id": alice.user_id, "daily_outflow": 1}, "reason": ""},
        {"action": "delete_user", "params": {}, "reason": "nope"},
    ]
    for body in cases:
        r = client.post("/v1/operator/approvals", json=body, headers=risk.auth)
        assert r.status_code == 422 and r.json()["code"] == "validation_error", (body, r.text)
    unknown = {
        "action": "limit_override",
        "params": {"user_id": "usr_nobody", "daily_outflow": 1},
        "reason": "who",
    }
    assert client.post("/v1/operator/approvals", json=unknown, headers=risk.auth).status_code == 404
    assert client.get("/v1/operator/approvals", headers=risk.auth).json()["data"] == []


def test_release_hold_voids_a_pending_transfer(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    maker = create_operator(client, roles=("finance",))
    checker = create_operator(client, roles=("finance",))
    risk = create_operator(client, roles=("risk_analyst",))
    fund(client, alice.wallet_id, 40_000)
    ctx = identity_of(client)
    hold = unique("hold")
    (held,) = ctx.ledger.create_transfers(
        [TransferSpec.pending(hold, alice.wallet_id, bob.wallet_id, 30_000, "CNY")]
    )
    assert held.code is ResultCode.OK
    reader = LedgerReader(ctx.db)
    account = reader.get_account(alice.wallet_id)
    assert account is not None and account.available == 10_000

    request = {"action": "release_hold", "params": {"transfer_id": hold}, "reason": "merchant never shipped"}
    assert client.post("/v1/operator/approvals", json=request, headers=risk.auth).status_code == 403
    r = client.post("/v1/operator/approvals", json=request, headers=maker.auth)
    assert r.status_code == 202, r.text
    approval = r.json()
    assert (
        client.post(f"/v1/operator/approvals/{approval['id']}/approve", headers=risk.auth).status_code == 403
    )
    assert (
        client.post(f"/v1/operator/approvals/{approval['id']}/approve", headers=maker.auth).status_code == 403
    )

    done = client.post(
        f"/v1/operator/approvals/{approval['id']}/approve", json={"note": "ok"}, headers=checker.auth
    )
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "executed"
    view = reader.get_transfer(hold)
    assert view is not None and view.pending_status is PendingStatus.VOIDED
    assert view.resolved_by == done.json()["result"]["void_transfer_id"]
    account = reader.get_account(alice.wallet_id)
    assert account is not None and account.available == 40_000

    missing = {"action": "release_hold", "params": {"transfer_id": "trf_none"}, "reason": "nothing"}
    assert client.post("/v1/operator/approvals", json=missing, headers=maker.auth).status_code == 404
    again = client.post("/v1/operator/approvals", json=request, headers=maker.auth)
    assert again.status_code == 409  # the hold is no longer pending


def test_rejected_requests_do_nothing(client: TestClient, alice: SignedUp) -> None:
    maker = create_operator(client, roles=("risk_analyst",))
    checker = create_operator(client, roles=("risk_analyst",))
    request = {
        "action": "limit_override",
        "params": {"user_id": alice.user_id, "single_payment": 1},
        "reason": "typo",
    }
    approval = client.post("/v1/operator/approvals", json=request, headers=maker.auth).json()
    r = client.post(
        f"/v1/operator/approvals/{approval['id']}/reject", json={"note": "no"}, headers=checker.auth
    )
    assert r.status_code == 200 and r.json()["status"] == "rejected"
    late = client.post(f"/v1/operator/approvals/{approval['id']}/approve", headers=checker.auth)
    assert late.status_code == 409
    ctx = identity_of(client)
    with ctx.db.read() as conn:
        _, limits, _ = limits_for(conn, ctx.settings, alice.user_id, ctx.now())
    assert limits.single_payment == 200_000


def _limit_request(client: TestClient, maker: StaffLogin, alice: SignedUp) -> dict[str, Any]:
    request = {
        "action": "limit_override",
        "params": {"user_id": alice.user_id, "single_payment": 1},
        "reason": "typo",
    }
    r = client.post("/v1/operator/approvals", json=request, headers=maker.auth)
    assert r.status_code == 202, r.text
    return dict(r.json())


def _decision_events(client: TestClient, viewer: StaffLogin, alice: SignedUp) -> list[tuple[str, str]]:
    events = client.get(
        "/v1/operator/audit-events", params={"user_id": alice.user_id}, headers=viewer.auth
    ).json()["data"]
    decisions = ("approval.approved", "approval.rejected", "approval.withdrawn")
    return [(e["event"], e["actor"]["id"]) for e in events if e["event"] in decisions]


def test_the_requester_cannot_reject_their_own_request_but_may_withdraw_it(
    client: TestClient, alice: SignedUp
) -> None:
    maker = create_operator(client, roles=("risk_analyst",))
    checker = create_operator(client, roles=("risk_analyst",))
    approval = _limit_request(client, maker, alice)
    url = f"/v1/operator/approvals/{approval['id']}"

    # Rejecting is a checker's decision: the requester is refused, told to withdraw, and nothing changes.
    refused = client.post(f"{url}/reject", json={"note": "changed my mind"}, headers=maker.auth)
    assert refused.status_code == 403
    problem = refused.json()
    assert (problem["code"], problem["reason"]) == ("forbidden", "own_request")
    assert f"{url}/withdraw" in problem["detail"]
    # …and no other operator withdraws it for them: a checker rejects.
    other = client.post(f"{url}/withdraw", headers=checker.auth)
    assert other.status_code == 403 and other.json()["reason"] == "not_requester"
    assert client.get(url, headers=checker.auth).json()["status"] == "pending"

    withdrawn = client.post(f"{url}/withdraw", json={"note": "changed my mind"}, headers=maker.auth)
    assert withdrawn.status_code == 200, withdrawn.text
    body = withdrawn.json()
    assert (body["status"], body["decided_by"], body["decision_note"]) == (
        "withdrawn",
        maker.operator_id,
        "changed my mind",
    )
    # A withdrawal is not a rejection: its own status, its own audit event, and it is over.
    listed = {
        status: [
            a["id"]
            for a in client.get(
                "/v1/operator/approvals", params={"status": status}, headers=checker.auth
            ).json()["data"]
        ]
        for status in ("withdrawn", "rejected", "pending")
    }
    assert listed == {"withdrawn": [approval["id"]], "rejected": [], "pending": []}
    assert _decision_events(client, checker, alice) == [("approval.withdrawn", maker.operator_id)]
    for action, who in (("approve", checker), ("reject", checker), ("withdraw", maker)):
        late = client.post(f"{url}/{action}", headers=who.auth)
        assert late.status_code == 409 and late.json()["code"] == "conflict", action


def test_another_operator_with_the_role_rejects(client: TestClient, alice: SignedUp) -> None:
    maker = create_operator(client, roles=("risk_analyst",))
    finance = create_operator(client, roles=("finance",))  # no limit overrides
    checker = create_operator(client, roles=("admin",))
    approval = _limit_request(client, maker, alice)
    url = f"/v1/operator/approvals/{approval['id']}"
    assert client.post(f"{url}/reject", headers=finance.auth).status_code == 403
    own_approval = client.post(f"{url}/approve", headers=maker.auth)
    assert own_approval.status_code == 403 and own_approval.json()["reason"] == "own_request"

    rejected = client.post(f"{url}/reject", json={"note": "no"}, headers=checker.auth)
    assert rejected.status_code == 200, rejected.text
    assert (rejected.json()["status"], rejected.json()["decided_by"]) == ("rejected", checker.operator_id)
    assert _decision_events(client, checker, alice) == [("approval.rejected", checker.operator_id)]


def test_the_database_refuses_a_rejection_by_the_requester_and_a_withdrawal_by_anyone_else(
    client: TestClient, alice: SignedUp
) -> None:
    maker = create_operator(client, roles=("risk_analyst",))
    approval = _limit_request(client, maker, alice)
    db = identity_of(client).db
    for status, decided_by, guard in (
        ("rejected", maker.operator_id, "ck_approvals_two_people"),
        ("withdrawn", "opr_someone_else", "ck_approvals_withdrawn_by_requester"),
    ):
        with pytest.raises(IntegrityError, match=guard), db.write() as conn:
            conn.execute(
                approvals.update()
                .where(approvals.c.id == approval["id"])
                .values(status=status, decided_by=decided_by, decided_at=1)
            )
    with db.read() as conn:
        assert conn.execute(select(approvals.c.status).where(approvals.c.id == approval["id"])).scalar() == (
            "pending"
        )


def test_disabled_operator_is_signed_out(client: TestClient) -> None:
    admin = create_operator(client, roles=("admin",))
    support = create_operator(client, roles=("support",))
    assert client.get("/v1/operator/me", headers=support.auth).status_code == 200
    listed = client.get("/v1/operator/operators", headers=admin.auth).json()["data"]
    assert {support.username, admin.username} <= {o["username"] for o in listed}
    r = client.post(f"/v1/operator/operators/{support.operator_id}/disable", headers=admin.auth)
    assert r.status_code == 200 and r.json()["status"] == "disabled"
    assert client.get("/v1/operator/me", headers=support.auth).status_code == 401
    code = totp_code(support.totp_secret, datetime.now(UTC).timestamp() + 30)
    again = client.post(
        "/v1/operator/sessions",
        json={"username": support.username, "password": support.password, "totp_code": code},
    )
    assert again.status_code == 401
    events = client.get(
        "/v1/operator/audit-events", params={"event": "operator.sign_in"}, headers=admin.auth
    ).json()["data"]
    assert events[0]["outcome"] == "failure" and events[0]["details"]["reason"] == "disabled"
    assert (
        client.post(f"/v1/operator/operators/{admin.operator_id}/disable", headers=admin.auth).status_code
        == 409
    )


def test_frozen_status_is_stored_with_its_reason(client: TestClient, alice: SignedUp) -> None:
    """The freeze is on the user row too (what other capabilities consult), with the reason."""
    support = create_operator(client, roles=("support",))
    client.post(
        f"/v1/operator/users/{alice.user_id}/freeze", json={"reason": "court order"}, headers=support.auth
    )
    ctx = identity_of(client)
    with ctx.db.read() as conn:
        row = conn.execute(
            select(users.c.status, users.c.status_reason).where(users.c.id == alice.user_id)
        ).one()
    assert (row.status, row.status_reason) == ("frozen", "court order")


def test_repeated_failed_sign_ins_are_rate_limited(client: TestClient) -> None:
    staff = create_operator(client, roles=("support",), sign_in=False)
    body = {"username": staff.username, "password": "Not-The-Password-9", "totp_code": "123456"}
    statuses = [client.post("/v1/operator/sessions", json=body).status_code for _ in range(11)]
    assert statuses[:10] == [401] * 10 and statuses[10] == 429
    # Even the right password and code are refused while the account is throttled.
    good = {
        **body,
        "password": staff.password,
        "totp_code": fresh_totp(client, staff.operator_id, staff.totp_secret),
    }
    r = client.post("/v1/operator/sessions", json=good)
    assert r.status_code == 429 and r.headers["retry-after"]


def test_odd_ids_and_filters_are_problems_not_errors(client: TestClient, alice: SignedUp) -> None:
    risk = create_operator(client, roles=("risk_analyst",))
    nul = "a%00b"
    assert client.get(f"/v1/operator/users/{nul}", headers=risk.auth).status_code == 404
    r = client.post(f"/v1/operator/users/{nul}/freeze", json={"reason": "test"}, headers=risk.auth)
    assert r.status_code == 404
    assert client.post(f"/v1/operator/approvals/{nul}/approve", headers=risk.auth).status_code == 404
    assert client.get(f"/v1/operator/approvals/{nul}", headers=risk.auth).status_code == 404
    r = client.get("/v1/operator/audit-events", params={"user_id": "a\x00b"}, headers=risk.auth)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert client.get("/v1/operator/approvals", params={"cursor": "x"}, headers=risk.auth).status_code == 422
    # NUL characters in a JSON body are refused at the door (api/guards.py).
    body = {"action": "limit_override", "params": {"user_id": "u\x00", "daily_outflow": 1}, "reason": "nul"}
    r = client.post("/v1/operator/approvals", json=body, headers=risk.auth)
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    r = client.post(
        "/v1/operator/sessions", json={"username": "a\x00b", "password": "x", "totp_code": "123456"}
    )
    assert r.status_code == 422 and r.json()["code"] == "validation_error"
    assert client.delete(f"/v1/api-keys/{nul}", headers=alice.auth).status_code == 404


def test_actions_that_cannot_run_are_recorded_as_failed(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    maker = create_operator(client, roles=("admin",))
    checker = create_operator(client, roles=("admin",))
    fund(client, alice.wallet_id, 500_000)
    ctx = identity_of(client)
    cap = {
        "action": "limit_override",
        "params": {"user_id": alice.user_id, "balance_cap": 100_000},
        "reason": "lower",
    }
    approval = client.post("/v1/operator/approvals", json=cap, headers=maker.auth).json()
    done = client.post(f"/v1/operator/approvals/{approval['id']}/approve", headers=checker.auth).json()
    assert done["status"] == "failed" and done["result"]["code"] == "conflict"
    with ctx.db.read() as conn:
        _, limits, _ = limits_for(conn, ctx.settings, alice.user_id, ctx.now())
    assert limits.balance_cap == 1_000_000  # nothing changed: the wallet already holds more than the cap
    account = LedgerReader(ctx.db).get_account(alice.wallet_id)
    assert account is not None and account.balance_ceiling == 1_000_000

    hold = unique("hold")
    ctx.ledger.create_transfers([TransferSpec.pending(hold, alice.wallet_id, bob.wallet_id, 1_000, "CNY")])
    release = {"action": "release_hold", "params": {"transfer_id": hold}, "reason": "dispute"}
    approval = client.post("/v1/operator/approvals", json=release, headers=maker.auth).json()
    (posted,) = ctx.ledger.create_transfers([TransferSpec.post(unique("post"), hold)])
    assert posted.code is ResultCode.OK  # the hold completed meanwhile
    done = client.post(f"/v1/operator/approvals/{approval['id']}/approve", headers=checker.auth).json()
    assert done["status"] == "failed" and done["result"]["code"] == "pending_already_posted"
    failed = client.get("/v1/operator/approvals", params={"status": "failed"}, headers=maker.auth).json()
    assert len(failed["data"]) == 2


def test_tier_1_kyc_needs_a_second_operator(client: TestClient, alice: SignedUp) -> None:
    """Approving an enhanced application removes every limit: like a limit override, it takes two people."""
    _to_tier_2(client, alice, "王丽")
    application = client.post("/v1/me/kyc/enhanced", json={}, headers=alice.auth).json()
    maker = create_operator(client, roles=("risk_analyst",))
    checker = create_operator(client, roles=("risk_analyst",))
    support = create_operator(client, roles=("support",))
    finance = create_operator(client, roles=("finance",))
    # Filed through the generic endpoint too: bad params and unknown applications are refused.
    bad = [
        {"action": "kyc_enhanced", "params": {}, "reason": "no application"},
        {"action": "kyc_enhanced", "params": {"application_id": 7}, "reason": "a number"},
        {
            "action": "kyc_enhanced",
            "params": {"application_id": application["id"], "x": 1},
            "reason": "extra",
        },
        {"action": "kyc_enhanced", "params": {"application_id": application["id"]}, "reason": "x" * 201},
    ]
    for body in bad:
        r = client.post("/v1/operator/approvals", json=body, headers=maker.auth)
        assert r.status_code == 422 and r.json()["code"] == "validation_error", (body, r.text)
    unknown = {"action": "kyc_enhanced", "params": {"application_id": "kyc_nope"}, "reason": "who"}
    assert client.post("/v1/operator/approvals", json=unknown, headers=maker.auth).status_code == 404
    request = {"action": "kyc_enhanced", "params": {"application_id": application["id"]}, "reason": "checked"}
    for staff in (support, finance):
        r = client.post("/v1/operator/approvals", json=request, headers=staff.auth)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
    r = client.post("/v1/operator/approvals", json=request, headers=maker.auth)
    assert r.status_code == 202, r.text
    approval = r.json()
    assert approval["params"] == {"application_id": application["id"], "user_id": alice.user_id}
    twice = client.post(
        f"/v1/operator/kyc-applications/{application['id']}/decision",
        json={"approve": True},
        headers=checker.auth,
    )
    assert twice.status_code == 409

    url = f"/v1/operator/approvals/{approval['id']}/approve"
    own = client.post(url, json={}, headers=maker.auth)
    assert own.status_code == 403 and "second operator" in own.json()["detail"]
    for staff in (support, finance):
        r = client.post(url, json={}, headers=staff.auth)
        assert r.status_code == 403 and r.json()["code"] == "forbidden"
    ctx = identity_of(client)
    # The database refuses it as well, whatever code runs.
    with pytest.raises(IntegrityError), ctx.db.write() as conn:
        conn.execute(
            text("UPDATE approvals SET status = 'executed', decided_by = requested_by WHERE id = :id"),
            {"id": approval["id"]},
        )
    with ctx.db.read() as conn:
        tier = conn.execute(select(users.c.kyc_tier).where(users.c.id == alice.user_id)).scalar_one()
    assert tier == 2
    assert client.get(f"/v1/wallets/{alice.wallet_id}", headers=alice.auth).json()["balance_cap"] is not None

    done = client.post(url, json={"note": "second look"}, headers=checker.auth)
    assert done.status_code == 200, done.text
    assert done.json()["status"] == "executed" and done.json()["decided_by"] == checker.operator_id
    assert done.json()["result"]["kyc_tier"] == 1
    with ctx.db.read() as conn:
        _, limits, _ = limits_for(conn, ctx.settings, alice.user_id, ctx.now())
        row = conn.execute(select(approvals).where(approvals.c.id == approval["id"])).one()
    assert (limits.balance_cap, limits.single_payment, limits.daily_outflow) == (None, None, None)
    assert row.decided_by != row.requested_by
    assert client.get("/v1/me/kyc", headers=alice.auth).json()["tier"] == 1
    assert client.get(f"/v1/wallets/{alice.wallet_id}", headers=alice.auth).json()["balance_cap"] is None
    account = LedgerReader(ctx.db).get_account(alice.wallet_id)
    assert account is not None and account.balance_ceiling is None
    events = client.get(
        "/v1/operator/audit-events", params={"user_id": alice.user_id}, headers=support.auth
    ).json()["data"]
    names = {e["event"] for e in events}
    assert {"approval.requested", "approval.approved", "approval.executed", "kyc.tier_changed"} <= names
