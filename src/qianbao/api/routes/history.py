"""A wallet's history (API.md): filtered, paginated listing and streamed CSV export (docs/p2p.md)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field

from qianbao.api import request_errors
from qianbao.api.deps import CurrentUser, Identity
from qianbao.api.problems import language
from qianbao.clock import rfc3339
from qianbao.payments import history
from qianbao.payments.inputs import MAX_PAYMENT

router = APIRouter(tags=["wallets"])


class MoneyOut(BaseModel):
    amount: int
    currency: str


class TransactionOut(BaseModel):
    id: str
    type: str = Field(description="p2p, wallet_move, top_up, merchant_payment, refund, …")
    direction: str = Field(description="debit (money out) or credit (money in)")
    amount: MoneyOut
    balance_after: MoneyOut
    counterparty: dict[str, Any] = Field(
        description="the other side: kind (wallet|merchant|system), name (a merchant's registered name, a "
        "person's masked name, one's own other wallet's name, or what a system account is, in the "
        "caller's language), wallet_id, own; name_masked (wallets: the same as name) or merchant_id and "
        "city (merchants)"
    )
    memo: str | None
    status: str = Field(
        description="succeeded; pending (a held payment); canceled or failed (a held payment that "
        "was released: nothing moved)"
    )
    created_at: str
    transfer_id: str | None
    payment_id: str | None = Field(default=None, description="merchant payments and their refunds")
    refund_id: str | None = None


class TransactionList(BaseModel):
    data: list[TransactionOut]
    next_cursor: str | None = Field(
        description="pass back as `cursor` with the same filters; with `q` a page may hold fewer than "
        "`limit` (even none) and still have a next_cursor"
    )


def _money(amount: int, code: str) -> dict[str, Any]:
    return {"amount": amount, "currency": code}


def transaction_json(t: history.Transaction) -> dict[str, Any]:
    return {
        "id": t.id,
        "type": t.type,
        "direction": t.direction,
        "amount": _money(t.amount, t.currency),
        "balance_after": _money(t.balance_after, t.currency),
        "counterparty": t.counterparty,
        "memo": t.memo,
        "status": t.status,
        "created_at": rfc3339(t.created_at),
        "transfer_id": t.transfer_id,
        "payment_id": t.payment_id,
        "refund_id": t.refund_id,
    }


def filters(
    type: Annotated[
        list[str] | None,
        Query(description="p2p, wallet_move, top_up…; repeat it or separate with commas", max_length=10),
    ] = None,
    direction: Annotated[str | None, Query(description="debit or credit", max_length=6)] = None,
    from_: Annotated[
        str | None,
        Query(
            alias="from", max_length=40, description="RFC 3339 date-time, or a date (China time), inclusive"
        ),
    ] = None,
    to: Annotated[
        str | None,
        Query(max_length=40, description="RFC 3339 date-time (inclusive), or a date: through that whole day"),
    ] = None,
    counterparty: Annotated[str | None, Query(max_length=64, description="the other wallet's id")] = None,
    min_amount: Annotated[int | None, Query(ge=0, le=MAX_PAYMENT, description="minor units")] = None,
    max_amount: Annotated[int | None, Query(ge=0, le=MAX_PAYMENT, description="minor units")] = None,
    q: Annotated[
        str | None,
        Query(max_length=64, description="text in the memo or the counterparty's name as shown"),
    ] = None,
) -> history.HistoryQuery:
    return history.history_query(
        types=type,
        direction=direction,
        since=from_,
        until=to,
        counterparty=counterparty,
        min_amount=min_amount,
        max_amount=max_amount,
        text=q,
    )


Filters = Annotated[history.HistoryQuery, Depends(filters)]
# `from` and `to` here are the period shown; elsewhere `from` is a payer and `to` a recipient.
period_labels = request_errors.labelled({"from": "period_start", "to": "period_end"})


@router.get("/v1/wallets/{wallet_id}/transactions", response_model=TransactionList)
@period_labels
def wallet_transactions(
    request: Request,
    wallet_id: str,
    principal: CurrentUser,
    ctx: Identity,
    query: Filters,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[str | None, Query(max_length=32)] = None,
) -> dict[str, Any]:
    """The wallet's history, newest first, with the balance after each entry. Filters combine (AND);
    `type` values combine with OR. See docs/p2p.md."""
    page, next_cursor = history.wallet_history(
        ctx, principal, wallet_id, limit=limit, cursor=cursor, query=query, language=language(request)
    )
    return {"data": [transaction_json(t) for t in page], "next_cursor": next_cursor}


@router.get(
    "/v1/wallets/{wallet_id}/transactions.csv",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/csv": {}}, "description": "UTF-8 CSV with a BOM"}},
)
@period_labels
def wallet_transactions_csv(
    request: Request, wallet_id: str, principal: CurrentUser, ctx: Identity, query: Filters
) -> StreamingResponse:
    """The wallet's history with the same filters as CSV (UTF-8 with a BOM, for Excel), streamed page by
    page. Columns: created_at, id, type, direction, amount, currency, balance_after, counterparty_kind,
    counterparty_wallet_id, counterparty_name, memo, status, transfer_id (docs/p2p.md); amounts are
    decimals in major units (12.34), unsigned (`direction` says which way)."""
    chunks = history.export_csv(ctx, principal, wallet_id, query, language(request))
    return StreamingResponse(
        (chunk.encode("utf-8") for chunk in chunks),
        media_type="text/csv; charset=utf-8",
        headers={
            "Content-Disposition": f'attachment; filename="transactions-{wallet_id}.csv"',
            "Cache-Control": "no-store",
        },
    )
