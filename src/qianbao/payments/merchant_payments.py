"""Paying a merchant: what every way of paying shares, scanning a QR code (`qr_flow`), a payment code
at a till (`charges`), an online checkout (`intents`): the plan (merchant, paying wallet, amount, ledger
id), the engine's request for it, its record and its ledger chain — payer → merchant wallet for the
amount, linked with merchant wallet → fee account for the merchant discount fee.

QR payments, checkouts and payment codes within the no-PIN allowance are decided and written by the
payment pipeline (`merchant_flow`, engine/pipeline.py). A payment code above the allowance is held and
confirmed in units of work of its own (`charges`), which decide here too (`decide_in_unit`): the
state read with its locks, the step-up pass spent, the same `decide`; a decline inside rolls back and
is recorded as a `failed` payment (`record_failure`), bound to the Idempotency-Key.

With an Idempotency-Key the ledger transfer id is derived from (caller scope, key): even a crash between
the ledger commit and the stored HTTP answer cannot charge twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import Connection

from qianbao.errors import Conflict, NotFound, QianbaoError
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Operation, Principal
from qianbao.ids import new_id
from qianbao.ledger.model import TransferSpec
from qianbao.ledger.system_accounts import FEES, system_account_id
from qianbao.payments.engine.decide import Approve, decide
from qianbao.payments.engine.declines import approved_or_raise, stored_decline
from qianbao.payments.engine.facts import Kind, PaymentRequest, TargetWallet
from qianbao.payments.engine.load import load_books
from qianbao.payments.engine.writes import (
    decide_locked,
)
from qianbao.payments.fees import fee_for
from qianbao.payments.inputs import require_user_id
from qianbao.payments.merchant_records import (
    PaymentRecord,
    insert_payment,
    payment_by,
    payment_event,
)
from qianbao.payments.merchants import Merchant, merchant_status_of, rate_for
from qianbao.store.errors import DATABASE_ERRORS, is_retryable
from qianbao.store.outbox import append_events
from qianbao.wallets.service import WalletRow, plausible_id

PAYMENT_CODE = "merchant.payment"
FEE_CODE = "merchant.fee"


@dataclass(frozen=True, slots=True)
class PaymentPlan:
    """Everything the money path needs, whichever way the customer pays."""

    method: str
    merchant: Merchant
    source: WalletRow
    amount: int
    currency: str
    ledger_id: str
    order_id: str | None = None
    qr_code_id: str | None = None
    memo: str | None = None
    step_up_params: tuple[tuple[str, str], ...] = ()


# A method's own step inside the unit of work (claim a code, move an intent): raises to refuse.
Claim = Callable[[Connection, PaymentRecord], None]


def payment_by_ledger_id(ctx: IdentityContext, ledger_id: str) -> PaymentRecord | None:
    with ctx.db.read() as conn:
        return payment_by(conn, ctx.keys, ledger_id=ledger_id)


def replay(record: PaymentRecord) -> PaymentRecord:
    """An earlier outcome bound to the same key: the payment, or its decline raised again."""
    if record.status != "failed":
        return record
    raise stored_decline(record.failure_code, record.currency, reveal=True, payment_id=record.id)


def payment_request(
    principal: Principal, plan: PaymentPlan, *, kind: Kind = Kind.MERCHANT, no_pin: bool = False
) -> PaymentRequest:
    """The engine's request for a merchant payment (a merchant is never a "new payee")."""
    return PaymentRequest(
        kind=kind,
        payer_user_id=require_user_id(principal),
        source_wallet_id=plan.source.id,
        target_wallet_id=plan.merchant.wallet_id,
        amount=plan.amount,
        currency=plan.currency,
        merchant_status=plan.merchant.status,
        device_trusted=principal.device_trusted,
        no_pin=no_pin,
    )


def merchant_target(plan: PaymentPlan) -> TargetWallet:
    merchant = plan.merchant
    return TargetWallet(merchant.wallet_id, merchant.owner_user_id, merchant.currency)


def record_target(record: PaymentRecord) -> TargetWallet:
    return TargetWallet(record.merchant_wallet_id, record.merchant_user_id, record.currency)


def prepare(
    ctx: IdentityContext,
    principal: Principal,
    plan: PaymentPlan,
    *,
    kind: Kind = Kind.MERCHANT,
    no_pin: bool = False,
) -> Approve:
    """The decision before step-up, over state read without locks (the payment is decided again where
    it is written)."""
    request = payment_request(principal, plan, kind=kind, no_pin=no_pin)
    now = ctx.now()
    with ctx.db.read() as conn:
        books = load_books(ctx, conn, [request], [merchant_target(plan)], now=now, lock=False)
    return approved_or_raise(decide(request, books, ctx.step_up_policy, now))


