"""Every notification and every history row names the other side, in zh-CN and en.

A merchant by its registered name, a person by their masked name (王丽 → *丽, 李四 → *四), one's own
other wallet by its name (never one's own masked name), a system account by what it is; budget and goal
alerts name the wallet. Moving money between one's own wallets still notifies nobody.
"""

from __future__ import annotations

import csv
import io
from typing import Any

from fastapi.testclient import TestClient

from tests.api.test_api_keys import new_key, set_pin
from tests.api.test_checkout import confirm, create
from tests.api.test_merchant_payments import open_merchant, refund, static_payload
from tests.api.test_merchant_payments import pay as pay_by_qr
from tests.api.test_money_requests import accept, act, asked
from tests.api.test_payment_codes import charge, code_now, enable
from tests.api.test_wallet_settings import fund, money, open_sub, patch
from tests.api.test_webhook_endpoints import dispatch, ok
from tests.support.api import SignedUp, reset_limits, with_step_up

LANGUAGES = ("en", "zh-CN")


def bodies(client: TestClient, user: SignedUp) -> list[tuple[str, str, str]]:
    """(type, English body, Chinese body) of the user's notifications, newest first."""
    seen = {
        lang: client.get("/v1/notifications", headers={**user.auth, "Accept-Language": lang}).json()["data"]
        for lang in LANGUAGES
    }
    assert [n["id"] for n in seen["en"]] == [n["id"] for n in seen["zh-CN"]]
    return [(en["type"], en["body"], zh["body"]) for en, zh in zip(seen["en"], seen["zh-CN"], strict=True)]


def rows(client: TestClient, user: SignedUp, wallet_id: str, lang: str = "en") -> list[dict[str, Any]]:
    response = client.get(
        f"/v1/wallets/{wallet_id}/transactions", headers={**user.auth, "Accept-Language": lang}
    )
    data: list[dict[str, Any]] = ok(response)["data"]
    return data


def named(client: TestClient, user: SignedUp, wallet_id: str, lang: str = "en") -> list[tuple[str, str, Any]]:
    """(type, direction, the other side's name) of a wallet's history, newest first."""
    return [
        (t["type"], t["direction"], t["counterparty"]["name"]) for t in rows(client, user, wallet_id, lang)
    ]


def transfer(client: TestClient, user: SignedUp, source: str, target: str, amount: int) -> None:
    body = {"from_wallet_id": source, "to": {"wallet_id": target}, "amount": money(amount)}
    ok(client.post("/v1/transfers", json=body, headers=user.auth), 201)


