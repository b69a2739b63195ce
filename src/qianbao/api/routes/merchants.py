"""Merchants: profiles, their static and dynamic QR codes, and the payments they received."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt, StrictStr

from qianbao.api.deps import Body, CurrentUser, Identity, Info, user_or_key
from qianbao.api.idempotency import run_idempotent
from qianbao.api.routes.wallets import MoneyIn, MoneyOut, Strict
from qianbao.clock import rfc3339
from qianbao.identity.model import Principal
from qianbao.ledger.queries import LedgerReader
from qianbao.payments import dynamic_qr, emvco, merchants
from qianbao.payments.merchant_records import PaymentRecord, payments_page
from qianbao.payments.merchants import Merchant

router = APIRouter(tags=["merchants"])

Reader = Annotated[Principal, Depends(user_or_key("read"))]
Charger = Annotated[Principal, Depends(user_or_key("payments:write"))]
QrFormat = Literal["json", "svg", "png"]


class MerchantRequest(Strict):
    name: StrictStr = Field(description="as printed on the QR code: at most 25 characters")
    mcc: StrictStr = Field(description="merchant category code (ISO 18245), four digits")
    city: StrictStr = Field(description="at most 15 characters")
    currency: StrictStr | None = None


class MerchantWalletOut(BaseModel):
    id: str
    balance: MoneyOut
    available: MoneyOut


class MerchantOut(BaseModel):
    id: str
    name: str
    mcc: str
    city: str
    currency: str
    status: str = Field(description="active, suspended or closed")
    fee_rate_ppm: int = Field(description="merchant discount rate, parts per million (3800 = 0.38 %)")
    wallet: MerchantWalletOut
    created_at: str


class MerchantList(BaseModel):
    data: list[MerchantOut]
    next_cursor: str | None


class DynamicQrRequest(Strict):
    amount: MoneyIn
    order_id: StrictStr | None = None
    expires_in: StrictInt | None = Field(default=None, description="seconds, 30 to 86400 (default 300)")


class DynamicQrOut(BaseModel):
    id: str
    merchant_id: str
    payload: str = Field(description="the EMVCo text to render as a QR code")
    amount: MoneyOut
    order_id: str | None
    status: str = Field(description="active, paid, expired or canceled")
    payment_id: str | None
    created_at: str
    expires_at: str
    svg: str | None = None


class StaticQrOut(BaseModel):
    merchant_id: str
    payload: str
    point_of_initiation: str
    svg: str | None = None


class PaymentOut(BaseModel):
    id: str
    status: str = Field(description="succeeded, failed, pending or canceled")
    method: str = Field(description="qr_static, qr_dynamic, payment_code or checkout")
    merchant: dict[str, Any] = Field(description="id, name, city, mcc")
    payer_wallet_id: str | None = None
    amount: MoneyOut
    fee: MoneyOut | None = Field(default=None, description="shown to the merchant only")
    refunded: MoneyOut
    refund_status: str = Field(description="none, partially_refunded or refunded")
    order_id: str | None
    memo: str | None
    created_at: str
    expires_at: str | None = Field(default=None, description="pending payments: confirm before this")
    failure_code: str | None = None


class PaymentList(BaseModel):
    data: list[PaymentOut]
    next_cursor: str | None


def _money(amount: int, code: str) -> dict[str, Any]:
    return {"amount": amount, "currency": code}


def merchant_json(ctx: Any, m: Merchant) -> dict[str, Any]:
    account = LedgerReader(ctx.db).get_account(m.wallet_id)
    balance = 0 if account is None else account.balance
    available = 0 if account is None else account.available
    return {
        "id": m.id,
        "name": m.name,
        "mcc": m.mcc,
        "city": m.city,
        "currency": m.currency,
        "status": m.status,
        "fee_rate_ppm": merchants.rate_for(ctx, m),
        "wallet": {
            "id": m.wallet_id,
            "balance": _money(balance, m.currency),
            "available": _money(available, m.currency),
        },
        "created_at": rfc3339(m.created_at),
    }


def payment_json(
    p: PaymentRecord, merchant: Merchant | None, *, viewer_user_id: str | None
) -> dict[str, Any]:
    """A payment as its payer or the merchant sees it: the fee is the merchant's business only."""
    shown: dict[str, Any] = {
        "id": p.id,
        "status": p.status,
        "method": p.method,
        "merchant": {
            "id": p.merchant_id,
            "name": None if merchant is None else merchant.name,
            "city": None if merchant is None else merchant.city,
            "mcc": None if merchant is None else merchant.mcc,
        },
        "amount": _money(p.amount, p.currency),
        "refunded": _money(p.refunded_amount, p.currency),
        "refund_status": p.refund_status,
        "order_id": p.order_id,
        "memo": p.memo,
        "created_at": rfc3339(p.created_at),
    }
    if viewer_user_id == p.payer_user_id:
        shown["payer_wallet_id"] = p.payer_wallet_id
    if viewer_user_id == p.merchant_user_id:
        shown["fee"] = _money(p.fee, p.currency)
    if p.status == "pending" and p.expires_at is not None:
        shown["expires_at"] = rfc3339(p.expires_at)
    if p.failure_code is not None:
        shown["failure_code"] = p.failure_code
    return shown


