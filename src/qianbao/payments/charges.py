"""A merchant charges a customer's payment code: password-free when small, else held for confirmation.

`POST /v1/merchants/{id}/charges` `{payment_code, amount, order_id}`:
  1. the code is redeemed (spent) first: whatever happens next, it cannot be presented again;
  2. within the customer's no-PIN allowance (default ¥1,000 a payment, ¥2,000 a day) the payment runs
     at once through the payment pipeline (`merchant_flow.run_planned`, no step-up), counting against
     the allowance in the same batch;
  3. above it, the funds are held (a ledger hold with a timeout), the payment is `pending` and the
     customer is asked to confirm (event `payment.confirmation_required`, and `GET /v1/payments/pending`
     in the app). `POST /v1/payments/{id}/confirm` with step-up posts the hold and the fee as a linked
     chain; `POST /v1/payments/{id}/cancel` (customer or merchant) voids it. Unconfirmed after
     `QIANBAO_PAYMENT_CODE_CONFIRM_S` (60 s) the ledger lets the hold expire and the payment fails with
     `payment_confirmation_expired` (`finalize_expired`, run by the sweeper and on every read).
Limits, the wallet's lock and budget, and the balance are checked before anything is held. Holding
and confirming are orders in the payment pipeline like any payment (`code_flow`).
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection, select

from qianbao.errors import Locked, NotFound
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal, PrincipalKind
from qianbao.payments import payment_codes
from qianbao.payments.code_flow import (
    CONFIRM,
    HOLD,
    Confirmation,
    PaymentConfirmationExpired,
    PaymentNotPending,
    post_id,
    release_in,
)
from qianbao.payments.dynamic_qr import clean_order_id
from qianbao.payments.engine.orders import Done, Order
from qianbao.payments.engine.service import submit_order
from qianbao.payments.errors import CurrencyMismatch
from qianbao.payments.inputs import check_amount, ledger_id_for, require_user_id
from qianbao.payments.merchant_flow import PlannedPayment, run_planned
from qianbao.payments.merchant_payments import PaymentPlan, payment_by_ledger_id, replay
from qianbao.payments.merchant_records import PaymentRecord, payment_by, payment_event, payment_from_row
from qianbao.payments.merchant_tables import merchant_payments
from qianbao.payments.merchants import own_merchant
from qianbao.wallets.service import plausible_id, wallet_row


class _AllowanceTaken(Exception):  # noqa: N818 - control flow: a concurrent payment used the allowance
    pass


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    payment_code: str
    amount: int
    currency: str
    order_id: str | None = None


def charge(
    ctx: IdentityContext,
    principal: Principal,
    merchant_id: str,
    request: ChargeRequest,
    *,
    idempotency_key: str | None = None,
) -> PaymentRecord:
    """Charge a presented payment code for the merchant (its owner, or an API key with payments:write)."""
    check_amount(request.amount, request.currency)
    order_id = clean_order_id(request.order_id)
    with ctx.db.read() as conn:
        merchant = own_merchant(conn, principal, merchant_id)
    if merchant.status != "active":
        raise Locked("merchant_inactive", "the merchant is not active", merchant_status=merchant.status)
    if request.currency != merchant.currency:
        raise CurrencyMismatch(f"the merchant takes {merchant.currency}")
    scope = principal.scope
    ledger_id = ledger_id_for("chg", scope, idempotency_key, "pay")
    if idempotency_key is not None:
        done = payment_by_ledger_id(ctx, ledger_id)
        if done is not None:
            return replay(done)
    device = payment_codes.redeem(ctx, request.payment_code, merchant.id, ledger_id)
    payer = Principal(
        kind=PrincipalKind.USER,
        id=device.user_id,
        user_id=device.user_id,
        device_id=device.device_id,
        device_trusted=True,
    )
    with ctx.db.read() as conn:
        source = wallet_row(conn, device.wallet_id)
        allowance = payment_codes.allowance(conn, ctx, device.user_id, ctx.now())
    if source is None:  # pragma: no cover - wallets are never deleted
        raise NotFound("the payment code's wallet does not exist")
    plan = PaymentPlan(
        method="payment_code",
        merchant=merchant,
        source=source,
        amount=request.amount,
        currency=request.currency,
        ledger_id=ledger_id,
        order_id=order_id,
    )
    if allowance.covers(request.amount):

        def use_allowance(conn: Connection, record: PaymentRecord) -> None:
            if not payment_codes.use_allowance(
                conn, record.payer_user_id, record.amount, allowance.daily, record.created_at
            ):
                raise _AllowanceTaken

        try:
            return run_planned(
                ctx,
                payer,
                plan,
                claim=use_allowance,
                idempotency_key=idempotency_key,
                scope=scope,
                no_pin=True,
            )
        except _AllowanceTaken:
            pass  # the allowance ran out meanwhile: the customer confirms instead
    return _hold(ctx, payer, plan, scope, idempotency_key)


def _hold(
    ctx: IdentityContext, payer: Principal, plan: PaymentPlan, scope: str, key: str | None
) -> PaymentRecord:
    """Hold the funds for the customer's confirmation, through the pipeline (`code_flow.HOLD`): decided
    like any payment (limits included, counted when confirmed), then the ledger hold."""
    ask = PlannedPayment(plan, False, scope, hold_s=ctx.settings.payment_code_confirm_s)
    outcome = submit_order(ctx, Order(HOLD, payer, ask, plan.ledger_id, key))
    assert isinstance(outcome, Done)  # noqa: S101 - without an HTTP key nothing is answered from it
    record: PaymentRecord = outcome.record
    return record


# -- the customer's side ---------------------------------------------------------------------------


def _pending_for(
    ctx: IdentityContext, principal: Principal, payment_id: str, *, merchant_too: bool
) -> PaymentRecord:
    user_id = require_user_id(principal)
    record = None
    if plausible_id(payment_id):
        with ctx.db.read() as conn:
            record = payment_by(conn, ctx.keys, id=payment_id)
    allowed = record is not None and (
        record.payer_user_id == user_id or (merchant_too and record.merchant_user_id == user_id)
    )
    if record is None or not allowed:
        raise NotFound("no such payment")
    record = finalize_if_expired(ctx, record)
    if record.status != "pending":
        if record.failure_code == "payment_confirmation_expired":
            raise PaymentConfirmationExpired(
                "the time to confirm this payment has passed", payment_id=record.id
            )
        raise PaymentNotPending(
            f"the payment is {record.status}", payment_id=record.id, payment_status=record.status
        )
    return record


def list_pending(ctx: IdentityContext, principal: Principal) -> list[PaymentRecord]:
    """Payments waiting for the caller's confirmation, newest first."""
    user_id = require_user_id(principal)
    with ctx.db.read() as conn:
        rows = conn.execute(
            select(merchant_payments)
            .where(merchant_payments.c.payer_user_id == user_id, merchant_payments.c.status == "pending")
            .order_by(merchant_payments.c.created_at.desc())
        ).all()
    found = [finalize_if_expired(ctx, payment_from_row(r, ctx.keys)) for r in rows]
    return [r for r in found if r.status == "pending"]


