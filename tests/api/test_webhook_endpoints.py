"""Webhook endpoints over the API: create (secret once), list, read, change, rotate, delete; validation,
idempotency, API keys with `webhooks:manage`, and one user never seeing another's endpoints or deliveries.

The helpers at the top are shared with the other event API tests."""

from __future__ import annotations

import json
from typing import Any

import httpx2 as httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from qianbao.clock import FixedClock
from qianbao.events.dispatcher import DispatchReport, dispatch_once
from qianbao.events.tables import webhook_endpoints
from qianbao.identity.context import IdentityContext
from qianbao.security.request_signing import signing_headers
from qianbao.store.idempotency_tables import idempotency_keys
from tests.support.api import SignedUp, reset_limits, with_step_up
from tests.support.messages import assert_helpful
from tests.support.receiver import public_resolver

HOOK = "https://hooks.example.com/qianbao"


# --- shared helpers -------------------------------------------------------------------------------------


def ctx_of(client: TestClient) -> IdentityContext:
    ctx: IdentityContext = client.app.state.container.identity  # type: ignore[attr-defined]
    return ctx


def dispatch(
    client: TestClient, answer: int = 200, *, clock: FixedClock | None = None, seen: list[Any] | None = None
) -> DispatchReport:
    """One dispatcher pass on the app's database; webhooks go to a fake receiver answering `answer`."""

    def receiver(request: httpx.Request) -> httpx.Response:
        if seen is not None:
            seen.append(request)
        return httpx.Response(answer, text="ok")

    options: dict[str, Any] = {"transport": httpx.MockTransport(receiver), "resolver": public_resolver}
    if clock is not None:
        options["clock"] = clock
    return dispatch_once(ctx_of(client), **options)


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.text}"
    )
    return response.json() if response.content else None


def fund(client: TestClient, user: SignedUp, amount: int = 100_000) -> None:
    money = {"amount": amount, "currency": "CNY"}
    ok(
        client.post(
            "/v1/sandbox/fund", json={"wallet_id": user.wallet_id, "amount": money}, headers=user.auth
        ),
        201,
    )


def pay(
    client: TestClient, payer: SignedUp, payee: SignedUp, amount: int = 1_234, memo: str | None = None
) -> Any:
    body: dict[str, Any] = {
        "from_wallet_id": payer.wallet_id,
        "to": {"wallet_id": payee.wallet_id},
        "amount": {"amount": amount, "currency": "CNY"},
    }
    if memo is not None:
        body["memo"] = memo
    return ok(client.post("/v1/transfers", json=body, headers=payer.auth), 201)


def new_endpoint(client: TestClient, user: SignedUp, events: list[str] | None = None, url: str = HOOK) -> Any:
    body = {"url": url, "events": events or ["*"], "description": "shop backend"}
    return ok(client.post("/v1/webhook-endpoints", json=body, headers=user.auth), 201)


def api_key(client: TestClient, user: SignedUp, scopes: list[str]) -> dict[str, Any]:
    reset_limits(client)
    created = with_step_up(
        client, user, "POST", "/v1/api-keys", json={"name": "integration", "scopes": scopes}
    )
    return dict(ok(created, 201))


def signed(client: TestClient, key: dict[str, Any], method: str, path: str, body: Any = None) -> Any:
    raw = b"" if body is None else json.dumps(body).encode()
    path_only, _, query = path.partition("?")
    headers = signing_headers(key["id"], key["secret"], method, path_only, query, raw)
    if raw:
        headers["Content-Type"] = "application/json"
    return client.request(method, path, content=raw, headers=headers)


# --- tests ----------------------------------------------------------------------------------------------


