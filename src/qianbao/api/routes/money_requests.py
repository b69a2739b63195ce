"""Money requests: ask someone for money; the payer accepts (pays) or declines (docs/p2p.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field, StrictInt, StrictStr, model_validator
from sqlalchemy import Connection

from qianbao.api import request_errors
from qianbao.api.deps import Body, CurrentUser, Identity
from qianbao.api.idempotency import answer_order, pipeline_key, run_idempotent
from qianbao.api.routes.wallets import MoneyIn, MoneyOut, Strict, TransferOut, transfer_json
from qianbao.clock import rfc3339
from qianbao.payments import request_flow
from qianbao.payments import requests as money_requests

router = APIRouter(tags=["money-requests"])


class PayerIn(Strict):
    phone: StrictStr | None = None
    wallet_id: StrictStr | None = Field(None, description="any wallet of the person asked to pay")

    @model_validator(mode="after")
    def _exactly_one(self) -> PayerIn:
        if (self.phone is None) == (self.wallet_id is None):
            raise request_errors.exactly_one_of("phone", "wallet_id")
        return self


class MoneyRequestBody(Strict):
    payer: PayerIn = Field(alias="from", description="who is asked to pay: {phone} or {wallet_id}")
    to_wallet_id: StrictStr = Field(description="your own wallet that receives the money")
    amount: MoneyIn
    memo: StrictStr | None = None
    expires_in_days: StrictInt = Field(
        money_requests.DEFAULT_EXPIRY_DAYS, ge=1, le=money_requests.MAX_EXPIRY_DAYS
    )


class AcceptBody(Strict):
    from_wallet_id: StrictStr | None = Field(None, description="your wallet that pays (default: main wallet)")


class DeclineBody(Strict):
    reason: StrictStr | None = Field(None, description="shown to the requester; up to 140 characters")


class PartyOut(BaseModel):
    name_masked: str


class MoneyRequestOut(BaseModel):
    id: str
    status: str = Field(description="pending, paid, declined, canceled or expired")
    role: str = Field(description="yours in this request: payer or requester")
    to_wallet_id: str
    amount: MoneyOut
    memo: str | None
    requester: PartyOut
    payer: PartyOut
    transfer_id: str | None = Field(description="the transfer that paid it")
    from_wallet_id: str | None = Field(description="the payer's wallet that paid it")
    decline_reason: str | None
    created_at: str
    expires_at: str
    resolved_at: str | None = Field(description="when it was paid, declined or canceled")


class AcceptedOut(MoneyRequestOut):
    transfer: TransferOut


class MoneyRequestList(BaseModel):
    data: list[MoneyRequestOut]
    next_cursor: str | None


def request_json(view: money_requests.RequestView) -> dict[str, Any]:
    r = view.request
    return {
        "id": r.id,
        "status": view.status,
        "role": view.role,
        "to_wallet_id": r.to_wallet_id,
        "amount": {"amount": r.amount, "currency": r.currency},
        "memo": r.memo,
        "requester": {"name_masked": view.requester_name_masked},
        "payer": {"name_masked": view.payer_name_masked},
        "transfer_id": r.transfer_id,
        "from_wallet_id": r.from_wallet_id,
        "decline_reason": r.decline_reason,
        "created_at": rfc3339(r.created_at),
        "expires_at": rfc3339(r.expires_at),
        "resolved_at": None if r.resolved_at is None else rfc3339(r.resolved_at),
    }


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key")]


@router.post("/v1/money-requests", status_code=201, response_model=MoneyRequestOut)
def create_money_request(
    body: MoneyRequestBody,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Ask someone (by phone number or one of their wallet ids) for money into one of your wallets.
    Pending for `expires_in_days` (default 7). Rate-limited per requester (`429 rate_limited`); asking
    yourself is `422 same_wallet`; an unknown or closed payer is `404 recipient_not_found`."""
    new = money_requests.NewMoneyRequest(
        to_wallet_id=body.to_wallet_id,
        amount=body.amount.amount,
        currency=body.amount.currency,
        payer_phone=body.payer.phone,
        payer_wallet_id=body.payer.wallet_id,
        memo=body.memo,
        expires_in_days=body.expires_in_days,
    )

    def work() -> tuple[int, dict[str, Any]]:
        return 201, request_json(money_requests.create_request(ctx, principal, new))

    return run_idempotent(
        ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work, sealed=True
    )


