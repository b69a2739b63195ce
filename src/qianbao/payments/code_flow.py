"""A payment code above the customer's no-PIN allowance, in the payment pipeline: the funds held
(`HOLD`), then the customer's confirmation (`CONFIRM`), each an order in a batch like any payment.

Holding is decided like any merchant payment (limits, lock, budget, balance: checked now, counted when
confirmed) and writes a ledger hold with a timeout and a `pending` payment (event
`payment.confirmation_required`). Confirming is decided again over the locked books (a confirmation
always asks for step-up: that is the point of the hold), posts the hold linked with the fee, counts
the payment toward the payer's day and month, and moves the payment to `succeeded` with a conditional
update. A confirmation the decision declines releases the hold and fails the payment in the same
batch. One the ledger refuses fails it too: the hold expired (`payment_confirmation_expired`), or it
was voided by a cancel meanwhile (`payment_not_pending`; the cancel's own state stands).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, select, update

from qianbao.errors import Conflict, NotFound, QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.ledger.model import ResultCode, TransferSpec
from qianbao.ledger.system_accounts import FEES, system_account_id
from qianbao.payments.engine.decide import Approve
from qianbao.payments.engine.facts import Books, Kind, PaymentRequest
from qianbao.payments.engine.orders import Replay, Staged
from qianbao.payments.errors import PaymentConfirmationExpired, PaymentNotPending
from qianbao.payments.merchant_flow import MerchantPayments, MerchantStaged, PlanFlow, merchant_staged
from qianbao.payments.merchant_payments import ledger_chain, record_target
from qianbao.payments.merchant_records import (
    PaymentRecord,
    payment_event,
    payment_from_row,
    payments_by_ledger_ids,
)
from qianbao.payments.merchant_tables import merchant_payments
from qianbao.payments.merchants import merchants_by_ids
from qianbao.store.outbox import OutboxEvent

HOLD_CODE = "merchant.payment_hold"
CONFIRMATION_REQUIRED = "payment.confirmation_required"


# -- holding ---------------------------------------------------------------------------------------


class HoldFlow(PlanFlow):
    """A planned payment-code charge whose funds are held until the customer confirms it."""

    kind = Kind.CODE_HOLD

    def chain(self, staged: Staged, decision: Approve) -> list[TransferSpec]:  # noqa: ARG002
        record = merchant_staged(staged).record
        return [
            TransferSpec.pending(
                record.ledger_transfer_id,
                record.payer_wallet_id,
                record.merchant_wallet_id,
                record.amount,
                record.currency,
                code=HOLD_CODE,
                timeout_seconds=staged.order.payload.hold_s,
            )
        ]

    def record(
        self, staged: Staged, decision: Approve, now: int, failure: QianbaoError | None
    ) -> PaymentRecord:
        record = super().record(staged, decision, now, failure)
        if failure is not None:
            return record
        return replace(record, status="pending", expires_at=now + staged.order.payload.hold_s * 1_000_000)

    def write(
        self, ctx: IdentityContext, conn: Connection, written: Sequence[tuple[Staged, Any]]
    ) -> list[OutboxEvent]:
        events = super().write(ctx, conn, written)
        return [
            payment_event(record, CONFIRMATION_REQUIRED) if record.status == "pending" else event
            for (_staged, record), event in zip(written, events, strict=True)
        ]


HOLD = HoldFlow()


# -- confirming ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Confirmation:
    payment_id: str


def post_id(record: PaymentRecord) -> str:
    """The ledger id of the transfer that posts a held payment (the confirmation's ledger id)."""
    return f"{record.ledger_transfer_id}:post"


def release_in(
    ctx: IdentityContext, conn: Connection, record: PaymentRecord, status: str, failure_code: str | None
) -> PaymentRecord | None:
    """Void the hold (unless it expired or was voided already) and end the payment, in the caller's
    transaction; None when the payment was no longer pending (someone else ended it)."""
    void = TransferSpec.void(f"{record.ledger_transfer_id}:void", record.ledger_transfer_id)
    (result,) = ctx.ledger.apply_in(conn, [void])
    ended = (ResultCode.OK, ResultCode.EXISTS, ResultCode.PENDING_EXPIRED, ResultCode.PENDING_ALREADY_VOIDED)
    if result.code not in ended:
        raise Conflict(f"the hold could not be released ({result.code})")
    moved = conn.execute(
        update(merchant_payments)
        .where(merchant_payments.c.id == record.id, merchant_payments.c.status == "pending")
        .values(status=status, failure_code=failure_code)
    ).rowcount
    return replace(record, status=status, failure_code=failure_code) if moved == 1 else None


def _answered(error: QianbaoError, record: PaymentRecord) -> QianbaoError:
    """A refusal of the post (the hold expired: `payment_confirmation_expired`; voided or posted
    meanwhile: `payment_not_pending`, `engine.rules.ledger_finding`), with the payment's id."""
    error.extra["payment_id"] = record.id
    return error


class ConfirmFlow(MerchantPayments):
    """The customer confirms a held payment: the hold is posted, linked with the merchant's fee."""

    def stage(
        self,
        ctx: IdentityContext,
        conn: Connection,
        orders: Sequence[Any],
        now: int,  # noqa: ARG002 - the flow's signature
    ) -> list[Staged | Replay | QianbaoError]:
        asked: list[Confirmation] = [o.payload for o in orders]
        rows = conn.execute(
            select(merchant_payments).where(merchant_payments.c.id.in_(sorted({a.payment_id for a in asked})))
        )
        found = {str(r.id): payment_from_row(r, ctx.keys) for r in rows}
        current = merchants_by_ids(conn, [r.merchant_id for r in found.values()])
        staged: list[Staged | Replay | QianbaoError] = []
        for order, ask in zip(orders, asked, strict=True):
            record = found.get(ask.payment_id)
            if record is None or record.payer_user_id != order.principal.user_id:
                staged.append(NotFound("no such payment"))
                continue
            if record.status != "pending":
                staged.append(
                    PaymentNotPending(
                        f"the payment is {record.status}", payment_id=record.id, payment_status=record.status
                    )
                )
                continue
            merchant = current[record.merchant_id]
            request = PaymentRequest(
                kind=Kind.CODE_CONFIRM,
                payer_user_id=record.payer_user_id,
                source_wallet_id=record.payer_wallet_id,
                target_wallet_id=record.merchant_wallet_id,
                amount=record.amount,
                currency=record.currency,
                merchant_status=merchant.status,
                device_trusted=order.principal.device_trusted,
            )
            fees = (system_account_id(FEES, record.currency),) if record.fee > 0 else ()
            params = {"payment": record.id, "amount": record.amount, "currency": record.currency}
            extra = MerchantStaged(record, merchant, None, params, order.principal.scope)
            staged.append(Staged(order, request, record_target(record), fees, extra={"merchant": extra}))
        return staged

    def existing(self, ctx: IdentityContext, conn: Connection, ledger_ids: Sequence[str]) -> dict[str, Any]:
        held = {ledger_id.removesuffix(":post"): ledger_id for ledger_id in ledger_ids}
        found = payments_by_ledger_ids(conn, ctx.keys, list(held))
        return {held[k]: r for k, r in found.items() if r.status == "succeeded"}

    def step_up_params(self, staged: Staged) -> dict[str, Any]:
        return dict(merchant_staged(staged).step_up_params)  # bound to the payment, not the merchant

    def chain(self, staged: Staged, decision: Approve) -> list[TransferSpec]:  # noqa: ARG002
        record = merchant_staged(staged).record
        chain = ledger_chain(record)
        return [
            TransferSpec.post(post_id(record), record.ledger_transfer_id, linked=len(chain) > 1),
            *chain[1:],
        ]

    def record(
        self,
        staged: Staged,
        decision: Approve,  # noqa: ARG002 - the flow's signature
        now: int,  # noqa: ARG002 - a held payment keeps the time it was made
        failure: QianbaoError | None,
    ) -> PaymentRecord:
        record = merchant_staged(staged).record
        if failure is None:
            return replace(record, status="succeeded")
        return replace(record, status="failed", failure_code=failure.code)

    def declined(self, staged: Staged, error: QianbaoError, record: Any, books: Books) -> QianbaoError:  # noqa: ARG002
        return _answered(error, record)

    def refused(
        self, ctx: IdentityContext, conn: Connection, staged: Staged, error: QianbaoError
    ) -> tuple[QianbaoError, list[OutboxEvent]]:
        """A confirmation that cannot succeed (the balance, a limit, a frozen account) ends the payment:
        the hold is released, in this batch."""
        record = merchant_staged(staged).record
        error.extra["payment_id"] = record.id
        ended = release_in(ctx, conn, record, "failed", error.code)
        return error, [] if ended is None else [payment_event(ended)]

    def write(
        self, ctx: IdentityContext, conn: Connection, written: Sequence[tuple[Staged, Any]]
    ) -> list[OutboxEvent]:
        events: list[OutboxEvent] = []
        posted = [record for _staged, record in written if record.status == "succeeded"]
        if posted:
            moved = conn.execute(
                update(merchant_payments)
                .where(
                    merchant_payments.c.id.in_([r.id for r in posted]),
                    merchant_payments.c.status == "pending",
                )
                .values(status="succeeded")
            ).rowcount
            if moved != len(posted):  # canceled meanwhile: the batch is tried again, each alone
                raise PaymentNotPending("the payment is no longer pending")
            events += [payment_event(record) for record in posted]
        for _staged, record in written:
            if record.status == "failed":
                ended = release_in(ctx, conn, record, "failed", record.failure_code)
                events += [] if ended is None else [payment_event(ended)]
        return events


CONFIRM = ConfirmFlow()


__all__ = [
    "CONFIRM",
    "HOLD",
    "HOLD_CODE",
    "Confirmation",
    "PaymentConfirmationExpired",
    "PaymentNotPending",
    "post_id",
    "release_in",
]
