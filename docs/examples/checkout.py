"""Walkthrough 4: online checkout. The merchant's server creates a payment intent for an order; the
customer confirms it from the wallet; the server sees it paid."""

from __future__ import annotations

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

# --- the merchant's server, with an API key holding payments:write (and read to look) -------------------


def create_payment_intent(
    client: httpx.Client,
    key: ApiKey,
    merchant_id: str,
    fen: int,
    *,
    order_id: str,
    description: str,
    return_url: str,
) -> dict[str, Any]:
    """A checkout for one order, `requires_confirmation` until the customer pays it (30 minutes by
    default; `expires_in` takes 60 s to 7 days). Send the customer to your checkout page with its id.
    One Idempotency-Key per order: a retry returns the same intent instead of a second one."""
    body = {
        "merchant_id": merchant_id,
        "amount": cny(fen),
        "order_id": order_id,
        "description": description,
        "return_url": return_url,
    }
    response = signed(
        client,
        key,
        "POST",
        "/v1/payment-intents",
        json_body=body,
        headers={"Idempotency-Key": f"order-{order_id}"},
    )
    intent: dict[str, Any] = expect(response, 201)
    return intent


def intent_status(client: httpx.Client, key: ApiKey, intent_id: str) -> dict[str, Any]:
    """`requires_confirmation`, `processing`, then `succeeded` (with `payment_id`), `failed`,
    `canceled` or `expired`."""
    intent: dict[str, Any] = expect(signed(client, key, "GET", f"/v1/payment-intents/{intent_id}"), 200)
    return intent


# --- the customer, signed in to the wallet ---------------------------------------------------------------


def show_intent(client: httpx.Client, token: str, intent_id: str) -> dict[str, Any]:
    """What the customer is asked to pay: merchant, amount, description."""
    intent: dict[str, Any] = expect(
        client.get(f"/v1/payment-intents/{intent_id}", headers=bearer(token)), 200
    )
    return intent


def pay_intent(
    client: httpx.Client, token: str, pin: str, intent_id: str, from_wallet_id: str
) -> dict[str, Any]:
    """Pay it from one of the customer's wallets (limits and step-up as for any payment). A refusal
    before the payment runs (insufficient_funds, a limit) leaves the intent payable."""
    key = new_idempotency_key()

    def send(extra: dict[str, str]) -> httpx.Response:
        headers = {**bearer(token), "Idempotency-Key": key, **extra}
        body = {"from_wallet_id": from_wallet_id}
        return client.post(f"/v1/payment-intents/{intent_id}/confirm", json=body, headers=headers)

    paid: dict[str, Any] = expect(with_step_up(send, prove_with_pin(client, token, pin)), 200)
    return paid  # {"payment_intent": {"status": "succeeded", …}, "payment": {"id": "pay_…", …}}


def walkthrough(
    client: httpx.Client,
    *,
    server_key: ApiKey,
    merchant_id: str,
    customer_token: str,
    customer_pin: str,
    customer_wallet_id: str,
) -> dict[str, Any]:
    intent = create_payment_intent(
        client,
        server_key,
        merchant_id,
        3_800,
        order_id="WEB-77",
        description="龙井 250g",
        return_url="https://tea.example/orders/WEB-77",
    )
    shown = show_intent(client, customer_token, intent["id"])
    paid = pay_intent(client, customer_token, customer_pin, intent["id"], customer_wallet_id)
    final = intent_status(client, server_key, intent["id"])
    return {"intent": intent, "shown": shown, "paid": paid, "final": final}
