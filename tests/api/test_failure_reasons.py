"""Failure reasons through the API: real declines explain themselves in zh-CN and en, say what to do next,
and carry a reference the user can quote to customer service (docs/errors.md)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from qianbao.error_codes import BY_CODE
from qianbao.ledger.model import AccountStatus
from tests.api.test_wallets_and_transfers import container, funded, money
from tests.support.api import SignedUp, new_phone
from tests.support.ledger import shown_open

ZH = {"Accept-Language": "zh-CN,zh;q=0.9,en;q=0.8"}
EN = {"Accept-Language": "en-GB,en;q=0.9"}


def transfer(
    client: TestClient,
    payer: SignedUp,
    amount: Any,
    to: dict[str, Any],
    headers: dict[str, str],
    key: str | None = None,
) -> Any:
    body = {"from_wallet_id": payer.wallet_id, "to": to, "amount": amount}
    extra = {"Idempotency-Key": key} if key else {}
    return client.post("/v1/transfers", json=body, headers={**payer.auth, **headers, **extra})


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["code"] == code
    assert {"type", "title", "status", "detail", "user_message", "support_reference"} <= body.keys()
    return body


def by_request_id(response: Any, body: dict[str, Any]) -> None:
    """Without an operation id of its own, the reference is the request's id, also in X-Request-Id."""
    assert body["support_reference"].startswith("req_")
    assert response.headers["x-request-id"] == body["support_reference"]


DECLINES_ZH = {
    "insufficient_funds": ("余额不足，请充值或降低金额。", "top_up", "请先充值，再重新支付。"),
    "limit_exceeded_single": (
        "超过单笔支付限额，请降低金额或完成实名认证以提高限额。",
        "verify_identity",
        "完成实名认证即可提高限额。",
    ),
    "same_wallet": (
        "付款钱包和收款钱包不能相同，请选择其他收款钱包。",
        "check_input",
        "请核对填写的信息后重试。",
    ),
    "recipient_not_found": (
        "该手机号未开通钱包，请核对号码后重试。",
        "check_input",
        "请核对填写的信息后重试。",
    ),
    "validation_error": ("金额不能少于 ¥0.01（1 分）。", "check_input", "请核对填写的信息后重试。"),
}
DECLINES_EN = {
    "insufficient_funds": (
        "Not enough balance. Top up or lower the amount.",
        "top_up",
        "Top up your wallet, then try again.",
    ),
    "limit_exceeded_single": (
        "This payment is above your single-payment limit. Lower the amount or verify your identity to raise "
        "the limit.",
        "verify_identity",
        "Complete real-name verification to raise your limits.",
    ),
    "same_wallet": (
        "Choose a different wallet to pay into.",
        "check_input",
        "Check the details you entered and try again.",
    ),
    "recipient_not_found": (
        "No wallet is registered for this phone number. Check the number and try again.",
        "check_input",
        "Check the details you entered and try again.",
    ),
    "validation_error": (
        "The amount must be at least ¥0.01 (1 fen).",
        "check_input",
        "Check the details you entered and try again.",
    ),
}


@pytest.mark.parametrize(("headers", "expected"), [(ZH, DECLINES_ZH), (EN, DECLINES_EN)], ids=["zh-CN", "en"])
def test_transfer_declines_explain_themselves(
    client: TestClient,
    alice: SignedUp,
    bob: SignedUp,
    headers: dict[str, str],
    expected: dict[str, tuple[str, str, str]],
) -> None:
    funded(client, alice, 10_000)
    cases = {
        "insufficient_funds": (
            422,
            transfer(client, alice, money(10_001), {"wallet_id": bob.wallet_id}, headers),
        ),
        "limit_exceeded_single": (
            422,
            transfer(client, alice, money(200_001), {"wallet_id": bob.wallet_id}, headers),
        ),
        "same_wallet": (422, transfer(client, alice, money(100), {"wallet_id": alice.wallet_id}, headers)),
        "recipient_not_found": (404, transfer(client, alice, money(100), {"phone": new_phone()}, headers)),
        "validation_error": (422, transfer(client, alice, money(0), {"wallet_id": bob.wallet_id}, headers)),
    }
    references = set()
    for code, (status, response) in cases.items():
        body = assert_problem(response, status, code)
        message, step, step_message = expected[code]
        assert (body["user_message"], body["next_step"], body["next_step_message"]) == (
            message,
            step,
            step_message,
        ), code
        by_request_id(response, body)
        references.add(body["support_reference"])
    assert len(references) == len(cases)  # one per request
    # The codes' own extras are still there.
    limit = cases["limit_exceeded_single"][1].json()
    assert (
        limit["limit"] == money(200_000) and limit["remaining"] == money(200_000) and limit["kyc_tier"] == 4
    )
    assert cases["validation_error"][1].json()["errors"]


@pytest.mark.parametrize(
    ("headers", "user_message", "next_step_message"),
    [
        (ZH, "该钱包已被冻结，请联系客服。", "请联系客服，并提供参考编号 {reference}。"),
        (
            EN,
            "This wallet is frozen. Contact support for help.",
            "Contact customer service and quote reference {reference}.",
        ),
    ],
    ids=["zh-CN", "en"],
)
def test_a_frozen_wallet_says_whom_to_contact_with_which_reference(
    client: TestClient,
    alice: SignedUp,
    bob: SignedUp,
    headers: dict[str, str],
    user_message: str,
    next_step_message: str,
) -> None:
    funded(client, alice, 10_000)
    container(client).ledger.set_account_status(alice.wallet_id, AccountStatus.DEBIT_FROZEN)
    response = transfer(client, alice, money(100), {"wallet_id": bob.wallet_id}, headers)
    body = assert_problem(response, 423, "wallet_frozen")
    by_request_id(response, body)
    assert body["user_message"] == user_message
    assert body["next_step"] == "contact_support"
    assert body["next_step_message"] == next_step_message.format(reference=body["support_reference"])


