"""Refunds in the payment pipeline: each refund an order in a batch, decided by `decide` (kind REFUND)
over the locked books like any money movement.

Staging reads the payments (one statement), checks who may refund and what (the merchant's owner; by
default what is left), finds an earlier outcome of the same Idempotency-Key, and picks where the money
goes: the wallet that paid, or the payer's main wallet if that one has been closed since. `decide` then
asks the refund rules over running totals, so two refunds of one payment in a batch see each other:
only a succeeded payment, never past what was paid, the fee share (pro rata, exact over any number of
partial refunds), a merchant wallet that may pay it and a wallet that may take it.

The chain is fee account → merchant wallet (the fee share, first) linked with merchant wallet → payer.
Writing moves each payment's refunded totals with a conditional update on the totals the batch read (a
refund committed meanwhile by another process makes the batch try again), inserts the refunds in one
statement, and gives the month's budget room back to the wallet that paid.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, insert, update

from qianbao import invalid
from qianbao.errors import NotFound, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.ids import new_id
from qianbao.ledger.model import AccountStatus, TransferSpec
from qianbao.ledger.queries import LedgerReader
from qianbao.ledger.system_accounts import FEES, system_account_id
from qianbao.payments.engine.decide import Approve
from qianbao.payments.engine.facts import Kind, PaidPayment, PaymentRequest, TargetWallet
from qianbao.payments.engine.orders import FlowDefaults, Order, Replay, Staged, Stale
from qianbao.payments.errors import PaymentDeclined, PaymentNotRefundable, RefundExceedsPayment, money_json
from qianbao.payments.merchant_records import (
    PaymentRecord,
    RefundRecord,
    payments_by_ids,
    refund_event,
    refund_row,
    refunds_by_ledger_ids,
)
from qianbao.payments.merchant_tables import merchant_payments, refunds
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets import spending
from qianbao.wallets.service import main_wallet_ids, plausible_id

REFUND_CODE = "merchant.refund"
# What the payment itself refuses (checked before anything could move): answered, not recorded.
_ANSWERED_ONLY = frozenset({"payment_not_refundable", "refund_exceeds_payment"})
FEE_REFUND_CODE = "merchant.fee_refund"


@dataclass(frozen=True, slots=True)
class RefundAsk:
    """A refund asked for, its input checked: the payment, how much (None: what is left), the reason."""

    payment_id: str
    amount: int | None
    currency: str | None
    reason: str | None


@dataclass(frozen=True, slots=True)
class RefundStaged:
    refund: RefundRecord  # fee share 0 until decided
    payment: PaymentRecord


def _staged(staged: Staged) -> RefundStaged:
    found: RefundStaged = staged.extra["refund"]
    return found


def _amount(ask: RefundAsk, payment: PaymentRecord) -> int:
    """The amount to refund (by default what is left), in the payment's currency."""
    if ask.currency is not None and ask.currency != payment.currency:
        raise invalid.currency_only(
            "currency", payment.currency, f"the payment was made in {payment.currency}"
        )
    amount = payment.amount - payment.refunded_amount if ask.amount is None else ask.amount
    if type(amount) is not int or amount <= 0:
        if ask.amount is None:  # nothing left: the payment is refunded in full
            raise RefundExceedsPayment(
                "this payment has been refunded in full", remaining=money_json(0, payment.currency)
            )
        raise invalid.because(
            "greater_than",
            "amount must be a positive number of minor units",
            field="amount",
            params={"than": 0},
        )
    return amount


def replay_refund(refund: RefundRecord, payment_id: str) -> RefundRecord:
    """An earlier outcome of the same Idempotency-Key: the refund, or its decline raised again."""
    if refund.payment_id != payment_id:
        raise invalid.because(
            "idempotency_key_other_payment", "this Idempotency-Key was used for a refund of another payment"
        )
    if refund.status == "failed":
        raise PaymentDeclined(
            refund.failure_code or "conflict", "the refund was declined", refund_id=refund.id
        )
    return refund


