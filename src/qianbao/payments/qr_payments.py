"""Paying a merchant by scanning its QR code: a static code (`11`) with the amount the customer enters,
or a dynamic code (`12`) with its own amount, once, before it expires. The scanned payload becomes a
`PaymentPlan` for the merchant payment path (`merchant_payments`: checks, step-up, unit of work); a
dynamic code is claimed inside the payment's unit of work, so two customers cannot both pay it.
A code that differs from the one qianbao issued for the merchant its id names is refused
(`qr_code_altered`, see `qr_verification`): the merchant paid and the amount always come from the
server's records, and the payer was shown them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from qianbao import invalid
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.ids import new_id
from qianbao.payments import dynamic_qr, emvco
from qianbao.payments.errors import CurrencyMismatch
from qianbao.payments.inputs import check_amount, clean_memo, derived_id, require_user_id
from qianbao.payments.merchant_payments import (
    PaymentPlan,
    execute_payment,
    payment_by_ledger_id,
    prepare_in,
    replay,
    step_up_for,
)
from qianbao.payments.merchant_records import PaymentRecord, payment_by
from qianbao.payments.merchants import payable_merchant
from qianbao.payments.qr_verification import merchant_code_differences
from qianbao.payments.scanning import AmountMismatch, QrCodeInvalid, parse_scanned, refuse_altered
from qianbao.wallets.service import own_wallet_row


@dataclass(frozen=True, slots=True)
class QrPaymentRequest:
    from_wallet_id: str
    qr: str
    amount: int | None = None
    currency: str | None = None
    memo: str | None = None


def parse_merchant_qr(payload: object) -> emvco.ParsedQr:
    """A qianbao merchant code, or `qr_code_invalid` with the reason (bad CRC, not ours, malformed)."""
    parsed = parse_scanned(payload)
    if parsed.qianbao_merchant_id is None:
        raise QrCodeInvalid("this is not a qianbao merchant code", reason="not_qianbao", field="qr")
    return parsed


def _plan_for_qr(
    ctx: IdentityContext,
    conn: Connection,
    principal: Principal,
    request: QrPaymentRequest,
    parsed: emvco.ParsedQr,
    ledger_id: str,
) -> tuple[PaymentPlan, dynamic_qr.DynamicQr | None]:
    user_id = require_user_id(principal)
    memo = clean_memo(request.memo)
    now = ctx.now()
    merchant = payable_merchant(conn, parsed.qianbao_merchant_id)
    source = own_wallet_row(conn, user_id, request.from_wallet_id)
    found: dynamic_qr.DynamicQr | None = None
    if parsed.point_of_initiation == "dynamic":
        found = dynamic_qr.code_by_reference(conn, merchant.id, parsed.order_ref)
        if found is None:
            dynamic_qr.check_payable(found, now)  # no such code: "not valid any more"
    # The payer saw what the code says: pay nothing the records contradict (another merchant's id
    # under this one's name, an edited amount…). Before "used"/"expired": an altered copy of a paid
    # code is reported as altered, and a genuine one still replays (pay_by_qr).
    refuse_altered(merchant_code_differences(parsed, merchant, found))
    code = None if found is None else dynamic_qr.check_payable(found, now)
    if code is not None:
        if request.amount is not None and (request.amount, request.currency or code.currency) != (
            code.amount,
            code.currency,
        ):
            raise AmountMismatch(
                "the amount differs from the amount in the code", field="amount",
                expected={"amount": code.amount, "currency": code.currency},
            )  # fmt: skip
        amount, currency_code = code.amount, code.currency
    else:
        if request.amount is None:
            raise invalid.because(
                "amount_needed", "this code has no amount: enter the amount to pay", field="amount"
            )
        amount, currency_code = request.amount, request.currency or merchant.currency
        check_amount(amount, currency_code)
    if currency_code != merchant.currency or parsed.currency not in (None, merchant.currency):
        raise CurrencyMismatch(f"the merchant takes {merchant.currency}")
    plan = PaymentPlan(
        method="qr_dynamic" if code is not None else "qr_static",
        merchant=merchant,
        source=source,
        amount=amount,
        currency=currency_code,
        ledger_id=ledger_id,
        order_id=None if code is None else code.order_id,
        qr_code_id=None if code is None else code.id,
        memo=memo,
        step_up_params=(("qr", "static" if code is None else code.id),),
    )
    return plan, code


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
    ledger_id = (
        derived_id("pay", principal.scope, idempotency_key) if idempotency_key else f"pay:{new_id('pay')}"
    )
    try:
        # The replay look-up, the plan and every check before step-up share one read transaction.
        with ctx.db.read() as conn:
            if idempotency_key is not None:
                done = payment_by(conn, ctx.keys, ledger_id=ledger_id)
                if done is not None:
                    return replay(done)
            parsed = parse_merchant_qr(request.qr)
            plan, code = _plan_for_qr(ctx, conn, principal, request, parsed, ledger_id)
            approved = prepare_in(ctx, conn, principal, plan)
    except (dynamic_qr.QrCodeUsed, dynamic_qr.QrCodeExpired):
        # A retry that overlapped its own first attempt finds the code paid, by that attempt: replay it.
        done = None if idempotency_key is None else payment_by_ledger_id(ctx, ledger_id)
        if done is None:
            raise
        return replay(done)

    def claim(conn: Connection, record: PaymentRecord) -> None:
        if code is not None:
            dynamic_qr.claim(conn, code, record.id, record.created_at)

    proof = step_up_for(ctx, principal, plan, approved, step_up)
    return execute_payment(ctx, principal, plan, proof, claim=claim, idempotency_key=idempotency_key)
