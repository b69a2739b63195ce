"""Money requests through the API: ask by phone or wallet id, accept (a P2P transfer with its limits, step-up
and idempotency), decline, cancel, expiry, listing, authorization, rate limit and what is stored."""

from __future__ import annotations

import json
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from qianbao.identity.model import Principal, PrincipalKind
from qianbao.identity.tables import limit_usage
from qianbao.ledger.verify import verify_ledger
from qianbao.payments import request_flow
from qianbao.payments import requests as money_requests
from qianbao.payments.request_tables import money_requests as requests_table
from qianbao.payments.tables import transfers
from qianbao.store.outbox import outbox
from tests.api.test_wallets_and_transfers import (
    balance,
    container,
    db_of,
    funded,
    money,
    prove_with_pin,
    set_pin,
    sub_wallet,
)
from tests.support.api import SignedUp, new_phone, reset_limits, sign_up

MEMO = "欧阳娜娜的电影票 13912345678"


def ask(
    client: TestClient,
    requester: SignedUp,
    amount: int,
    *,
    payer: dict[str, Any],
    to_wallet: str | None = None,
    memo: str | None = None,
    key: str | None = None,
    **extra: Any,
) -> Any:
    body: dict[str, Any] = {
        "from": payer,
        "to_wallet_id": to_wallet or requester.wallet_id,
        "amount": money(amount),
        **extra,
    }
    if memo is not None:
        body["memo"] = memo
    headers = dict(requester.auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    return client.post("/v1/money-requests", json=body, headers=headers)


def asked(client: TestClient, requester: SignedUp, payer: SignedUp, amount: int, **kw: Any) -> dict[str, Any]:
    response = ask(client, requester, amount, payer={"phone": payer.phone}, **kw)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def accept(
    client: TestClient,
    payer: SignedUp,
    request_id: str,
    *,
    from_wallet: str | None = None,
    key: str | None = None,
    step_up: str | None = None,
) -> Any:
    headers = dict(payer.auth)
    if key is not None:
        headers["Idempotency-Key"] = key
    if step_up is not None:
        headers["Step-Up"] = step_up
    return client.post(
        f"/v1/money-requests/{request_id}/accept",
        json={"from_wallet_id": from_wallet or payer.wallet_id},
        headers=headers,
    )


def act(client: TestClient, user: SignedUp, request_id: str, action: str, **body: Any) -> Any:
    return client.post(f"/v1/money-requests/{request_id}/{action}", json=body, headers=user.auth)


def shown(client: TestClient, user: SignedUp, request_id: str) -> Any:
    return client.get(f"/v1/money-requests/{request_id}", headers=user.auth)


def events(client: TestClient, prefix: str) -> list[Any]:
    with db_of(client).read() as conn:
        rows = conn.execute(
            select(outbox.c.type, outbox.c.payload)
            .where(outbox.c.type.like(f"{prefix}%"))
            .order_by(outbox.c.seq)
        ).all()
    return [(r.type, r.payload) for r in rows]


def succeeded_transfers(client: TestClient) -> int:
    with db_of(client).read() as conn:
        return int(
            conn.execute(
                select(func.count()).select_from(transfers).where(transfers.c.status == "succeeded")
            ).scalar_one()
        )


# -- asking ------------------------------------------------------------------------------------------


def test_asking_by_phone_shows_the_request_to_both_parties_only(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    carol = sign_up(client, name="张三")

    created = ask(client, alice, 8_800, payer={"phone": bob.phone}, memo=MEMO, key="ask-1")

    assert created.status_code == 201, created.text
    body = created.json()
    assert body["id"].startswith("mrq_")
    assert {k: body[k] for k in ("status", "role", "to_wallet_id", "amount", "memo", "transfer_id")} == {
        "status": "pending",
        "role": "requester",
        "to_wallet_id": alice.wallet_id,
        "amount": money(8_800),
        "memo": MEMO,
        "transfer_id": None,
    }
    assert body["requester"] == {"name_masked": "*丽"} and body["payer"] == {"name_masked": "*四"}
    assert body["resolved_at"] is None and body["expires_at"] > body["created_at"]
    # A replay with the key answers the same and creates nothing more.
    again = ask(client, alice, 8_800, payer={"phone": bob.phone}, memo=MEMO, key="ask-1")
    assert again.status_code == 201 and again.json() == body
    # The payer sees it as incoming, the requester as sent; nobody else sees it at all.
    as_payer = shown(client, bob, body["id"]).json()
    assert as_payer["role"] == "payer" and as_payer["memo"] == MEMO and as_payer["status"] == "pending"
    assert [
        r["id"] for r in client.get("/v1/money-requests?role=payer", headers=bob.auth).json()["data"]
    ] == [body["id"]]
    assert client.get("/v1/money-requests?role=requester", headers=bob.auth).json()["data"] == []
    assert [r["id"] for r in client.get("/v1/money-requests", headers=alice.auth).json()["data"]] == [
        body["id"]
    ]
    missing = shown(client, carol, body["id"])
    assert missing.status_code == 404 and missing.json()["code"] == "not_found"
    assert client.get("/v1/money-requests", headers=carol.auth).json()["data"] == []
    for action in ("accept", "decline", "cancel"):
        response = act(
            client,
            carol,
            body["id"],
            action,
            **({"from_wallet_id": carol.wallet_id} if action == "accept" else {}),
        )
        assert response.status_code == 404, action
    # Stored: the memo encrypted; the event with ids and amount only.
    with db_of(client).read() as conn:
        [row] = conn.execute(select(requests_table)).mappings().all()
    assert row["memo_cipher"] and "欧阳娜娜" not in str(dict(row)) and "13912345678" not in str(dict(row))
    [(kind, payload)] = events(client, "money_request.")
    assert kind == "money_request.created"
    assert payload["money_request_id"] == body["id"]
    assert (payload["from_user_id"], payload["to_user_id"]) == (bob.user_id, alice.user_id)
    text = json.dumps(payload, ensure_ascii=False)
    assert "欧阳" not in text and "李四" not in text and "王丽" not in text and bob.phone not in text


def test_asking_by_wallet_id_names_that_wallets_owner(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    bobs_pocket = sub_wallet(client, bob)
    alices_pocket = sub_wallet(client, alice, "聚餐")

    created = ask(client, alice, 500, payer={"wallet_id": bobs_pocket}, to_wallet=alices_pocket)

    assert created.status_code == 201, created.text
    assert created.json()["to_wallet_id"] == alices_pocket
    assert shown(client, bob, created.json()["id"]).json()["role"] == "payer"


def test_bad_requests_are_refused_and_create_nothing(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"payer": {"phone": alice.phone}}, 422, "same_wallet"),
        ({"payer": {"wallet_id": alice.wallet_id}}, 422, "same_wallet"),
        ({"payer": {"phone": bob.phone}, "to_wallet": bob.wallet_id}, 404, "not_found"),
        ({"payer": {"phone": new_phone()}}, 404, "recipient_not_found"),
        ({"payer": {"wallet_id": "wal_nobody"}}, 404, "recipient_not_found"),
        ({"payer": {"phone": "12"}}, 422, "validation_error"),
        ({"payer": {}}, 422, "validation_error"),
        ({"payer": {"phone": bob.phone, "wallet_id": bob.wallet_id}}, 422, "validation_error"),
        ({"payer": {"phone": bob.phone}, "memo": "x" * 141}, 422, "validation_error"),
        ({"payer": {"phone": bob.phone}, "expires_in_days": 0}, 422, "validation_error"),
        ({"payer": {"phone": bob.phone}, "expires_in_days": 31}, 422, "validation_error"),
    ]
    for case, status, code in cases:
        response = ask(client, alice, 100, **case)
        assert (response.status_code, response.json()["code"]) == (status, code), (case, response.text)
    for amount in ({"amount": 0, "currency": "CNY"}, {"amount": 1.5, "currency": "CNY"}):
        body = {"from": {"phone": bob.phone}, "to_wallet_id": alice.wallet_id, "amount": amount}
        assert client.post("/v1/money-requests", json=body, headers=alice.auth).status_code == 422
    usd = {
        "from": {"phone": bob.phone},
        "to_wallet_id": alice.wallet_id,
        "amount": {"amount": 1, "currency": "USD"},
    }
    assert (
        client.post("/v1/money-requests", json=usd, headers=alice.auth).json()["code"] == "currency_mismatch"
    )
    assert client.post("/v1/money-requests", json=usd).status_code == 401
    with db_of(client).read() as conn:
        assert conn.execute(select(func.count()).select_from(requests_table)).scalar_one() == 0


def test_asking_is_rate_limited_per_requester(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    statuses = [ask(client, alice, 100, payer={"wallet_id": bob.wallet_id}).status_code for _ in range(11)]

    assert statuses == [201] * 10 + [429]
    refused = ask(client, alice, 100, payer={"wallet_id": bob.wallet_id})
    assert refused.json()["code"] == "rate_limited" and int(refused.headers["Retry-After"]) >= 1
    # Someone else may still ask.
    assert ask(client, bob, 100, payer={"wallet_id": alice.wallet_id}).status_code == 201


# -- accepting ---------------------------------------------------------------------------------------


def test_accepting_pays_once_through_a_p2p_transfer(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    funded(client, bob, 50_000)
    request = asked(client, alice, bob, 12_300, memo=MEMO)

    paid = accept(client, bob, request["id"], key="pay-req-1")

    assert paid.status_code == 200, paid.text
    body = paid.json()
    assert body["status"] == "paid" and body["role"] == "payer" and body["resolved_at"] is not None
    transfer = body["transfer"]
    assert body["transfer_id"] == transfer["id"] and body["from_wallet_id"] == bob.wallet_id
    assert {k: transfer[k] for k in ("status", "from_wallet_id", "to_wallet_id", "amount", "memo")} == {
        "status": "succeeded",
        "from_wallet_id": bob.wallet_id,
        "to_wallet_id": alice.wallet_id,
        "amount": money(12_300),
        "memo": MEMO,
    }
    assert balance(client, alice) == 12_300 and balance(client, bob) == 50_000 - 12_300
    # Both see it paid; the transfer and the requester's history show it like any P2P transfer.
    assert shown(client, alice, request["id"]).json()["status"] == "paid"
    assert client.get(f"/v1/transfers/{transfer['id']}", headers=alice.auth).status_code == 200
    [latest, *_] = client.get(f"/v1/wallets/{alice.wallet_id}/transactions", headers=alice.auth).json()[
        "data"
    ]
    assert latest["transfer_id"] == transfer["id"] and latest["memo"] == MEMO and latest["type"] == "p2p"
    # The replay answers the same without paying again; anything else on it is refused.
    replay = accept(client, bob, request["id"], key="pay-req-1")
    assert replay.status_code == 200 and replay.json() == body
    for response in (
        accept(client, bob, request["id"]),
        accept(client, bob, request["id"], key="pay-req-2"),
        act(client, bob, request["id"], "decline"),
        act(client, alice, request["id"], "cancel"),
    ):
        assert response.status_code == 409, response.text
        assert (
            response.json()["code"] == "request_not_pending" and response.json()["request_status"] == "paid"
        )
    assert balance(client, bob) == 50_000 - 12_300 and succeeded_transfers(client) == 1
    kinds = [kind for kind, _ in events(client, "money_request.")]
    assert kinds == ["money_request.created", "money_request.paid"]
    [(_, event)] = events(client, "money_request.paid")
    assert event["transfer_id"] == transfer["id"] and "memo" not in event and "欧阳" not in json.dumps(event)
    assert verify_ledger(db_of(client)).ok


def test_only_the_payer_accepts_or_declines_and_only_the_requester_cancels(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    funded(client, alice, 10_000)
    request = asked(client, alice, bob, 1_000)

    for response in (
        accept(client, alice, request["id"]),
        act(client, alice, request["id"], "decline"),
        act(client, bob, request["id"], "cancel"),
    ):
        assert response.status_code == 403 and response.json()["code"] == "forbidden", response.text
    assert shown(client, bob, request["id"]).json()["status"] == "pending"
    # The payer pays only from their own wallets.
    theirs = accept(client, bob, request["id"], from_wallet=alice.wallet_id)
    assert theirs.status_code == 404 and theirs.json()["code"] == "not_found"
    assert balance(client, alice) == 10_000
    url = f"/v1/money-requests/{request['id']}/accept"
    wrong = client.post(url, json={"from_wallet_id": 1}, headers=bob.auth)
    assert wrong.status_code == 422 and wrong.json()["code"] == "validation_error"
    # Without a wallet the payer's main wallet pays.
    funded(client, bob, 1_000)
    paid = client.post(url, headers=bob.auth)
    assert paid.status_code == 200 and paid.json()["from_wallet_id"] == bob.wallet_id
    assert balance(client, bob) == 0 and balance(client, alice) == 11_000


def test_a_declined_payment_leaves_the_request_pending(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    request = asked(client, alice, bob, 5_000)

    broke = accept(client, bob, request["id"], key="try-1")

    assert broke.status_code == 422 and broke.json()["code"] == "insufficient_funds"
    assert shown(client, bob, request["id"]).json()["status"] == "pending"
    # The decline is bound to its key; after a top-up a new attempt pays.
    funded(client, bob, 5_000)
    assert accept(client, bob, request["id"], key="try-1").json() == broke.json()
    paid = accept(client, bob, request["id"], key="try-2")
    assert paid.status_code == 200, paid.text
    assert balance(client, alice) == 5_000 and balance(client, bob) == 0


def test_accepting_needs_step_up_like_any_payment(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    set_pin(client, bob)
    funded(client, bob, 100_000)
    request = asked(client, alice, bob, 60_000)  # above ¥500 to a new payee

    first = accept(client, bob, request["id"], key="big")

    assert first.status_code == 401 and first.json()["code"] == "step_up_required"
    assert shown(client, bob, request["id"]).json()["status"] == "pending" and balance(client, bob) == 100_000
    prove_with_pin(client, bob, first.json()["challenge_id"])
    paid = accept(client, bob, request["id"], key="big", step_up=first.json()["challenge_id"])
    assert paid.status_code == 200, paid.text
    assert balance(client, alice) == 60_000
    # Limits come before step-up, as for transfers.
    over = asked(client, alice, bob, 200_001)
    refused = accept(client, bob, over["id"])
    assert refused.status_code == 422 and refused.json()["code"] == "limit_exceeded_single"


def test_a_request_canceled_during_the_payment_pays_nothing(
    client: TestClient, alice: SignedUp, bob: SignedUp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The request is marked paid in the transfer's own batch: if it stopped being pending after the
    batch read it (canceled, paid by a concurrent accept), the whole transfer rolls back."""
    funded(client, bob, 10_000)
    request = asked(client, alice, bob, 3_000)
    ctx = container(client).identity
    read = request_flow._requests
    with ctx.db.read() as conn:
        stale = read(conn, ctx, [request["id"]])  # as the accept's batch reads it: pending
    money_requests.cancel_request(ctx, _principal_of(alice), request["id"])  # then the requester cancels
    reads: list[int] = []

    def first_read_stale(conn: Any, ctx: Any, ids: Any) -> Any:
        reads.append(1)
        return stale if len(reads) == 1 else read(conn, ctx, ids)

    monkeypatch.setattr(request_flow, "_requests", first_read_stale)

    response = accept(client, bob, request["id"], key="late")

    assert response.status_code == 409 and response.json()["code"] == "request_not_pending"
    assert response.json()["request_status"] == "canceled"
    assert balance(client, bob) == 10_000 and balance(client, alice) == 0
    assert succeeded_transfers(client) == 0
    with db_of(client).read() as conn:
        used = conn.execute(select(func.coalesce(func.sum(limit_usage.c.outflow), 0))).scalar_one()
    assert used == 0
    assert shown(client, alice, request["id"]).json()["status"] == "canceled"
    assert [kind for kind, _ in events(client, "money_request.")] == [
        "money_request.created",
        "money_request.canceled",
    ]
    assert verify_ledger(db_of(client)).ok


def _principal_of(user: SignedUp) -> Principal:
    return Principal(PrincipalKind.USER, user.user_id, user.user_id)


# -- declining, canceling, expiry -------------------------------------------------------------------


def test_the_payer_declines_with_a_reason_the_requester_sees(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    request = asked(client, alice, bob, 2_000)

    declined = act(client, bob, request["id"], "decline", reason="上周已经给过了")

    assert declined.status_code == 200, declined.text
    assert declined.json()["status"] == "declined" and declined.json()["decline_reason"] == "上周已经给过了"
    assert shown(client, alice, request["id"]).json()["decline_reason"] == "上周已经给过了"
    funded(client, bob, 10_000)
    late = accept(client, bob, request["id"])
    assert late.status_code == 409 and late.json()["request_status"] == "declined"
    assert act(client, alice, request["id"], "cancel").status_code == 409
    with db_of(client).read() as conn:
        [cipher] = conn.execute(select(requests_table.c.decline_reason_cipher)).scalars()
    assert cipher and "上周" not in cipher
    # No reason at all is fine too; a reason over 140 characters is not.
    other = asked(client, alice, bob, 2_000)
    assert act(client, bob, other["id"], "decline", reason="x" * 141).json()["code"] == "validation_error"
    plain = client.post(f"/v1/money-requests/{other['id']}/decline", headers=bob.auth)
    assert plain.status_code == 200 and plain.json()["decline_reason"] is None
    assert [k for k, _ in events(client, "money_request.declined")] == ["money_request.declined"] * 2


def test_the_requester_cancels(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    funded(client, bob, 10_000)
    request = asked(client, alice, bob, 2_000)

    canceled = act(client, alice, request["id"], "cancel")

    assert canceled.status_code == 200 and canceled.json()["status"] == "canceled"
    refused = accept(client, bob, request["id"])
    assert refused.status_code == 409 and refused.json()["request_status"] == "canceled"
    assert balance(client, bob) == 10_000


def test_requests_expire(client: TestClient, alice: SignedUp, bob: SignedUp) -> None:
    funded(client, bob, 10_000)
    request = asked(client, alice, bob, 2_000)
    fresh = asked(client, alice, bob, 3_000, expires_in_days=30)
    week = fresh["expires_at"] > request["expires_at"]
    assert week
    with db_of(client).write() as conn:
        conn.execute(update(requests_table).where(requests_table.c.id == request["id"]).values(expires_at=1))

    assert shown(client, bob, request["id"]).json()["status"] == "expired"
    for response in (
        accept(client, bob, request["id"]),
        act(client, bob, request["id"], "decline"),
        act(client, alice, request["id"], "cancel"),
    ):
        assert response.status_code == 409 and response.json()["request_status"] == "expired"
    assert balance(client, bob) == 10_000
    listed = client.get("/v1/money-requests", params={"status": "expired"}, headers=bob.auth).json()["data"]
    assert [r["id"] for r in listed] == [request["id"]]
    pending = client.get("/v1/money-requests", params={"status": "pending"}, headers=bob.auth).json()["data"]
    assert [r["id"] for r in pending] == [fresh["id"]]


# -- listing -----------------------------------------------------------------------------------------


def test_lists_page_newest_first_and_filter_by_role_and_status(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    funded(client, bob, 10_000)
    sent = [asked(client, alice, bob, 100 + i)["id"] for i in range(3)]
    incoming = asked(client, bob, alice, 999)["id"]
    assert accept(client, bob, sent[0]).status_code == 200

    everything = client.get("/v1/money-requests", headers=alice.auth).json()
    assert [r["id"] for r in everything["data"]] == [incoming, *reversed(sent)]
    assert everything["next_cursor"] is None
    first = client.get("/v1/money-requests", params={"limit": 2}, headers=alice.auth).json()
    assert [r["id"] for r in first["data"]] == [incoming, sent[2]] and first["next_cursor"]
    rest = client.get(
        "/v1/money-requests", params={"limit": 2, "cursor": first["next_cursor"]}, headers=alice.auth
    ).json()
    assert [r["id"] for r in rest["data"]] == [sent[1], sent[0]] and rest["next_cursor"] is None

    def ids(user: SignedUp, **params: Any) -> list[str]:
        response = client.get("/v1/money-requests", params=params, headers=user.auth)
        assert response.status_code == 200, response.text
        return [r["id"] for r in response.json()["data"]]

    assert ids(alice, role="requester") == list(reversed(sent))
    assert ids(alice, role="payer") == [incoming]
    assert ids(alice, role="requester", status="pending") == [sent[2], sent[1]]
    assert ids(alice, status="paid") == [sent[0]]
    assert ids(bob, role="payer", status="paid") == [sent[0]]
    assert ids(alice, status="declined") == []
    for bad in ({"role": "boss"}, {"status": "lost"}, {"cursor": "nonsense"}, {"limit": 0}, {"limit": 101}):
        response = client.get("/v1/money-requests", params=bad, headers=alice.auth)
        assert response.status_code == 422 and response.json()["code"] == "validation_error", bad
    reset_limits(client)


def test_request_not_pending_speaks_both_languages(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    request = asked(client, alice, bob, 100)
    assert act(client, alice, request["id"], "cancel").status_code == 200
    url = f"/v1/money-requests/{request['id']}/decline"

    messages = {
        lang: client.post(url, headers={**bob.auth, "Accept-Language": lang}).json()
        for lang in ("en", "zh-CN")
    }

    assert {m["code"] for m in messages.values()} == {"request_not_pending"}
    assert messages["en"]["user_message"].isascii() and messages["en"]["user_message"]
    assert not messages["zh-CN"]["user_message"].isascii()