class RefundFlow(FlowDefaults):
    """How refunds are staged and written in the pipeline."""

    what = "refund"
    reference = "refund_id"

    def stage(
        self,
        ctx: IdentityContext,
        conn: Connection,
        orders: Sequence[Order],
        now: int,
    ) -> list[Staged | Replay | QianbaoError]:
        asks: list[RefundAsk] = [o.payload for o in orders]
        # Locked (id order) before the accounts, so two processes refunding one payment queue here and
        # the second decides on what the first left, rather than on a stale total.
        wanted = [a.payment_id for a in asks if plausible_id(a.payment_id)]
        payments = payments_by_ids(conn, ctx.keys, wanted, lock=True)
        earlier = refunds_by_ledger_ids(conn, ctx.keys, [o.ledger_id for o in orders if o.key is not None])
        # Where each refund goes: the wallet that paid, unless it has been closed since.
        paying = LedgerReader(ctx.db).lookup_accounts_in(conn, [p.payer_wallet_id for p in payments.values()])
        closed = {
            p.id
            for p in payments.values()
            if p.payer_wallet_id not in paying or paying[p.payer_wallet_id].status is AccountStatus.CLOSED
        }
        mains: dict[tuple[str, str], str] = {}
        for code in sorted({payments[i].currency for i in closed}):
            users = [payments[i].payer_user_id for i in closed if payments[i].currency == code]
            mains |= {(user, code): wallet for user, wallet in main_wallet_ids(conn, users, code).items()}
        staged: list[Staged | Replay | QianbaoError] = []
        for order, ask in zip(orders, asks, strict=True):
            payment = payments.get(ask.payment_id)
            if payment is None or payment.merchant_user_id != order.principal.user_id:
                staged.append(NotFound("no such payment"))
                continue
            if order.ledger_id in earlier:
                staged.append(Replay(earlier[order.ledger_id]))
                continue
            try:
                amount = _amount(ask, payment)
            except QianbaoError as error:
                staged.append(error)
                continue
            to_wallet = payment.payer_wallet_id
            if payment.id in closed:
                main = mains.get((payment.payer_user_id, payment.currency))
                if main is None:
                    staged.append(PaymentNotRefundable("the payer has no wallet to refund to"))
                    continue
                to_wallet = main
            staged.append(self._staged(ctx, order, ask, payment, amount, to_wallet, now))
        return staged

    def _staged(
        self,
        ctx: IdentityContext,
        order: Order,
        ask: RefundAsk,
        payment: PaymentRecord,
        amount: int,
        to_wallet: str,
        now: int,
    ) -> Staged:
        pro_rata = ctx.settings.refund_fees_pro_rata
        request = PaymentRequest(
            kind=Kind.REFUND,
            payer_user_id=payment.merchant_user_id,
            source_wallet_id=payment.merchant_wallet_id,
            target_wallet_id=to_wallet,
            amount=amount,
            currency=payment.currency,
            payment_id=payment.id,
            fee_pro_rata=pro_rata,
        )
        refund = RefundRecord(
            id=new_id("rfd"),
            payment_id=payment.id,
            ledger_transfer_id=order.ledger_id,
            amount=amount,
            fee_refunded=0,
            currency=payment.currency,
            to_wallet_id=to_wallet,
            status="succeeded",
            failure_code=None,
            reason=ask.reason,
            created_at=now,
        )
        paid = PaidPayment(
            payment.status, payment.amount, payment.refunded_amount, payment.fee, payment.fee_refunded
        )
        fees = (system_account_id(FEES, payment.currency),) if pro_rata and payment.fee > 0 else ()
        target = TargetWallet(to_wallet, payment.payer_user_id, payment.currency)
        extra = {"refund": RefundStaged(refund, payment)}
        return Staged(order, request, target, also_lock=fees, extra=extra, paid=paid)

    def existing(self, ctx: IdentityContext, conn: Connection, ledger_ids: Sequence[str]) -> dict[str, Any]:
        return dict(refunds_by_ledger_ids(conn, ctx.keys, ledger_ids))

    def chain(self, staged: Staged, decision: Approve) -> list[TransferSpec]:
        refund, payment = _staged(staged).refund, _staged(staged).payment
        back = TransferSpec.posted(
            refund.ledger_transfer_id,
            payment.merchant_wallet_id,
            refund.to_wallet_id,
            refund.amount,
            refund.currency,
            code=REFUND_CODE,
        )
        if decision.fee_back == 0:
            return [back]
        fee_back = TransferSpec.posted(
            f"{refund.ledger_transfer_id}:fee",
            system_account_id(FEES, refund.currency),
            payment.merchant_wallet_id,
            decision.fee_back,
            refund.currency,
            code=FEE_REFUND_CODE,
            linked=True,
        )
        return [fee_back, back]  # the fee first: the merchant wallet then holds it when the refund leaves

    def record(
        self, staged: Staged, decision: Approve, now: int, failure: QianbaoError | None
    ) -> RefundRecord:
        refund = replace(_staged(staged).refund, fee_refunded=decision.fee_back, created_at=now)
        if failure is None:
            return refund
        return replace(refund, status="failed", failure_code=failure.code, fee_refunded=0)

    def refused(
        self, ctx: IdentityContext, conn: Connection, staged: Staged, error: QianbaoError
    ) -> tuple[QianbaoError, list[OutboxEvent]]:
        """A refund the decision declines on what the payment allows (its status, what is left) is
        answered only, as it always was; one declined on the wallets (the merchant wallet's balance or
        status, the receiving wallet's) is recorded as a failed refund, with `refund.failed`."""
        if error.code in _ANSWERED_ONLY:
            return error, []
        refund = replace(
            _staged(staged).refund, status="failed", failure_code=error.code, created_at=ctx.now()
        )
        order = staged.order
        conn.execute(insert(refunds), [refund_row(ctx.keys, refund, order.principal.scope, order.key)])
        error.extra["refund_id"] = refund.id
        return error, [refund_event(refund, _staged(staged).payment)]

    def replay(self, record: Any, order: Order) -> RefundRecord:
        return replay_refund(record, order.payload.payment_id)

    def write(
        self, ctx: IdentityContext, conn: Connection, written: Sequence[tuple[Staged, Any]]
    ) -> list[OutboxEvent]:
        done = [(s, r) for s, r in written if r.status == "succeeded"]
        totals: dict[str, tuple[PaymentRecord, int, int]] = {}
        for staged, refund in done:
            payment = _staged(staged).payment
            _p, amount, fee = totals.get(payment.id, (payment, 0, 0))
            totals[payment.id] = (payment, amount + refund.amount, fee + refund.fee_refunded)
        for payment, amount, fee in totals.values():
            moved = conn.execute(
                update(merchant_payments)
                .where(
                    merchant_payments.c.id == payment.id,
                    merchant_payments.c.refunded_amount == payment.refunded_amount,
                    merchant_payments.c.refunded_amount + amount <= merchant_payments.c.amount,
                )
                .values(
                    refunded_amount=merchant_payments.c.refunded_amount + amount,
                    fee_refunded=merchant_payments.c.fee_refunded + fee,
                )
            ).rowcount
            if moved != 1:  # another refund of this payment committed since the batch read it
                raise Stale("a payment's refunded total changed since the batch read it")
        rows = [refund_row(ctx.keys, r, s.order.principal.scope, s.order.key) for s, r in written]
        conn.execute(insert(refunds), rows)
        for staged, refund in done:  # the spending comes off the month it was spent in
            payment = _staged(staged).payment
            if refund.to_wallet_id == payment.payer_wallet_id:
                spending.record_unspend(
                    conn,
                    payment.payer_wallet_id,
                    refund.amount,
                    refund.created_at,
                    spent_at_us=payment.created_at,
                )
        return [refund_event(refund, _staged(staged).payment) for staged, refund in written]


REFUNDS = RefundFlow()

__all__ = ["REFUNDS", "RefundAsk", "RefundFlow", "replay_refund"]
