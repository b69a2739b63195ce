"""Walkthrough 3: a customer pays at a till by showing a payment code (付款码). A small charge is paid at
once; a larger one is held until the customer confirms it in the app, with step-up."""

from __future__ import annotations

import base64
import hashlib
import hmac
import struct
import time
from typing import Any

import httpx2 as httpx

from .common import (
    ApiKey,
    bearer,
    cny,
    expect,
    new_idempotency_key,
    prove_with_pin,
    signed,
    with_step_up,
)

# --- the customer's wallet app --------------------------------------------------------------------------


def enable_payment_codes(client: httpx.Client, token: str, pin: str, wallet_id: str) -> dict[str, Any]:
    """Show codes on this device (the device_id the session was signed in with) for one wallet. A
    security change, so step-up; the answer carries the device's `secret` and `number` once: keep them
    in the device's secure storage."""
    key = new_idempotency_key()

    def send(extra: dict[str, str]) -> httpx.Response:
        headers = {**bearer(token), "Idempotency-Key": key, **extra}
        return client.post("/v1/payment-codes/devices", json={"wallet_id": wallet_id}, headers=headers)

    device: dict[str, Any] = expect(with_step_up(send, prove_with_pin(client, token, pin)), 201)
    return device  # {"id": "pcd_…", "number": "4821937", "secret": "JBSWY3DP…", "algorithm": {…}, …}


def payment_code(secret: str, number: str, unix_time: float | None = None, sequence: int = 0) -> str:
    """The 18-digit code, computed offline: "28" + device number (7 digits) + sequence digit + an
    8-digit HOTP (RFC 4226, HMAC-SHA1) over the counter floor(unix_time / 60) * 10 + sequence.
    After each payment the app moves on to the next sequence digit (up to ten codes a minute)."""
    now = time.time() if unix_time is None else unix_time
    counter = int(now // 60) * 10 + sequence
    key = base64.b32decode(secret.upper() + "=" * (-len(secret) % 8))
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF
    return f"28{number}{sequence}{value % 10**8:08d}"


def payments_to_confirm(client: httpx.Client, token: str) -> list[dict[str, Any]]:
    """Charges above the password-free allowance, waiting for this customer (about 60 s each)."""
    pending: list[dict[str, Any]] = expect(client.get("/v1/payments/pending", headers=bearer(token)), 200)[
        "data"
    ]
    return pending


def confirm_held_payment(client: httpx.Client, token: str, pin: str, payment_id: str) -> dict[str, Any]:
    """Confirming always needs step-up. `POST /v1/payments/{id}/cancel` refuses it instead."""

    def send(extra: dict[str, str]) -> httpx.Response:
        return client.post(f"/v1/payments/{payment_id}/confirm", headers={**bearer(token), **extra})

    payment: dict[str, Any] = expect(with_step_up(send, prove_with_pin(client, token, pin)), 200)
    return payment


# --- the merchant's till, with an API key holding payments:write ---------------------------------------


def charge(
    client: httpx.Client, key: ApiKey, merchant_id: str, code: str, fen: int, order_id: str
) -> tuple[int, dict[str, Any]]:
    """201 and a `succeeded` payment within the customer's allowance (免密); 202 and a `pending` one
    above it: the money is held and the customer must confirm before `expires_at`."""
    response = signed(
        client,
        key,
        "POST",
        f"/v1/merchants/{merchant_id}/charges",
        json_body={"payment_code": code, "amount": cny(fen), "order_id": order_id},
        headers={"Idempotency-Key": new_idempotency_key()},
    )
    payment: dict[str, Any] = expect(response, 201, 202)
    return response.status_code, payment


def payment_status(client: httpx.Client, key: ApiKey, payment_id: str) -> dict[str, Any]:
    """What the till polls after a 202: `pending`, then `succeeded`, `failed` or `canceled`."""
    payment: dict[str, Any] = expect(signed(client, key, "GET", f"/v1/payments/{payment_id}"), 200)
    return payment


def walkthrough(
    client: httpx.Client,
    *,
    customer_token: str,
    customer_pin: str,
    customer_wallet_id: str,
    till_key: ApiKey,
    merchant_id: str,
) -> dict[str, Any]:
    device = enable_payment_codes(client, customer_token, customer_pin, customer_wallet_id)

    # ¥25.00: within the password-free allowance (¥1,000 a payment by default), paid at once.
    code = payment_code(device["secret"], device["number"])
    small_status, small = charge(client, till_key, merchant_id, code, 2_500, order_id="POS-1")

    # ¥1,500.00: above the allowance. The till gets 202 and a pending payment; the customer's app
    # lists it, and the customer confirms with the PIN.
    next_code = payment_code(device["secret"], device["number"], sequence=1)  # a code pays once
    large_status, held = charge(client, till_key, merchant_id, next_code, 150_000, order_id="POS-2")
    waiting = payments_to_confirm(client, customer_token)
    confirmed = confirm_held_payment(client, customer_token, customer_pin, held["id"])
    seen_by_till = payment_status(client, till_key, held["id"])
    return {
        "device": device,
        "small_status": small_status,
        "small": small,
        "large_status": large_status,
        "held": held,
        "waiting": waiting,
        "confirmed": confirmed,
        "seen_by_till": seen_by_till,
    }