def qr_json(merchant: Merchant, code: dynamic_qr.DynamicQr, now_us: int, *, svg: bool) -> dict[str, Any]:
    payload = dynamic_qr.payload_for(merchant, code)
    shown = {
        "id": code.id,
        "merchant_id": code.merchant_id,
        "payload": payload,
        "amount": _money(code.amount, code.currency),
        "order_id": code.order_id,
        "status": code.shown_status(now_us),
        "payment_id": code.payment_id,
        "created_at": rfc3339(code.created_at),
        "expires_at": rfc3339(code.expires_at),
    }
    if svg:
        shown["svg"] = emvco.qr_svg(payload)
    return shown


def _image(payload: str, fmt: QrFormat) -> Response | None:
    if fmt == "svg":
        return Response(emvco.qr_svg(payload), media_type="image/svg+xml")
    if fmt == "png":
        return Response(emvco.qr_png(payload), media_type="image/png")
    return None


@router.post("/v1/merchants", status_code=201, response_model=MerchantOut)
def create_merchant(
    body: MerchantRequest,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    info: Info,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Register a business you own; it gets its own merchant wallet that receives its payments."""

    def work() -> tuple[int, dict[str, Any]]:
        created = merchants.create_merchant(
            ctx,
            principal,
            name=body.name,
            mcc=body.mcc,
            city=body.city,
            currency_code=body.currency,
            info=info,
        )
        return 201, merchant_json(ctx, created)

    return run_idempotent(ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work)


@router.get("/v1/merchants", response_model=MerchantList)
def list_merchants(principal: Reader, ctx: Identity) -> dict[str, Any]:
    """The merchants the caller owns (for an API key: its owner's), with their wallets."""
    return {
        "data": [merchant_json(ctx, m) for m in merchants.list_merchants(ctx, principal)],
        "next_cursor": None,
    }


@router.get("/v1/merchants/{merchant_id}", response_model=MerchantOut)
def get_merchant(merchant_id: str, principal: Reader, ctx: Identity) -> dict[str, Any]:
    """One merchant of the caller's (anyone else's: 404)."""
    return merchant_json(ctx, merchants.get_merchant(ctx, principal, merchant_id))


@router.get(
    "/v1/merchants/{merchant_id}/qr",
    response_model=StaticQrOut,
    responses={200: {"content": {"image/svg+xml": {}, "image/png": {}}}},
)
def static_qr(
    merchant_id: str, principal: Reader, ctx: Identity, format: Annotated[QrFormat, Query()] = "json"
) -> Any:
    """The merchant's printable static code (`11`): customers scan it and enter the amount."""
    payload = merchants.static_qr_payload(merchants.get_merchant(ctx, principal, merchant_id))
    image = _image(payload, format)
    if image is not None:
        return image
    return {"merchant_id": merchant_id, "payload": payload, "point_of_initiation": "static", "svg": None}


@router.post("/v1/merchants/{merchant_id}/qr-codes", status_code=201, response_model=DynamicQrOut)
def create_dynamic_qr(
    merchant_id: str,
    body: DynamicQrRequest,
    request: Request,
    raw: Body,
    principal: Charger,
    ctx: Identity,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """A dynamic code (`12`) for one order: amount embedded, single use, expires (default 5 minutes)."""

    def work() -> tuple[int, dict[str, Any]]:
        merchant, code = dynamic_qr.create_code(
            ctx,
            principal,
            merchant_id,
            amount=body.amount.amount,
            currency_code=body.amount.currency,
            order_id=body.order_id,
            expires_in_s=body.expires_in,
        )
        return 201, qr_json(merchant, code, ctx.now(), svg=True)

    return run_idempotent(ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work)


@router.get(
    "/v1/merchants/{merchant_id}/qr-codes/{code_id}",
    response_model=DynamicQrOut,
    responses={200: {"content": {"image/svg+xml": {}, "image/png": {}}}},
)
def get_dynamic_qr(
    merchant_id: str,
    code_id: str,
    principal: Reader,
    ctx: Identity,
    format: Annotated[QrFormat, Query()] = "json",
) -> Any:
    """A dynamic code and whether it has been paid (a till polls this, or listens to webhooks)."""
    merchant, code = dynamic_qr.get_code(ctx, principal, merchant_id, code_id)
    image = _image(dynamic_qr.payload_for(merchant, code), format)
    return image if image is not None else qr_json(merchant, code, ctx.now(), svg=False)


@router.post("/v1/merchants/{merchant_id}/qr-codes/{code_id}/cancel", response_model=DynamicQrOut)
def cancel_dynamic_qr(merchant_id: str, code_id: str, principal: Charger, ctx: Identity) -> dict[str, Any]:
    """Withdraw an unpaid code; a paid one answers 409 `qr_code_used` (refund the payment instead)."""
    merchant, code = dynamic_qr.cancel_code(ctx, principal, merchant_id, code_id)
    return qr_json(merchant, code, ctx.now(), svg=False)


@router.get(
    "/v1/merchants/{merchant_id}/payments", response_model=PaymentList, response_model_exclude_unset=True
)
def merchant_payments(
    merchant_id: str,
    principal: Reader,
    ctx: Identity,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=80)] = None,
) -> dict[str, Any]:
    """Payments to the merchant, newest first (failed attempts are the payer's business and not listed)."""
    merchant = merchants.get_merchant(ctx, principal, merchant_id)
    with ctx.db.read() as conn:
        page, next_cursor = payments_page(conn, ctx.keys, merchant.id, limit=limit, cursor=cursor)
    return {
        "data": [payment_json(p, merchant, viewer_user_id=principal.user_id) for p in page],
        "next_cursor": next_cursor,
    }
