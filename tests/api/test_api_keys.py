"""API keys: creation behind step-up, HMAC-signed requests (tampering, replay, expiry), revocation,
rotation with an overlap, scopes, and secrets that never reach the database in clear."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

import httpx2 as httpx
from fastapi.testclient import TestClient
from sqlalchemy import insert, select, update

from qianbao.identity import api_keys as api_keys_service
from qianbao.identity.tables import api_keys, api_nonces
from qianbao.security.request_signing import signing_headers
from qianbao.security.tables import audit_events
from qianbao.store.idempotency_tables import idempotency_keys
from tests.support.api import SignedUp
from tests.support.operators import identity_of

PIN = "582914"
WHOAMI = "/v1/api-keys/whoami"


def with_step_up(
    client: TestClient, user: SignedUp, method: str, url: str, body: dict[str, Any] | None = None
) -> httpx.Response:
    """Send, answer the step-up challenge with the PIN, send again with `Step-Up`."""
    first = client.request(method, url, json=body, headers=user.auth)
    assert first.status_code == 401, first.text
    problem = first.json()
    assert problem["code"] == "step_up_required" and "pin" in problem["methods"]
    challenge = problem["challenge_id"]
    proved = client.post(
        f"/v1/challenges/{challenge}/verify", json={"method": "pin", "pin": PIN}, headers=user.auth
    )
    assert proved.status_code == 200, proved.text
    return client.request(method, url, json=body, headers={**user.auth, "Step-Up": challenge})


def set_pin(client: TestClient, user: SignedUp) -> None:
    r = client.put("/v1/me/pin", json={"pin": PIN}, headers=user.auth)
    assert r.status_code == 204, r.text


def new_key(client: TestClient, user: SignedUp, scopes: list[str], name: str = "shop") -> dict[str, Any]:
    r = with_step_up(client, user, "POST", "/v1/api-keys", {"name": name, "scopes": scopes})
    assert r.status_code == 201, r.text
    return dict(r.json())


def signed(
    client: TestClient,
    key: dict[str, Any],
    path: str = WHOAMI,
    *,
    method: str = "GET",
    body: bytes = b"",
    query: str = "",
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    headers = headers or signing_headers(key["id"], key["secret"], method, path, query, body)
    url = f"{path}?{query}" if query else path
    return client.request(method, url, content=body, headers=headers)


def test_create_key_with_step_up_then_sign_requests(client: TestClient, alice: SignedUp) -> None:
    set_pin(client, alice)
    refused = client.post("/v1/api-keys", json={"name": "shop", "scopes": ["read"]}, headers=alice.auth)
    assert refused.status_code == 401 and refused.json()["code"] == "step_up_required"
    assert client.get("/v1/api-keys", headers=alice.auth).json()["data"] == []  # nothing made yet

    key = new_key(client, alice, ["read", "payments:write"])
    assert key["secret"].startswith("qbk_") and len(key["secret"]) > 40
    assert key["id"].startswith("key_") and key["scopes"] == ["read", "payments:write"]

    me = signed(client, key)
    assert me.status_code == 200, me.text
    assert me.json() == {
        "kind": "api_key",
        "key_id": key["id"],
        "owner_user_id": alice.user_id,
        "scopes": ["payments:write", "read"],
    }
    # The same endpoint answers a user session too.
    assert client.get(WHOAMI, headers=alice.auth).json()["owner_user_id"] == alice.user_id

    listed = client.get("/v1/api-keys", headers=alice.auth).json()["data"]
    assert [k["id"] for k in listed] == [key["id"]]
    assert "secret" not in listed[0] and listed[0]["status"] == "active"
    assert listed[0]["last_used_at"] is not None
    events = client.get("/v1/me/security-events", headers=alice.auth).json()["data"]
    assert any(e["event"] == "api_key.created" and e["details"]["key_id"] == key["id"] for e in events)


def test_bad_key_input_is_refused_before_any_challenge(client: TestClient, alice: SignedUp) -> None:
    set_pin(client, alice)
    for body in (
        {"name": "shop", "scopes": ["admin"]},
        {"name": "shop", "scopes": []},
        {"name": "", "scopes": ["read"]},
        {"name": "shop", "scopes": ["read"], "extra": 1},
    ):
        r = client.post("/v1/api-keys", json=body, headers=alice.auth)
        assert r.status_code == 422 and r.json()["code"] == "validation_error", body


def test_tampering_wrong_secret_expiry_and_replay_are_refused(client: TestClient, alice: SignedUp) -> None:
    set_pin(client, alice)
    key = new_key(client, alice, ["read"])
    body = json.dumps({"amount": 100}).encode()

    tampered = signing_headers(key["id"], key["secret"], "GET", WHOAMI, "", body)
    r = signed(client, key, body=json.dumps({"amount": 999}).encode(), headers=tampered)
    assert r.status_code == 401 and r.json()["code"] == "signature_invalid"

    other_query = signing_headers(key["id"], key["secret"], "GET", WHOAMI, "a=1", b"")
    r = signed(client, key, query="a=2", headers=other_query)
    assert r.status_code == 401 and r.json()["code"] == "signature_invalid"

    wrong_secret = signing_headers(key["id"], "qbk_" + "x" * 43, "GET", WHOAMI, "", b"")
    r = signed(client, key, headers=wrong_secret)
    assert r.status_code == 401 and r.json()["code"] == "signature_invalid"

    unknown_key = signing_headers("key_" + "0" * 26, key["secret"], "GET", WHOAMI, "", b"")
    r = signed(client, key, headers=unknown_key)
    assert r.status_code == 401 and r.json()["code"] == "signature_invalid"

    stale = signing_headers(key["id"], key["secret"], "GET", WHOAMI, "", b"", now_s=time.time() - 301)
    r = signed(client, key, headers=stale)
    assert r.status_code == 401 and r.json()["code"] == "signature_expired"

    partial = dict(signing_headers(key["id"], key["secret"], "GET", WHOAMI, "", b""))
    del partial["Qianbao-Nonce"]
    r = signed(client, key, headers=partial)
    assert r.status_code == 401 and r.json()["code"] == "signature_malformed"

    once = signing_headers(key["id"], key["secret"], "GET", WHOAMI, "", body)
    assert signed(client, key, body=body, headers=once).status_code == 200
    replay = signed(client, key, body=body, headers=once)
    assert replay.status_code == 401 and replay.json()["code"] == "signature_replayed"
    assert replay.json()["user_message"]


def test_nonces_are_kept_per_key_and_purged_after_twice_the_window(
    client: TestClient, alice: SignedUp
) -> None:
    set_pin(client, alice)
    key = new_key(client, alice, ["read"])
    assert signed(client, key).status_code == 200
    ctx = identity_of(client)
    now = ctx.now()
    with ctx.db.write() as conn:
        conn.execute(insert(api_nonces).values(key_id=key["id"], nonce="o" * 20, seen_at=now - 601_000_000))
        conn.execute(insert(api_nonces).values(key_id=key["id"], nonce="r" * 20, seen_at=now - 599_000_000))
        assert api_keys_service.purge_nonces(conn, now) == 1
        left = set(conn.execute(select(api_nonces.c.nonce).where(api_nonces.c.key_id == key["id"])).scalars())
    assert "r" * 20 in left and "o" * 20 not in left and len(left) == 2


def test_revoked_key_is_refused_and_only_its_owner_can_revoke(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    set_pin(client, alice)
    key = new_key(client, alice, ["read"])
    assert client.delete(f"/v1/api-keys/{key['id']}", headers=bob.auth).status_code == 404
    assert signed(client, key).status_code == 200
    assert client.delete(f"/v1/api-keys/{key['id']}", headers=alice.auth).status_code == 204
    r = signed(client, key)
    assert r.status_code == 401 and r.json()["code"] == "unauthenticated"
    assert r.json()["reason"] == "api_key_revoked"
    listed = client.get("/v1/api-keys", headers=alice.auth).json()["data"]
    assert listed[0]["status"] == "revoked" and listed[0]["revoked_at"]
    events = client.get("/v1/me/security-events", headers=alice.auth).json()["data"]
    assert any(e["event"] == "api_key.revoked" for e in events)


def test_rotation_overlap_then_old_key_expires(client: TestClient, alice: SignedUp) -> None:
    set_pin(client, alice)
    old = new_key(client, alice, ["read", "refunds:write"], name="till")
    rotated = with_step_up(client, alice, "POST", f"/v1/api-keys/{old['id']}/rotate")
    assert rotated.status_code == 201, rotated.text
    new = rotated.json()
    assert new["id"] != old["id"] and new["secret"] != old["secret"]
    assert new["name"] == "till" and new["scopes"] == ["read", "refunds:write"]

    assert signed(client, old).status_code == 200  # the overlap: both work
    assert signed(client, new).status_code == 200
    listed = {k["id"]: k for k in client.get("/v1/api-keys", headers=alice.auth).json()["data"]}
    assert listed[old["id"]]["status"] == "expiring" and listed[old["id"]]["replaced_by"] == new["id"]
    assert listed[old["id"]]["expires_at"] is not None

    again = client.post(f"/v1/api-keys/{old['id']}/rotate", headers=alice.auth)
    assert again.status_code == 409  # a key is rotated once

    ctx = identity_of(client)
    with ctx.db.write() as conn:
        conn.execute(update(api_keys).where(api_keys.c.id == old["id"]).values(expires_at=ctx.now() - 1))
    r = signed(client, old)
    assert r.status_code == 401 and r.json()["reason"] == "api_key_expired"
    assert signed(client, new).status_code == 200
    events = client.get("/v1/me/security-events", headers=alice.auth).json()["data"]
    assert any(e["event"] == "api_key.rotated" and e["details"]["new_key_id"] == new["id"] for e in events)


def test_scopes_are_enforced_and_keys_cannot_manage_keys(client: TestClient, alice: SignedUp) -> None:
    set_pin(client, alice)
    payments_only = new_key(client, alice, ["payments:write"])
    r = signed(client, payments_only)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert "read" in r.json()["detail"]
    reader = new_key(client, alice, ["read"], name="reader")
    assert signed(client, reader).status_code == 200
    r = signed(client, reader, "/v1/api-keys")
    assert r.status_code == 403  # listing (and minting, revoking) keys needs the user's session
    body = json.dumps({"name": "minted", "scopes": ["read"]}).encode()
    r = signed(client, reader, "/v1/api-keys", method="POST", body=body)
    assert r.status_code == 403 and r.json()["code"] == "forbidden"
    assert len(client.get("/v1/api-keys", headers=alice.auth).json()["data"]) == 2


def test_secrets_are_never_stored_in_clear(client: TestClient, alice: SignedUp) -> None:
    set_pin(client, alice)
    key = new_key(client, alice, ["read"])
    assert signed(client, key).status_code == 200
    ctx = identity_of(client)
    with ctx.db.read() as conn:
        row = conn.execute(select(api_keys).where(api_keys.c.id == key["id"])).one()
        details = [json.dumps(d) for d in conn.execute(select(audit_events.c.details)).scalars()]
    for value in row._mapping.values():
        assert key["secret"] not in json.dumps(value, default=str)
        assert key["secret"][4:] not in json.dumps(value, default=str)
    assert row.secret_hash == hashlib.sha256(key["secret"].encode()).hexdigest()
    assert ctx.keys.decrypt(row.secret_cipher, context="api_keys.secret_cipher") == key["secret"]
    assert not any(key["secret"][4:] in d for d in details)


def test_an_idempotent_replay_returns_the_secret_but_the_record_is_sealed(
    client: TestClient, alice: SignedUp
) -> None:
    set_pin(client, alice)
    body = {"name": "till", "scopes": ["read"]}
    first = client.post("/v1/api-keys", json=body, headers=alice.auth)
    challenge = first.json()["challenge_id"]
    client.post(f"/v1/challenges/{challenge}/verify", json={"method": "pin", "pin": PIN}, headers=alice.auth)
    headers = {**alice.auth, "Step-Up": challenge, "Idempotency-Key": "create-till"}
    created = client.post("/v1/api-keys", json=body, headers=headers)
    replay = client.post("/v1/api-keys", json=body, headers=headers)
    assert created.status_code == replay.status_code == 201
    assert replay.json() == created.json()
    secret = created.json()["secret"]
    ctx = identity_of(client)
    with ctx.db.read() as conn:
        stored = [json.dumps(r) for r in conn.execute(select(idempotency_keys.c.response)).scalars()]
    assert stored and not any(secret[4:] in s for s in stored)
    assert len([k for k in client.get("/v1/api-keys", headers=alice.auth).json()["data"]]) == 1
