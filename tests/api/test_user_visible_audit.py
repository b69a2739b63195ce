"""What customers see of their own security events: never operators' internal notes or who acted."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from tests.support.api import SignedUp
from tests.support.operators import create_operator

NOTE = "SAR filed 2026-117, do not tell the customer"


def test_operator_work_is_not_shown_to_the_customer(client: TestClient, alice: SignedUp) -> None:
    risk = create_operator(client, roles=("risk_analyst",))
    revealed = client.post(
        f"/v1/operator/users/{alice.user_id}/reveal", json={"reason": NOTE}, headers=risk.auth
    )
    assert revealed.status_code == 200, revealed.text
    frozen = client.post(
        f"/v1/operator/users/{alice.user_id}/freeze", json={"reason": NOTE}, headers=risk.auth
    )
    assert frozen.status_code == 200, frozen.text
    requested = client.post(
        "/v1/operator/approvals",
        json={
            "action": "limit_override",
            "params": {"user_id": alice.user_id, "daily_outflow": 0},
            "reason": NOTE,
        },
        headers=risk.auth,
    )
    assert requested.status_code == 202, requested.text

    events = client.get("/v1/me/security-events", params={"limit": 100}, headers=alice.auth).json()["data"]
    seen = json.dumps(events, ensure_ascii=False)
    assert NOTE not in seen and risk.operator_id not in seen
    names = {e["event"] for e in events}
    assert "pii.revealed" not in names and not any(n.startswith("approval.") for n in names)
    freeze = next(e for e in events if e["event"] == "user.frozen")
    assert freeze["actor"] == {"kind": "operator", "id": None} and freeze["details"] == {}
    me = client.get("/v1/me", headers=alice.auth).json()
    assert me["status"] == "frozen" and NOTE not in json.dumps(me, ensure_ascii=False)
    # Operators still see everything.
    audit = client.get(
        "/v1/operator/audit-events", params={"user_id": alice.user_id}, headers=risk.auth
    ).json()
    assert NOTE in json.dumps(audit, ensure_ascii=False)
