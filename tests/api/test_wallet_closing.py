"""Closing a sub-wallet through the API: the balance moves to the main wallet through the ledger and the
ledger account is closed, all at once; closing again answers the same; the main wallet, a wallet with
holds pending and a locked wallet cannot be closed; a closed wallet still shows, with its history, but
takes no payments."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from qianbao.ledger.model import AccountStatus, TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.ledger.tables import transfers as ledger_transfers
from qianbao.ledger.verify import verify_ledger
from qianbao.wallets.closing import close_transfer_id
from tests.api.test_wallet_settings import db_of, events, fund, money, open_sub, pay, wallet
from tests.support.api import SignedUp


def close(client: TestClient, user: SignedUp, wallet_id: str, **headers: str) -> Any:
    return client.post(f"/v1/wallets/{wallet_id}/close", headers={**user.auth, **headers})


def ledger_transfer_count(client: TestClient) -> int:
    with db_of(client).read() as conn:
        return int(conn.execute(select(func.count()).select_from(ledger_transfers)).scalar_one())


def test_closing_moves_the_balance_to_the_main_wallet_and_closes_the_account(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    fund(client, alice, alice.wallet_id, 1_000)
    sub = open_sub(client, alice, "旅行", purpose="travel")["id"]
    fund(client, alice, sub, 12_345)
    closed = close(client, alice, sub, **{"Idempotency-Key": "close-1"})
    assert closed.status_code == 200, closed.text
    body = closed.json()
    assert (body["main_wallet_id"], body["moved"], body["transaction_id"]) == (
        alice.wallet_id,
        money(12_345),
        close_transfer_id(sub),
    )
    shown = body["wallet"]
    assert (shown["status"], shown["balance"], shown["payable"], shown["receivable"]) == (
        "closed",
        money(0),
        False,
        False,
    )
    assert shown["closed_at"] is not None
    assert wallet(client, alice, alice.wallet_id)["balance"] == money(13_345)
    account = LedgerReader(db_of(client)).get_account(sub)
    assert account is not None and account.status is AccountStatus.CLOSED and account.balance == 0
    assert verify_ledger(db_of(client)).ok
    [event] = events(client, "wallet.closed", sub)
    assert event == {
        "user_id": alice.user_id,
        "wallet_id": sub,
        "to_wallet_id": alice.wallet_id,
        "moved": money(12_345),
    }
    # Closing again (with or without the key) answers the same and moves nothing.
    transfers_before = ledger_transfer_count(client)
    for headers in ({"Idempotency-Key": "close-1"}, {}, {"Idempotency-Key": "close-2"}):
        again = close(client, alice, sub, **headers)
        assert again.status_code == 200 and again.json() == body
    assert ledger_transfer_count(client) == transfers_before
    assert wallet(client, alice, alice.wallet_id)["balance"] == money(13_345)
    # Still listed and readable, with its history; but no money moves on it any more.
    listed = {w["id"]: w for w in client.get("/v1/wallets", headers=alice.auth).json()["data"]}
    assert listed[sub]["status"] == "closed"
    history = client.get(f"/v1/wallets/{sub}/transactions", headers=alice.auth).json()["data"]
    assert [(t["direction"], t["amount"]["amount"]) for t in history] == [
        ("debit", 12_345),
        ("credit", 12_345),
    ]
    assert history[0]["counterparty"]["wallet_id"] == alice.wallet_id
    fund(client, bob, bob.wallet_id, 1_000)
    for payer, source in ((bob, bob.wallet_id), (alice, alice.wallet_id)):
        refused = pay(client, payer, source, sub, 100)
        assert (refused.status_code, refused.json()["code"]) == (423, "wallet_frozen"), refused.text
    refused = pay(client, alice, sub, alice.wallet_id, 100)
    assert (refused.status_code, refused.json()["code"]) == (423, "wallet_frozen")
    topped = client.post(
        "/v1/sandbox/fund", json={"wallet_id": sub, "amount": money(100)}, headers=alice.auth
    )
    assert (topped.status_code, topped.json()["code"]) == (423, "wallet_frozen")
    assert verify_ledger(db_of(client)).ok


def test_an_empty_wallet_closes_without_a_transfer(client: TestClient, alice: SignedUp) -> None:
    sub = open_sub(client, alice)["id"]
    before = ledger_transfer_count(client)
    body = close(client, alice, sub).json()
    assert (body["moved"], body["transaction_id"], body["wallet"]["status"]) == (money(0), None, "closed")
    assert ledger_transfer_count(client) == before


def test_the_main_wallet_cannot_be_closed(client: TestClient, alice: SignedUp) -> None:
    refused = close(client, alice, alice.wallet_id)
    assert refused.status_code == 409, refused.text
    assert (refused.json()["code"], refused.json()["reason"]) == ("wallet_close_refused", "main_wallet")
    assert wallet(client, alice, alice.wallet_id)["status"] == "active"


def test_a_wallet_with_a_hold_pending_cannot_be_closed(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    sub = open_sub(client, alice)["id"]
    fund(client, alice, sub, 5_000)
    ledger = client.app.state.container.ledger  # type: ignore[attr-defined]
    [held] = ledger.create_transfers(
        [TransferSpec.pending("hold-close-test", sub, bob.wallet_id, 2_000, "CNY")]
    )
    assert held.succeeded
    refused = close(client, alice, sub)
    assert refused.status_code == 409, refused.text
    assert (refused.json()["code"], refused.json()["reason"]) == ("wallet_close_refused", "pending_holds")
    shown = wallet(client, alice, sub)
    assert (shown["status"], shown["balance"], shown["available"]) == ("active", money(5_000), money(3_000))
    assert wallet(client, alice, alice.wallet_id)["balance"] == money(0)
    [voided] = ledger.create_transfers([TransferSpec.void("hold-close-test-void", "hold-close-test")])
    assert voided.succeeded
    assert close(client, alice, sub).json()["moved"] == money(5_000)
    assert verify_ledger(db_of(client)).ok


def test_closed_wallets_do_not_count_towards_the_sub_wallet_limit(
    client: TestClient, alice: SignedUp
) -> None:
    subs = [open_sub(client, alice, f"口袋{i}")["id"] for i in range(10)]
    full = client.post("/v1/wallets", json={"name": "再一个"}, headers=alice.auth)
    assert full.status_code == 409, full.text
    assert close(client, alice, subs[0]).status_code == 200
    assert client.post("/v1/wallets", json={"name": "再一个"}, headers=alice.auth).status_code == 201


def test_frozen_wallets_cannot_be_closed_but_a_debit_frozen_main_wallet_can_receive(
    client: TestClient, alice: SignedUp
) -> None:
    ledger = client.app.state.container.ledger  # type: ignore[attr-defined]
    sub = open_sub(client, alice)["id"]
    fund(client, alice, sub, 2_000)
    ledger.set_account_status(sub, AccountStatus.DEBIT_FROZEN)
    refused = close(client, alice, sub)
    assert (refused.status_code, refused.json()["code"]) == (423, "wallet_frozen")
    ledger.set_account_status(sub, AccountStatus.OPEN)
    ledger.set_account_status(alice.wallet_id, AccountStatus.FROZEN)
    refused = close(client, alice, sub)
    assert (refused.status_code, refused.json()["code"]) == (423, "wallet_frozen")
    assert wallet(client, alice, sub)["balance"] == money(2_000)
    ledger.set_account_status(alice.wallet_id, AccountStatus.DEBIT_FROZEN)
    assert close(client, alice, sub).json()["moved"] == money(2_000)
    assert wallet(client, alice, alice.wallet_id)["balance"] == money(2_000)
