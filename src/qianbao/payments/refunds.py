"""Refunds: full or partial, several partials up to the amount paid, back to the wallet that paid.

Who: the merchant's owner (signed in, or an API key with `refunds:write`). How much: by default what is
left to refund; a refund larger than that is `refund_exceeds_payment` with the `remaining` amount. Where:
the wallet that paid, or the payer's main wallet if that wallet has been closed since.

The unit of work locks the payment row (SELECT … FOR UPDATE on PostgreSQL; SQLite has one writer) and
moves the refunded counters with a conditional UPDATE, so concurrent partial refunds can never together
exceed the payment. The fee comes back pro-rata (`fees.fee_refund`, exact over any number of partial
refunds) when `QIANBAO_REFUND_FEES_PRO_RATA` is on: fee account → merchant wallet, linked with merchant
wallet → payer. A merchant wallet that no longer holds enough declines the refund (`insufficient_funds`).
The refund also gives back budget room to the wallet that paid (`wallets.spending.record_unspend`).
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass, replace

from sqlalchemy import Connection, select, update

from qianbao import invalid
from qianbao.errors import Conflict, NotFound, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.ids import new_id
from qianbao.ledger.model import AccountStatus, TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.ledger.system_accounts import FEES, system_account_id
from qianbao.payments.engine.declines import error_for
from qianbao.payments.engine.rules import refundable
from qianbao.payments.engine.writes import AlreadyApplied, Declined, chain_outcome
from qianbao.payments.errors import PaymentDeclined, PaymentNotRefundable, RefundExceedsPayment, money_json
from qianbao.payments.fees import fee_refund
from qianbao.payments.inputs import MAX_MEMO_LENGTH, derived_id, require_user_id
from qianbao.payments.merchant_records import (
    PaymentRecord,
    RefundRecord,
    insert_refund,
    payment_by,
    payment_from_row,
    refund_by,
    refund_event,
    refund_from_row,
)
from qianbao.payments.merchant_tables import merchant_payments, refunds
from qianbao.store.errors import DATABASE_ERRORS, is_retryable, retried
from qianbao.store.outbox import append_events
from qianbao.wallets import spending
from qianbao.wallets.service import main_wallet_id, plausible_id

REFUND_CODE = "merchant.refund"
FEE_REFUND_CODE = "merchant.fee_refund"


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


def merchant_payment(ctx: IdentityContext, principal: Principal, payment_id: str) -> PaymentRecord:
    """A payment to one of the caller's merchants; anything else is 404."""
    user_id = require_user_id(principal)
    record = None
    if plausible_id(payment_id):
        with ctx.db.read() as conn:
            record = payment_by(conn, ctx.keys, id=payment_id)
    if record is None or record.merchant_user_id != user_id:
        raise NotFound("no such payment")
    return record


def _check_refundable(payment: PaymentRecord, amount: int) -> None:
    finding = refundable(payment.status, payment.amount, payment.refunded_amount, amount)
    if finding is not None:
        raise error_for(finding, payment.currency)


def _destination(ctx: IdentityContext, payment: PaymentRecord) -> str:
    """The wallet that paid, unless it has been closed since: then the payer's main wallet."""
    account = LedgerReader(ctx.db).get_account(payment.payer_wallet_id)
    if account is not None and account.status is not AccountStatus.CLOSED:
        return payment.payer_wallet_id
    with ctx.db.read() as conn:
        main = main_wallet_id(conn, payment.payer_user_id, payment.currency)
    if main is None:
        raise PaymentNotRefundable("the payer has no wallet to refund to")
    return main


def refund_payment(
    ctx: IdentityContext, principal: Principal, request: RefundRequest, *, idempotency_key: str | None = None
) -> RefundRecord:
    payment = merchant_payment(ctx, principal, request.payment_id)
    reason = _clean_reason(request.reason)
    ledger_id = (
        derived_id("rfd", principal.scope, idempotency_key) if idempotency_key else f"rfd:{new_id('rfd')}"
    )
    if idempotency_key is not None:
        with ctx.db.read() as conn:
            done = refund_by(conn, ctx.keys, ledger_id=ledger_id)
        if done is not None:
            return _replay(done, payment)
    amount = payment.amount - payment.refunded_amount if request.amount is None else request.amount
    if request.currency is not None and request.currency != payment.currency:
        raise invalid.currency_only(
            "currency", payment.currency, f"the payment was made in {payment.currency}"
        )
    if type(amount) is not int or amount <= 0:
        if request.amount is None:  # nothing left: the payment is fully refunded
            raise RefundExceedsPayment(
                "this payment has been refunded in full", remaining=money_json(0, payment.currency)
            )
        raise invalid.because(
            "greater_than",
            "amount must be a positive number of minor units",
            field="amount",
            params={"than": 0},
        )
    try:
        _check_refundable(payment, amount)
    except QianbaoError:
        # A retry that overlapped its own first attempt may find the payment refunded by that attempt.
        if idempotency_key is not None:
            with ctx.db.read() as conn:
                done = refund_by(conn, ctx.keys, ledger_id=ledger_id)
            if done is not None:
                return _replay(done, payment)
        raise
    refund = RefundRecord(
        id=new_id("rfd"),
        payment_id=payment.id,
        ledger_transfer_id=ledger_id,
        amount=amount,
        fee_refunded=0,
        currency=payment.currency,
        to_wallet_id=_destination(ctx, payment),
        status="succeeded",
        failure_code=None,
        reason=reason,
        created_at=ctx.now(),
    )
    try:
        return retried(lambda: _execute(ctx, principal, refund, idempotency_key))
    except Declined as declined:
        _record_failure(ctx, principal, refund, payment, declined.error, idempotency_key)
        raise declined.error from None
    except AlreadyApplied:
        with ctx.db.read() as conn:
            found = refund_by(conn, ctx.keys, ledger_id=ledger_id)
        if found is None:
            raise Conflict("this refund was already applied") from None
        return _replay(found, payment)


