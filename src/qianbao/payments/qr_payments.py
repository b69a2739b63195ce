"""What a scanned merchant QR code asks for: a static code (`11`) with the amount the customer enters,
or a dynamic code (`12`) with its own amount, once, before it expires. The scanned payload becomes a
`PaymentPlan`; paying it is the payment pipeline's (`qr_flow`: staged, decided and written in a
batch); a dynamic code is claimed in the batch's transaction, so two customers cannot both pay it.
A code that differs from the one qianbao issued for the merchant its id names is refused
(`qr_code_altered`, see `qr_verification`): the merchant paid and the amount always come from the
server's records, and the payer was shown them.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Connection

from qianbao import invalid
from qianbao.payments import dynamic_qr, emvco
from qianbao.payments.errors import CurrencyMismatch
from qianbao.payments.inputs import check_amount, clean_memo
from qianbao.payments.merchant_payments import PaymentPlan
from qianbao.payments.merchants import Merchant
from qianbao.payments.qr_verification import merchant_code_differences
from qianbao.payments.scanning import AmountMismatch, QrCodeInvalid, parse_scanned, refuse_altered
from qianbao.wallets.service import WalletRow


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


def plan_for_qr(
    conn: Connection,
    request: QrPaymentRequest,
    parsed: emvco.ParsedQr,
    ledger_id: str,
    merchant: Merchant,
    source: WalletRow,
    now: int,
) -> tuple[PaymentPlan, dynamic_qr.DynamicQr | None]:
    """What paying this code means: the merchant and paying wallet (read already, checked payable and
    the payer's), a dynamic code's own amount once and before it expires, the records' verdict on
    the code's fields. Raises the code's refusal."""
    memo = clean_memo(request.memo)
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