def test_a_ledger_decline_is_referenced_by_its_transfer_id(
    client: TestClient, alice: SignedUp, bob: SignedUp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A decline that reached the ledger has a failed transfer on record: that id is the reference, in
    the body and in every replay of the same Idempotency-Key."""
    funded(client, alice, 40_000)
    shown_open(monkeypatch, container(client).ledger, bob.wallet_id)  # the ledger has the last word
    first = transfer(client, alice, money(30_000), {"wallet_id": bob.wallet_id}, ZH, key="frozen-payee")
    monkeypatch.undo()

    body = assert_problem(first, 423, "wallet_frozen")
    assert body["transfer_id"].startswith("trf_")
    assert body["support_reference"] == body["transfer_id"]
    assert first.headers["x-request-id"].startswith("req_")
    assert body["next_step_message"] == f"请联系客服，并提供参考编号 {body['transfer_id']}。"
    replay = transfer(client, alice, money(30_000), {"wallet_id": bob.wallet_id}, ZH, key="frozen-payee")
    assert replay.status_code == 423 and replay.json() == body
    assert replay.headers["x-request-id"] != first.headers["x-request-id"]


def test_a_bound_decline_replays_with_its_first_reference(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    first = transfer(client, alice, money(5_000), {"wallet_id": bob.wallet_id}, EN, key="broke-once")
    body = assert_problem(first, 422, "insufficient_funds")
    by_request_id(first, body)
    replay = transfer(client, alice, money(5_000), {"wallet_id": bob.wallet_id}, EN, key="broke-once")
    assert replay.json() == body  # the reference the user may already have quoted stays valid
    assert replay.headers["x-request-id"] != body["support_reference"]


def test_an_error_may_name_a_better_next_step_than_its_codes_default(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    """The daily limit's default is to try tomorrow; below the top KYC tier, verifying helps at once."""
    assert BY_CODE["limit_exceeded_daily"].next_step == "try_tomorrow"
    funded(client, alice, 900_000)
    for amount in (40_000, 199_999, 199_999):  # the first makes bob a known payee: no step-up after it
        assert transfer(client, alice, money(amount), {"wallet_id": bob.wallet_id}, ZH).status_code == 201
    response = transfer(client, alice, money(70_000), {"wallet_id": bob.wallet_id}, ZH)
    body = assert_problem(response, 422, "limit_exceeded_daily")
    assert body["user_message"] == "已达到今日支付限额，请明天再试或完成实名认证以提高限额。"
    assert (
        body["next_step"] == "verify_identity" and body["next_step_message"] == "完成实名认证即可提高限额。"
    )
    assert body["remaining"] == money(500_000 - 439_998)


# -- Accept-Language ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("accept_language", "user_message", "next_step_message"),
    [
        ("zh-CN", "请重新登录。", "请登录后继续。"),
        ("zh", "请重新登录。", "请登录后继续。"),
        ("zh-Hans", "请重新登录。", "请登录后继续。"),
        ("zh-Hans-CN;q=0.9, en;q=0.8", "请重新登录。", "请登录后继续。"),
        ("en-US, zh-CN;q=0.5", "Please sign in again.", "Sign in to continue."),
        ("zh-CN;q=0.2, en;q=0.7", "Please sign in again.", "Sign in to continue."),
        ("en;q=0, zh-CN", "请重新登录。", "请登录后继续。"),
        ("fr-FR", "Please sign in again.", "Sign in to continue."),
        (None, "Please sign in again.", "Sign in to continue."),
    ],
)
def test_accept_language_picks_the_language(
    client: TestClient, accept_language: str | None, user_message: str, next_step_message: str
) -> None:
    headers = {"Accept-Language": accept_language} if accept_language is not None else {}
    response = client.get("/v1/wallets", headers=headers)
    body = assert_problem(response, 401, "unauthenticated")
    assert (body["user_message"], body["next_step"], body["next_step_message"]) == (
        user_message,
        "sign_in",
        next_step_message,
    )


# -- request ids ---------------------------------------------------------------------------------------


def test_every_response_has_its_own_request_id(client: TestClient) -> None:
    ids = [client.get("/healthz").headers["x-request-id"] for _ in range(3)]
    assert all(i.startswith("req_") for i in ids) and len(set(ids)) == 3
    # A client cannot choose the id support will look up.
    chosen = client.get("/healthz", headers={"X-Request-Id": "req_mine"})
    assert chosen.headers["x-request-id"] != "req_mine"
    assert chosen.headers.get_list("x-request-id") == [chosen.headers["x-request-id"]]


def test_an_unexpected_failure_still_gives_a_reference(client: TestClient) -> None:
    def broken() -> None:
        raise RuntimeError("a bug")

    client.app.add_api_route("/test-only/broken", broken)  # type: ignore[attr-defined]
    response = client.get("/test-only/broken", headers=ZH)
    body = assert_problem(response, 500, "internal_error")
    by_request_id(response, body)
    assert body["user_message"] == "系统出现问题，请稍后再试。"
    assert body["next_step"] == "contact_support"
    assert body["next_step_message"] == f"请联系客服，并提供参考编号 {body['support_reference']}。"
    assert "a bug" not in response.text