def test_p2p_transfers_and_money_requests_name_the_other_person(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    fund(client, alice, alice.wallet_id, 100_000)
    transfer(client, alice, alice.wallet_id, bob.wallet_id, 5_000)
    declined = asked(client, bob, alice, 700)
    ok(act(client, alice, declined["id"], "decline"))
    canceled = asked(client, bob, alice, 800)
    ok(act(client, bob, canceled["id"], "cancel"))
    paid = asked(client, bob, alice, 900)
    ok(accept(client, alice, paid["id"]))
    dispatch(client)

    assert bodies(client, alice) == [
        ("transfer_sent", "You sent ¥9.00 to *四.", "您已向 *四 转账 ¥9.00。"),
        ("money_request_received", "*四 asked you to pay ¥9.00.", "*四 向您发起了 ¥9.00 的收款请求。"),
        (
            "money_request_canceled",
            "*四 canceled the request asking you for ¥8.00.",
            "*四 取消了向您发起的 ¥8.00 收款请求。",
        ),
        ("money_request_received", "*四 asked you to pay ¥8.00.", "*四 向您发起了 ¥8.00 的收款请求。"),
        ("money_request_received", "*四 asked you to pay ¥7.00.", "*四 向您发起了 ¥7.00 的收款请求。"),
        ("transfer_sent", "You sent ¥50.00 to *四.", "您已向 *四 转账 ¥50.00。"),
    ]
    assert bodies(client, bob) == [
        ("transfer_received", "You received ¥9.00 from *丽.", "您收到 *丽 的转账 ¥9.00。"),
        (
            "money_request_declined",
            "*丽 declined your request for ¥7.00.",
            "*丽 拒绝了您发起的 ¥7.00 收款请求。",
        ),
        ("transfer_received", "You received ¥50.00 from *丽.", "您收到 *丽 的转账 ¥50.00。"),
    ]
    # History: the masked name, both ways.
    assert named(client, alice, alice.wallet_id)[:2] == [("p2p", "debit", "*四"), ("p2p", "debit", "*四")]
    assert named(client, bob, bob.wallet_id) == [("p2p", "credit", "*丽"), ("p2p", "credit", "*丽")]


def test_payments_to_a_merchant_name_it_and_the_merchant_sees_the_payer(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    shop = open_merchant(client, bob, name="李记面馆")
    fund(client, alice, alice.wallet_id, 500_000)
    paid = ok(pay_by_qr(client, alice, static_payload(client, bob, shop["id"]), 8_000), 201)
    ok(refund(client, bob, paid["id"], 1_000), 201)
    reset_limits(client)
    device = enable(client, alice)
    ok(charge(client, bob, shop["id"], code_now(device, 0), 300), 201)  # under the allowance: paid
    ok(charge(client, bob, shop["id"], code_now(device, 1), 150_000), 202)  # above it: held, to confirm
    set_pin(client, bob)
    intent = ok(create(client, new_key(client, bob, ["read", "payments:write"]), shop["id"], 3_800), 201)
    ok(confirm(client, alice, intent["id"]))
    dispatch(client)

    assert bodies(client, alice) == [
        ("payment_paid", "You paid 李记面馆 ¥38.00.", "您已向 李记面馆 支付 ¥38.00。"),  # checkout
        (
            "payment_confirmation_required",
            "Confirm the payment of ¥1,500.00 to 李记面馆 in the app, or it will be canceled.",
            "请在应用中确认向 李记面馆 支付 ¥1,500.00，超时将自动取消。",
        ),
        ("payment_paid", "You paid 李记面馆 ¥3.00.", "您已向 李记面馆 支付 ¥3.00。"),  # payment code
        (
            "refund_received",
            "李记面馆 refunded ¥10.00 to your wallet.",
            "李记面馆 的退款 ¥10.00 已退回您的钱包。",
        ),
        ("payment_paid", "You paid 李记面馆 ¥80.00.", "您已向 李记面馆 支付 ¥80.00。"),  # QR code
    ]
    assert bodies(client, bob) == [
        ("payment_received", "李记面馆 received ¥38.00 from *丽.", "李记面馆 收到 *丽 的付款 ¥38.00。"),
        ("payment_received", "李记面馆 received ¥3.00 from *丽.", "李记面馆 收到 *丽 的付款 ¥3.00。"),
        ("refund_sent", "李记面馆 refunded ¥10.00 to *丽.", "李记面馆 已向 *丽 退款 ¥10.00。"),
        ("payment_received", "李记面馆 received ¥80.00 from *丽.", "李记面馆 收到 *丽 的付款 ¥80.00。"),
    ]
    for lang in LANGUAGES:
        assert named(client, alice, alice.wallet_id, lang) == [
            ("merchant_payment", "debit", "李记面馆"),  # checkout
            ("merchant_payment", "debit", "李记面馆"),  # the held payment-code charge
            ("merchant_payment", "debit", "李记面馆"),  # payment code
            ("refund", "credit", "李记面馆"),
            ("merchant_payment", "debit", "李记面馆"),  # QR code
            ("top_up", "credit", "Sandbox top-up" if lang == "en" else "沙盒充值"),
        ]


def test_ones_own_wallets_are_named_by_the_wallet_never_by_ones_own_name(
    client: TestClient, alice: SignedUp
) -> None:
    fund(client, alice, alice.wallet_id, 100_000)
    travel = open_sub(client, alice, "Travel", purpose="travel")["id"]
    transfer(client, alice, alice.wallet_id, travel, 5_000)
    transfer(client, alice, travel, alice.wallet_id, 1_000)
    pocket = open_sub(client, alice, "旅行", purpose="travel")["id"]
    fund(client, alice, pocket, 2_000)
    closed = with_step_up(client, alice, "POST", f"/v1/wallets/{pocket}/close")
    assert closed.status_code == 200, closed.text
    dispatch(client)

    main = [("wallet_move", "credit", "旅行"), ("wallet_move", "credit", "Travel")]
    main += [("wallet_move", "debit", "Travel"), ("top_up", "credit", "Sandbox top-up")]
    assert named(client, alice, alice.wallet_id) == main
    # The main wallet by its name in the reader's language (stored as "Main").
    assert named(client, alice, travel) == [
        ("wallet_move", "debit", "Main wallet"),
        ("wallet_move", "credit", "Main wallet"),
    ]
    assert named(client, alice, travel, "zh-CN") == [
        ("wallet_move", "debit", "主钱包"),
        ("wallet_move", "credit", "主钱包"),
    ]
    assert named(client, alice, pocket, "zh-CN") == [
        ("wallet_move", "debit", "主钱包"),
        ("top_up", "credit", "沙盒充值"),
    ]
    moves = [t for t in rows(client, alice, alice.wallet_id) if t["type"] == "wallet_move"]
    assert all(
        t["counterparty"]["own"] and t["counterparty"]["name_masked"] == t["counterparty"]["name"]
        for t in moves
    )
    assert "*丽" not in str(rows(client, alice, alice.wallet_id)) + str(rows(client, alice, travel))
    # Search and CSV go by the names shown: the pocket's, not one's own masked name.
    path = f"/v1/wallets/{alice.wallet_id}/transactions"
    assert [
        t["direction"] for t in ok(client.get(path, params={"q": "travel"}, headers=alice.auth))["data"]
    ] == [
        "credit",
        "debit",
    ]
    assert ok(client.get(path, params={"q": "丽"}, headers=alice.auth))["data"] == []
    exported = client.get(f"{path}.csv", headers={**alice.auth, "Accept-Language": "zh-CN"}).text
    table = list(csv.DictReader(io.StringIO(exported.removeprefix("\ufeff"))))
    assert [(r["counterparty_kind"], r["counterparty_name"]) for r in table] == [
        ("wallet", "旅行"),
        ("wallet", "Travel"),
        ("wallet", "Travel"),
        ("system", "沙盒充值"),
    ]
    path = f"/v1/wallets/{travel}/transactions"
    exported = client.get(f"{path}.csv", headers={**alice.auth, "Accept-Language": "zh-CN"}).text
    table = list(csv.DictReader(io.StringIO(exported.removeprefix("\ufeff"))))
    assert [r["counterparty_name"] for r in table] == ["主钱包", "主钱包"]
    # Search goes by the name shown too.
    zh = {**alice.auth, "Accept-Language": "zh-CN"}
    assert len(ok(client.get(path, params={"q": "主钱包"}, headers=zh))["data"]) == 2
    # Moves and closing notify nobody.
    assert bodies(client, alice) == []


def test_the_main_wallets_budget_alert_names_it_in_the_readers_language(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    assert patch(
        client, alice, alice.wallet_id, budget={"amount": money(10_000), "on_limit": "warn"}
    ).is_success
    fund(client, alice, alice.wallet_id, 20_000)
    transfer(client, alice, alice.wallet_id, bob.wallet_id, 8_000)  # 80 % of the budget
    dispatch(client)
    assert bodies(client, alice)[0] == (
        "budget_threshold",
        "You have used 80% of this month's budget for Main wallet.",
        "「主钱包」本月预算已使用 80%。",
    )
    # The API names it so too; the kind says which wallet is the main one.
    for lang, name in (("en", "Main wallet"), ("zh-CN", "主钱包")):
        listed = ok(client.get("/v1/wallets", headers={**alice.auth, "Accept-Language": lang}))["data"]
        assert (listed[0]["kind"], listed[0]["name"]) == ("main", name)


def test_budget_and_goal_alerts_name_the_wallet(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    shopping = open_sub(
        client, alice, "购物", purpose="shopping", budget={"amount": money(10_000), "on_limit": "warn"}
    )["id"]
    fund(client, alice, shopping, 20_000)
    savings = open_sub(client, alice, "Savings", purpose="savings", goal={"target": money(3_000)})["id"]
    transfer(client, alice, shopping, bob.wallet_id, 8_000)  # 80 % of the budget
    fund(client, alice, savings, 3_000)
    assert patch(client, alice, savings, name="Rainy day").status_code == 200  # today's name is shown
    dispatch(client)

    assert bodies(client, alice)[:2] == [
        (
            "goal_reached",
            "Congratulations! Your savings goal of ¥30.00 for Rainy day is reached.",
            "恭喜！「Rainy day」已达成 ¥30.00 的储蓄目标。",
        ),
        (
            "budget_threshold",
            "You have used 80% of this month's budget for 购物.",
            "「购物」本月预算已使用 80%。",
        ),
    ]
