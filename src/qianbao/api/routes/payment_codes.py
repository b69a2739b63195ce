"""Payment codes (付款码): the customer's devices and allowance, the merchant's charge, and confirming
or calling off a held charge."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt, StrictStr

from qianbao.api.deps import Body, CurrentUser, Identity, user_or_key
from qianbao.api.idempotency import SHOWN_ONCE_NOTE, run_idempotent, shown_once
from qianbao.api.routes.merchants import PaymentList, PaymentOut, payment_json
from qianbao.api.routes.wallets import MoneyIn, MoneyOut, Strict
from qianbao.clock import rfc3339
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.payments import charges, payment_code_model, payment_codes
from qianbao.payments.merchant_records import PaymentRecord
from qianbao.payments.merchants import merchant_by_id

router = APIRouter(tags=["payment-codes"])

Charger = Annotated[Principal, Depends(user_or_key("payments:write"))]
NO_STORE = {"Cache-Control": "no-store"}


class DeviceRequest(Strict):
    wallet_id: StrictStr


class DeviceOut(BaseModel):
    id: str
    wallet_id: str
    device_id: str
    number: str = Field(description="the 7-digit device number inside every code this device shows")
    created_at: str
    blocked_at: str | None = Field(
        description="set when too many wrong codes named this device: its codes pay no more until payment "
        "codes are enabled again (`POST /v1/payment-codes/devices`)"
    )


class EnabledDeviceOut(DeviceOut):
    secret: str | None = Field(
        description=f"base32 HOTP secret: the app computes codes offline with it; {SHOWN_ONCE_NOTE}"
    )
    algorithm: dict[str, Any]


class DeviceList(BaseModel):
    data: list[DeviceOut]
    next_cursor: str | None


class CurrentCodeOut(BaseModel):
    code: str = Field(description="18 digits; single use; refreshes every minute")
    wallet_id: str
    refresh_at: str
    qr_svg: str
    barcode_svg: str = Field(description="Code 128")


class ZeroableMoney(Strict):
    amount: StrictInt = Field(ge=0, le=10**15)
    currency: Literal["CNY"]


class AllowanceBody(Strict):
    no_pin_per_payment: ZeroableMoney
    no_pin_daily: ZeroableMoney


class AllowanceOut(BaseModel):
    no_pin_per_payment: MoneyOut
    no_pin_daily: MoneyOut
    used_today: MoneyOut


class ChargeBody(Strict):
    payment_code: StrictStr = Field(description="the 18 digits the customer shows")
    amount: MoneyIn
    order_id: StrictStr | None = None


def _money(amount: int) -> dict[str, Any]:
    return {"amount": amount, "currency": "CNY"}


def _device_json(d: payment_codes.CodeDevice) -> dict[str, Any]:
    return {
        "id": d.id,
        "wallet_id": d.wallet_id,
        "device_id": d.device_id,
        "number": d.number,
        "created_at": rfc3339(d.created_at),
        "blocked_at": None if d.blocked_at is None else rfc3339(d.blocked_at),
    }


def _allowance_json(a: payment_codes.Allowance) -> dict[str, Any]:
    return {
        "no_pin_per_payment": _money(a.per_payment),
        "no_pin_daily": _money(a.daily),
        "used_today": _money(a.used_today),
    }


def shown_payment(ctx: IdentityContext, record: PaymentRecord, principal: Principal) -> dict[str, Any]:
    with ctx.db.read() as conn:
        merchant = merchant_by_id(conn, record.merchant_id)
    return payment_json(record, merchant, viewer_user_id=principal.user_id)


@router.post("/v1/payment-codes/devices", status_code=201, response_model=EnabledDeviceOut)
def enable_device(
    body: DeviceRequest,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
) -> JSONResponse:
    """Show payment codes on this device (the session's `device_id`) for one wallet. A security change:
    step-up first. The answer holds the device's secret, once; enabling again replaces it (and lifts a
    block after repeated wrong codes: a new secret and number)."""

    def work() -> tuple[int, dict[str, Any]]:
        device, secret = payment_codes.enable_device(ctx, principal, body.wallet_id, step_up=step_up)
        return 201, {
            **_device_json(device),
            "secret": secret,
            "algorithm": {
                "format": "28 + device number (7) + sequence digit (1) + HOTP (8)",
                "hotp": "RFC 4226, HMAC-SHA1, 8 digits",
                "counter": "floor(unix_time / 60) * 10 + sequence digit",
                "step_seconds": payment_code_model.STEP_SECONDS,
            },
        }

    return run_idempotent(
        ctx,
        request,
        scope=principal.scope,
        key=idempotency_key,
        body=raw,
        work=work,
        once=shown_once(principal, "secret"),
    )


@router.get("/v1/payment-codes/devices", response_model=DeviceList)
def list_devices(principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """The caller's devices enabled for payment codes, with the wallet each pays from."""
    return {
        "data": [_device_json(d) for d in payment_codes.list_devices(ctx, principal)],
        "next_cursor": None,
    }


