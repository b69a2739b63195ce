"""The KYC balance cap holds for all of a user's wallets together: sub-wallets are no way around it."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from qianbao.errors import QianbaoError
from qianbao.identity.model import Principal, PrincipalKind, StepUpPolicy
from qianbao.payments.engine import decide as decide_module
from qianbao.payments.engine.decide import Approve, decide
from qianbao.payments.engine.facts import Books, PaymentRequest
from qianbao.payments.transfers import TransferRequest, send_transfer
from tests.support.api import SignedUp


def cny(fen: int) -> dict[str, object]:
    return {"amount": fen, "currency": "CNY"}


def fund(client: TestClient, user: SignedUp, wallet_id: str, fen: int) -> object:
    return client.post(
        "/v1/sandbox/fund", json={"wallet_id": wallet_id, "amount": cny(fen)}, headers=user.auth
    )


def test_the_cap_counts_every_wallet_of_the_user(client: TestClient, alice: SignedUp) -> None:
    pocket = client.post("/v1/wallets", json={"name": "旅行", "purpose": "travel"}, headers=alice.auth)
    assert pocket.status_code == 201, pocket.text
    pocket_id = pocket.json()["id"]
    assert fund(client, alice, alice.wallet_id, 900_000).status_code == 201  # type: ignore[attr-defined]
    over = fund(client, alice, pocket_id, 200_000)
    assert over.status_code == 422  # type: ignore[attr-defined]
    body = over.json()  # type: ignore[attr-defined]
    assert body["code"] == "balance_cap_exceeded"
    assert body["limit"] == cny(1_000_000) and body["remaining"] == cny(100_000)
    assert fund(client, alice, pocket_id, 100_000).status_code == 201  # type: ignore[attr-defined]
    # Moving money between one's own wallets leaves the total unchanged, so it is allowed.
    move = client.post(
        "/v1/transfers",
        json={"from_wallet_id": alice.wallet_id, "to": {"wallet_id": pocket_id}, "amount": cny(500_000)},
        headers=alice.auth,
    )
    assert move.status_code == 201, move.text


def test_a_payer_cannot_fill_a_recipient_past_the_cap_nor_learn_their_balance(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    pocket_id = client.post(
        "/v1/wallets", json={"name": "存钱", "purpose": "savings"}, headers=alice.auth
    ).json()["id"]
    fund(client, alice, alice.wallet_id, 950_000)
    fund(client, bob, bob.wallet_id, 100_000)
    pay = client.post(
        "/v1/transfers",
        json={"from_wallet_id": bob.wallet_id, "to": {"wallet_id": pocket_id}, "amount": cny(60_000)},
        headers=bob.auth,
    )
    assert pay.status_code == 422, pay.text
    assert pay.json()["code"] == "balance_cap_exceeded"
    assert "remaining" not in pay.json()
    # Nothing moved, and Bob's daily allowance was not spent by the refusal.
    wallet = client.get(f"/v1/wallets/{bob.wallet_id}", headers=bob.auth).json()
    assert wallet["balance"] == cny(100_000)
    kyc = client.get("/v1/me/kyc", headers=bob.auth).json()
    assert kyc["used_today"] in (0, cny(0))


def pay(client: TestClient, payer: SignedUp, to_wallet_id: str, fen: int) -> Any:
    return client.post(
        "/v1/transfers",
        json={"from_wallet_id": payer.wallet_id, "to": {"wallet_id": to_wallet_id}, "amount": cny(fen)},
        headers=payer.auth,
    )


REVEALING = ("limit", "remaining", "kyc_tier")


def test_an_empty_wallet_cannot_probe_the_recipients_balance(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    """Cap refusals before balance checks would let a ¥0 payer bisect the recipient's exact balance."""
    amounts = (1, 49_999, 50_000, 50_001, 60_000, 200_000)  # around Bob's room, up to the single limit
    answers = []
    for top_up in (950_000, 50_000):  # Bob has ¥500 of room under his ¥10,000 cap, then none at all
        assert fund(client, bob, bob.wallet_id, top_up).status_code == 201  # type: ignore[attr-defined]
        for fen in amounts:
            response = pay(client, alice, bob.wallet_id, fen)
            assert response.status_code == 422, response.text
            assert response.json()["code"] == "insufficient_funds", (top_up, fen, response.json())
            assert not any(field in response.json() for field in REVEALING)
            # The support reference is the request's own random id: it tells nothing about Bob.
            answers.append({k: v for k, v in response.json().items() if k != "support_reference"})
    assert all(a == answers[0] for a in answers)  # the same answer whatever Bob holds
    assert client.get(f"/v1/wallets/{bob.wallet_id}", headers=bob.auth).json()["balance"] == cny(1_000_000)


