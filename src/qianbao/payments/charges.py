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
Limits, the wallet's lock and budget, and the balance are checked before anything is held.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from sqlalchemy import Connection, select, update

from qianbao.errors import Conflict, Locked, NotFound, QianbaoError
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Operation, Principal, PrincipalKind
from qianbao.ids import new_id
from qianbao.ledger.model import ResultCode, TransferSpec
from qianbao.payments import payment_codes
from qianbao.payments.dynamic_qr import clean_order_id
from qianbao.payments.engine.decide import decide
from qianbao.payments.engine.facts import Kind, PaymentRequest
from qianbao.payments.engine.load import load_books
from qianbao.payments.engine.writes import (
    AlreadyApplied,
    Declined,
    approved_or_decline,
    chain_outcome,
    count_outflow,
    count_spend,
)
from qianbao.payments.errors import CurrencyMismatch
from qianbao.payments.inputs import check_amount, derived_id, require_user_id
from qianbao.payments.merchant_flow import run_planned
from qianbao.payments.merchant_payments import (
    PaymentPlan,
    decide_in_unit,
    ledger_chain,
    new_record,
    payment_by_ledger_id,
    payment_request,
    prepare,
    record_failure,
    record_target,
    replay,
    replay_applied,
)
from qianbao.payments.merchant_records import (
    PaymentRecord,
    insert_payment,
    payment_by,
    payment_event,
    payment_from_row,
)
from qianbao.payments.merchant_tables import merchant_payments
from qianbao.payments.merchants import merchant_status_of, own_merchant
from qianbao.store.errors import retried
from qianbao.wallets.service import plausible_id, wallet_row

HOLD_CODE = "merchant.payment_hold"


class PaymentConfirmationExpired(QianbaoError):
    code = "payment_confirmation_expired"


class PaymentNotPending(Conflict):
    code = "payment_not_pending"


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
    ledger_id = derived_id("chg", scope, idempotency_key) if idempotency_key else f"chg:{new_id('pay')}"
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
    """Hold the funds for the customer's confirmation: decided like any payment (limits included, counted
    when confirmed), then the ledger hold, in one unit of work."""
    prepare(ctx, payer, plan, kind=Kind.CODE_HOLD)
    confirm_s = ctx.settings.payment_code_confirm_s
    record = new_record(ctx, payer, plan)
    request = replace(payment_request(payer, plan, kind=Kind.CODE_HOLD), stepped_up=True)

    def unit() -> PaymentRecord:
        with ctx.uow() as uow:
            conn = uow.conn
            now = ctx.now()
            pending = replace(
                record, status="pending", created_at=now, expires_at=now + confirm_s * 1_000_000
            )
            decide_in_unit(ctx, conn, request, pending, now, replay_check=True)
            hold = TransferSpec.pending(
                pending.ledger_transfer_id,
                pending.payer_wallet_id,
                pending.merchant_wallet_id,
                pending.amount,
                pending.currency,
                code=HOLD_CODE,
                timeout_seconds=confirm_s,
            )
            chain_outcome(ctx.ledger.apply_in(conn, [hold]), pending.currency)
            insert_payment(conn, ctx.keys, pending, scope, key)
            uow.emit(payment_event(pending, "payment.confirmation_required"))
            uow.commit()
            return pending

    try:
        return retried(unit)
    except Declined as declined:
        record_failure(ctx, scope, record, declined.error, key)
        raise declined.error from None
    except AlreadyApplied:
        return replay_applied(ctx, record.ledger_transfer_id)


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


def _confirmation(record: PaymentRecord, principal: Principal) -> PaymentRequest:
    return PaymentRequest(
        kind=Kind.CODE_CONFIRM,
        payer_user_id=record.payer_user_id,
        source_wallet_id=record.payer_wallet_id,
        target_wallet_id=record.merchant_wallet_id,
        amount=record.amount,
        currency=record.currency,
        device_trusted=principal.device_trusted,
    )


def confirm(
    ctx: IdentityContext, principal: Principal, payment_id: str, *, step_up: str | None
) -> PaymentRecord:
    """The customer confirms a held payment (step-up always: that is the point of the hold). It is
    decided first, like any payment, so a confirmation that cannot succeed asks for no proof."""
    record = _pending_for(ctx, principal, payment_id, merchant_too=False)
    request = _confirmation(record, principal)
    try:
        with ctx.db.read() as conn:
            now = ctx.now()
            request = replace(request, merchant_status=merchant_status_of(conn, record.merchant_wallet_id))
            books = load_books(ctx, conn, [request], [record_target(record)], now=now, lock=False)
            approved = approved_or_decline(decide(request, books, ctx.step_up_policy, now))
        proof = stepup.require_step_up(
            ctx,
            principal,
            operation=Operation.PAYMENT,
            params={"payment": record.id, "amount": record.amount, "currency": record.currency},
            reasons=approved.step_up,
            step_up_header=step_up,
        )
        return _post(ctx, record, replace(request, stepped_up=True), proof)
    except Declined as declined:
        _release(ctx, record, "failed", declined.error.code)
        declined.error.extra["payment_id"] = record.id
        raise declined.error from None


def _post(
    ctx: IdentityContext, record: PaymentRecord, request: PaymentRequest, proof: stepup.StepUpPass | None
) -> PaymentRecord:
    with ctx.uow() as uow:
        conn = uow.conn
        now = ctx.now()
        approved = decide_in_unit(ctx, conn, request, record, now, proof=proof)
        count_outflow(ctx, conn, approved, record.payer_user_id, now)
        chain = ledger_chain(record)
        post = TransferSpec.post(
            f"{record.ledger_transfer_id}:post", record.ledger_transfer_id, linked=len(chain) > 1
        )
        specs = [post, *chain[1:]]
        results = ctx.ledger.apply_in(conn, specs)
        if any(r.code is ResultCode.PENDING_EXPIRED for r in results):
            raise Declined(PaymentConfirmationExpired("the time to confirm this payment has passed"))
        chain_outcome(results, record.currency)
        moved = conn.execute(
            update(merchant_payments)
            .where(merchant_payments.c.id == record.id, merchant_payments.c.status == "pending")
            .values(status="succeeded")
        ).rowcount
        if moved != 1:
            raise PaymentNotPending("the payment is no longer pending")
        events = count_spend(conn, approved, record.payer_wallet_id, now)
        done = replace(record, status="succeeded")
        uow.emit(payment_event(done))
        for event in events:
            uow.emit(event)
        uow.commit()
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
        conn = uow.conn
        void = TransferSpec.void(f"{record.ledger_transfer_id}:void", record.ledger_transfer_id)
        (result,) = ctx.ledger.apply_in(conn, [void])
        if result.code not in (ResultCode.OK, ResultCode.EXISTS, ResultCode.PENDING_EXPIRED):
            if result.code is not ResultCode.PENDING_ALREADY_VOIDED:
                raise Conflict(f"the hold could not be released ({result.code})")
        moved = conn.execute(
            update(merchant_payments)
            .where(merchant_payments.c.id == record.id, merchant_payments.c.status == "pending")
            .values(status=status, failure_code=failure_code)
        ).rowcount
        ended = replace(record, status=status, failure_code=failure_code)
        if moved == 1:
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
