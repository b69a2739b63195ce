"""Paying a merchant: the money path every way of paying shares (`run_payment`): scanning a QR code
(`qr_payments`), a payment code at a till (`charges`), an online checkout (`intents`).

The money path, as for P2P (GUIDE §2):
  1. read-only checks: the payer's account and wallet, the merchant (exists, active), the currency, hard
     limits (single payment, today's allowance), the wallet's own rules (lock, budget), the balance;
  2. step-up where the policy asks for it (`401 step_up_required`; repeat with `Step-Up: <id>`);
  3. ONE unit of work: spend the step-up pass, reserve the outflow against the daily limit, run the
     method's own claim (a dynamic code is marked paid; an intent moves to `succeeded`), apply the ledger
     chain — payer → merchant wallet for the amount, linked with merchant wallet → fee account for the
     merchant discount fee — write the payment record and its outbox event, count the budget spend.
A decline inside the unit of work rolls all of it back and is then recorded as a `failed` payment with
its `failure_code` (and a `payment.failed` event), so the Idempotency-Key stays bound to it.

With an Idempotency-Key the ledger transfer id is derived from (caller scope, key): even a crash between
the ledger commit and the stored HTTP answer cannot charge twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from sqlalchemy import Connection

from qianbao.errors import Conflict, Locked, NotFound, QianbaoError
from qianbao.identity import stepup
from qianbao.identity.context import IdentityContext
from qianbao.identity.limits import reserve_outflow
from qianbao.identity.model import Operation, Principal, StepUpFacts
from qianbao.ids import new_id
from qianbao.ledger.model import AccountStatus, TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.ledger.system_accounts import FEES, system_account_id
from qianbao.payments.errors import CurrencyMismatch, decline_error
from qianbao.payments.fees import fee_for
from qianbao.payments.guards import AlreadyApplied, Declined, chain_outcome, check_hard_limits, ensure_can_pay
from qianbao.payments.inputs import require_user_id
from qianbao.payments.merchant_records import (
    PaymentRecord,
    insert_payment,
    payment_by,
    payment_event,
)
from qianbao.payments.merchants import Merchant, rate_for
from qianbao.store.errors import DATABASE_ERRORS, is_retryable
from qianbao.store.outbox import append_events
from qianbao.wallets import spending
from qianbao.wallets.service import WalletRow, plausible_id

PAYMENT_CODE = "merchant.payment"
FEE_CODE = "merchant.fee"
_RETRIES = 5


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
    raise decline_error(
        record.failure_code or "conflict", currency_code=record.currency, payment_id=record.id
    )


def _check_balances(ctx: IdentityContext, conn: Connection, plan: PaymentPlan) -> None:
    accounts = LedgerReader(ctx.db).lookup_accounts_in(conn, [plan.source.id, plan.merchant.wallet_id])
    payer, merchant_wallet = accounts[plan.source.id], accounts[plan.merchant.wallet_id]
    if payer.status is not AccountStatus.OPEN:
        raise decline_error("wallet_frozen", currency_code=plan.currency)
    if merchant_wallet.status in (AccountStatus.FROZEN, AccountStatus.CLOSED):
        raise Locked("merchant_inactive", "this merchant cannot accept payments at the moment")
    if payer.available < plan.amount:
        raise decline_error("insufficient_funds", currency_code=plan.currency)


def prepare(ctx: IdentityContext, principal: Principal, plan: PaymentPlan) -> None:
    """The read-only checks before step-up (the unit of work re-checks what can change)."""
    with ctx.db.read() as conn:
        prepare_in(ctx, conn, principal, plan)


def prepare_in(ctx: IdentityContext, conn: Connection, principal: Principal, plan: PaymentPlan) -> None:
    """`prepare` in a read transaction the caller holds (sharing it with its own look-ups)."""
    user_id = require_user_id(principal)
    if plan.source.currency != plan.currency:
        raise CurrencyMismatch(f"the wallet holds {plan.source.currency}, not {plan.currency}")
    now = ctx.now()
    ensure_can_pay(conn, user_id)
    check_hard_limits(conn, ctx, user_id, plan.amount, plan.currency, now)
    spending.check_spend(conn, plan.source.id, plan.amount, now, own_move=False)
    _check_balances(ctx, conn, plan)


def step_up_for(
    ctx: IdentityContext,
    principal: Principal,
    plan: PaymentPlan,
    step_up: str | None,
    *,
    exempt: bool = False,
) -> stepup.StepUpPass | None:
    """The step-up policy for a merchant payment (a merchant is never a "new payee"); `exempt` for the
    password-free small payments a customer allowed (payment codes)."""
    if exempt:
        return None
    facts = StepUpFacts(Operation.PAYMENT, plan.amount, False, principal.device_trusted)
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
        reasons=ctx.step_up_policy.reasons(facts),
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


def run_payment(
    ctx: IdentityContext,
    principal: Principal,
    plan: PaymentPlan,
    *,
    claim: Claim | None = None,
    idempotency_key: str | None = None,
    step_up: str | None = None,
    exempt_from_step_up: bool = False,
    scope: str | None = None,
) -> PaymentRecord:
    """Checks, step-up, then the unit of work (retried on serialisation failures); declines recorded.

    `principal` is the payer; `scope` the caller's idempotency scope when someone else initiates the
    payment (a merchant charging a payment code)."""
    prepare(ctx, principal, plan)
    proof = step_up_for(ctx, principal, plan, step_up, exempt=exempt_from_step_up)
    return execute_payment(
        ctx, principal, plan, proof, claim=claim, idempotency_key=idempotency_key, scope=scope
    )


def execute_payment(
    ctx: IdentityContext,
    principal: Principal,
    plan: PaymentPlan,
    proof: stepup.StepUpPass | None,
    *,
    claim: Claim | None = None,
    idempotency_key: str | None = None,
    scope: str | None = None,
) -> PaymentRecord:
    """The unit of work after `prepare` and step-up: retried on serialisation failures; a decline is
    recorded as a failed payment and raised; a replay of the same ledger id returns the first outcome."""
    scope = principal.scope if scope is None else scope
    record = new_record(ctx, principal, plan)
    attempt = 0
    while True:
        attempt += 1
        try:
            return _execute(ctx, scope, record, proof, claim, idempotency_key)
        except Declined as declined:
            record_failure(ctx, scope, record, declined.error, idempotency_key)
            raise declined.error from None
        except AlreadyApplied:
            found = payment_by_ledger_id(ctx, plan.ledger_id)
            if found is None:
                raise Conflict("this payment was already applied") from None
            return replay(found)
        except DATABASE_ERRORS as exc:
            if attempt >= _RETRIES or not is_retryable(exc):
                raise


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


def _execute(
    ctx: IdentityContext,
    scope: str,
    record: PaymentRecord,
    proof: stepup.StepUpPass | None,
    claim: Claim | None,
    key: str | None,
) -> PaymentRecord:
    with ctx.uow() as uow:
        conn = uow.conn
        # A retry that overlapped the first attempt (same ledger id) finds its payment here and replays
        # it, before anything (a dynamic code, an intent) could answer "already used".
        if payment_by(conn, ctx.keys, ledger_id=record.ledger_transfer_id) is not None:
            raise AlreadyApplied
        stepup.consume(ctx, conn, proof)
        ensure_can_pay(conn, record.payer_user_id)
        now = ctx.now()
        record = replace(record, created_at=now)
        try:
            spending.check_spend(conn, record.payer_wallet_id, record.amount, now, own_move=False)
            reserve_outflow(conn, ctx.settings, record.payer_user_id, record.amount, record.currency, now)
        except QianbaoError as exc:  # locked wallet, budget, daily limit: declines bound to the key
            raise Declined(exc) from None
        if claim is not None:
            claim(conn, record)
        chain_outcome(ctx.ledger.apply_in(conn, ledger_chain(record)), record.currency)
        try:  # a blocking budget that lost a race to a concurrent payment refuses here
            budget_events = spending.record_spend(
                conn, record.payer_wallet_id, record.amount, record.currency, now
            )
        except QianbaoError as exc:
            raise Declined(exc) from None
        insert_payment(conn, ctx.keys, record, scope, key)
        uow.emit(payment_event(record))
        for event in budget_events:
            uow.emit(event)
        uow.commit()
        return record


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