def test_create_read_change_rotate_delete(client: TestClient, alice: SignedUp) -> None:
    created = client.post(
        "/v1/webhook-endpoints",
        json={"url": HOOK, "events": ["transfer.succeeded", "payment.*"], "description": "shop"},
        headers=alice.auth,
    )
    body = ok(created, 201)
    assert created.headers["Cache-Control"] == "no-store"
    assert body["id"].startswith("whe_") and body["secret"].startswith("whsec_") and len(body["secret"]) > 40
    assert (body["url"], body["events"], body["enabled"], body["description"]) == (
        HOOK,
        ["transfer.succeeded", "payment.*"],
        True,
        "shop",
    )
    endpoint_id = body["id"]
    listed = ok(client.get("/v1/webhook-endpoints", headers=alice.auth))
    assert [e["id"] for e in listed["data"]] == [endpoint_id] and listed["next_cursor"] is None
    assert "secret" not in listed["data"][0]
    shown = ok(client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=alice.auth))
    assert "secret" not in shown and shown["events"] == body["events"]

    changed = ok(
        client.patch(
            f"/v1/webhook-endpoints/{endpoint_id}",
            json={"enabled": False, "events": ["*"], "description": None},
            headers=alice.auth,
        )
    )
    assert (changed["enabled"], changed["events"], changed["description"], changed["url"]) == (
        False,
        ["*"],
        None,
        HOOK,
    )
    refused = client.patch(
        f"/v1/webhook-endpoints/{endpoint_id}", json={"url": "http://shop.example.com/"}, headers=alice.auth
    )
    assert refused.status_code == 422 and refused.json()["code"] == "validation_error"
    assert ok(client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=alice.auth))["url"] == HOOK

    rotated = client.post(f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret", headers=alice.auth)
    new = ok(rotated, 201)
    assert rotated.headers["Cache-Control"] == "no-store"
    assert new["secret"].startswith("whsec_") and new["secret"] != body["secret"]
    assert new["previous_secret_expires_at"] is None
    overlap = ok(
        client.post(
            f"/v1/webhook-endpoints/{endpoint_id}/rotate-secret",
            json={"previous_secret_valid_s": 3600},
            headers=alice.auth,
        ),
        201,
    )
    assert overlap["previous_secret_expires_at"] is not None

    events = ok(client.get("/v1/me/security-events", headers=alice.auth))["data"]
    logged = {e["event"] for e in events if e["details"].get("endpoint_id") == endpoint_id}
    assert {
        "webhook_endpoint.created",
        "webhook_endpoint.updated",
        "webhook_endpoint.secret_rotated",
    } <= logged

    assert client.delete(f"/v1/webhook-endpoints/{endpoint_id}", headers=alice.auth).status_code == 204
    assert client.get(f"/v1/webhook-endpoints/{endpoint_id}", headers=alice.auth).status_code == 404
    assert client.delete(f"/v1/webhook-endpoints/{endpoint_id}", headers=alice.auth).status_code == 404
    assert ok(client.get("/v1/webhook-endpoints", headers=alice.auth))["data"] == []


@pytest.mark.parametrize(
    "body",
    [
        {"url": "http://shop.example.com/hooks", "events": ["*"]},  # plain http off localhost
        {"url": "https://user:pw@shop.example.com/hooks", "events": ["*"]},
        {"url": "ftp://shop.example.com/hooks", "events": ["*"]},
        {"url": "not a url", "events": ["*"]},
        {"url": HOOK, "events": []},
        {"url": HOOK, "events": ["transfer.exploded"]},
        {"url": HOOK, "events": ["user.phone_changed"]},  # internal events are not offered
        {"url": HOOK, "events": "*"},
        {"url": HOOK, "events": ["*"], "description": "x" * 300},
        {"url": HOOK, "events": ["*"], "secret": "mine"},
        {"url": HOOK},
        {"events": ["*"]},
    ],
)
def test_invalid_endpoints_are_refused_and_nothing_is_created(
    client: TestClient, alice: SignedUp, body: dict[str, Any]
) -> None:
    for lang in ("en", "zh-CN"):
        refused = client.post(
            "/v1/webhook-endpoints", json=body, headers={**alice.auth, "Accept-Language": lang}
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["code"] == "validation_error"
        assert_helpful(refused.json(), lang, str(body))  # which field, what is wrong, in that language
    assert ok(client.get("/v1/webhook-endpoints", headers=alice.auth))["data"] == []


def test_creating_is_idempotent_and_the_stored_answer_is_sealed(client: TestClient, alice: SignedUp) -> None:
    body = {"url": HOOK, "events": ["*"]}
    headers = {**alice.auth, "Idempotency-Key": "create-hook-1"}
    first = ok(client.post("/v1/webhook-endpoints", json=body, headers=headers), 201)
    again = ok(client.post("/v1/webhook-endpoints", json=body, headers=headers), 201)
    assert again == first  # the same endpoint and secret, not a second one
    assert len(ok(client.get("/v1/webhook-endpoints", headers=alice.auth))["data"]) == 1
    other = client.post("/v1/webhook-endpoints", json={**body, "events": ["transfer.*"]}, headers=headers)
    assert other.status_code == 409 and other.json()["code"] == "idempotency_key_reused"
    ctx = ctx_of(client)
    with ctx.db.read() as conn:
        stored = conn.execute(
            select(idempotency_keys.c.response).where(idempotency_keys.c.key == "create-hook-1")
        )
        [response] = stored.scalars().all()
        ciphers = conn.execute(select(webhook_endpoints.c.secret_cipher)).scalars().all()
    # The answer sealed, and beside it a keyed digest of the session it was shown to (shown once).
    assert first["secret"] not in json.dumps(response) and set(response) == {"sealed", "shown_to"}
    assert [first["secret"] not in c for c in ciphers] == [True]


def test_at_most_sixteen_endpoints(client: TestClient, alice: SignedUp) -> None:
    for _ in range(16):
        new_endpoint(client, alice)
    refused = client.post("/v1/webhook-endpoints", json={"url": HOOK, "events": ["*"]}, headers=alice.auth)
    assert refused.status_code == 409 and refused.json()["code"] == "conflict"


def test_lists_page_through_with_a_cursor(client: TestClient, alice: SignedUp) -> None:
    made = [new_endpoint(client, alice)["id"] for _ in range(5)]
    first = ok(client.get("/v1/webhook-endpoints?limit=3", headers=alice.auth))
    second = ok(
        client.get(f"/v1/webhook-endpoints?limit=3&cursor={first['next_cursor']}", headers=alice.auth)
    )
    assert [e["id"] for e in first["data"] + second["data"]] == sorted(made, reverse=True)
    assert second["next_cursor"] is None
    bad = client.get("/v1/webhook-endpoints?cursor=nonsense", headers=alice.auth)
    assert bad.status_code == 422


def test_one_user_never_sees_anothers_endpoints_or_deliveries(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    endpoint = new_endpoint(client, alice)
    fund(client, alice)
    pay(client, alice, bob)
    dispatch(client, 500)
    [delivery] = ok(client.get(f"/v1/webhook-endpoints/{endpoint['id']}/deliveries", headers=alice.auth))[
        "data"
    ]
    base = f"/v1/webhook-endpoints/{endpoint['id']}"
    for method, url, body in [
        ("GET", base, None),
        ("PATCH", base, {"enabled": False}),
        ("DELETE", base, None),
        ("POST", f"{base}/rotate-secret", None),
        ("GET", f"{base}/deliveries", None),
        ("GET", f"{base}/deliveries/{delivery['id']}", None),
        ("POST", f"{base}/deliveries/{delivery['id']}/resend", None),
    ]:
        response = client.request(method, url, json=body, headers=bob.auth)
        assert response.status_code == 404, f"{method} {url}: {response.text}"
        assert response.json()["code"] == "not_found"
    assert ok(client.get("/v1/webhook-endpoints", headers=bob.auth))["data"] == []
    # A delivery id under another endpoint of the same user is not found either.
    other = new_endpoint(client, alice)
    assert (
        client.get(
            f"/v1/webhook-endpoints/{other['id']}/deliveries/{delivery['id']}", headers=alice.auth
        ).status_code
        == 404
    )
    # Alice still has everything, unchanged.
    shown = ok(client.get(base, headers=alice.auth))
    assert shown["enabled"] is True
    assert ok(client.get(f"{base}/deliveries/{delivery['id']}", headers=alice.auth))["attempt_count"] == 1


def test_an_api_key_with_webhooks_manage_manages_its_owners_endpoints(
    client: TestClient, alice: SignedUp
) -> None:
    key = api_key(client, alice, ["webhooks:manage"])
    created = ok(
        signed(client, key, "POST", "/v1/webhook-endpoints", {"url": HOOK, "events": ["payment.*"]}), 201
    )
    mine = ok(client.get("/v1/webhook-endpoints", headers=alice.auth))["data"]
    assert [e["id"] for e in mine] == [created["id"]]  # the key acts for its owner
    listed = ok(signed(client, key, "GET", "/v1/webhook-endpoints"))
    assert [e["id"] for e in listed["data"]] == [created["id"]]
    assert (
        ok(signed(client, key, "PATCH", f"/v1/webhook-endpoints/{created['id']}", {"enabled": False}))[
            "enabled"
        ]
        is False
    )
    reader = api_key(client, alice, ["read"])
    refused = signed(client, reader, "GET", "/v1/webhook-endpoints")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    # A `read` key may poll the event feed, though.
    assert signed(client, reader, "GET", "/v1/events").status_code == 200


def test_delivery_log_lists_newest_first_with_a_status_filter(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    endpoint = new_endpoint(client, alice, ["transfer.succeeded"])
    fund(client, alice)
    for _ in range(3):
        pay(client, alice, bob)
    report = dispatch(client, 503)
    assert report.attempts == 3
    base = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"
    log = ok(client.get(base, headers=alice.auth))["data"]
    assert [d["id"] for d in log] == sorted((d["id"] for d in log), reverse=True)
    assert {(d["status"], d["attempt_count"], d["event_type"]) for d in log} == {
        ("pending", 1, "transfer.succeeded")
    }
    [latest] = log[0]["attempts"]
    assert (latest["number"], latest["status_code"], latest["succeeded"], latest["manual"]) == (
        1,
        503,
        False,
        False,
    )
    assert latest["response_snippet"] == "ok" and isinstance(latest["latency_ms"], int)
    assert log[0]["next_attempt_at"] is not None
    assert ok(client.get(f"{base}?status=delivered", headers=alice.auth))["data"] == []
    assert len(ok(client.get(f"{base}?status=pending&limit=2", headers=alice.auth))["data"]) == 2
    assert client.get(f"{base}?status=lost", headers=alice.auth).status_code == 422


def test_an_attempt_that_got_no_answer_shows_its_error_and_no_latency(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    endpoint = new_endpoint(client, alice, ["transfer.succeeded"])
    fund(client, alice)
    pay(client, alice, bob)

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("[Errno 111] Connection refused", request=request)

    report = dispatch_once(ctx_of(client), transport=httpx.MockTransport(refuse), resolver=public_resolver)
    assert report.attempts == 1
    base = f"/v1/webhook-endpoints/{endpoint['id']}/deliveries"
    [listed] = ok(client.get(base, headers=alice.auth))["data"]
    [attempt] = ok(client.get(f"{base}/{listed['id']}", headers=alice.auth))["attempts"]
    assert (attempt["status_code"], attempt["latency_ms"], attempt["error"]) == (
        None,
        None,
        "connection_failed",
    )
    schema = client.get("/openapi.json").json()["components"]["schemas"]["AttemptOut"]["properties"]
    assert {"type": "null"} in schema["latency_ms"]["anyOf"]