def confirm(
    ctx: IdentityContext, principal: Principal, payment_id: str, *, step_up: str | None
) -> PaymentRecord:
    """The customer confirms a held payment (step-up always: that is the point of the hold), through
    the pipeline (`code_flow.CONFIRM`). It is decided first, like any payment, so a confirmation that
    cannot succeed asks for no proof; that decline ends the payment and releases the hold."""
    record = _pending_for(ctx, principal, payment_id, merchant_too=False)
    order = Order(CONFIRM, principal, Confirmation(record.id), post_id(record), step_up=step_up)
    outcome = submit_order(ctx, order)
    assert isinstance(outcome, Done)  # noqa: S101 - without an HTTP key nothing is answered from it
    done: PaymentRecord = outcome.record
    return done


def cancel(ctx: IdentityContext, principal: Principal, payment_id: str) -> PaymentRecord:
    """The customer (or the merchant) calls a held payment off: the hold is released."""
    record = _pending_for(ctx, principal, payment_id, merchant_too=True)
    return _release(ctx, record, "canceled", None)


def _release(
    ctx: IdentityContext, record: PaymentRecord, status: str, failure_code: str | None
) -> PaymentRecord:
    """Void the hold (unless it expired already) and end the payment, in one transaction."""
    with ctx.uow() as uow:
        ended = release_in(ctx, uow.conn, record, status, failure_code)
        if ended is not None:
            uow.emit(payment_event(ended))
            uow.commit()
            return ended
        uow.rollback()
    with ctx.db.read() as conn:
        current = payment_by(conn, ctx.keys, id=record.id)
    assert current is not None  # noqa: S101 - payments are never deleted
    return current


def finalize_if_expired(ctx: IdentityContext, record: PaymentRecord) -> PaymentRecord:
    if record.status != "pending" or record.expires_at is None or ctx.now() < record.expires_at:
        return record
    ctx.ledger.expire_pending()  # the sweeper may not have run yet: release the hold's money now
    return _release(ctx, record, "failed", "payment_confirmation_expired")


def finalize_expired(ctx: IdentityContext, limit: int = 100) -> int:
    """End the pending payments whose confirmation time has passed (the sweeper calls this)."""
    with ctx.db.read() as conn:
        rows = (
            conn.execute(
                select(merchant_payments.c.id)
                .where(merchant_payments.c.status == "pending", merchant_payments.c.expires_at <= ctx.now())
                .limit(limit)
            )
            .scalars()
            .all()
        )
    ended = 0
    for payment_id in rows:
        with ctx.db.read() as conn:
            record = payment_by(conn, ctx.keys, id=str(payment_id))
        if record is not None and finalize_if_expired(ctx, record).status != "pending":
            ended += 1
    return ended
