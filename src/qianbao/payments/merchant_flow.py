"""Merchant payments in the payment pipeline (engine/pipeline.py, `Flow`): what every way of paying a
merchant shares, and the flow of a payment already planned (`PlanFlow`: a checkout, a payment code
within the customer's no-PIN allowance). Scanned QR codes are staged by their own flow (`qr_flow`),
on the same writing.

A staged merchant payment carries its record (id and fee fixed when staged), the merchant, a dynamic
code to claim, the step-up binding and the scope its Idempotency-Key belongs to (a merchant charging
a payment code binds the charge to the merchant's key). The ledger chain is payer → merchant wallet,
linked with merchant wallet → fee account. Writing claims each dynamic code (a conditional update:
a code paid meanwhile fails the batch, whose orders are then tried alone), then inserts every
payment of the batch in one statement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, insert

from qianbao.errors import QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.ledger.model import TransferSpec
from qianbao.ledger.system_accounts import FEES, system_account_id
from qianbao.payments import dynamic_qr
from qianbao.payments.engine.decide import Approve
from qianbao.payments.engine.facts import Kind, PaymentRequest, TargetWallet
from qianbao.payments.engine.orders import Done, FlowDefaults, Order, Replay, Staged
from qianbao.payments.engine.service import submit_order
from qianbao.payments.merchant_payments import (
    Claim,
    PaymentPlan,
    ledger_chain,
    new_record,
    payment_request,
    replay,
)
from qianbao.payments.merchant_records import (
    PaymentRecord,
    payment_event,
    payment_row,
    payments_by_ledger_ids,
)
from qianbao.payments.merchant_tables import merchant_payments
from qianbao.payments.merchants import Merchant, merchants_by_ids
from qianbao.store.outbox import OutboxEvent


@dataclass(frozen=True, slots=True)
class MerchantStaged:
    record: PaymentRecord
    merchant: Merchant
    code: dynamic_qr.DynamicQr | None
    step_up_params: dict[str, Any]
    scope: str


def staged_payment(
    ctx: IdentityContext,
    order: Order,
    plan: PaymentPlan,
    request: PaymentRequest,
    *,
    code: dynamic_qr.DynamicQr | None = None,
    scope: str | None = None,
) -> Staged:
    """A planned merchant payment, staged: its record, its chain's fee account, its step-up binding."""
    record = new_record(ctx, order.principal, plan)
    merchant = plan.merchant
    target = TargetWallet(merchant.wallet_id, merchant.owner_user_id, merchant.currency)
    fees = (system_account_id(FEES, plan.currency),) if record.fee > 0 else ()
    params = {
        "merchant": merchant.id,
        "from": plan.source.id,
        "amount": plan.amount,
        "currency": plan.currency,
        **dict(plan.step_up_params),
    }
    extra = MerchantStaged(record, merchant, code, params, order.principal.scope if scope is None else scope)
    return Staged(order, request, target, also_lock=fees, extra={"merchant": extra})


def merchant_staged(staged: Staged) -> MerchantStaged:
    found: MerchantStaged = staged.extra["merchant"]
    return found


class MerchantPayments(FlowDefaults):
    """What writing a merchant payment is, whichever way it was staged."""

    what = "payment"
    reference = "payment_id"

    def existing(self, ctx: IdentityContext, conn: Connection, ledger_ids: Sequence[str]) -> dict[str, Any]:
        return dict(payments_by_ledger_ids(conn, ctx.keys, list(ledger_ids)))

    def seen(self, staged: Staged) -> Merchant:
        return merchant_staged(staged).merchant

    def step_up_params(self, staged: Staged) -> dict[str, Any]:
        return dict(merchant_staged(staged).step_up_params)

    def chain(self, staged: Staged, decision: Approve) -> list[TransferSpec]:  # noqa: ARG002
        return ledger_chain(merchant_staged(staged).record)

    def record(
        self,
        staged: Staged,
        decision: Approve,  # noqa: ARG002 - the flow's signature
        now: int,
        failure: QianbaoError | None,
    ) -> PaymentRecord:
        record = replace(merchant_staged(staged).record, created_at=now)
        if failure is None:
            return record
        return replace(record, status="failed", failure_code=failure.code)

    def replay(self, record: Any, order: Order) -> PaymentRecord:  # noqa: ARG002
        return replay(record)

    def write(
        self, ctx: IdentityContext, conn: Connection, written: Sequence[tuple[Staged, Any]]
    ) -> list[OutboxEvent]:
        for staged, record in written:
            code = merchant_staged(staged).code
            if code is not None and record.status == "succeeded":
                dynamic_qr.claim(conn, code, record.id, record.created_at)  # raises: used meanwhile
        rows = [payment_row(ctx.keys, r, merchant_staged(s).scope, s.order.key) for s, r in written]
        conn.execute(insert(merchant_payments), rows)
        return [payment_event(record) for _staged, record in written]


# -- a payment already planned ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PlannedPayment:
    plan: PaymentPlan
    no_pin: bool
    scope: str
    hold_s: int = 0  # a payment code's hold: how long the customer has to confirm it


class PlanFlow(MerchantPayments):
    """A checkout or a payment code's charge: the caller planned it (merchant, paying wallet, amount);
    the batch reads the merchant again (one statement), so a merchant suspended since takes nothing."""

    kind = Kind.MERCHANT

    def stage(
        self,
        ctx: IdentityContext,
        conn: Connection,
        orders: Sequence[Order],
        now: int,  # noqa: ARG002 - the flow's signature
    ) -> list[Staged | Replay | QianbaoError]:
        asks: list[PlannedPayment] = [o.payload for o in orders]
        current = merchants_by_ids(conn, [a.plan.merchant.id for a in asks])
        staged: list[Staged | Replay | QianbaoError] = []
        for order, ask in zip(orders, asks, strict=True):
            merchant = current.get(ask.plan.merchant.id, ask.plan.merchant)
            request = replace(
                payment_request(order.principal, ask.plan, kind=self.kind, no_pin=ask.no_pin),
                merchant_status=merchant.status,
            )
            staged.append(staged_payment(ctx, order, ask.plan, request, scope=ask.scope))
        return staged


PLANNED = PlanFlow()


def run_planned(
    ctx: IdentityContext,
    principal: Principal,
    plan: PaymentPlan,
    *,
    claim: Claim | None = None,
    idempotency_key: str | None = None,
    step_up: str | None = None,
    no_pin: bool = False,
    scope: str | None = None,
) -> PaymentRecord:
    """Pay a planned merchant payment through the pipeline: decided, step-up asked where needed (`401`),
    written in a batch. `principal` is the payer; `scope` the caller's idempotency scope when someone
    else initiates the payment (a merchant charging a payment code); `no_pin` for the password-free
    small payments a customer allowed; `claim` the method's own step in the batch (an intent moves to
    succeeded), which refuses the payment by raising."""
    ask = PlannedPayment(plan, no_pin, principal.scope if scope is None else scope)
    order = Order(PLANNED, principal, ask, plan.ledger_id, idempotency_key, step_up, None, claim)
    outcome = submit_order(ctx, order)
    assert isinstance(outcome, Done)  # noqa: S101 - without an HTTP key nothing is answered from it
    record: PaymentRecord = outcome.record
    return record


__all__ = ["PLANNED", "Kind", "MerchantPayments", "PlanFlow", "run_planned", "staged_payment"]