def step_up_for(
    ctx: IdentityContext,
    principal: Principal,
    plan: PaymentPlan,
    approved: Approve,
    step_up: str | None,
) -> stepup.StepUpPass | None:
    """Fresh proof where the decision asks for it (`401 step_up_required`), bound to this payment."""
    params = {
        "merchant": plan.merchant.id,
        "from": plan.source.id,
        "amount": plan.amount,
        "currency": plan.currency,
        **dict(plan.step_up_params),
    }
    return stepup.require_step_up(
        ctx,
        principal,
        operation=Operation.PAYMENT,
        params=params,
        reasons=approved.step_up,
        step_up_header=step_up,
    )


def new_record(ctx: IdentityContext, principal: Principal, plan: PaymentPlan) -> PaymentRecord:
    return PaymentRecord(
        id=new_id("pay"),
        ledger_transfer_id=plan.ledger_id,
        method=plan.method,
        merchant_id=plan.merchant.id,
        merchant_user_id=plan.merchant.owner_user_id,
        merchant_wallet_id=plan.merchant.wallet_id,
        payer_user_id=require_user_id(principal),
        payer_wallet_id=plan.source.id,
        amount=plan.amount,
        currency=plan.currency,
        fee=fee_for(plan.amount, rate_for(ctx, plan.merchant)),
        refunded_amount=0,
        fee_refunded=0,
        status="succeeded",
        failure_code=None,
        order_id=plan.order_id,
        qr_code_id=plan.qr_code_id,
        memo=plan.memo,
        created_at=ctx.now(),
    )


def ledger_chain(record: PaymentRecord) -> list[TransferSpec]:
    """Payer → merchant wallet, linked with merchant wallet → fee account (when there is a fee)."""
    pay = TransferSpec.posted(
        record.ledger_transfer_id,
        record.payer_wallet_id,
        record.merchant_wallet_id,
        record.amount,
        record.currency,
        code=PAYMENT_CODE,
        linked=record.fee > 0,
    )
    if record.fee == 0:
        return [pay]
    fee = TransferSpec.posted(
        f"{record.ledger_transfer_id}:fee",
        record.merchant_wallet_id,
        system_account_id(FEES, record.currency),
        record.fee,
        record.currency,
        code=FEE_CODE,
    )
    return [pay, fee]


def replay_applied(ctx: IdentityContext, ledger_id: str) -> PaymentRecord:
    """The payment an earlier attempt with the same ledger id committed, answered again."""
    found = payment_by_ledger_id(ctx, ledger_id)
    if found is None:
        raise Conflict("this payment was already applied")
    return replay(found)


def record_failure(
    ctx: IdentityContext, scope: str, record: PaymentRecord, error: QianbaoError, key: str | None
) -> None:
    """Bind a decline to the payment's ledger id (and so to the Idempotency-Key), after the rollback."""
    failed = replace(record, status="failed", failure_code=error.code, created_at=ctx.now())
    try:
        with ctx.db.write() as conn:
            insert_payment(conn, ctx.keys, failed, scope, key)
            append_events(conn, [payment_event(failed)], ctx.now())
    except DATABASE_ERRORS as exc:
        if not is_retryable(exc):  # a concurrent attempt with the same key recorded its outcome first
            raise
    error.extra["payment_id"] = failed.id


def decide_in_unit(
    ctx: IdentityContext,
    conn: Connection,
    request: PaymentRequest,
    record: PaymentRecord,
    now: int,
    *,
    proof: stepup.StepUpPass | None = None,
    replay_check: bool = False,
) -> Approve:
    """The decision again inside the unit of work, over state read there with its locks (the merchant's
    status too: a merchant suspended since the first decision takes nothing). Every account the ledger
    chain touches is locked at once, in id order, the fee account included. With `replay_check`, a
    retry that overlapped its first attempt (same ledger id) finds that payment once the locks are held
    and replays it, before anything (a dynamic code, an intent, the balance) could answer otherwise."""
    status = merchant_status_of(conn, record.merchant_wallet_id)
    request = replace(request, merchant_status=status or request.merchant_status)
    target = record_target(record)
    fees = [system_account_id(FEES, record.currency)] if record.fee > 0 else []

    def applied(c: Connection) -> bool:
        return payment_by(c, ctx.keys, ledger_id=record.ledger_transfer_id) is not None

    return decide_locked(
        ctx,
        conn,
        request,
        [target],
        now,
        proof=proof,
        applied=applied if replay_check else None,
        also_lock=fees,
    )


# -- reading ---------------------------------------------------------------------------------------


def get_payment(ctx: IdentityContext, principal: Principal, payment_id: str) -> PaymentRecord:
    """A payment its payer or the merchant's owner may see (a failed one only its payer); else 404."""
    user_id = require_user_id(principal)
    if not plausible_id(payment_id):
        raise NotFound("no such payment")
    with ctx.db.read() as conn:
        record = payment_by(conn, ctx.keys, id=payment_id)
    if record is None:
        raise NotFound("no such payment")
    if record.payer_user_id != user_id and (record.merchant_user_id != user_id or record.status == "failed"):
        raise NotFound("no such payment")
    return record
