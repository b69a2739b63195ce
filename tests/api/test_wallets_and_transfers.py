"""Wallets, P2P transfers and sandbox funding through the API: the money path with KYC limits, balance
caps, step-up, idempotency and ownership (API.md)."""

from __future__ import annotations

import base64
import json
import secrets
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from qianbao.identity.model import Principal, PrincipalKind
from qianbao.identity.tables import limit_usage, users
from qianbao.ledger.model import AccountStatus
from qianbao.ledger.verify import verify_ledger
from qianbao.payments.errors import PaymentDeclined
from qianbao.payments.tables import transfers
from qianbao.payments.transfers import TransferRequest, send_transfer
from qianbao.store.database import Database
from qianbao.store.idempotency_tables import idempotency_keys
from qianbao.store.outbox import outbox
from tests.api.test_kyc import valid_id_number
from tests.support.api import SignedUp, api_client, make_settings, new_phone, sign_up
from tests.support.ledger import shown_open

PIN = "740285"


def money(amount: int | None) -> dict[str, Any] | None:
    return None if amount is None else {"amount": amount, "currency": "CNY"}


def container(client: TestClient) -> Any:
    return client.app.state.container  # type: ignore[attr-defined]


def db_of(client: TestClient) -> Database:
    database: Database = container(client).db
    return database


def fund(client: TestClient, user: SignedUp, amount: int, wallet_id: str | None = None) -> Any:
    return client.post(
        "/v1/sandbox/fund",
        json={"wallet_id": wallet_id or user.wallet_id, "amount": money(amount)},
        headers=user.auth,
    )


def funded(client: TestClient, user: SignedUp, amount: int) -> None:
    response = fund(client, user, amount)
    assert response.status_code == 201, response.text


