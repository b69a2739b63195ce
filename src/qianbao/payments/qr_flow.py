"""Merchant QR payments as the payment pipeline stages them (engine/pipeline.py, `Flow`); they are
written as every merchant payment is (`merchant_flow.MerchantPayments`).

Staging a batch reads the merchants its codes name and the paying wallets in one statement each; a
dynamic code is read by its reference, one by one. Each code is then checked against the records
(`qr_payments.plan_for_qr`: altered, used, expired, amount). Two customers paying one dynamic code in
one batch: its claim fails the batch, whose orders are then tried alone, where the second hears
`qr_code_used`.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection

from qianbao.errors import QianbaoError
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.payments import dynamic_qr, emvco
from qianbao.payments.engine.facts import Kind, PaymentRequest
from qianbao.payments.engine.orders import Done, HttpKey, Order, Replay, Staged
from qianbao.payments.engine.service import submit_order
from qianbao.payments.inputs import ledger_id_for, require_user_id
from qianbao.payments.merchant_flow import MerchantPayments, staged_payment
from qianbao.payments.merchant_records import PaymentRecord
from qianbao.payments.merchants import merchants_by_ids, payable
from qianbao.payments.qr_payments import QrPaymentRequest, parse_merchant_qr, plan_for_qr
from qianbao.wallets.service import no_such_wallet, wallet_rows


def _parsed(ask: QrPaymentRequest) -> emvco.ParsedQr | QianbaoError:
    try:
        return parse_merchant_qr(ask.qr)
    except QianbaoError as refusal:
        return refusal


class QrPaymentFlow(MerchantPayments):
    """A scanned merchant code: parsed, checked against the records, then paid as any merchant payment."""

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
            staged.append(staged_payment(ctx, order, plan, request, code=dynamic))
        return staged


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
    ledger_id = ledger_id_for("pay", principal.scope, idempotency_key, "pay")
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
