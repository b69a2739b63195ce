"""The event feed: `GET /v1/events` shows each person the events about them (payer and payee alike, with
the same stable id), newest first, filtered by type, paged; nobody else sees them."""

from __future__ import annotations

import threading
import time
from pathlib import Path

from fastapi.testclient import TestClient

from qianbao.api.app import create_app
from tests.api.test_webhook_endpoints import api_key, dispatch, fund, ok, pay, signed
from tests.support.api import SignedUp, make_settings, sign_up


def test_both_sides_see_the_same_transfer_event_and_nobody_else(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    carol = sign_up(client, name="赵六")
    fund(client, alice)
    transfer = pay(client, alice, bob, 1_234, memo="房租 13912345678")
    assert ok(client.get("/v1/events", headers=alice.auth))["data"] == []  # not dispatched yet
    assert dispatch(client).events >= 1

    [mine] = ok(client.get("/v1/events?type=transfer.succeeded", headers=alice.auth))["data"]
    [theirs] = ok(client.get("/v1/events?type=transfer.succeeded", headers=bob.auth))["data"]
    assert mine == theirs
    assert mine["id"].startswith("evt_") and mine["type"] == "transfer.succeeded"
    assert mine["created_at"].endswith("Z")
    data = mine["data"]
    assert data["transfer_id"] == transfer["id"] and data["amount"] == {"amount": 1_234, "currency": "CNY"}
    assert (data["from_user_id"], data["to_user_id"]) == (alice.user_id, bob.user_id)
    assert "memo" not in data and "房租" not in str(mine)  # no memos (or names) in events
    assert ok(client.get(f"/v1/events/{mine['id']}", headers=bob.auth)) == mine

    assert ok(client.get("/v1/events", headers=carol.auth))["data"] == []
    hidden = client.get(f"/v1/events/{mine['id']}", headers=carol.auth)
    assert hidden.status_code == 404 and hidden.json()["code"] == "not_found"
    assert client.get("/v1/events/evt_nope", headers=alice.auth).status_code == 404
    assert client.get(f"/v1/events/{'x' * 200}", headers=alice.auth).status_code == 404


def test_newest_first_paged_and_filtered_by_type(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    fund(client, alice)
    for amount in (101, 102, 103):
        pay(client, alice, bob, amount)
    ok(client.post("/v1/wallets", json={"name": "旅行", "purpose": "travel"}, headers=alice.auth), 201)
    dispatch(client)
    everything = ok(client.get("/v1/events?limit=100", headers=alice.auth))["data"]
    types = [e["type"] for e in everything]
    assert types[0] == "wallet.opened" and types[1:4] == ["transfer.succeeded"] * 3
    assert [e["data"]["amount"]["amount"] for e in everything[1:4]] == [103, 102, 101]
    first = ok(client.get("/v1/events?type=transfer.succeeded&limit=2", headers=alice.auth))
    second = ok(
        client.get(
            f"/v1/events?type=transfer.succeeded&limit=2&cursor={first['next_cursor']}", headers=alice.auth
        )
    )
    assert [e["data"]["amount"]["amount"] for e in first["data"] + second["data"]] == [103, 102, 101]
    assert second["next_cursor"] is None
    assert ok(client.get("/v1/events?type=payment.succeeded", headers=alice.auth))["data"] == []
    # Bob was only paid: the wallet Alice opened is not about him.
    assert {e["type"] for e in ok(client.get("/v1/events", headers=bob.auth))["data"]} == {
        "transfer.succeeded"
    }
    for bad in ("cursor=abc", "limit=0", "limit=101", "type=" + "x" * 200):
        assert client.get(f"/v1/events?{bad}", headers=alice.auth).status_code == 422, bad


def test_an_api_key_reads_its_owners_feed(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    fund(client, alice)
    pay(client, alice, bob)
    dispatch(client)
    key = api_key(client, alice, ["read"])
    feed = ok(signed(client, key, "GET", "/v1/events?type=transfer.succeeded"))
    assert [e["data"]["from_user_id"] for e in feed["data"]] == [alice.user_id]
    manager = api_key(client, bob, ["webhooks:manage"])
    assert len(ok(signed(client, manager, "GET", "/v1/events"))["data"]) == 1
    payments_only = api_key(client, bob, ["payments:write"])
    refused = signed(client, payments_only, "GET", "/v1/events")
    assert refused.status_code == 403 and refused.json()["code"] == "forbidden"
    assert client.get("/v1/events").status_code == 401


def test_the_server_runs_the_dispatcher_inline_unless_told_not_to(
    fresh_database_url: str, tmp_path: Path
) -> None:
    def dispatcher_threads() -> list[threading.Thread]:
        return [t for t in threading.enumerate() if t.name == "event-dispatcher" and t.is_alive()]

    before = len(dispatcher_threads())
    settings = make_settings(fresh_database_url, tmp_path / "var", dispatcher="inline")
    with TestClient(create_app(settings), raise_server_exceptions=False) as client:
        assert len(dispatcher_threads()) == before + 1
        alice, bob = sign_up(client), sign_up(client)
        fund(client, alice)
        pay(client, alice, bob)
        # No one calls dispatch_once here: the server's own dispatcher fans the transfer out.
        deadline = time.monotonic() + 60
        while not ok(client.get("/v1/notifications", headers=bob.auth))["data"]:
            assert time.monotonic() < deadline, "the inline dispatcher never published the event"
            time.sleep(0.05)
    assert len(dispatcher_threads()) == before  # stopped with the app
    with TestClient(
        create_app(make_settings(fresh_database_url, tmp_path / "var2")), raise_server_exceptions=False
    ):
        assert len(dispatcher_threads()) == before  # make_settings turns it off for tests