@router.delete("/v1/payment-codes/devices/{device_reg_id}", status_code=204)
def revoke_device(device_reg_id: str, principal: CurrentUser, ctx: Identity) -> Response:
    """Stop a device (a lost phone) showing payment codes: its codes stop working at once."""
    payment_codes.revoke_device(ctx, principal, device_reg_id)
    return Response(status_code=204)


@router.get("/v1/payment-codes/current", response_model=CurrentCodeOut)
def current_code(principal: CurrentUser, ctx: Identity) -> JSONResponse:
    """This device's current code, for clients that do not compute codes themselves. A device blocked
    after repeated wrong codes: `423 payment_code_blocked` (enable payment codes again)."""
    shown = payment_codes.current_code(ctx, principal)
    shown["refresh_at"] = rfc3339(shown["refresh_at"])
    return JSONResponse(shown, headers=NO_STORE)


@router.get("/v1/payment-codes/settings", response_model=AllowanceOut)
def get_allowance(principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """The password-free (免密) allowance for payment codes, and what of it today used."""
    return _allowance_json(payment_codes.get_allowance(ctx, principal))


@router.put("/v1/payment-codes/settings", response_model=AllowanceOut)
def set_allowance(
    body: AllowanceBody,
    principal: CurrentUser,
    ctx: Identity,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
) -> dict[str, Any]:
    """Lower the allowance (to zero: every code payment asks for confirmation) at any time; raising it,
    up to the operator's defaults, needs step-up."""
    allowance = payment_codes.set_allowance(
        ctx,
        principal,
        per_payment=body.no_pin_per_payment.amount,
        daily=body.no_pin_daily.amount,
        step_up=step_up,
    )
    return _allowance_json(allowance)


@router.post(
    "/v1/merchants/{merchant_id}/charges",
    status_code=201,
    response_model=PaymentOut,
    response_model_exclude_unset=True,
    responses={202: {"model": PaymentOut, "description": "held: the customer must confirm"}},
)
def charge_payment_code(
    merchant_id: str,
    body: ChargeBody,
    request: Request,
    raw: Body,
    principal: Charger,
    ctx: Identity,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Charge the code a customer shows. Within their password-free allowance: `201`, paid. Above it:
    `202` with `status: pending` — the money is held and the customer confirms in their app within 60 s
    (watch `GET /v1/payments/{id}` or the `payment.succeeded` / `payment.failed` webhooks). A wrong,
    stale or used code is `payment_code_invalid`, and so is any code of a device blocked after repeated
    wrong codes (from any merchants: its codes are not tried any more); a till over its limit of wrong
    codes is `429 rate_limited` before any code is tried."""
    charge_request = charges.ChargeRequest(
        payment_code=body.payment_code,
        amount=body.amount.amount,
        currency=body.amount.currency,
        order_id=body.order_id,
    )

    def work() -> tuple[int, dict[str, Any]]:
        record = charges.charge(ctx, principal, merchant_id, charge_request, idempotency_key=idempotency_key)
        return (202 if record.status == "pending" else 201), shown_payment(ctx, record, principal)

    return run_idempotent(ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work)


@router.get("/v1/payments/pending", response_model=PaymentList, response_model_exclude_unset=True)
def pending_payments(principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """Payments waiting for your confirmation (a payment code charged above your allowance)."""
    found = charges.list_pending(ctx, principal)
    return {"data": [shown_payment(ctx, p, principal) for p in found], "next_cursor": None}


@router.post(
    "/v1/payments/{payment_id}/confirm", response_model=PaymentOut, response_model_exclude_unset=True
)
def confirm_payment(
    payment_id: str,
    principal: CurrentUser,
    ctx: Identity,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
) -> dict[str, Any]:
    """Confirm a held payment (always with step-up). Too late: `payment_confirmation_expired`."""
    return shown_payment(ctx, charges.confirm(ctx, principal, payment_id, step_up=step_up), principal)


@router.post("/v1/payments/{payment_id}/cancel", response_model=PaymentOut, response_model_exclude_unset=True)
def cancel_payment(payment_id: str, principal: Charger, ctx: Identity) -> dict[str, Any]:
    """Call off a held payment (the customer, or the merchant): the hold is released."""
    return shown_payment(ctx, charges.cancel(ctx, principal, payment_id), principal)
