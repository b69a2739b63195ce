"""Walkthrough 2: a merchant opens a shop, gives its server an API key, shows a static and a dynamic QR
code; a customer pays each; the merchant refunds part of a payment."""

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

# --- the merchant, signed in to the wallet app ----------------------------------------------------------


def open_merchant(client: httpx.Client, token: str, name: str, mcc: str, city: str) -> dict[str, Any]:
    """A business profile with its own merchant wallet (`mwl_…`) that receives its payments."""
    headers = {**bearer(token), "Idempotency-Key": new_idempotency_key()}
    body = {"name": name, "mcc": mcc, "city": city}
    merchant: dict[str, Any] = expect(client.post("/v1/merchants", json=body, headers=headers), 201)
    return merchant


def create_api_key(client: httpx.Client, token: str, pin: str, name: str, scopes: list[str]) -> ApiKey:
    """A key for the merchant's server. Creating one always needs step-up; the secret is shown once:
    put it in your secret store."""
    body = {"name": name, "scopes": scopes}
    key = new_idempotency_key()

    def send(extra: dict[str, str]) -> httpx.Response:
        headers = {**bearer(token), "Idempotency-Key": key, **extra}
        return client.post("/v1/api-keys", json=body, headers=headers)

    created = expect(with_step_up(send, prove_with_pin(client, token, pin)), 201)
    return ApiKey(created["id"], created["secret"])


# --- the merchant's server, with the API key ------------------------------------------------------------


def static_qr(client: httpx.Client, key: ApiKey, merchant_id: str) -> str:
    """The printable code (point of initiation 11): the customer types the amount. Scope `read`.
    `?format=svg` or `?format=png` returns the image instead."""
    shown = expect(signed(client, key, "GET", f"/v1/merchants/{merchant_id}/qr"), 200)
    return str(shown["payload"])


def dynamic_qr(
    client: httpx.Client, key: ApiKey, merchant_id: str, fen: int, order_id: str
) -> dict[str, Any]:
    """A code for one order (point of initiation 12): amount embedded, single use, expires in 5 minutes
    by default. Scope `payments:write`. Show `payload` (or the `svg`) on the till's screen."""
    code: dict[str, Any] = expect(
        signed(
            client,
            key,
            "POST",
            f"/v1/merchants/{merchant_id}/qr-codes",
            json_body={"amount": cny(fen), "order_id": order_id},
            headers={"Idempotency-Key": new_idempotency_key()},
        ),
        201,
    )
    return code  # {"id": "qrc_…", "payload": "000201010212…", "status": "active", "expires_at", …}


def qr_code_status(client: httpx.Client, key: ApiKey, merchant_id: str, code_id: str) -> dict[str, Any]:
    """Poll until `status` is `paid` (then `payment_id` is set), `expired` or `canceled`."""
    code: dict[str, Any] = expect(
        signed(client, key, "GET", f"/v1/merchants/{merchant_id}/qr-codes/{code_id}"), 200
    )
    return code


def refund(
    client: httpx.Client, key: ApiKey, payment_id: str, fen: int | None, reason: str
) -> dict[str, Any]:
    """Refund part (`fen`) or all (None) of what is left of a payment. Scope `refunds:write`."""
    body: dict[str, Any] = {"reason": reason}
    if fen is not None:
        body["amount"] = cny(fen)
    response = signed(
        client,
        key,
        "POST",
        f"/v1/payments/{payment_id}/refunds",
        json_body=body,
        headers={"Idempotency-Key": new_idempotency_key()},
    )
    refunded: dict[str, Any] = expect(response, 201)
    return refunded  # {"id": "rfd_…", "status": "succeeded", "amount", "fee_refunded", …}


# --- the customer's wallet app --------------------------------------------------------------------------


class NotGenuine(Exception):
    """The scanned code is not the code qianbao issued for its payee: show the reason, pay nothing."""


def look_before_paying(client: httpx.Client, token: str, payload: str) -> dict[str, Any]:
    """What the app shows before the customer confirms: the payee and amount from qianbao's records
    (`verification`), never the code's own text, which anyone can edit. A code that is not `verified`
    (see `reason` and `mismatches`) is not offered for payment; paying it would be refused anyway."""
    body = {"payload": payload}
    parsed = expect(client.post("/v1/qr-codes/parse", json=body, headers=bearer(token)), 200)
    verification: dict[str, Any] = parsed["verification"]
    if not verification["verified"]:
        raise NotGenuine(verification["reason"], verification["mismatches"])
    return verification  # {"merchant": {"name": "老王面馆", …}, "amount": {…} or None, …}


def pay_qr(
    client: httpx.Client,
    token: str,
    pin: str,
    *,
    from_wallet_id: str,
    payload: str,
    fen: int | None = None,
    memo: str | None = None,
) -> dict[str, Any]:
    """Pay a scanned merchant code: `fen` is required for a static code (the customer typed it) and
    may be left out for a dynamic one (its own amount is paid)."""
    body: dict[str, Any] = {"from_wallet_id": from_wallet_id, "qr": payload, "memo": memo}
    if fen is not None:
        body["amount"] = cny(fen)
    key = new_idempotency_key()

    def send(extra: dict[str, str]) -> httpx.Response:
        headers = {**bearer(token), "Idempotency-Key": key, **extra}
        return client.post("/v1/payments", json=body, headers=headers)

    payment: dict[str, Any] = expect(with_step_up(send, prove_with_pin(client, token, pin)), 201)
    return payment


def walkthrough(
    client: httpx.Client,
    *,
    owner_token: str,
    owner_pin: str,
    customer_token: str,
    customer_pin: str,
    customer_wallet_id: str,
) -> dict[str, Any]:
    merchant = open_merchant(client, owner_token, "老王面馆", mcc="5812", city="上海")
    key = create_api_key(client, owner_token, owner_pin, "till", ["read", "payments:write", "refunds:write"])

    # Static code: printed on the counter; the customer scans it, sees 老王面馆 and types ¥25.00.
    printed = static_qr(client, key, merchant["id"])
    shown_static = look_before_paying(client, customer_token, printed)
    by_static = pay_qr(
        client,
        customer_token,
        customer_pin,
        from_wallet_id=customer_wallet_id,
        payload=printed,
        fen=2_500,
        memo="两碗面",
    )

    # Dynamic code: the till asks for ¥100.00 for order A-1001; the customer scans and pays it.
    code = dynamic_qr(client, key, merchant["id"], 10_000, order_id="A-1001")
    shown_dynamic = look_before_paying(client, customer_token, code["payload"])
    by_dynamic = pay_qr(
        client, customer_token, customer_pin, from_wallet_id=customer_wallet_id, payload=code["payload"]
    )
    paid_code = qr_code_status(client, key, merchant["id"], code["id"])

    # One dish was missing: refund ¥30.00 of the ¥100.00 (the fee comes back pro-rata).
    partial = refund(client, key, by_dynamic["id"], 3_000, reason="少了一碗")
    return {
        "merchant": merchant,
        "key": key,
        "static_payload": printed,
        "shown_static": shown_static,
        "shown_dynamic": shown_dynamic,
        "by_static": by_static,
        "code": code,
        "by_dynamic": by_dynamic,
        "paid_code": paid_code,
        "refund": partial,
    }
