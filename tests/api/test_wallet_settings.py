"""Sub-wallet appearance and settings through the API: colour and icon on create and PATCH, the fields
the wallet JSON gains (API.md's stay), validation errors that change nothing, and ownership (404).

The helpers at the top are shared with the other tests/api/test_wallet_*.py modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from qianbao.api import app as app_module
from qianbao.clock import FixedClock, rfc3339, to_us
from qianbao.config import Settings
from qianbao.store.database import Database
from qianbao.store.outbox import outbox
from tests.support.api import SignedUp, api_client, sign_up

API_MD_FIELDS = {"id", "name", "kind", "purpose", "currency", "balance", "available", "status"}
# 23:00 China time on the last day of November: two hours later it is December there (not yet in UTC).
START = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
HOUR = 3600


def money(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY"}


@pytest.fixture
def clock() -> FixedClock:
    return FixedClock(to_us(START))


@pytest.fixture
def clocked(settings: Settings, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    """The sandbox app with an injected clock (the app factory builds its container with it)."""
    real = app_module.build_container
    monkeypatch.setattr(app_module, "build_container", lambda s: real(s, clock))
    yield from api_client(settings)


def db_of(client: TestClient) -> Database:
    database: Database = client.app.state.container.db  # type: ignore[attr-defined]
    return database


def open_sub(client: TestClient, user: SignedUp, name: str = "旅行", **fields: Any) -> dict[str, Any]:
    response = client.post("/v1/wallets", json={"name": name, **fields}, headers=user.auth)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def wallet(client: TestClient, user: SignedUp, wallet_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/wallets/{wallet_id}", headers=user.auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def patch(client: TestClient, user: SignedUp, wallet_id: str, **fields: Any) -> Any:
    return client.patch(f"/v1/wallets/{wallet_id}", json=fields, headers=user.auth)


def fund(client: TestClient, user: SignedUp, wallet_id: str, amount: int) -> None:
    response = client.post(
        "/v1/sandbox/fund", json={"wallet_id": wallet_id, "amount": money(amount)}, headers=user.auth
    )
    assert response.status_code == 201, response.text


def pay(client: TestClient, user: SignedUp, source: str, target: str, amount: int, **headers: str) -> Any:
    return client.post(
        "/v1/transfers",
        json={"from_wallet_id": source, "to": {"wallet_id": target}, "amount": money(amount)},
        headers={**user.auth, **headers},
    )


def events(client: TestClient, event_type: str, wallet_id: str) -> list[dict[str, Any]]:
    """The outbox events of a type about a wallet, oldest first."""
    with db_of(client).read() as conn:
        rows = conn.execute(
            select(outbox.c.payload)
            .where(outbox.c.type == event_type, outbox.c.aggregate_id == wallet_id)
            .order_by(outbox.c.seq)
        )
        return [dict(r.payload) for r in rows]


def in_days(clock: FixedClock, days: float) -> str:
    return rfc3339(clock.now_us() + int(days * 86_400 * 1_000_000))


# -- appearance ------------------------------------------------------------------------------------


def test_a_sub_wallet_gets_a_colour_and_icon_and_keeps_the_api_md_fields(
    client: TestClient, alice: SignedUp
) -> None:
    chosen = open_sub(client, alice, "日本", purpose="travel", colour="#1a2B3c", icon="suitcase")
    assert API_MD_FIELDS <= set(chosen)
    assert (chosen["colour"], chosen["colour_hex"], chosen["icon"]) == ("#1A2B3C", "#1A2B3C", "suitcase")
    assert chosen["budget"] is None and chosen["goal"] is None and chosen["locked_until"] is None
    assert chosen["payable"] is True and chosen["receivable"] is True and chosen["closed_at"] is None
    named = open_sub(client, alice, "购物", purpose="shopping", colour="Teal")
    assert (named["colour"], named["colour_hex"], named["icon"]) == ("teal", "#00897B", "cart")
    default = open_sub(client, alice, "存钱", purpose="savings")
    assert (default["colour"], default["icon"]) == ("green", "piggy_bank")
    listed = client.get("/v1/wallets", headers=alice.auth).json()["data"]
    assert [w["kind"] for w in listed] == ["main", "sub", "sub", "sub"]
    assert (listed[0]["colour"], listed[0]["icon"]) == ("red", "wallet")
    assert listed[1]["icon"] == "suitcase"


def test_patch_changes_only_what_is_given(client: TestClient, alice: SignedUp) -> None:
    sub = open_sub(client, alice, "旅行", purpose="travel", colour="blue", icon="plane")
    changed = patch(client, alice, sub["id"], name="  出差  基金 ", icon="car")
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["name"], body["purpose"], body["colour"], body["icon"]) == (
        "出差 基金",
        "travel",
        "blue",
        "car",
    )
    body = patch(client, alice, sub["id"], purpose="bills", colour=None).json()
    # null goes back to the purpose's default colour; the chosen icon stays.
    assert (body["purpose"], body["colour"], body["icon"]) == ("bills", "purple", "car")
    assert wallet(client, alice, sub["id"]) == body
    main = patch(client, alice, alice.wallet_id, colour="#FFFFFF", icon="home")
    assert main.status_code == 200, main.text
    assert (main.json()["colour"], main.json()["icon"], main.json()["name"]) == (
        "#FFFFFF",
        "home",
        "Main wallet",
    )


@pytest.mark.parametrize(
    "fields",
    [
        {"colour": "chartreuse"},
        {"colour": "#12345"},
        {"colour": "#GGGGGG"},
        {"icon": "rocket"},
        {"name": ""},
        {"name": "x" * 33},
        {"purpose": "main"},
        {"budget": {"amount": money(0)}},
        {"budget": {"amount": {"amount": 100, "currency": "USD"}}},
        {"budget": {"amount": money(100), "on_limit": "maybe"}},
        {"budget": {"amount": money(100), "extra": 1}},
        {"goal": {"target": money(-5)}},
        {"goal": {"target": money(100), "target_date": "2026-02-30"}},
        {"goal": {"target": money(100), "target_date": "2020-01-01"}},
        {"goal": {"target": money(100), "target_date": "2099-01-01"}},
        {"locked_until": "tomorrow"},
        {"locked_until": "2027-01-01"},
        {"locked_until": "2027-01-01T00:00:00"},
        {"locked_until": "2020-01-01T00:00:00Z"},
        {"locked_until": "2046-01-01T00:00:00Z"},
        {"locked_until": 1_900_000_000},
    ],
)
def test_bad_settings_are_422_and_change_nothing(
    client: TestClient, alice: SignedUp, fields: dict[str, Any]
) -> None:
    sub = open_sub(client, alice, "旅行", purpose="travel", colour="blue")
    before = wallet(client, alice, sub["id"])
    response = patch(client, alice, sub["id"], **fields)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert wallet(client, alice, sub["id"]) == before
    created = client.post("/v1/wallets", json={"name": "新", **fields}, headers=alice.auth)
    assert created.status_code == 422, created.text
    assert len(client.get("/v1/wallets", headers=alice.auth).json()["data"]) == 2


@pytest.mark.parametrize(
    "fields",
    [
        {"name": "零钱"},
        {"purpose": "travel"},
        {"goal": {"target": money(100)}},
        {"locked_until": "2027-01-01T00:00:00Z"},
    ],
)
def test_the_main_wallet_has_no_name_change_goal_or_lock(
    client: TestClient, alice: SignedUp, fields: dict[str, Any]
) -> None:
    before = wallet(client, alice, alice.wallet_id)
    response = patch(client, alice, alice.wallet_id, **fields)
    assert response.status_code == 422, response.text
    assert response.json()["code"] == "validation_error"
    assert wallet(client, alice, alice.wallet_id) == before


def test_other_peoples_wallets_are_not_found(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    sub = open_sub(client, bob, "存钱", purpose="savings")
    for wallet_id in (bob.wallet_id, sub["id"], "wal_does_not_exist"):
        changed = patch(client, alice, wallet_id, colour="red", locked_until="2027-06-01T00:00:00Z")
        assert changed.status_code == 404 and changed.json()["code"] == "not_found", changed.text
        closed = client.post(f"/v1/wallets/{wallet_id}/close", headers=alice.auth)
        assert closed.status_code == 404 and closed.json()["code"] == "not_found", closed.text
        assert client.get(f"/v1/wallets/{wallet_id}", headers=alice.auth).status_code == 404
    untouched = wallet(client, bob, sub["id"])
    assert (untouched["colour"], untouched["locked_until"], untouched["status"]) == ("green", None, "active")


def test_a_closed_wallet_cannot_be_changed(client: TestClient, alice: SignedUp) -> None:
    sub = open_sub(client, alice)
    assert client.post(f"/v1/wallets/{sub['id']}/close", headers=alice.auth).status_code == 200
    response = patch(client, alice, sub["id"], colour="red")
    assert response.status_code == 409 and response.json()["code"] == "conflict", response.text
    assert wallet(client, alice, sub["id"])["colour"] == "grey"


def test_settings_can_be_given_when_opening(clocked: TestClient, clock: FixedClock) -> None:
    user = sign_up(clocked)
    until = in_days(clock, 30)
    sub = open_sub(
        clocked,
        user,
        "买房",
        purpose="savings",
        budget={"amount": money(50_000), "on_limit": "block"},
        goal={"target": money(1_000_000), "target_date": "2027-12-31"},
        locked_until=until,
    )
    assert sub["budget"] == {
        "amount": money(50_000),
        "on_limit": "block",
        "month": "2026-11",
        "spent": money(0),
        "remaining": money(50_000),
        "percent": 0,
    }
    assert sub["goal"] == {
        "target": money(1_000_000),
        "target_date": "2027-12-31",
        "balance": money(0),
        "remaining": money(1_000_000),
        "percent": 0,
        "reached": False,
        "reached_at": None,
    }
    assert sub["locked_until"] == until and sub["payable"] is False