def pay(
    client: TestClient,
    payer: SignedUp,
    amount: int,
    *,
    to: dict[str, Any],
    from_wallet: str | None = None,
    key: str | None = None,
    step_up: str | None = None,
    memo: str | None = None,
) -> Any:
    body: dict[str, Any] = {
        "from_wallet_id": from_wallet or payer.wallet_id,
        "to": to,
        "amount": money(amount),
    }
    if memo is not None:
        body["memo"] = memo
    headers = dict(payer.auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    if step_up is not None:
        headers["Step-Up"] = step_up
    return client.post("/v1/transfers", json=body, headers=headers)


def wallet(client: TestClient, user: SignedUp, wallet_id: str | None = None) -> dict[str, Any]:
    response = client.get(f"/v1/wallets/{wallet_id or user.wallet_id}", headers=user.auth)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def balance(client: TestClient, user: SignedUp, wallet_id: str | None = None) -> int:
    return int(wallet(client, user, wallet_id)["balance"]["amount"])


def used_today(client: TestClient, user: SignedUp) -> int:
    return int(client.get("/v1/me/kyc", headers=user.auth).json()["used_today"]["amount"])


def set_pin(client: TestClient, user: SignedUp) -> None:
    assert client.put("/v1/me/pin", json={"pin": PIN}, headers=user.auth).status_code == 204


def prove_with_pin(client: TestClient, user: SignedUp, challenge_id: str) -> None:
    response = client.post(
        f"/v1/challenges/{challenge_id}/verify", json={"method": "pin", "pin": PIN}, headers=user.auth
    )
    assert response.status_code == 200, response.text


def sub_wallet(client: TestClient, user: SignedUp, name: str = "旅行") -> str:
    response = client.post("/v1/wallets", json={"name": name, "purpose": "travel"}, headers=user.auth)
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def to_tier_3(client: TestClient, user: SignedUp, name: str) -> None:
    response = client.post(
        "/v1/me/kyc/identity", json={"name": name, "id_number": valid_id_number()}, headers=user.auth
    )
    assert response.status_code == 200, response.text


# -- wallets -----------------------------------------------------------------------------------------


def test_wallets_are_listed_main_first_and_only_to_their_owner(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    listed = client.get("/v1/wallets", headers=alice.auth)
    assert listed.status_code == 200
    [main] = listed.json()["data"]
    assert main["id"] == alice.wallet_id
    assert {k: main[k] for k in ("kind", "purpose", "currency", "balance", "available", "status")} == {
        "kind": "main",
        "purpose": "main",
        "currency": "CNY",
        "balance": money(0),
        "available": money(0),
        "status": "active",
    }
    created = client.post(
        "/v1/wallets", json={"name": " 旅行  基金 ", "purpose": "travel"}, headers=alice.auth
    )
    assert created.status_code == 201, created.text
    sub = created.json()
    assert sub["kind"] == "sub" and sub["name"] == "旅行 基金" and sub["balance_cap"] == money(1_000_000)
    default = client.post("/v1/wallets", json={"name": "Pocket"}, headers=alice.auth).json()
    assert default["purpose"] == "custom" and default["currency"] == "CNY"
    assert [w["id"] for w in client.get("/v1/wallets", headers=alice.auth).json()["data"]] == [
        alice.wallet_id,
        sub["id"],
        default["id"],
    ]
    bad_requests: list[dict[str, Any]] = [
        {"name": "x", "purpose": "gambling"},
        {"name": "x", "currency": "USD"},
        {"name": "x", "currency": "ZZZ"},
        {"name": ""},
        {"name": "x" * 33},
        {"name": "a\x00b"},
    ]
    for bad in bad_requests:
        response = client.post("/v1/wallets", json=bad, headers=alice.auth)
        assert response.status_code == 422 and response.json()["code"] == "validation_error", bad
    # Another user's wallet does not exist for you.
    for path in (f"/v1/wallets/{alice.wallet_id}", f"/v1/wallets/{sub['id']}/transactions"):
        response = client.get(path, headers=bob.auth)
        assert response.status_code == 404 and response.json()["code"] == "not_found"
    assert client.get("/v1/wallets/wal_missing", headers=alice.auth).status_code == 404
    assert client.get("/v1/wallets").status_code == 401


def test_sandbox_funding_credits_your_wallet_within_its_cap(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    # A fresh database without demo data: the sandbox funding account is created on first use.
    response = fund(client, alice, 900_000)
    assert response.status_code == 201, response.text
    assert response.json()["wallet"]["balance"] == money(900_000)
    assert balance(client, alice) == 900_000
    # Tier 4's balance cap is ¥10,000.
    over = fund(client, alice, 200_000)
    assert over.status_code == 422
    assert over.json()["code"] == "balance_cap_exceeded" and over.json()["remaining"] == money(100_000)
    assert balance(client, alice) == 900_000
    # Only your own wallets; amounts are validated.
    assert fund(client, bob, 100, wallet_id=alice.wallet_id).status_code == 404
    for amount in (0, -5, 10**16):
        bad = client.post(
            "/v1/sandbox/fund",
            json={"wallet_id": alice.wallet_id, "amount": money(amount)},
            headers=alice.auth,
        )
        assert bad.status_code == 422 and bad.json()["code"] == "validation_error"
    usd = client.post(
        "/v1/sandbox/fund",
        json={"wallet_id": alice.wallet_id, "amount": {"amount": 100, "currency": "USD"}},
        headers=alice.auth,
    )
    assert usd.status_code == 422 and usd.json()["code"] == "currency_mismatch"
    assert verify_ledger(db_of(client)).ok


def test_sandbox_funding_does_not_exist_in_production(
    client: TestClient, settings: Any, tmp_path: Path
) -> None:
    production = make_settings(
        settings.database_url,
        tmp_path / "prod",
        env="production",
        master_key=base64.b64encode(secrets.token_bytes(32)).decode(),
    )
    for prod in api_client(production):
        response = prod.post("/v1/sandbox/fund", json={"wallet_id": "wal_x", "amount": money(100)})
        assert response.status_code == 404 and response.json()["code"] == "not_found"


# -- paying ------------------------------------------------------------------------------------------


def test_paying_by_phone_shows_up_on_both_sides(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    funded(client, alice, 100_000)
    carol = sign_up(client, name="张三")
    recipient = client.get("/v1/recipients", params={"phone": bob.phone}, headers=alice.auth)
    assert recipient.status_code == 200
    assert recipient.json() == {
        "name_masked": "*四",
        "phone_masked": bob.phone[3:6] + "****" + bob.phone[-4:],
    }

    response = pay(client, alice, 12_345, to={"phone": bob.phone}, memo="午饭 AA")

    assert response.status_code == 201, response.text
    transfer = response.json()
    assert {k: transfer[k] for k in ("status", "from_wallet_id", "to_wallet_id", "amount", "memo")} == {
        "status": "succeeded",
        "from_wallet_id": alice.wallet_id,
        "to_wallet_id": bob.wallet_id,
        "amount": money(12_345),
        "memo": "午饭 AA",
    }
    assert transfer["id"].startswith("trf_") and "failure_code" not in transfer
    assert balance(client, alice) == 100_000 - 12_345
    assert balance(client, bob) == 12_345
    assert used_today(client, alice) == 12_345
    for user in (alice, bob):
        assert client.get(f"/v1/transfers/{transfer['id']}", headers=user.auth).json() == transfer
    assert client.get(f"/v1/transfers/{transfer['id']}", headers=carol.auth).status_code == 404
    # History, newest first, with the balance after each entry and a masked counterparty.
    [received] = client.get(f"/v1/wallets/{bob.wallet_id}/transactions", headers=bob.auth).json()["data"]
    assert received["direction"] == "credit" and received["type"] == "p2p"
    assert received["amount"] == money(12_345) and received["balance_after"] == money(12_345)
    assert received["counterparty"]["wallet_id"] == alice.wallet_id
    assert received["counterparty"]["name_masked"] == "*丽"
    assert received["memo"] == "午饭 AA" and received["transfer_id"] == transfer["id"]
    assert received["status"] == "succeeded"
    sent, top_up = client.get(f"/v1/wallets/{alice.wallet_id}/transactions", headers=alice.auth).json()[
        "data"
    ]
    assert sent["direction"] == "debit" and sent["balance_after"] == money(100_000 - 12_345)
    assert top_up["type"] == "top_up" and top_up["counterparty"]["kind"] == "system"
    page = client.get(
        f"/v1/wallets/{alice.wallet_id}/transactions", params={"limit": 1}, headers=alice.auth
    ).json()
    assert [t["id"] for t in page["data"]] == [sent["id"]] and page["next_cursor"]
    rest = client.get(
        f"/v1/wallets/{alice.wallet_id}/transactions",
        params={"limit": 1, "cursor": page["next_cursor"]},
        headers=alice.auth,
    ).json()
    assert [t["id"] for t in rest["data"]] == [top_up["id"]] and rest["next_cursor"] is None
    # The outbox announces it with ids only; ledger metadata holds no personal data.
    with db_of(client).read() as conn:
        [event] = conn.execute(
            select(outbox.c.payload).where(outbox.c.type == "transfer.succeeded")
        ).scalars()
    assert event["transfer_id"] == transfer["id"] and "午饭" not in str(event) and bob.phone not in str(event)
    ledger_transfer = container(client).reader.get_transfer(sent["id"]).transfer
    assert ledger_transfer.metadata is None and ledger_transfer.code == "p2p"
    assert verify_ledger(db_of(client)).ok


def test_memos_are_encrypted_at_rest_yet_shown_to_both_sides(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    memo = "给欧阳娜娜的房租 13912345678"
    funded(client, alice, 100_000)

    paid = pay(client, alice, 12_000, to={"wallet_id": bob.wallet_id}, key="rent-1", memo=memo)

    assert paid.status_code == 201, paid.text
    assert paid.json()["memo"] == memo
    # At rest: the record holds a cipher, and the stored HTTP answer is sealed.
    with db_of(client).read() as conn:
        [row] = conn.execute(select(transfers)).mappings().all()
        [stored] = conn.execute(
            select(idempotency_keys.c.response).where(idempotency_keys.c.key == "rent-1")
        ).scalars()
    assert "memo" not in row and row["memo_cipher"]
    assert all(part not in str(dict(row)) for part in ("欧阳娜娜", "13912345678"))
    at_rest = json.dumps(stored) + json.dumps(stored, ensure_ascii=False)
    assert "sealed" in stored and "13912345678" not in at_rest and "欧阳娜娜" not in at_rest
    assert json.dumps("欧阳娜娜")[1:-1] not in at_rest
    # Read back: the replay (opened again), the transfer for payer and payee, and both histories.
    replay = pay(client, alice, 12_000, to={"wallet_id": bob.wallet_id}, key="rent-1", memo=memo)
    assert replay.status_code == 201 and replay.json() == paid.json()
    assert balance(client, bob) == 12_000
    for user in (alice, bob):
        shown = client.get(f"/v1/transfers/{paid.json()['id']}", headers=user.auth)
        assert shown.json() == paid.json()
        latest = client.get(f"/v1/wallets/{user.wallet_id}/transactions", headers=user.auth).json()["data"][0]
        assert latest["memo"] == memo and latest["transfer_id"] == paid.json()["id"]
    # No memo: nothing stored, null shown.
    plain = pay(client, alice, 100, to={"wallet_id": bob.wallet_id}, key="no-memo")
    assert plain.status_code == 201 and plain.json()["memo"] is None
    with db_of(client).read() as conn:
        cipher = conn.execute(
            select(transfers.c.memo_cipher).where(transfers.c.id == plain.json()["id"])
        ).scalar_one()
    assert cipher is None


def test_bad_transfers_are_refused_and_change_nothing(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    funded(client, alice, 10_000)
    before = (balance(client, alice), balance(client, bob))
    bob_wallet = {"wallet_id": bob.wallet_id}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"amount": 0, "currency": "CNY"}, "validation_error"),
        ({"amount": -1, "currency": "CNY"}, "validation_error"),
        ({"amount": 1.5, "currency": "CNY"}, "validation_error"),
        ({"amount": "100", "currency": "CNY"}, "validation_error"),
        ({"amount": 10**15 + 1, "currency": "CNY"}, "validation_error"),
        ({"amount": 100, "currency": "XYZ"}, "validation_error"),
        ({"amount": 100, "currency": "cny"}, "validation_error"),
        ({"amount": 100, "currency": "USD"}, "currency_mismatch"),
    ]
    for amount, code in cases:
        body = {"from_wallet_id": alice.wallet_id, "to": bob_wallet, "amount": amount}
        response = client.post("/v1/transfers", json=body, headers=alice.auth)
        assert response.status_code == 422 and response.json()["code"] == code, (amount, response.text)
    same = pay(client, alice, 100, to={"wallet_id": alice.wallet_id})
    assert same.status_code == 422 and same.json()["code"] == "same_wallet"
    same_by_phone = pay(client, alice, 100, to={"phone": alice.phone})
    assert same_by_phone.json()["code"] == "same_wallet"
    not_yours = pay(client, alice, 100, to={"wallet_id": alice.wallet_id}, from_wallet=bob.wallet_id)
    assert not_yours.status_code == 404 and not_yours.json()["code"] == "not_found"
    for to in ({"wallet_id": "wal_nobody"}, {"phone": new_phone()}):
        response = pay(client, alice, 100, to=to)
        assert response.status_code == 404 and response.json()["code"] == "recipient_not_found"
    for to in ({}, {"wallet_id": bob.wallet_id, "phone": bob.phone}, {"phone": "12"}):
        assert pay(client, alice, 100, to=to).json()["code"] == "validation_error"
    broke = pay(client, alice, 10_001, to=bob_wallet)
    assert broke.status_code == 422 and broke.json()["code"] == "insufficient_funds"
    assert "challenge_id" not in broke.json()
    assert (balance(client, alice), balance(client, bob)) == before
    assert used_today(client, alice) == 0
    assert client.get("/v1/recipients", params={"phone": new_phone()}, headers=alice.auth).json()["code"] == (
        "recipient_not_found"
    )
    assert client.get("/v1/recipients", params={"phone": "nonsense"}, headers=alice.auth).status_code == 422


def test_recipient_look_ups_are_rate_limited(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    statuses = [
        client.get("/v1/recipients", params={"phone": bob.phone}, headers=alice.auth).status_code
        for _ in range(31)
    ]
    assert statuses[:30] == [200] * 30
    assert statuses[30] == 429
    assert pay(client, alice, 100, to={"phone": bob.phone}).json()["code"] == "rate_limited"
    # Others are not affected.
    assert client.get("/v1/recipients", params={"phone": alice.phone}, headers=bob.auth).status_code == 200


def test_over_the_single_limit_is_refused_before_step_up(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    response = pay(client, alice, 200_001, to={"wallet_id": bob.wallet_id})
    assert response.status_code == 422
    body = response.json()
    assert body["code"] == "limit_exceeded_single"
    assert body["limit"] == money(200_000) and body["remaining"] == money(200_000)
    assert "challenge_id" not in body


def test_the_daily_limit_counts_payments_to_others(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    funded(client, alice, 900_000)
    # A first small payment makes bob a known payee; then payments under ¥2,000 need no step-up.
    assert pay(client, alice, 40_000, to={"wallet_id": bob.wallet_id}).status_code == 201
    for _ in range(2):
        assert pay(client, alice, 199_999, to={"wallet_id": bob.wallet_id}).status_code == 201
    assert used_today(client, alice) == 439_998

    over = pay(client, alice, 70_000, to={"wallet_id": bob.wallet_id})

    assert over.status_code == 422
    assert over.json()["code"] == "limit_exceeded_daily"
    assert over.json()["remaining"] == money(60_002) and over.json()["limit"] == money(500_000)
    assert "challenge_id" not in over.json()
    assert pay(client, alice, 60_002, to={"wallet_id": bob.wallet_id}).status_code == 201
    assert pay(client, alice, 1, to={"wallet_id": bob.wallet_id}).json()["code"] == "limit_exceeded_daily"
    status = client.get("/v1/me/kyc", headers=alice.auth).json()
    assert status["used_today"] == money(500_000) and status["remaining_today"] == money(0)
    assert balance(client, alice) == 400_000 and balance(client, bob) == 500_000


def test_the_recipients_balance_cap_applies(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    funded(client, alice, 100_000)
    funded(client, bob, 950_000)

    response = pay(client, alice, 60_000, to={"wallet_id": bob.wallet_id})

    assert response.status_code == 422 and response.json()["code"] == "balance_cap_exceeded"
    # Someone else's room would reveal their balance: not shown.
    assert "remaining" not in response.json() and "challenge_id" not in response.json()
    assert balance(client, bob) == 950_000 and used_today(client, alice) == 0
    # The cap holds for all of a user's wallets together, and to its owner the room left is shown.
    pocket = sub_wallet(client, alice)
    assert fund(client, alice, 880_000, wallet_id=pocket).status_code == 201
    own = fund(client, alice, 30_000, wallet_id=pocket)
    assert own.status_code == 422 and own.json()["code"] == "balance_cap_exceeded"
    assert own.json()["remaining"] == money(20_000)
    # Moving between one's own wallets leaves the total unchanged.
    assert pay(client, alice, 30_000, to={"wallet_id": pocket}).status_code == 201


def test_moves_between_own_wallets_need_no_step_up_and_do_not_count(
    client: TestClient, alice: SignedUp
) -> None:
    funded(client, alice, 500_000)
    pocket = sub_wallet(client, alice)

    # ¥3,000: over the single limit and the step-up threshold, but it stays with its owner.
    response = pay(client, alice, 300_000, to={"wallet_id": pocket})

    assert response.status_code == 201, response.text
    assert balance(client, alice) == 200_000 and balance(client, alice, pocket) == 300_000
    back = pay(client, alice, 100_000, to={"wallet_id": alice.wallet_id}, from_wallet=pocket)
    assert back.status_code == 201
    assert used_today(client, alice) == 0
    [moved, *_] = client.get(f"/v1/wallets/{pocket}/transactions", headers=alice.auth).json()["data"]
    assert moved["type"] == "wallet_move" and moved["counterparty"]["own"] is True


def test_step_up_above_2000_after_a_kyc_upgrade(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    to_tier_3(client, alice, "王丽")
    set_pin(client, alice)
    funded(client, alice, 500_000)

    asked = pay(client, alice, 250_000, to={"wallet_id": bob.wallet_id}, key="big-1")

    assert asked.status_code == 401
    challenge = asked.json()
    assert challenge["code"] == "step_up_required" and "pin" in challenge["methods"]
    assert "amount_threshold" in challenge["reasons"]
    assert balance(client, alice) == 500_000
    # Unproved, the header does not help.
    unproved = pay(
        client,
        alice,
        250_000,
        to={"wallet_id": bob.wallet_id},
        key="big-1",
        step_up=challenge["challenge_id"],
    )
    assert unproved.status_code == 422 and unproved.json()["code"] == "challenge_invalid"
    prove_with_pin(client, alice, challenge["challenge_id"])
    # The proof is bound to this payment: another amount is not unlocked.
    other = pay(client, alice, 240_000, to={"wallet_id": bob.wallet_id}, step_up=challenge["challenge_id"])
    assert other.status_code == 422 and other.json()["code"] == "challenge_invalid"

    done = pay(
        client,
        alice,
        250_000,
        to={"wallet_id": bob.wallet_id},
        key="big-1",
        step_up=challenge["challenge_id"],
    )

    assert done.status_code == 201, done.text
    assert balance(client, bob) == 250_000
    # The challenge is spent: repeating it with a new key needs a new one.
    again = pay(
        client,
        alice,
        250_000,
        to={"wallet_id": bob.wallet_id},
        key="big-2",
        step_up=challenge["challenge_id"],
    )
    assert again.status_code == 422 and again.json()["code"] == "challenge_invalid"
    assert balance(client, bob) == 250_000


def test_a_new_payee_above_500_needs_step_up_once(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    set_pin(client, alice)
    funded(client, alice, 200_000)

    first = pay(client, alice, 60_000, to={"phone": bob.phone})

    assert first.status_code == 401 and first.json()["reasons"] == ["new_payee"]
    prove_with_pin(client, alice, first.json()["challenge_id"])
    assert (
        pay(client, alice, 60_000, to={"phone": bob.phone}, step_up=first.json()["challenge_id"]).status_code
        == 201
    )
    # Bob is now a known payee: below ¥2,000 no step-up.
    second = pay(client, alice, 70_000, to={"wallet_id": bob.wallet_id})
    assert second.status_code == 201, second.text
    # ¥500 or less to a new payee needs none either.
    carol = sign_up(client, name="张三")
    assert pay(client, alice, 50_000, to={"wallet_id": carol.wallet_id}).status_code == 201


def test_refusals_are_bound_to_the_idempotency_key_but_step_up_is_not(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    set_pin(client, alice)
    # A limit refusal is bound: the replay answers the same, even after circumstances change.
    refused = pay(client, alice, 100_000, to={"wallet_id": bob.wallet_id}, key="k-broke")
    assert refused.status_code == 422 and refused.json()["code"] == "insufficient_funds"
    funded(client, alice, 300_000)
    replay = pay(client, alice, 100_000, to={"wallet_id": bob.wallet_id}, key="k-broke")
    assert replay.status_code == 422 and replay.json() == refused.json()
    over = pay(client, alice, 250_000, to={"wallet_id": bob.wallet_id}, key="k-single")
    assert over.json()["code"] == "limit_exceeded_single"
    assert pay(client, alice, 250_000, to={"wallet_id": bob.wallet_id}, key="k-single").json() == over.json()
    # step_up_required is not bound: after the proof the same key runs anew.
    asked = pay(client, alice, 60_000, to={"wallet_id": bob.wallet_id}, key="k-new-payee")
    assert asked.status_code == 401
    prove_with_pin(client, alice, asked.json()["challenge_id"])
    paid = pay(
        client,
        alice,
        60_000,
        to={"wallet_id": bob.wallet_id},
        key="k-new-payee",
        step_up=asked.json()["challenge_id"],
    )
    assert paid.status_code == 201, paid.text
    # A success replays without paying twice; the same key with another body is refused.
    assert (
        pay(client, alice, 60_000, to={"wallet_id": bob.wallet_id}, key="k-new-payee").json() == paid.json()
    )
    assert balance(client, bob) == 60_000
    reused = pay(client, alice, 60_001, to={"wallet_id": bob.wallet_id}, key="k-new-payee")
    assert reused.status_code == 409 and reused.json()["code"] == "idempotency_key_reused"
    with db_of(client).read() as conn:
        count = conn.execute(
            select(func.count()).select_from(transfers).where(transfers.c.status == "succeeded")
        )
        assert count.scalar_one() == 1


def test_a_ledger_decline_is_recorded_and_releases_the_daily_reservation(
    client: TestClient, alice: SignedUp, bob: SignedUp, monkeypatch: pytest.MonkeyPatch
) -> None:
    funded(client, alice, 40_000)
    ctx = container(client).identity
    principal = Principal(PrincipalKind.USER, alice.user_id, alice.user_id, device_trusted=True)
    # Bob's wallet is frozen, but the decision is shown it open: the ledger has the last word.
    shown_open(monkeypatch, container(client).ledger, bob.wallet_id)
    request = TransferRequest(alice.wallet_id, 30_000, "CNY", to_wallet_id=bob.wallet_id)
    with pytest.raises(PaymentDeclined) as declined:
        send_transfer(ctx, principal, request, idempotency_key="declined")
    monkeypatch.undo()

    assert declined.value.code == "wallet_frozen"
    with db_of(client).read() as conn:
        [record] = conn.execute(select(transfers)).all()
        usage = conn.execute(select(limit_usage.c.outflow)).scalar()
    assert record.status == "failed" and record.failure_code == "wallet_frozen"
    assert declined.value.extra["transfer_id"] == record.id
    assert not usage  # the daily reservation rolled back with the ledger's decline
    assert balance(client, alice) == 40_000
    # The decline stays bound to the key, even without the HTTP layer's idempotency record.
    container(client).ledger.set_account_status(bob.wallet_id, AccountStatus.OPEN)
    with pytest.raises(PaymentDeclined) as replayed:
        send_transfer(ctx, principal, request, idempotency_key="declined")
    assert replayed.value.code == "wallet_frozen" and replayed.value.extra["transfer_id"] == record.id
    assert balance(client, bob) == 0


def test_frozen_accounts_and_wallets_cannot_pay(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    funded(client, alice, 10_000)
    container(client).ledger.set_account_status(alice.wallet_id, AccountStatus.DEBIT_FROZEN)
    frozen_wallet = pay(client, alice, 100, to={"wallet_id": bob.wallet_id})
    assert frozen_wallet.status_code == 423 and frozen_wallet.json()["code"] == "wallet_frozen"
    assert wallet(client, alice)["status"] == "debit_frozen"
    container(client).ledger.set_account_status(alice.wallet_id, AccountStatus.OPEN)
    with db_of(client).write() as conn:
        conn.execute(update(users).where(users.c.id == alice.user_id).values(status="frozen"))
    frozen_user = pay(client, alice, 100, to={"wallet_id": bob.wallet_id})
    assert frozen_user.status_code == 423 and frozen_user.json()["code"] == "account_frozen"
    assert balance(client, alice) == 10_000 and balance(client, bob) == 0
