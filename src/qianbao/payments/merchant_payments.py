"""Paying a merchant: what every way of paying shares, scanning a QR code (`qr_flow`), a payment code
at a till (`charges`), an online checkout (`intents`): the plan (merchant, paying wallet, amount, ledger
id), the engine's request for it, its record and its ledger chain — payer → merchant wallet for the
amount, linked with merchant wallet → fee account for the merchant discount fee.

Every merchant payment is decided and written by the payment pipeline (engine/pipeline.py): scanned QR
codes (`qr_flow`), checkouts and payment codes within the no-PIN allowance (`merchant_flow`), a payment
code's hold above the allowance and its confirmation (`code_flow`), refunds (`refund_flow`).

With an Idempotency-Key the ledger transfer id is derived from (caller scope, key): even a crash between
the ledger commit and the stored HTTP answer cannot charge twice.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Connection

from qianbao.errors import NotFound
from qianbao.identity.context import IdentityContext
from qianbao.identity.model import Principal
from qianbao.ids import new_id
from qianbao.ledger.model import TransferSpec
from qianbao.ledger.system_accounts import FEES, system_account_id
from qianbao.payments.engine.declines import stored_decline
from qianbao.payments.engine.facts import Kind, PaymentRequest, TargetWallet
from qianbao.payments.fees import fee_for
from qianbao.payments.inputs import require_user_id
from qianbao.payments.merchant_records import (
    PaymentRecord,
    payment_by,
)
from qianbao.payments.merchants import Merchant, rate_for
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


# A method's own step in the payment's batch (use the no-PIN allowance, move an intent): raises to refuse.
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


def record_target(record: PaymentRecord) -> TargetWallet:
    return TargetWallet(record.merchant_wallet_id, record.merchant_user_id, record.currency)


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