@router.get("/v1/money-requests", response_model=MoneyRequestList)
def list_money_requests(
    principal: CurrentUser,
    ctx: Identity,
    role: Annotated[str | None, Query(max_length=16, description="payer (incoming) or requester")] = None,
    status: Annotated[str | None, Query(max_length=16, description="pending, paid, declined…")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=64)] = None,
) -> dict[str, Any]:
    """Your money requests, newest first: incoming (`role=payer`), sent (`role=requester`) or both."""
    views, next_cursor = money_requests.list_requests(
        ctx, principal, role=role, status=status, limit=limit, cursor=cursor
    )
    return {"data": [request_json(v) for v in views], "next_cursor": next_cursor}


@router.get("/v1/money-requests/{request_id}", response_model=MoneyRequestOut)
def get_money_request(request_id: str, principal: CurrentUser, ctx: Identity) -> dict[str, Any]:
    """One request; only its two parties see it (anyone else: 404)."""
    return request_json(money_requests.get_request(ctx, principal, request_id))


@router.post("/v1/money-requests/{request_id}/accept", response_model=AcceptedOut)
async def accept_money_request(
    request_id: str,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    body: AcceptBody | None = None,
    idempotency_key: IdempotencyKey = None,
    step_up: Annotated[str | None, Header(alias="Step-Up")] = None,
) -> JSONResponse:
    """Pay a request made to you, from one of your wallets: a P2P transfer like `POST /v1/transfers`, with
    its limits, step-up (`401 step_up_required`, then repeat with `Step-Up`) and declines (a decline
    leaves the request pending). A request is paid at most once; not pending: `409 request_not_pending`;
    only the payer may accept (`403`)."""

    def render(
        record: Any, conn: Connection | None = None, _seen: object = None
    ) -> tuple[int, dict[str, Any]]:
        assert principal.user_id is not None  # noqa: S101 - CurrentUser guarantees it
        if conn is None:
            view = money_requests.get_request(ctx, principal, record.request.id)
        else:  # in the batch: the request as this payment left it
            view = money_requests.request_views(ctx, conn, principal.user_id, [record.request])[0]
        return 200, {**request_json(view), "transfer": transfer_json(record.transfer)}

    # The answer holds the request's memo (personal data): stored encrypted for replays.
    http = pipeline_key(
        ctx, request, scope=principal.scope, key=idempotency_key, body=raw, render=render, sealed=True
    )
    order = request_flow.accept_order(
        principal,
        request_id,
        from_wallet_id=None if body is None else body.from_wallet_id,
        idempotency_key=idempotency_key,
        step_up=step_up,
        http=http,
    )
    return await answer_order(ctx, order, render)


@router.post("/v1/money-requests/{request_id}/decline", response_model=MoneyRequestOut)
def decline_money_request(
    request_id: str,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    body: DeclineBody | None = None,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Decline a request made to you (payer only), with an optional reason the requester sees."""

    def work() -> tuple[int, dict[str, Any]]:
        reason = None if body is None else body.reason
        return 200, request_json(money_requests.decline_request(ctx, principal, request_id, reason=reason))

    return run_idempotent(
        ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work, sealed=True
    )


@router.post("/v1/money-requests/{request_id}/cancel", response_model=MoneyRequestOut)
def cancel_money_request(
    request_id: str,
    request: Request,
    raw: Body,
    principal: CurrentUser,
    ctx: Identity,
    idempotency_key: IdempotencyKey = None,
) -> JSONResponse:
    """Take back a request you made (requester only) while it is pending."""

    def work() -> tuple[int, dict[str, Any]]:
        return 200, request_json(money_requests.cancel_request(ctx, principal, request_id))

    return run_idempotent(
        ctx, request, scope=principal.scope, key=idempotency_key, body=raw, work=work, sealed=True
    )
