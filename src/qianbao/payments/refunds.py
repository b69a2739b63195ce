"""Refunds: full or partial, several partials up to the amount paid, back to the wallet that paid.

Who: the merchant's owner (signed in, or an API key with `refunds:write`). How much: by default what is
left to refund; a refund larger than that is `refund_exceeds_payment` with the `remaining` amount. Where:
the wallet that paid, or the payer's main wallet if that wallet has been closed since.

A refund is an order in the payment pipeline (`refund_flow`): decided by `decide` over running totals,
and the refunded counters move with a conditional UPDATE on the totals the batch read, so concurrent
partial refunds, in one batch or in several processes, can never together exceed the payment. The fee
comes back pro-rata (`fees.fee_refund`, exact over any number of partial refunds) when
`QIANBAO_REFUND_FEES_PRO_RATA` is on: fee account → merchant wallet, linked with merchant wallet → payer.
A merchant wallet that no longer holds enough declines the refund (`insufficient_funds`).
The refund also gives back budget room to the wallet that paid (`wallets.spending.record_unspend`).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from sqlalchemy import select

from qianbao import invalid
from qianbao.errors import NotFound, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.payments.engine.orders import Done, HttpKey, Order
from qianbao.payments.engine.service import submit_order
from qianbao.payments.inputs import MAX_MEMO_LENGTH, ledger_id_for, require_user_id
from qianbao.payments.merchant_records import RefundRecord, payment_by, refund_from_row
from qianbao.payments.merchant_tables import refunds
from qianbao.payments.refund_flow import FEE_REFUND_CODE, REFUND_CODE, REFUNDS, RefundAsk
from qianbao.wallets.service import plausible_id


@dataclass(frozen=True, slots=True)
class RefundRequest:
    payment_id: str
    amount: int | None = None
    currency: str | None = None
    reason: str | None = None


def _clean_reason(reason: str | None) -> str | None:
    if reason is None:
        return None
    if not isinstance(reason, str) or len(reason) > MAX_MEMO_LENGTH:
        raise invalid.too_long("reason", MAX_MEMO_LENGTH)
    cleaned = unicodedata.normalize("NFC", reason.strip())
    if any(unicodedata.category(ch).startswith("C") for ch in cleaned):
        raise invalid.control_characters("reason")
    return cleaned or None


def refund_order(
    principal: Principal,
    request: RefundRequest,
    *,
    idempotency_key: str | None = None,
    http: HttpKey | None = None,
) -> Order:
    """The pipeline's order for a refund: the input checked, nothing read. With an Idempotency-Key the
    ledger transfer id is derived from (caller scope, key). Input refused for an HTTP request with a key
    is answered in the batch, after the key."""
    ledger_id = ledger_id_for("rfd", principal.scope, idempotency_key, "rfd")
    try:
        require_user_id(principal)
        reason = _clean_reason(request.reason)
    except QianbaoError as refusal:
        if http is None:
            raise
        return Order(REFUNDS, principal, None, ledger_id, idempotency_key, None, http, refusal=refusal)
    ask = RefundAsk(request.payment_id, request.amount, request.currency, reason)
    return Order(REFUNDS, principal, ask, ledger_id, idempotency_key, None, http)


def refund_payment(
    ctx: IdentityContext, principal: Principal, request: RefundRequest, *, idempotency_key: str | None = None
) -> RefundRecord:
    """Refund (part of) a payment to one of the caller's merchants, through the payment pipeline."""
    outcome = submit_order(ctx, refund_order(principal, request, idempotency_key=idempotency_key))
    assert isinstance(outcome, Done)  # noqa: S101 - without an HTTP key nothing is answered from it
    record: RefundRecord = outcome.record
    return record


def list_refunds(ctx: IdentityContext, principal: Principal, payment_id: str) -> list[RefundRecord]:
    """Refunds of a payment, oldest first: the merchant's owner and the payer may see them."""
    user_id = require_user_id(principal)
    if not plausible_id(payment_id):
        raise NotFound("no such payment")
    with ctx.db.read() as conn:
        payment = payment_by(conn, ctx.keys, id=payment_id)
        if payment is None or user_id not in (payment.merchant_user_id, payment.payer_user_id):
            raise NotFound("no such payment")
        rows = conn.execute(
            select(refunds)
            .where(refunds.c.payment_id == payment_id)
            .order_by(refunds.c.created_at, refunds.c.id)
        )
        found = [refund_from_row(r, ctx.keys) for r in rows]
    if user_id != payment.merchant_user_id:
        found = [r for r in found if r.status == "succeeded"]
    return found


__all__ = [
    "FEE_REFUND_CODE",
    "REFUND_CODE",
    "RefundRequest",
    "list_refunds",
    "refund_order",
    "refund_payment",
]
