"""Paying merchants (scan a QR code) and refunds."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictStr
from sqlalchemy import Connection

from qianbao.api.deps import Body, CurrentUser, Identity, user_or_key
from qianbao.api.idempotency import answer_order, pipeline_key, pipeline_response
from qianbao.api.routes.merchants import PaymentOut, Reader, payment_json
from qianbao.api.routes.wallets import MoneyIn, MoneyOut, Strict
from qianbao.clock import rfc3339
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.payments import merchant_payments, qr_flow, qr_payments, refunds
from qianbao.payments.engine.service import submit_order_async
from qianbao.payments.merchant_records import PaymentRecord, RefundRecord
from qianbao.payments.merchants import Merchant, merchant_by_id

router = APIRouter(tags=["payments"])

Refunder = Annotated[Principal, Depends(user_or_key("refunds:write"))]


class QrPaymentBody(Strict):
    from_wallet_id: StrictStr
    qr: StrictStr = Field(description="the scanned EMVCo payload of a qianbao merchant code")
    amount: MoneyIn | None = Field(
        default=None, description="required for static codes; must match dynamic ones"
    )
    memo: StrictStr | None = None


class RefundBody(Strict):
    amount: MoneyIn | None = Field(default=None, description="default: everything not yet refunded")
    reason: StrictStr | None = None


class RefundOut(BaseModel):
    id: str
    payment_id: str
    status: str = Field(description="succeeded or failed")
    amount: MoneyOut
    fee_refunded: MoneyOut | None = Field(default=None, description="shown to the merchant only")
    to_wallet_id: str | None = None
    reason: str | None
    created_at: str
    failure_code: str | None = None


class RefundList(BaseModel):
    data: list[RefundOut]
    next_cursor: str | None


def _shown(
    ctx: IdentityContext, record: PaymentRecord, principal: Principal, conn: Connection | None = None
) -> dict[str, Any]:
    """A payment as the caller sees it; `conn`: read the merchant in that transaction (a batch's)."""
    if conn is not None:
        return payment_json(
            record, merchant_by_id(conn, record.merchant_id), viewer_user_id=principal.user_id
        )
    with ctx.db.read() as read:
        merchant = merchant_by_id(read, record.merchant_id)
    return payment_json(record, merchant, viewer_user_id=principal.user_id)


def refund_json(r: RefundRecord, *, merchant_view: bool, payer_view: bool) -> dict[str, Any]:
    shown: dict[str, Any] = {
        "id": r.id,
        "payment_id": r.payment_id,
        "status": r.status,
        "amount": {"amount": r.amount, "currency": r.currency},
        "reason": r.reason,
        "created_at": rfc3339(r.created_at),
    }
    if merchant_view:
        shown["fee_refunded"] = {"amount": r.fee_refunded, "currency": r.currency}
    if payer_view:
        shown["to_wallet_id"] = r.to_wallet_id
    if r.failure_code is not None:
        shown["failure_code"] = r.failure_code
    return shown


@router.post("/v1/payments", status_code=201, response_model=PaymentOut, response_model_exclude_unset=True)
async def pay_by_qr(
    body: QrPaymentBody,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
) -> JSONResponse:
    """Pay a merchant by its QR code: a static code with the `amount` you enter, or a dynamic code (its
    own amount, once, before it expires). Declines: `qr_code_invalid`, `qr_code_expired`, `qr_code_used`,
    `amount_mismatch`, `merchant_not_found`, `merchant_inactive`, the limits and balance codes of
    `POST /v1/transfers`, `wallet_locked`, `budget_exceeded`; large payments ask for step-up."""
    request_data = qr_payments.QrPaymentRequest(
        from_wallet_id=body.from_wallet_id,
        qr=body.qr,
        amount=None if body.amount is None else body.amount.amount,
        currency=None if body.amount is None else body.amount.currency,
        memo=body.memo,
    )

    def render(
        record: Any, conn: Connection | None = None, merchant: Merchant | None = None
    ) -> tuple[int, dict[str, Any]]:
        if merchant is not None:  # read by the batch already
            return 201, payment_json(record, merchant, viewer_user_id=principal.user_id)
        return 201, _shown(ctx, record, principal, conn)

    # The answer holds the customer's note (personal data): stored encrypted for replays.
    http = pipeline_key(
        ctx, request, scope=principal.scope, key=idempotency_key, body=raw, render=render, sealed=True
    )
    order = qr_flow.qr_order(
        principal, request_data, idempotency_key=idempotency_key, step_up=step_up, http=http
    )
    # Async: the request waits for its batch without holding a thread (docs/payments.md, "The pipeline").
    return await answer_order(ctx, order, render)


@router.get("/v1/payments/{payment_id}", response_model=PaymentOut, response_model_exclude_unset=True)
def get_payment(payment_id: str, principal: Reader, ctx: Identity) -> dict[str, Any]:
    """A payment, for its payer or the merchant's owner (a declined attempt only for its payer)."""
    return _shown(ctx, merchant_payments.get_payment(ctx, principal, payment_id), principal)


@router.post(
    "/v1/payments/{payment_id}/refunds",
    status_code=201,
    response_model=RefundOut,
    response_model_exclude_unset=True,
)
async def create_refund(
    payment_id: str,
    body: RefundBody,
    request: Request,
    raw: Body,
    principal: Refunder,
    ctx: Identity,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """Refund a payment to your merchant, in full (no amount) or in part; several partial refunds up to
    the amount paid. The money goes back to the wallet that paid; the fee comes back pro-rata.
    Declines: `refund_exceeds_payment` (with `remaining`), `payment_not_refundable`, `insufficient_funds`
    (the merchant wallet holds less than the refund)."""
    request_data = refunds.RefundRequest(
        payment_id=payment_id,
        amount=None if body.amount is None else body.amount.amount,
        currency=None if body.amount is None else body.amount.currency,
        reason=body.reason,
    )

    def render(record: Any, conn: Connection | None = None, seen: Any = None) -> tuple[int, dict[str, Any]]:  # noqa: ARG001
        return 201, refund_json(record, merchant_view=True, payer_view=False)

    # The answer holds the refund's reason (personal data): stored encrypted for replays.
    http = pipeline_key(
        ctx, request, scope=principal.scope, key=idempotency_key, body=raw, render=render, sealed=True
    )
    order = refunds.refund_order(principal, request_data, idempotency_key=idempotency_key, http=http)
    return pipeline_response(await submit_order_async(ctx, order), render)


@router.get("/v1/payments/{payment_id}/refunds", response_model=RefundList, response_model_exclude_unset=True)
def list_refunds(payment_id: str, principal: Reader, ctx: Identity) -> dict[str, Any]:
    """A payment's refunds, oldest first (the payer sees the successful ones)."""
    found = refunds.list_refunds(ctx, principal, payment_id)
    payment = merchant_payments.get_payment(ctx, principal, payment_id)
    merchant_view = principal.user_id == payment.merchant_user_id
    payer_view = principal.user_id == payment.payer_user_id
    return {
        "data": [refund_json(r, merchant_view=merchant_view, payer_view=payer_view) for r in found],
        "next_cursor": None,
    }
