"""The KYC balance cap holds for all of a user's wallets together: sub-wallets are no way around it."""

from __future__ import annotations

from fastapi.testclient import TestClient

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
