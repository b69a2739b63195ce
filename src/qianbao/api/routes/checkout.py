"""Online checkout: payment intents created by a merchant's server, confirmed by the customer's wallet."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt, StrictStr

from qianbao.api.deps import Body, CurrentUser, Identity, user_or_key
from qianbao.api.idempotency import run_idempotent
from qianbao.api.routes.merchants import PaymentOut
from qianbao.api.routes.payment_codes import shown_payment
from qianbao.api.routes.wallets import MoneyIn, MoneyOut, Strict
from qianbao.clock import rfc3339
from qianbao.identity.model import Principal
from qianbao.payments import intents
from qianbao.payments.merchants import Merchant

router = APIRouter(tags=["checkout"])

Charger = Annotated[Principal, Depends(user_or_key("payments:write"))]
Reader = Annotated[Principal, Depends(user_or_key("read"))]


class IntentRequest(Strict):
    merchant_id: StrictStr
    amount: MoneyIn
    order_id: StrictStr | None = None
    description: StrictStr | None = Field(default=None, description="shown to the customer; ≤ 200 characters")
    return_url: StrictStr | None = Field(
        default=None, description="where the checkout page sends the customer"
    )
    expires_in: StrictInt | None = Field(default=None, description="seconds, 60 to 7 days (default 1800)")


class ConfirmRequest(Strict):
    from_wallet_id: StrictStr


class IntentOut(BaseModel):
    id: str
    status: str = Field(description="requires_confirmation, processing, succeeded, failed, canceled, expired")
    merchant: dict[str, Any] = Field(description="id, name, city")
    amount: MoneyOut
    order_id: str | None
    description: str | None
    return_url: str | None
    payment_id: str | None
    failure_code: str | None = None
    created_at: str
    expires_at: str


class ConfirmedOut(BaseModel):
    payment_intent: IntentOut
    payment: PaymentOut


def intent_json(intent: intents.Intent, merchant: Merchant, viewer: str | None) -> dict[str, Any]:
    """An intent; who paid it (the payment id, a decline's code) only for the merchant and the payer: any
    customer holding the checkout link may look at the intent itself."""
    party = viewer in (intent.merchant_user_id, intent.payer_user_id)
    shown: dict[str, Any] = {
        "id": intent.id,
        "status": intent.status,
        "merchant": {"id": merchant.id, "name": merchant.name, "city": merchant.city},
        "amount": {"amount": intent.amount, "currency": intent.currency},
        "order_id": intent.order_id,
        "description": intent.description,
        "return_url": intent.return_url,
        "payment_id": intent.payment_id if party else None,
        "created_at": rfc3339(intent.created_at),
        "expires_at": rfc3339(intent.expires_at),
    }
    if intent.failure_code is not None and party:
        shown["failure_code"] = intent.failure_code
    return shown


@router.post(
    "/v1/payment-intents", status_code=201, response_model=IntentOut, response_model_exclude_unset=True
)
def create_intent(
    body: IntentRequest,
    request: Request,
    raw: Body,
    principal: Charger,
    ctx: Identity,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
) -> JSONResponse:
    """A checkout for one order (your server, with an API key holding `payments:write`). Send the
    customer to your checkout page with the intent's id; they confirm it from their wallet."""

    def work() -> tuple[int, dict[str, Any]]:
        intent = intents.create_intent(
            ctx,
            principal,
            merchant_id=body.merchant_id,
            amount=body.amount.amount,
            currency_code=body.amount.currency,
            order_id=body.order_id,
            description=body.description,
            return_url=body.return_url,
            expires_in_s=body.expires_in,
        )
        _intent, merchant = intents.get_intent(ctx, principal, intent.id)
        return 201, intent_json(intent, merchant, principal.user_id)

    return run_idempotent(ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work)


@router.get("/v1/payment-intents/{intent_id}", response_model=IntentOut, response_model_exclude_unset=True)
def get_intent(intent_id: str, principal: Reader, ctx: Identity) -> dict[str, Any]:
    """An intent: for the merchant, and for the customer about to pay it."""
    intent, merchant = intents.get_intent(ctx, principal, intent_id)
    return intent_json(intent, merchant, principal.user_id)


@router.post(
    "/v1/payment-intents/{intent_id}/confirm", response_model=ConfirmedOut, response_model_exclude_unset=True
)
def confirm_intent(
    intent_id: str,
    body: ConfirmRequest,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    idempotency_key: Annotated[str | None, Header(alias="Idempotency-Key")] = None,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
) -> JSONResponse:
    """Pay an intent from one of your wallets (limits and step-up as for any payment). A refusal before
    the payment runs (`insufficient_funds`, `step_up_required` …) leaves the intent payable; a decline
    while it runs makes it `failed`; `intent_expired`, `intent_state_conflict` otherwise."""

    def work() -> tuple[int, dict[str, Any]]:
        intent, record = intents.confirm_intent(
            ctx, principal, intent_id, from_wallet_id=body.from_wallet_id, step_up=step_up
        )
        _same, merchant = intents.get_intent(ctx, principal, intent.id)
        return 200, {
            "payment_intent": intent_json(intent, merchant, principal.user_id),
            "payment": shown_payment(ctx, record, principal),
        }

    return run_idempotent(ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work)


@router.post(
    "/v1/payment-intents/{intent_id}/cancel", response_model=IntentOut, response_model_exclude_unset=True
)
def cancel_intent(intent_id: str, principal: Charger, ctx: Identity) -> dict[str, Any]:
    """The merchant calls a checkout off before it is paid."""
    intent = intents.cancel_intent(ctx, principal, intent_id)
    _same, merchant = intents.get_intent(ctx, principal, intent.id)
    return intent_json(intent, merchant, principal.user_id)
