"""Merchant QR payments as the payment pipeline stages and writes them (engine/pipeline.py, `Flow`).

Staging a batch reads the merchants its codes name and the paying wallets in one statement each; a
dynamic code is read by its reference, one by one. Each code is then checked against the records
(`qr_payments.plan_for_qr`: altered, used, expired, amount). Writing claims each dynamic code (a
conditional update: a code two customers paid in one batch fails the batch, whose orders are then
tried alone, where the second hears `qr_code_used`), then inserts every payment of the batch in one
statement. The ledger chain is the merchant payment's: payer → merchant wallet, linked with merchant
wallet → fee account.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import Connection, insert

from qianbao.errors import QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.ids import new_id
from qianbao.ledger.model import TransferSpec
from qianbao.ledger.system_accounts import FEES, system_account_id
from qianbao.payments import dynamic_qr, emvco
from qianbao.payments.engine.facts import Books, Kind, PaymentRequest, TargetWallet
from qianbao.payments.engine.orders import Done, HttpKey, Order, Replay, Staged
from qianbao.payments.engine.service import submit_order
from qianbao.payments.inputs import derived_id, require_user_id
from qianbao.payments.merchant_payments import ledger_chain, new_record, replay
from qianbao.payments.merchant_records import (
    PaymentRecord,
    payment_event,
    payment_row,
    payments_by_ledger_ids,
)
from qianbao.payments.merchant_tables import merchant_payments
from qianbao.payments.merchants import Merchant, merchants_by_ids, payable
from qianbao.payments.qr_payments import QrPaymentRequest, parse_merchant_qr, plan_for_qr
from qianbao.store.outbox import OutboxEvent
from qianbao.wallets.service import no_such_wallet, wallet_rows


@dataclass(frozen=True, slots=True)
class QrStaged:
    """What a staged QR payment carries to its writing: its record (id and fee fixed), the merchant
    (for the answer), the dynamic code to claim."""

    record: PaymentRecord
    merchant: Merchant
    code: dynamic_qr.DynamicQr | None
    step_up_params: dict[str, Any]


def _parsed(ask: QrPaymentRequest) -> emvco.ParsedQr | QianbaoError:
    try:
        return parse_merchant_qr(ask.qr)
    except QianbaoError as refusal:
        return refusal


class QrPaymentFlow:
    what = "payment"

    def stage(
        self, ctx: IdentityContext, conn: Connection, orders: Sequence[Order], now: int
    ) -> list[Staged | Replay | QianbaoError]:
        asks: list[QrPaymentRequest] = [o.payload for o in orders]
        parsed = [_parsed(a) for a in asks]
        merchants = merchants_by_ids(
            conn, [p.qianbao_merchant_id for p in parsed if isinstance(p, emvco.ParsedQr)]
        )
        sources = wallet_rows(conn, [a.from_wallet_id for a in asks])
        staged: list[Staged | Replay | QianbaoError] = []
        for order, ask, code in zip(orders, asks, parsed, strict=True):
            try:
                if isinstance(code, QianbaoError):
                    raise code
                merchant = payable(merchants.get(code.qianbao_merchant_id or ""))
                source = sources.get(ask.from_wallet_id)
                if source is None or source.user_id != order.principal.user_id:
                    raise no_such_wallet()
                plan, dynamic = plan_for_qr(conn, ask, code, order.ledger_id, merchant, source, now)
            except (dynamic_qr.QrCodeUsed, dynamic_qr.QrCodeExpired) as refusal:
                # A retry whose first attempt paid the code: that payment is the answer.
                found = None if order.key is None else self.existing(ctx, conn, [order.ledger_id])
                record = None if found is None else found.get(order.ledger_id)
                staged.append(refusal if record is None else Replay(record))
                continue
            except QianbaoError as refusal:
                staged.append(refusal)
                continue
            record = new_record(ctx, order.principal, plan)
            request = PaymentRequest(
                kind=Kind.MERCHANT,
                payer_user_id=source.user_id,
                source_wallet_id=source.id,
                target_wallet_id=merchant.wallet_id,
                amount=plan.amount,
                currency=plan.currency,
                merchant_status=merchant.status,
                device_trusted=order.principal.device_trusted,
            )
            target = TargetWallet(merchant.wallet_id, merchant.owner_user_id, merchant.currency)
            fees = (system_account_id(FEES, plan.currency),) if record.fee > 0 else ()
            params = {
                "merchant": merchant.id,
                "from": source.id,
                "amount": plan.amount,
                "currency": plan.currency,
                **dict(plan.step_up_params),
            }
            extra = {"qr": QrStaged(record, merchant, dynamic, params)}
            staged.append(Staged(order, request, target, also_lock=fees, extra=extra))
        return staged

    def existing(self, ctx: IdentityContext, conn: Connection, ledger_ids: Sequence[str]) -> dict[str, Any]:
        return dict(payments_by_ledger_ids(conn, ctx.keys, list(ledger_ids)))

    def step_up_params(self, staged: Staged) -> dict[str, Any]:
        return dict(_qr(staged).step_up_params)

    def chain(self, staged: Staged) -> list[TransferSpec]:
        return ledger_chain(_qr(staged).record)

    def record(self, staged: Staged, now: int, failure: QianbaoError | None) -> PaymentRecord:
        record = replace(_qr(staged).record, created_at=now)
        if failure is None:
            return record
        return replace(record, status="failed", failure_code=failure.code)

    def declined(
        self,
        staged: Staged,  # noqa: ARG002 - the flow's signature
        error: QianbaoError,
        record: Any,
        books: Books,  # noqa: ARG002 - the flow's signature
    ) -> QianbaoError:
        error.extra["payment_id"] = record.id
        return error

    def replay(self, record: Any) -> PaymentRecord:
        return replay(record)

    def write(
        self, ctx: IdentityContext, conn: Connection, written: Sequence[tuple[Staged, Any]]
    ) -> list[OutboxEvent]:
        for staged, record in written:
            code = _qr(staged).code
            if code is not None and record.status == "succeeded":
                dynamic_qr.claim(conn, code, record.id, record.created_at)  # raises: used meanwhile
        rows = [payment_row(ctx.keys, r, s.order.principal.scope, s.order.key) for s, r in written]
        conn.execute(insert(merchant_payments), rows)
        return [payment_event(record) for _staged, record in written]


def _qr(staged: Staged) -> QrStaged:
    found: QrStaged = staged.extra["qr"]
    return found


def merchant_of(staged: Staged) -> Merchant:
    return _qr(staged).merchant


QR_PAYMENTS = QrPaymentFlow()


def qr_order(
    principal: Principal,
    request: QrPaymentRequest,
    *,
    idempotency_key: str | None = None,
    step_up: str | None = None,
    http: HttpKey | None = None,
) -> Order:
    """The pipeline's order for paying a scanned code; nothing is read until its batch."""
    require_user_id(principal)
    ledger_id = (
        derived_id("pay", principal.scope, idempotency_key) if idempotency_key else f"pay:{new_id('pay')}"
    )
    return Order(QR_PAYMENTS, principal, request, ledger_id, idempotency_key, step_up, http)


def pay_by_qr(
    ctx: IdentityContext,
    principal: Principal,
    request: QrPaymentRequest,
    *,
    idempotency_key: str | None = None,
    step_up: str | None = None,
) -> PaymentRecord:
    """Pay the merchant a scanned code names: a static code with the amount the customer entered, or a
    dynamic code's own amount (once, before it expires)."""
    order = qr_order(principal, request, idempotency_key=idempotency_key, step_up=step_up)
    outcome = submit_order(ctx, order)
    assert isinstance(outcome, Done)  # noqa: S101 - without an HTTP key nothing is answered from it
    record: PaymentRecord = outcome.record
    return record