def test_a_cap_refusal_tells_the_payer_nothing_about_the_recipient(
    client: TestClient, alice: SignedUp, bob: SignedUp
) -> None:
    fund(client, alice, alice.wallet_id, 100_000)
    fund(client, bob, bob.wallet_id, 970_000)

    refused = pay(client, alice, bob.wallet_id, 40_000)

    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["code"] == "balance_cap_exceeded"
    assert body["detail"] == "the recipient cannot receive this amount"
    assert body["next_step"] == "lower_amount"
    assert not any(field in body for field in REVEALING)
    assert "¥" not in body["detail"] and "tier" not in body["detail"]
    assert pay(client, alice, bob.wallet_id, 30_000).status_code == 201  # within the room: paid


def _approve_anyway(request: PaymentRequest, books: Books, policy: StepUpPolicy, now: int) -> Approve:
    decision = decide(request, books, policy, now)
    return decision if isinstance(decision, Approve) else Approve(decision.request, decision.own, 0)


def test_a_cap_refusal_inside_the_unit_of_work_is_stripped_too(
    client: TestClient, alice: SignedUp, bob: SignedUp, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The decision did not foresee it (as if it saw a stale picture): the ledger refuses, with the
    payer's own shortfall first and otherwise without the recipient's limit or tier."""
    ctx = client.app.state.container.identity  # type: ignore[attr-defined]
    alice_pays = Principal(PrincipalKind.USER, alice.user_id, alice.user_id, device_trusted=True)
    request = TransferRequest(alice.wallet_id, 40_000, "CNY", to_wallet_id=bob.wallet_id)
    fund(client, bob, bob.wallet_id, 970_000)
    # The pipeline's decision sees nothing wrong: only the ledger's own checks refuse.
    monkeypatch.setattr(decide_module, "decide", _approve_anyway)  # what decide_batch asks

    with pytest.raises(QianbaoError) as broke:
        send_transfer(ctx, alice_pays, request, idempotency_key="stale-1")
    assert broke.value.code == "insufficient_funds"  # Alice has nothing: Bob's cap is none of her business

    fund(client, alice, alice.wallet_id, 100_000)
    with pytest.raises(QianbaoError) as capped:
        send_transfer(ctx, alice_pays, request, idempotency_key="stale-2")
    assert capped.value.code == "balance_cap_exceeded" and capped.value.extra["next_step"] == "lower_amount"
    assert not any(field in capped.value.extra for field in REVEALING)
    assert "tier" not in capped.value.detail and "¥" not in capped.value.detail
    # Bound to the key: the replay (from the failed transfer record) is stripped the same way.
    with pytest.raises(QianbaoError) as replayed:
        send_transfer(ctx, alice_pays, request, idempotency_key="stale-2")
    assert replayed.value.code == "balance_cap_exceeded"
    assert replayed.value.extra == capped.value.extra and replayed.value.detail == capped.value.detail
    assert client.get(f"/v1/wallets/{bob.wallet_id}", headers=bob.auth).json()["balance"] == cny(970_000)
