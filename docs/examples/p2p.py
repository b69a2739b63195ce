"""Walkthrough 1: sign up, sign in, fund the wallet in the sandbox, pay someone by phone number after
confirming their masked name, and read the history."""

from __future__ import annotations

from typing import Any

import httpx2 as httpx

from .common import (
    bearer,
    cny,
    expect,
    new_idempotency_key,
    prove_with_pin,
    sandbox_code,
    with_step_up,
)


def sign_up(client: httpx.Client, phone: str, password: str, name: str, device_id: str) -> dict[str, Any]:
    """Register: a code is sent by SMS to the phone, then the account is created with it."""
    expect(client.post("/v1/verifications", json={"phone": phone}), 202)
    code = sandbox_code(client, phone)  # production: the code the user received by SMS
    body = {"phone": phone, "code": code, "password": password, "name": name, "device_id": device_id}
    user: dict[str, Any] = expect(client.post("/v1/users", json=body), 201)
    return user  # {"id": "usr_…", "phone_masked", "kyc_tier": 4, "main_wallet_id": "wal_…"}


def sign_in(client: httpx.Client, phone: str, password: str, device_id: str) -> str:
    """A bearer token for this device (30 days; 7 idle days end it)."""
    body = {"phone": phone, "password": password, "device_id": device_id}
    session = expect(client.post("/v1/sessions", json=body), 201)
    return str(session["token"])


def set_payment_pin(client: httpx.Client, token: str, pin: str) -> None:
    """The 6-digit payment PIN, used below to answer step-up challenges."""
    expect(client.put("/v1/me/pin", json={"pin": pin}, headers=bearer(token)), 204)


def fund_in_sandbox(client: httpx.Client, token: str, wallet_id: str, fen: int) -> dict[str, Any]:
    """Sandbox only: test money into one of your wallets, like a card top-up that always succeeds."""
    headers = {**bearer(token), "Idempotency-Key": new_idempotency_key()}
    body = {"wallet_id": wallet_id, "amount": cny(fen)}
    funded: dict[str, Any] = expect(client.post("/v1/sandbox/fund", json=body, headers=headers), 201)
    return funded


def confirm_recipient(client: httpx.Client, token: str, phone: str) -> dict[str, Any]:
    """Who a phone number would pay, masked (`*四`): show it and let the payer confirm before paying."""
    found: dict[str, Any] = expect(
        client.get("/v1/recipients", params={"phone": phone}, headers=bearer(token)), 200
    )
    return found  # {"name_masked": "*四", "phone_masked": "139****1111"}


def send_to_phone(
    client: httpx.Client,
    token: str,
    pin: str,
    *,
    from_wallet_id: str,
    phone: str,
    fen: int,
    memo: str | None = None,
) -> dict[str, Any]:
    """Pay the main wallet of a phone number's owner. Step-up (here: the PIN) when the policy asks."""
    body = {"from_wallet_id": from_wallet_id, "to": {"phone": phone}, "amount": cny(fen), "memo": memo}
    key = new_idempotency_key()  # the same key for the retry after step-up: it is one payment

    def send(extra: dict[str, str]) -> httpx.Response:
        headers = {**bearer(token), "Idempotency-Key": key, **extra}
        return client.post("/v1/transfers", json=body, headers=headers)

    transfer: dict[str, Any] = expect(with_step_up(send, prove_with_pin(client, token, pin)), 201)
    return transfer  # {"id": "trf_…", "status": "succeeded", "to_wallet_id": "wal_…", …}


def wallet_history(
    client: httpx.Client, token: str, wallet_id: str, **filters: str | int
) -> list[dict[str, Any]]:
    """Every entry that matches the filters (type, direction, from, to, counterparty, min_amount,
    max_amount, q), newest first, following `next_cursor` until it is null."""
    entries: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {**filters, "limit": 100}
        if cursor is not None:
            params["cursor"] = cursor
        page = expect(
            client.get(f"/v1/wallets/{wallet_id}/transactions", params=params, headers=bearer(token)), 200
        )
        entries.extend(page["data"])
        cursor = page["next_cursor"]
        if cursor is None:
            return entries


def walkthrough(client: httpx.Client, alice_phone: str, bob_phone: str, password: str) -> dict[str, Any]:
    """The whole story: Alice pays Bob ¥520.00 by phone number."""
    alice = sign_up(client, alice_phone, password, "王丽", device_id="alice-phone")
    bob = sign_up(client, bob_phone, password, "李四", device_id="bob-phone")
    token = sign_in(client, alice_phone, password, device_id="alice-phone")
    set_payment_pin(client, token, "582914")
    fund_in_sandbox(client, token, alice["main_wallet_id"], 100_000)  # ¥1,000.00

    recipient = confirm_recipient(client, token, bob_phone)
    # The app shows "Pay *四 (139****1111)?" and goes on only when the user confirms.
    transfer = send_to_phone(
        client,
        token,
        "582914",
        from_wallet_id=alice["main_wallet_id"],
        phone=bob_phone,
        fen=52_000,
        memo="电影票",
    )
    # Above ¥500 to someone new: the first answer was 401 step_up_required, proved with the PIN.

    wallet = expect(client.get(f"/v1/wallets/{alice['main_wallet_id']}", headers=bearer(token)), 200)
    sent = wallet_history(client, token, alice["main_wallet_id"], type="p2p", direction="debit")
    return {
        "alice": alice,
        "bob": bob,
        "token": token,
        "recipient": recipient,
        "transfer": transfer,
        "wallet": wallet,
        "sent": sent,
    }
