"""In-app notifications: both sides of a transfer are notified, in zh-CN or en by Accept-Language, newest
first; marking read by ids or all; nobody reads or marks anyone else's."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from qianbao.clock import FixedClock
from qianbao.store.outbox import OutboxEvent
from qianbao.store.unit_of_work import UnitOfWork
from tests.api.test_webhook_endpoints import ctx_of, dispatch, fund, ok, pay
from tests.support.api import SignedUp, sign_up


def notes(client: TestClient, user: SignedUp, lang: str = "en", query: str = "") -> Any:
    return ok(client.get(f"/v1/notifications{query}", headers={**user.auth, "Accept-Language": lang}))


def test_payer_and_payee_are_both_notified_in_their_language(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    fund(client, alice)
    transfer = pay(client, alice, bob, 12_345, memo="给李四的房租")
    assert notes(client, bob)["data"] == []
    dispatch(client)

    [sent] = notes(client, alice)["data"]
    assert (sent["type"], sent["title"], sent["body"]) == (
        "transfer_sent",
        "Money sent",
        "You sent ¥123.45 to *四.",
    )
    assert sent["data"]["transfer_id"] == transfer["id"] and sent["read"] is False and sent["read_at"] is None
    [received] = notes(client, bob, "zh-CN,zh;q=0.9")["data"]
    assert (received["type"], received["title"], received["body"]) == (
        "transfer_received",
        "收到转账",
        "您收到 *丽 的转账 ¥123.45。",
    )
    assert notes(client, bob, "en-GB")["data"][0]["body"] == "You received ¥123.45 from *丽."
    assert received["event_id"] == sent["event_id"]
    # The other side by their masked name only, and no memo; the stored row holds no name at all.
    assert "房租" not in str(received) and "王丽" not in str(received) and "李四" not in str(sent)
    assert "*" not in str(received["data"]) and "*" not in str(sent["data"])
    assert notes(client, bob)["unread_count"] == 1


def test_moving_money_between_own_wallets_notifies_nobody(client: TestClient, alice: SignedUp) -> None:
    fund(client, alice)
    pocket = ok(
        client.post("/v1/wallets", json={"name": "储蓄", "purpose": "savings"}, headers=alice.auth), 201
    )
    body = {
        "from_wallet_id": alice.wallet_id,
        "to": {"wallet_id": pocket["id"]},
        "amount": {"amount": 500, "currency": "CNY"},
    }
    ok(client.post("/v1/transfers", json=body, headers=alice.auth), 201)
    dispatch(client)
    assert notes(client, alice)["data"] == []
    # The event feed still has it.
    types = [e["type"] for e in ok(client.get("/v1/events", headers=alice.auth))["data"]]
    assert "transfer.succeeded" in types


def test_mark_read_by_ids_or_all_and_only_ones_own(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    fund(client, alice)
    for amount in (100, 200, 300):
        pay(client, alice, bob, amount)
    dispatch(client)
    bobs = notes(client, bob)["data"]
    alices = notes(client, alice)["data"]
    assert [n["data"]["amount"]["amount"] for n in bobs] == [300, 200, 100]  # newest first

    # Alice cannot mark Bob's notifications: his ids are ignored, as if they did not exist.
    assert ok(client.post("/v1/notifications/read", json={"ids": [bobs[0]["id"]]}, headers=alice.auth)) == {
        "updated": 0,
        "unread_count": 3,
    }
    assert notes(client, bob)["unread_count"] == 3
    marked = ok(
        client.post("/v1/notifications/read", json={"ids": [bobs[0]["id"], "ntf_unknown"]}, headers=bob.auth)
    )
    assert marked == {"updated": 1, "unread_count": 2}
    after = notes(client, bob)
    assert [n["read"] for n in after["data"]] == [True, False, False] and after["data"][0]["read_at"]
    assert [n["id"] for n in notes(client, bob, query="?unread=true")["data"]] == [
        bobs[1]["id"],
        bobs[2]["id"],
    ]
    assert ok(client.post("/v1/notifications/read", json={"all": True}, headers=bob.auth)) == {
        "updated": 2,
        "unread_count": 0,
    }
    assert notes(client, alice)["unread_count"] == len(alices) == 3  # untouched


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"ids": None},
        {"all": False},
        {"ids": [], "all": True},
        {"ids": "all"},
        {"ids": [1]},
        {"ids": ["x"] * 101},
    ],
)
def test_bad_read_requests_are_refused(client: TestClient, alice: SignedUp, body: dict[str, Any]) -> None:
    refused = client.post("/v1/notifications/read", json=body, headers=alice.auth)
    assert refused.status_code == 422 and refused.json()["code"] == "validation_error"


def test_pages_and_other_event_kinds(client: TestClient, alice: SignedUp) -> None:
    """Events from payments, budgets, goals and money requests (emitted here as their services will).
    Their merchant and wallets do not exist, so those texts go without names; Bob, who asks, is named."""
    bob = sign_up(client)
    ctx = ctx_of(client)
    money = {"amount": 5_000, "currency": "CNY"}
    events = [
        OutboxEvent(
            "payment.succeeded",
            "payment",
            "pay_1",
            {
                "payer_user_id": alice.user_id,
                "merchant_user_id": bob.user_id,
                "merchant_id": "mch_1",
                "amount": money,
            },
        ),
        OutboxEvent(
            "refund.succeeded",
            "refund",
            "rfd_1",
            {
                "payer_user_id": alice.user_id,
                "merchant_user_id": bob.user_id,
                "merchant_id": "mch_1",
                "amount": money,
            },
        ),
        OutboxEvent(
            "wallet.budget_threshold_reached",
            "wallet",
            "wal_1",
            {"user_id": alice.user_id, "wallet_id": "wal_1", "threshold": 80},
        ),
        OutboxEvent(
            "wallet.goal_reached",
            "wallet",
            "wal_2",
            {"user_id": alice.user_id, "wallet_id": "wal_2", "target": money},
        ),
        OutboxEvent(
            "money_request.created",
            "money_request",
            "mrq_1",
            # Alice is asked (the money would come from her), Bob asks.
            {"from_user_id": alice.user_id, "to_user_id": bob.user_id, "amount": money},
        ),
    ]
    with UnitOfWork(ctx.db, FixedClock()) as uow:
        for event in events:
            uow.emit(event)
        uow.commit()
    dispatch(client)
    first = notes(client, alice, "zh-CN", "?limit=3")
    rest = notes(client, alice, "zh-CN", f"?limit=3&cursor={first['next_cursor']}")
    assert rest["next_cursor"] is None
    assert [(n["type"], n["body"]) for n in first["data"] + rest["data"]] == [
        ("money_request_received", "*四 向您发起了 ¥50.00 的收款请求。"),
        ("goal_reached", "恭喜！您已达成 ¥50.00 的储蓄目标。"),
        ("budget_threshold", "该钱包本月预算已使用 80%。"),
        ("refund_received", "一笔 ¥50.00 的退款已退回您的钱包。"),
        ("payment_paid", "您已成功支付 ¥50.00。"),
    ]
    assert [n["type"] for n in notes(client, bob)["data"]] == ["refund_sent", "payment_received"]
    assert client.get("/v1/notifications?cursor=x", headers=alice.auth).status_code == 422