def _replay(refund: RefundRecord, payment: PaymentRecord) -> RefundRecord:
    if refund.payment_id != payment.id:
        raise invalid.because(
            "idempotency_key_other_payment", "this Idempotency-Key was used for a refund of another payment"
        )
    if refund.status == "failed":
        raise PaymentDeclined(
            refund.failure_code or "conflict", "the refund was declined", refund_id=refund.id
        )
    return refund


def _locked_payment(conn: Connection, ctx: IdentityContext, payment_id: str) -> PaymentRecord:
    query = select(merchant_payments).where(merchant_payments.c.id == payment_id)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update()
    return payment_from_row(conn.execute(query).one(), ctx.keys)


def _chain(refund: RefundRecord, payment: PaymentRecord) -> list[TransferSpec]:
    back = TransferSpec.posted(
        refund.ledger_transfer_id,
        payment.merchant_wallet_id,
        refund.to_wallet_id,
        refund.amount,
        refund.currency,
        code=REFUND_CODE,
    )
    if refund.fee_refunded == 0:
        return [back]
    fee_back = TransferSpec.posted(
        f"{refund.ledger_transfer_id}:fee",
        system_account_id(FEES, refund.currency),
        payment.merchant_wallet_id,
        refund.fee_refunded,
        refund.currency,
        code=FEE_REFUND_CODE,
        linked=True,
    )
    # The fee first: the merchant wallet then holds it when the refund leaves.
    return [fee_back, back]


def _execute(
    ctx: IdentityContext, principal: Principal, refund: RefundRecord, key: str | None
) -> RefundRecord:
    with ctx.uow() as uow:
        conn = uow.conn
        payment = _locked_payment(conn, ctx, refund.payment_id)
        # A retry that overlapped the first attempt waited for the row lock: the refund may exist now.
        if refund_by(conn, ctx.keys, ledger_id=refund.ledger_transfer_id) is not None:
            raise AlreadyApplied
        try:
            _check_refundable(payment, refund.amount)
        except QianbaoError as exc:
            raise Declined(exc) from None
        fee_back = 0
        if ctx.settings.refund_fees_pro_rata:
            fee_back = fee_refund(payment.fee, payment.amount, payment.refunded_amount, refund.amount)
        now = ctx.now()
        refund = replace(refund, fee_refunded=fee_back, created_at=now)
        moved = conn.execute(
            update(merchant_payments)
            .where(
                merchant_payments.c.id == payment.id,
                merchant_payments.c.refunded_amount == payment.refunded_amount,
                merchant_payments.c.refunded_amount + refund.amount <= merchant_payments.c.amount,
            )
            .values(
                refunded_amount=merchant_payments.c.refunded_amount + refund.amount,
                fee_refunded=merchant_payments.c.fee_refunded + fee_back,
            )
        ).rowcount
        if moved != 1:  # another refund got in between (SQLite: impossible; PostgreSQL: the row lock)
            raise Conflict("the payment changed while refunding; try again")
        results = ctx.ledger.apply_in(conn, _chain(refund, payment))
        chain_outcome([results[-1], *results[:-1]] if fee_back else results, refund.currency)
        insert_refund(conn, ctx.keys, refund, principal.scope, key)
        uow.emit(refund_event(refund, payment))
        if refund.to_wallet_id == payment.payer_wallet_id:
            spending.record_unspend(
                conn, payment.payer_wallet_id, refund.amount, now, spent_at_us=payment.created_at
            )
        for event in spending.after_credit(conn, refund.to_wallet_id, now):
            uow.emit(event)
        uow.commit()
        return refund


def _record_failure(
    ctx: IdentityContext,
    principal: Principal,
    refund: RefundRecord,
    payment: PaymentRecord,
    error: QianbaoError,
    key: str | None,
) -> None:
    failed = replace(refund, status="failed", failure_code=error.code, created_at=ctx.now())
    try:
        with ctx.db.write() as conn:
            insert_refund(conn, ctx.keys, failed, principal.scope, key)
            append_events(conn, [refund_event(failed, payment)], ctx.now())
    except DATABASE_ERRORS as exc:
        if not is_retryable(exc):
            raise
    error.extra["refund_id"] = failed.id


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
